"""Cell models (mitosis detector, H&E macrophage detector), registered in ``models.cells.zoo``."""

from models.cells import zoo as _cells  # noqa: F401
