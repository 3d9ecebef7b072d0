"""Cost bound before work: the pixels each stage would decode from the pyramid actually present.

A slide's header can claim any size. What a stage costs is the area of the level it must read:
the tissue mask reads the best level for ``tissue.mask_mpp`` whole (a single-level giant means its
level 0), a thumbnail reads the level OpenSlide picks for it, an analysis reads one square per tile
of its grid. Each is checked against ``slide.max_stage_read_px`` before the first pixel is read,
and refused with :class:`wsi.errors.ReadBudgetError` (exit code 2, job reason
``read_budget_error``) when it is over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsi.errors import ReadBudgetError

if TYPE_CHECKING:
    from wsi.slide import Slide
    from wsi.tiling import TileGrid


def tissue_read_px(slide: Slide, mask_mpp: float) -> tuple[int, int]:
    """Return (level, pixels) the tissue mask at ``mask_mpp`` µm/px reads: one whole level."""
    level, _ = slide.best_level_for_mpp(mask_mpp)
    w, h = slide.level_dimensions[level]
    return level, w * h


def thumbnail_read_px(slide: Slide, max_px: int) -> tuple[int, int]:
    """Return (level, pixels) a thumbnail of ``max_px`` reads (OpenSlide's level choice)."""
    w0, h0 = slide.dimensions
    downsample = max(w0 / max_px, h0 / max_px, 1.0)
    level = 0
    for lvl, ds in enumerate(slide.level_downsamples):
        if ds <= downsample:
            level = lvl
    w, h = slide.level_dimensions[level]
    return level, w * h


def grid_read_px(grid: TileGrid) -> int:
    """Pixels an engine pass over ``grid`` decodes: one level square per tile."""
    return len(grid) * grid.lvl_read_px**2


def check_stage(slide: Slide, stage: str, read_px: int, level: int | None = None) -> None:
    """Refuse ``stage`` when it would decode more than ``slide.settings.max_stage_read_px``.

    Raises:
        ReadBudgetError: over the budget; the message names the level, the pixels and what to do.
    """
    budget = slide.settings.max_stage_read_px
    if read_px <= budget:
        return
    where = f"level {level} " if level is not None else ""
    pyramid = (
        "the file has a single level, so the whole level 0 would be decoded"
        if slide.level_count == 1
        else f"the file's pyramid has {slide.level_count} levels, none coarse enough"
    )
    raise ReadBudgetError(
        f"the {stage} stage would decode {read_px:,} px from {where}(budget "
        f"{budget:,} px): {pyramid}; re-export the slide as a pyramidal TIFF, or raise "
        "slide.max_stage_read_px if this is really intended",
        path=slide.path,
        stage=stage,
        read_px=read_px,
        budget_px=budget,
    )
