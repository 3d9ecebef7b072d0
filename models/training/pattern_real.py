"""Fine-tune the pattern classifier on real + synthetic tiles through a frozen, cached trunk.

The stem and the first two residual stages of the shipped network stay as they are (they see
colour and edges; stain augmentation already made them robust) and their outputs are computed once
for several augmented views of every tile: ``views`` random windows of ``crop`` px, each with its
own stain jitter (``StainAugment.real()`` for real tiles, the synthetic defaults for synthetic
patches), flip and rotation. Only the last two stages and the head are trained, on those cached
feature maps. On 2 shared CPU cores this turns a training step from seconds into milliseconds:
the cost is the one forward pass per view.

Each step takes one batch of synthetic views (uniform) and one of real views (classes equal,
sources equal inside a class, :func:`models.training.real_mix.balanced_weights`); the loss is
synthetic cross-entropy + ``real_weight`` × :func:`models.training.real_mix.set_loss`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from models.archs import PatternNet
from models.training.augment import StainAugment, augment_batch, geometric, normalise
from models.training.loop import TrainLog, cosine_lr
from models.training.real_mix import set_loss

#: Stages of ``PatternNet.features`` kept frozen (stem, first two residual stages).
FROZEN_STAGES = 3


@dataclass
class CachedViews:
    """Trunk outputs of augmented views: (n, C, h, w) float16, labels, and each view's image."""

    features: torch.Tensor
    labels: torch.Tensor
    image: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def of_images(self, keep: NDArray[np.bool_]) -> CachedViews:
        """The views of the images where ``keep`` (indexed by image) is True."""
        sel = keep[self.image]
        idx = torch.from_numpy(np.flatnonzero(sel))
        return CachedViews(self.features[idx], self.labels[idx], self.image[sel])

    def weights(self, image_weights: NDArray[np.float64]) -> torch.Tensor:
        """Sampling weight of every view from its image's weight (normalised to sum 1)."""
        w = torch.from_numpy(np.asarray(image_weights, dtype=np.float64)[self.image])
        return w / w.sum()


def trunk_of(model: PatternNet, frozen: int = FROZEN_STAGES) -> nn.Module:
    """The frozen part of ``model``: its first ``frozen`` feature stages (shares its modules)."""
    return model.features[:frozen]


def upper_forward(
    model: PatternNet, feats: torch.Tensor, frozen: int = FROZEN_STAGES
) -> torch.Tensor:
    """Logits from trunk features: the trainable stages, global pooling, dropout and head."""
    f = model.features[frozen:](feats)
    out: torch.Tensor = model.head(model.dropout(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1)))
    return out


def cache_views(
    model: PatternNet,
    images: list[NDArray[np.uint8]],
    labels: NDArray[np.int64],
    *,
    views: int,
    crop: int,
    aug: StainAugment,
    gen: torch.Generator,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    batch: int = 64,
    log: Callable[..., None] | None = None,
    frozen: int = FROZEN_STAGES,
) -> CachedViews:
    """Run the frozen trunk on ``views`` augmented ``crop`` windows of every image.

    Raises:
        ValueError: an image is smaller than ``crop``.
    """
    if any(min(im.shape[:2]) < crop for im in images):
        raise ValueError(f"every image must be at least {crop} px to cache {crop} px views")
    trunk = trunk_of(model, frozen).eval()
    feats, labs, imgs = [], [], []
    order = [(v, i) for v in range(views) for i in range(len(images))]
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            part = order[s : s + batch]
            crops = []
            for _, i in part:
                im = images[i]
                oy = int(torch.randint(0, im.shape[0] - crop + 1, (1,), generator=gen))
                ox = int(torch.randint(0, im.shape[1] - crop + 1, (1,), generator=gen))
                crops.append(im[oy : oy + crop, ox : ox + crop])
            x = augment_batch(torch.from_numpy(np.stack(crops)), aug, gen)
            x, _ = geometric(x, None, gen)
            x = normalise(x, mean, std).contiguous(memory_format=torch.channels_last)
            feats.append(trunk(x).to(torch.float16))
            idx = [i for _, i in part]
            labs.append(torch.from_numpy(labels[idx]))
            imgs.append(np.asarray(idx, dtype=np.int64))
            if log is not None and (s // batch) % 40 == 0:
                log(event="caching", done=s + len(part), of=len(order))
    return CachedViews(torch.cat(feats), torch.cat(labs), np.concatenate(imgs))


def train_upper(
    model: PatternNet,
    synthetic: CachedViews,
    real: CachedViews,
    real_weights: torch.Tensor,
    *,
    steps: int,
    batch: int,
    lr: float,
    real_weight: float,
    gen: torch.Generator,
    log: TrainLog | None = None,
    on_eval: Callable[[int], dict[str, Any]] | None = None,
    eval_every: int = 0,
    frozen: int = FROZEN_STAGES,
) -> dict[str, Any]:
    """Train the stages after the trunk and the head (AdamW, cosine schedule) on cached views.

    Synthetic views are drawn uniformly, real views by ``real_weights`` (one per view).
    """
    for p in model.parameters():
        p.requires_grad_(False)
    upper = [*model.features[frozen:].parameters(), *model.head.parameters()]
    for p in upper:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(upper, lr=lr, weight_decay=1e-4)
    losses: list[float] = []
    last: dict[str, Any] = {}
    for step in range(steps):
        model.train()
        model.features[:frozen].eval()  # frozen batch-norm statistics
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr)
        si = torch.randint(0, len(synthetic), (batch,), generator=gen)
        ri = torch.multinomial(real_weights, batch, replacement=True, generator=gen)
        xs = synthetic.features[si].float()
        xr = real.features[ri].float()
        out = upper_forward(model, torch.cat([xs, xr]), frozen)
        loss = F.cross_entropy(out[:batch], synthetic.labels[si], label_smoothing=0.05)
        loss = loss + real_weight * set_loss(out[batch:], real.labels[ri])
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        losses.append(float(loss.detach()))
        if log is not None and (step + 1) % 100 == 0:
            log(step=step + 1, loss=round(float(np.mean(losses[-100:])), 4))
        if on_eval is not None and eval_every and (step + 1) % eval_every == 0:
            last = on_eval(step + 1)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    if on_eval is not None and not (eval_every and steps % eval_every == 0):
        last = on_eval(steps)
    return {"steps": steps, "final_loss": round(float(np.mean(losses[-100:])), 4), **last}
