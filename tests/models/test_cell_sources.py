"""Real cell tiles for ``atc-wsi train tam --real cells``: tiling, padding, folds, quarters."""

from __future__ import annotations

import numpy as np

from models.training.annotated_cells import HeatTiles
from models.training.cell_sources import cell_tiles, fold_of_cells, quarters
from models.training.real_cells import CellImage


def _image(h: int, w: int, split: str) -> CellImage:
    rgb = np.full((h, w, 3), 200, np.uint8)
    xy = np.array([[10.0, 12.0], [100.0, 40.0]])
    return CellImage("monusac", "a", "P1", split, "lung", rgb, 0.25, xy,
                     np.array(["macrophage", "lymphocyte"]))  # fmt: skip


def test_cell_tiles_pad_to_whole_tiles_and_keep_targets() -> None:
    tiles = cell_tiles([_image(300, 260, "fold0")], size=128)
    # 300 x 260 px at 0.25 -> 150 x 130 at 0.5 -> padded to 256 x 256: four tiles
    assert tiles.images.shape == (4, 128, 128, 3) and tiles.targets.shape == (4, 4, 64, 64)
    assert (tiles.images[3, 100:, 100:] == 255).all()  # padding is glass
    assert tiles.targets[0, 0].max() == 1.0  # the macrophage at (5, 6) px at 0.5 µm/px
    assert tiles.targets[:, 2].min() >= 0 and tiles.targets[:, 3].max() > 0


def test_folds_follow_the_sets_own_splits() -> None:
    assert [fold_of_cells(_image(8, 8, s)) for s in ("fold0", "fold1", "train", "test")] == [
        0, 1, 0, 1,
    ]  # fmt: skip


def test_quarters_cut_larger_tiles_with_their_targets() -> None:
    rng = np.random.default_rng(0)
    big = HeatTiles(
        rng.integers(0, 255, (2, 256, 256, 3), dtype=np.uint8),
        rng.random((2, 4, 128, 128), dtype=np.float32),
    )
    q = quarters(big, 128)
    assert q.images.shape == (8, 128, 128, 3) and q.targets.shape == (8, 4, 64, 64)
    # the top-right quarter of tile 1 is the (y 0, x 128) window
    k = 1 * 2 + 1
    assert (q.images[k] == big.images[1, :128, 128:]).all()
    assert (q.targets[k] == big.targets[1, :, :64, 64:]).all()
    assert quarters(q, 128) is q
