"""Public model registry: ``@register_model`` entry functions, ``create_model``, ``get_spec``.

Built-in models are declared in ``models.zoo`` (one module per model family); each entry function
returns a frozen :class:`ModelSpec`. Weights are checksummed before they are loaded.

Example:
    >>> from models.registry import create_model, get_spec, list_models
    >>> list_models("atc-*")  # doctest: +SKIP
    ['atc-necrosis-v1', 'atc-pattern-v1']
    >>> model = create_model("atc-pattern-v1")  # doctest: +SKIP
"""

from __future__ import annotations

from models._registry import (
    ModelSpec,
    Task,
    create_model,
    file_sha256,
    get_spec,
    list_models,
    load_state_dict,
    register_model,
    weights_dir,
)

__all__ = [
    "ModelSpec",
    "Task",
    "create_model",
    "file_sha256",
    "get_spec",
    "list_models",
    "load_state_dict",
    "register_model",
    "weights_dir",
]
