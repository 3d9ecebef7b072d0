"""What a synthetic slide contains: ``SynthSpec``, presets, and the scene built from a spec."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsi.synthetic._artefacts import ArtefactRates
from wsi.synthetic._fields import Layout
from wsi.synthetic._noise import mix_seed
from wsi.synthetic._scene import Scene
from wsi.synthetic._stain import check_stain

#: Preset name -> (width, height) in level-0 pixels.
PRESETS: dict[str, tuple[int, int]] = {
    "small": (4096, 4096),
    "demo": (16000, 12000),
    "large": (40000, 30000),
}

#: Macrophage share multipliers per region (spindle, pleomorphic, squamoid, non-tumour).
_TAM_REGION = (1.0, 1.2, 0.8, 0.25)


@dataclass(frozen=True)
class SynthSpec:
    """Parameters of one synthetic slide.

    Attributes:
        seed: everything is a deterministic function of this.
        width: level-0 width in pixels.
        height: level-0 height in pixels.
        mpp: level-0 pixel size in µm (0.25 = 40x, 0.5 = 20x).
        stain: ``"he"``, ``"cd68"`` or ``"cd163"``.
        mitoses_per_2mm2: mean mitotic figures per 2 mm² of viable tumour (0 to about 40).
        tripolar_fraction: share of mitoses that are atypical tripolar.
        tam_fraction: share of cells that are macrophages in spindle tumour (other regions
            scale it: pleomorphic 1.2×, squamoid 0.8×, non-tumour 0.25×).
        ramified_fraction: share of macrophages that are ramified.
        lookalikes_per_mm2: density of each look-alike kind per mm² of viable tumour.
        artefacts: draw pen, folds, bubbles, out-of-focus patches and dust.
        jpeg_quality: JPEG quality of the image tiles.
        workers: processes rendering tiles (1 = in this process).
        preset: the preset the spec came from, if any (informational).
    """

    seed: int = 0
    width: int = 4096
    height: int = 4096
    mpp: float = 0.25
    stain: str = "he"
    mitoses_per_2mm2: float = 10.0
    tripolar_fraction: float = 0.35
    tam_fraction: float = 0.35
    ramified_fraction: float = 0.5
    lookalikes_per_mm2: float = 12.0
    artefacts: bool = True
    jpeg_quality: int = 85
    workers: int = 2
    preset: str | None = None

    def __post_init__(self) -> None:
        check_stain(self.stain)
        _range("seed", self.seed, 0, 2**63 - 1)
        _range("width", self.width, 256, 200_000)
        _range("height", self.height, 256, 200_000)
        _range("mpp", self.mpp, 0.1, 2.0)
        _range("mitoses_per_2mm2", self.mitoses_per_2mm2, 0.0, 200.0)
        _range("tripolar_fraction", self.tripolar_fraction, 0.0, 1.0)
        _range("tam_fraction", self.tam_fraction, 0.0, 0.95)
        _range("ramified_fraction", self.ramified_fraction, 0.0, 1.0)
        _range("lookalikes_per_mm2", self.lookalikes_per_mm2, 0.0, 500.0)
        _range("jpeg_quality", self.jpeg_quality, 30, 100)
        _range("workers", self.workers, 1, 64)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SynthSpec:
        """Return the spec of a preset (``small``, ``demo``, ``large``) with fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
        w, h = PRESETS[name]
        fields: dict[str, Any] = {"width": w, "height": h, "preset": name}
        fields.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown SynthSpec field(s) {sorted(unknown)}")
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @property
    def label_factor(self) -> int:
        """Level-0 pixels per label-map pixel: the power of two nearest 2 µm / mpp."""
        return int(2 ** max(0, round(float(np.log2(2.0 / self.mpp)))))


def _range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value!r} is out of range; use {lo} to {hi}")


def scene_for(spec: SynthSpec) -> Scene:
    """Build the scene of a slide (layout, densities) from its spec."""
    rng = np.random.default_rng(mix_seed(spec.seed, 1234))
    bias = rng.normal(0.0, 0.05, 3)
    bias[int(rng.integers(3))] += 0.04  # a predominant pattern
    layout = Layout(
        seed=spec.seed,
        slide_um=(spec.width * spec.mpp, spec.height * spec.mpp),
        pattern_bias=(float(bias[0]), float(bias[1]), float(bias[2])),
        necrosis_t=float(rng.uniform(0.57, 0.63)),
        nontumour_t=float(rng.uniform(0.62, 0.67)),
        region_scale=float(np.clip(min(spec.width, spec.height) * spec.mpp / 7000.0, 0.2, 1.0)),
    )
    tam = tuple(float(min(0.95, spec.tam_fraction * m)) for m in _TAM_REGION)
    return Scene(
        layout,
        mitoses_per_mm2=spec.mitoses_per_2mm2 / 2.0,
        tripolar_fraction=spec.tripolar_fraction,
        tam_fraction=(tam[0], tam[1], tam[2], tam[3]),
        ramified_fraction=spec.ramified_fraction,
        lookalike_per_mm2=spec.lookalikes_per_mm2,
    )


def artefact_rates(spec: SynthSpec) -> ArtefactRates | None:
    """Return the artefact rates of a slide, or None when artefacts are off."""
    return ArtefactRates() if spec.artefacts else None
