"""Training data from the synthetic patch sampler: cached generation and augmented batches."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from models.training.augment import StainAugment, augment_batch, geometric, normalise
from wsi.io import atomic_write


@dataclass
class PatchSet:
    """Patches held in memory as uint8.

    Attributes:
        images: (n, s, s, 3) RGB.
        labels: (n,) int64 patch labels.
        masks: (n, s, s) uint8 label maps, or None.
    """

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]
    masks: NDArray[np.uint8] | None

    def __len__(self) -> int:
        return len(self.images)


def majority_labels(masks: NDArray[np.uint8], n_classes: int) -> NDArray[np.int64]:
    """Majority class of each (s, s) label map of a (n, s, s) stack: how slide tiles are scored."""
    flat = masks.reshape(len(masks), -1)
    counts = np.stack([(flat == c).sum(axis=1) for c in range(n_classes)], axis=1)
    return np.asarray(counts.argmax(axis=1), dtype=np.int64)


def _sample(args: tuple[str, int, int, float, int, str]) -> dict[str, Any]:
    from wsi.synthetic import sample_patches

    kind, n, size, mpp, seed, stain = args
    for attempt in range(4):  # a sampler failure on one seed must not end a training run
        try:
            b = sample_patches(kind, n, size, mpp, seed + attempt * 1_000_003, stain=stain)  # type: ignore[arg-type]
            break
        except ValueError as exc:
            print(
                f"sample_patches({kind!r}, {n}, {size}, {mpp}, {seed + attempt * 1_000_003}) "
                f"failed: {exc}; retrying with another seed",
                flush=True,
            )
    else:
        raise RuntimeError(f"sample_patches failed 4 times from seed {seed}")
    return {
        "images": np.asarray(b.images, dtype=np.uint8),
        "labels": np.asarray(b.labels, dtype=np.int64).reshape(len(b.images), -1)[:, 0],
        "masks": None if getattr(b, "masks", None) is None else np.asarray(b.masks, np.uint8),
    }


def generate_patches(
    kind: str,
    n: int,
    size: int,
    mpp: float,
    seed: int,
    *,
    stain: str = "he",
    cache_dir: Path | None = None,
    workers: int = 1,
    per_call: int = 64,
) -> PatchSet:
    """Draw ``n`` patches with ``sample_patches`` in calls of ``per_call`` with seeds seed, seed+1…

    The result is cached in ``cache_dir`` under a name derived from all arguments.
    """
    key = hashlib.sha256(f"{kind}|{n}|{size}|{mpp}|{seed}|{stain}|{per_call}".encode()).hexdigest()
    path = cache_dir / f"{kind}-{size}-{key[:12]}.npz" if cache_dir else None
    if path is not None and path.is_file():
        with np.load(path) as z:
            masks = z["masks"] if "masks" in z.files else None
            return PatchSet(z["images"], z["labels"], masks)
    calls = [
        (kind, min(per_call, n - s), size, mpp, seed + k, stain)
        for k, s in enumerate(range(0, n, per_call))
    ]
    t0 = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_sample, calls))
    else:
        parts = [_sample(c) for c in calls]
    images = np.concatenate([p["images"] for p in parts])
    labels = np.concatenate([p["labels"] for p in parts])
    masks = None
    if all(p["masks"] is not None for p in parts):
        masks = np.concatenate([p["masks"] for p in parts])
    print(f"generated {len(images)} {kind} patches in {time.perf_counter() - t0:.0f} s", flush=True)
    out = PatchSet(images, labels, masks)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {"images": images, "labels": labels}
        if masks is not None:
            arrays["masks"] = masks
        with atomic_write(path, "wb") as fh:
            np.savez(fh, **arrays)
    return out


def batch_stream(
    data: PatchSet,
    batch_size: int,
    gen: torch.Generator,
    *,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    aug: StainAugment | None,
    target: str = "label",
    mask_fn: Any = None,
    crop: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled batches: (B, 3, H, W) normalised inputs and targets.

    Args:
        data: the patches.
        batch_size: patches per batch.
        gen: random generator (shuffling and augmentation).
        mean, std: the model spec's normalisation.
        aug: stain augmentation, or None.
        target: ``"label"`` → (B,) int64 labels; ``"mask"`` → (B, H, W) int64 from ``mask_fn``.
        mask_fn: maps a uint8 label-map batch to the segmentation target (e.g. necrosis → 1).
        crop: train on a random ``crop`` × ``crop`` window (one offset per batch), or None.
            With label targets and label maps, a crop is labelled by the majority class of its
            own window (a crop near a boundary may hold a different majority than the patch).
    """
    n = len(data)
    while True:
        perm = torch.randperm(n, generator=gen).numpy()
        for s in range(0, n - batch_size + 1, batch_size):
            idx = np.sort(perm[s : s + batch_size])
            imgs = torch.from_numpy(data.images[idx])
            masks = data.masks[idx] if data.masks is not None else None
            if crop is not None and crop < imgs.shape[1]:
                oy, ox = (
                    int(v) for v in torch.randint(0, imgs.shape[1] - crop + 1, (2,), generator=gen)
                )
                imgs = imgs[:, oy : oy + crop, ox : ox + crop]
                masks = masks[:, oy : oy + crop, ox : ox + crop] if masks is not None else None
            if aug is not None:
                x = augment_batch(imgs, aug, gen)
            else:
                x = imgs.permute(0, 3, 1, 2).float() / 255.0
            if target == "mask":
                assert masks is not None, "mask targets need a PatchSet with masks"
                m = masks if mask_fn is None else mask_fn(masks)
                y: torch.Tensor = torch.from_numpy(np.asarray(m, dtype=np.int64))
                xg, yg = geometric(x, y, gen)
                assert yg is not None
                x, y = xg, yg
            else:
                x, _ = geometric(x, None, gen)
                labels = data.labels[idx]
                if masks is not None and masks.shape[1] < data.images.shape[1]:
                    n_cls = int(max(int(data.labels.max()), int(masks.max()))) + 1
                    labels = majority_labels(masks, n_cls)
                y = torch.from_numpy(labels)
            yield normalise(x, mean, std).contiguous(memory_format=torch.channels_last), y


def predict(
    model: torch.nn.Module,
    images: NDArray[np.uint8],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    batch_size: int = 64,
) -> NDArray[np.float32]:
    """Softmax outputs of ``model`` on uint8 patches (no augmentation), in eval mode."""
    model.eval()
    outs = []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(images[s : s + batch_size]).permute(0, 3, 1, 2).float() / 255.0
            x = normalise(x, mean, std).contiguous(memory_format=torch.channels_last)
            outs.append(torch.softmax(model(x).float(), dim=1).numpy())
    return np.concatenate(outs)
