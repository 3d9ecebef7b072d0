"""Beer–Lambert colour from stain concentrations, with per-slide stain variation.

Colour is ``I = I0 · 10^(−Σ c_s · v_s)`` with Ruifrok–Johnston optical-density vectors ``v_s`` for
haematoxylin, eosin and DAB, each perturbed per seed (a small rotation of the vector, a
concentration scale) together with the background tint ``I0``, to mimic lab and scanner variation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wsi.synthetic._noise import mix_seed
from wsi.synthetic.classes import STAINS

F32 = NDArray[np.float32]

RJ_VECTORS = np.array(
    [[0.650, 0.704, 0.286], [0.072, 0.990, 0.105], [0.268, 0.570, 0.776]], np.float64
)
#: Eosin as measured on real slides (Macenko-style estimates absorb more blue than the
#: Ruifrok–Johnston reference, which renders magenta): the per-slide eosin vector is drawn
#: between the two.
MEASURED_EOSIN = np.array([0.10, 0.87, 0.48]) / np.linalg.norm([0.10, 0.87, 0.48])


@dataclass(frozen=True)
class StainModel:
    """Per-slide stain: OD vectors (rows H, E, DAB), concentration scales and background tint.

    Attributes:
        name: ``"he"``, ``"cd68"`` or ``"cd163"``.
        vectors: (3, 3) unit OD vectors, rows haematoxylin, eosin, DAB.
        scale: (3,) multipliers of the three concentrations.
        tint: (3,) background (glass) transmission in [0, 1].
        noise: standard deviation of pixel noise in 8-bit levels.
        blur_um: optical blur sigma in µm.
    """

    name: str
    vectors: NDArray[np.float64]
    scale: NDArray[np.float64]
    tint: NDArray[np.float64]
    noise: float
    blur_um: float


def check_stain(stain: str) -> str:
    """Return ``stain`` if known, else raise ValueError naming the choices."""
    if stain not in STAINS:
        raise ValueError(f"unknown stain {stain!r}; expected one of {', '.join(STAINS)}")
    return stain


def stain_model(stain: str, seed: int) -> StainModel:
    """Return the perturbed stain model of a slide (deterministic in ``seed``)."""
    check_stain(stain)
    rng = np.random.default_rng(mix_seed(seed, 4242))
    vecs = RJ_VECTORS.copy()
    w = rng.uniform(0.55, 0.95)
    vecs[1] = (1.0 - w) * RJ_VECTORS[1] + w * MEASURED_EOSIN
    vecs += rng.normal(0.0, 0.03, (3, 3))
    vecs = np.clip(vecs, 0.02, None)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    if stain == "he":
        scale = np.array([rng.uniform(0.8, 1.2), rng.uniform(0.75, 1.3), 0.0])
    else:
        # IHC: haematoxylin counterstain (lighter), no eosin, DAB on the target cells.
        scale = np.array([rng.uniform(0.7, 0.95), 0.04, rng.uniform(0.75, 1.15)])
    tint = np.clip(np.array([0.95, 0.94, 0.95]) + rng.normal(0.0, 0.015, 3), 0.86, 0.995)
    return StainModel(
        stain, vecs, scale, tint, float(rng.uniform(1.5, 3.0)), float(rng.uniform(0.25, 0.4))
    )


def to_rgb(conc: F32, model: StainModel, extra_od: F32 | None = None) -> F32:
    """Convert (3, H, W) concentrations (H, E, DAB) to (3, H, W) RGB planes in 0..255.

    Args:
        conc: concentrations, rows haematoxylin, eosin, DAB.
        model: stain model.
        extra_od: optional (3, H, W) optical density added per channel (pen ink, dust).
    """
    m = model.vectors * model.scale[:, None]  # (3 stains, 3 channels)
    ln10 = np.float32(np.log(10.0))
    out = np.empty_like(conc)
    for c in range(3):
        od = conc[0] * np.float32(m[0, c]) + conc[1] * np.float32(m[1, c])
        if m[2, c] != 0:
            od += conc[2] * np.float32(m[2, c])
        if extra_od is not None:
            od += extra_od[c]
        np.exp(od * -ln10, out=out[c])
        out[c] *= np.float32(255.0 * model.tint[c])
    return out
