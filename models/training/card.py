"""Publishing trained weights: save, checksum, write the model card, pin the sha256."""

from __future__ import annotations

import datetime as dt
import platform
import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.registry import ModelSpec, file_sha256
from wsi.io import atomic_write, atomic_write_json, atomic_write_text


def publish_weights(model: nn.Module, path: Path) -> str:
    """Save ``model``'s fp32 state dict to ``path`` atomically; return its sha256."""
    state = {
        k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.cpu()
        for k, v in model.state_dict().items()
    }
    with atomic_write(path, "wb") as fh:
        torch.save(state, fh)
    return file_sha256(path)


def write_model_card(
    spec: ModelSpec,
    sha256: str,
    *,
    command: str,
    seeds: dict[str, Any],
    training: dict[str, Any],
    metrics: dict[str, Any],
    notes: str = "",
    path: Path | None = None,
) -> Path:
    """Write the model card JSON beside the weights (architecture, data, command, metrics)."""
    card = {
        "name": spec.name,
        "version": spec.version,
        "task": spec.task,
        "architecture": spec.arch_name,
        "parameters": sum(p.numel() for p in spec.arch().parameters()),
        "classes": list(spec.classes),
        "input_mpp": spec.input_mpp,
        "tile_px": spec.tile_px,
        "overlap_px": spec.overlap_px,
        "normalisation": {"mean": list(spec.mean), "std": list(spec.std)},
        "weights_file": spec.weights_file,
        "sha256": sha256,
        "training_command": command,
        "seeds": seeds,
        "training": training,
        "metrics": metrics,
        "trained_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "machine": platform.machine(),
            "processor": platform.processor() or "unknown",
            "torch_threads": torch.get_num_threads(),
        },
        "notes": notes,
    }
    out = path or spec.card_path
    atomic_write_json(out, card)
    return out


def set_sha256_constant(module_file: Path, constant: str, sha256: str) -> None:
    """Rewrite ``CONSTANT = "<hex>"`` in a registry module so the spec pins the new weights.

    Raises:
        ValueError: the constant is not found exactly once, or ``sha256`` is not 64 hex digits.
    """
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    text = module_file.read_text(encoding="utf-8")
    pattern = re.compile(rf'^({re.escape(constant)}\s*=\s*)"[0-9a-f]{{64}}"', re.M)
    new, n = pattern.subn(rf'\g<1>"{sha256}"', text)
    if n != 1:
        raise ValueError(f'{constant} = "<64 hex>" found {n} times in {module_file}, expected 1')
    atomic_write_text(module_file, new)


def write_model_folder(
    model: nn.Module,
    base: ModelSpec,
    folder: Path,
    *,
    name: str,
    version: str,
    command: str,
    training: dict[str, Any],
    data: dict[str, Any],
    metrics: dict[str, Any],
    notes: str = "",
) -> Path:
    """Write a versioned model folder: ``weights.pt`` and ``card.json`` (read by the registry).

    Args:
        model: the trained network (same architecture as ``base``).
        base: spec of the model it started from (or whose architecture it uses from scratch);
            the card's ``base`` is the shipped model whose architecture both share.
        folder: the model folder (created; an existing card is replaced).
        name: registry name of the new version (``name@version`` selects it).
        version: its version string (PEP 440, e.g. ``1.1.0+lab.1``).
        command: the command line that trained it.
        training: steps, seconds, seed, learning rate, start weights …
        data: training and held-out slides with their annotation counts.
        metrics: figures on the held-out slides (never on training slides).
        notes: free text.

    Returns:
        The card path.
    """
    from models._versions import CARD_FILE, WEIGHTS_FILE
    from models.analysis import _git_commit, _package_version

    folder.mkdir(parents=True, exist_ok=True)
    sha256 = publish_weights(model, folder / WEIGHTS_FILE)
    root = base.base or base.name
    card = {
        "name": name,
        "version": version,
        "base": root,
        "started_from": {
            "ref": base.ref,
            "folder": None if base.folder is None else str(base.folder),
            "sha256": base.sha256,
        },
        "task": base.task,
        "architecture": base.arch_name,
        "classes": list(base.classes),
        "input_mpp": base.input_mpp,
        "tile_px": base.tile_px,
        "weights_file": WEIGHTS_FILE,
        "sha256": sha256,
        "code_version": {"package": _package_version(), "git_commit": _git_commit()},
        "training_command": command,
        "training": training,
        "data": data,
        "metrics": metrics,
        "trained_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": {"python": sys.version.split()[0], "torch": torch.__version__},
        "notes": notes,
    }
    out = folder / CARD_FILE
    atomic_write_json(out, card)
    return out
