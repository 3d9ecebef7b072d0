"""Real tissue tiles mixed into pattern training: balanced sampling and the set-valued loss.

Each real batch draws every class equally often and, inside a class, every source equally often
(weight of a tile = 1 / (classes × sources of its class × tiles of its class and source)), so a
class is not learnt from one source's colour. Real tiles pass through the same stain augmentation
as the synthetic ones and are cropped to one edge so that thyroid squares (152 px at 1 µm/px) and
224 px tiles share a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from models.training.augment import StainAugment, augment_batch, geometric, normalise
from models.training.real_tissue import TUMOUR_ANY, RealTiles
from wsi.synthetic.classes import PATTERN_CLASSES, TUMOUR_PATTERNS

#: Output channels a "tumour, any pattern" target may fall in.
TUMOUR_CHANNELS = tuple(PATTERN_CLASSES.index(c) for c in TUMOUR_PATTERNS)


def balanced_weights(labels: NDArray[np.int64], sources: NDArray[np.str_]) -> NDArray[np.float64]:
    """Sampling weight per tile: classes equal, sources equal inside a class; sums to 1."""
    w = np.zeros(len(labels), dtype=np.float64)
    classes = np.unique(labels)
    for c in classes.tolist():
        in_c = labels == c
        srcs = np.unique(sources[in_c])
        for s in srcs.tolist():
            cell = in_c & (sources == s)
            w[cell] = 1.0 / (len(classes) * len(srcs) * int(cell.sum()))
    return w


def real_batches(
    tiles: RealTiles,
    batch_size: int,
    crop: int,
    gen: torch.Generator,
    *,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    aug: StainAugment | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless balanced batches of random ``crop`` windows: (B, 3, crop, crop) inputs, labels.

    Raises:
        ValueError: a tile is smaller than ``crop``.
    """
    small = [t.shape[0] for t in tiles.images if min(t.shape[:2]) < crop]
    if small:
        raise ValueError(f"{len(small)} real tiles are smaller than crop={crop} (e.g. {small[0]})")
    w = torch.from_numpy(balanced_weights(tiles.labels, tiles.sources))
    while True:
        idx = torch.multinomial(w, batch_size, replacement=True, generator=gen).tolist()
        batch = []
        for i in idx:
            t = tiles.images[i]
            oy = int(torch.randint(0, t.shape[0] - crop + 1, (1,), generator=gen))
            ox = int(torch.randint(0, t.shape[1] - crop + 1, (1,), generator=gen))
            batch.append(t[oy : oy + crop, ox : ox + crop])
        imgs = torch.from_numpy(np.stack(batch))
        x = augment_batch(imgs, aug, gen) if aug is not None else imgs.permute(0, 3, 1, 2) / 255.0
        x, _ = geometric(x.float(), None, gen)
        y = torch.from_numpy(tiles.labels[idx])
        yield normalise(x, mean, std).contiguous(memory_format=torch.channels_last), y


def set_loss(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.05) -> torch.Tensor:
    """Cross-entropy; a :data:`TUMOUR_ANY` target is −log P(any tumour pattern).

    Args:
        logits: (B, C) pattern logits.
        y: (B,) class indices, or ``TUMOUR_ANY`` for "tumour, pattern unknown".
        label_smoothing: smoothing of the ordinary cross-entropy.
    """
    any_t = y == TUMOUR_ANY
    loss = logits.new_zeros(())
    if (~any_t).any():
        ce = F.cross_entropy(logits[~any_t], y[~any_t], label_smoothing=label_smoothing)
        loss = loss + ce * (~any_t).float().mean()
    if any_t.any():
        lg = logits[any_t].float()
        nll = torch.logsumexp(lg, dim=1) - torch.logsumexp(lg[:, list(TUMOUR_CHANNELS)], dim=1)
        loss = loss + nll.mean() * any_t.float().mean()
    return loss


def mixed_batches(
    synthetic: Iterator[tuple[torch.Tensor, torch.Tensor]],
    real: Iterator[tuple[torch.Tensor, torch.Tensor]],
) -> Iterator[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """One synthetic and one real batch per step (sizes may differ: two forward passes)."""
    while True:
        xs, ys = next(synthetic)
        xr, yr = next(real)
        yield [xs, xr], [ys, yr]


class PairModel(torch.nn.Module):
    """Applies a model to each input of a list (one forward pass per batch of one size)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Return the logits of every input."""
        return [self.model(x) for x in xs]


def pair_loss(
    real_weight: float,
) -> Callable[[list[torch.Tensor], list[torch.Tensor]], torch.Tensor]:
    """Loss over (synthetic, real) outputs: synthetic CE + ``real_weight`` × set-valued loss."""

    def loss(outs: list[torch.Tensor], ys: list[torch.Tensor]) -> torch.Tensor:
        syn = F.cross_entropy(outs[0], ys[0], label_smoothing=0.05)
        return syn + real_weight * set_loss(outs[1], ys[1])

    return loss
