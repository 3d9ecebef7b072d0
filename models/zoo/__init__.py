"""Built-in model registrations: every module in this package registers its model family.

Adding a family = adding a module here with ``@register_model`` entry functions; the registry
imports them all on first lookup.
"""

from __future__ import annotations

import importlib
import pkgutil

for _mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_mod.name}")
