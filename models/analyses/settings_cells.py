"""Typed settings for the cell-level analyses: mitoses, tumour-associated macrophages, grading.

Defaults live in the ``mitosis:``, ``tam:`` and ``grading:`` sections of ``configs/default.yaml``;
``workers.settings.load_settings`` is the one loader. ``models.settings`` re-exports these.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class MitosisSettings(_Frozen):
    """Mitosis detection and classification (typical vs atypical tripolar)."""

    model: str = Field(
        "atc-mitosis-v1", description="mitosis detector: name, name@version or model folder"
    )
    tile_px: int = Field(512, ge=128, description="tile edge in target px of the mitosis pass")
    overlap_px: int = Field(
        64, ge=0, description="tile overlap (px); detections within half of it of an edge drop"
    )
    max_candidates: int = Field(128, ge=1, description="candidates classified per tile at most")
    min_tumour_prob: float = Field(
        0.35,
        ge=0,
        le=1,
        description="a tile is scanned only where the pattern model's viable-tumour probability "
        "is at least this (no pattern output: every tissue tile is scanned)",
    )
    candidate_min_od: float = Field(
        0.3, gt=0, description="smallest peak haematoxylin optical density of a candidate"
    )
    candidate_sigma_um: float = Field(
        1.5, gt=0, description="Gaussian smoothing of the haematoxylin channel, in µm"
    )
    candidate_stride: int = Field(
        2,
        ge=1,
        le=4,
        description="candidate search grid in input px (2: haematoxylin averaged over 2 × 2 px, "
        "0.5 µm at 0.25 µm/px; 1: full resolution, 4× the cost of that stage)",
    )
    tta_floor: float = Field(
        1.0,
        ge=0,
        le=1,
        description="candidates whose P(mitosis) reaches this are re-scored as the mean over 8 "
        "flips/rotations of their crop (1: off)",
    )
    min_score: float = Field(
        0.93, ge=0, le=1, description="a candidate is a mitosis when P(mitosis) is at least this"
    )
    min_relative_focus: float = Field(
        0.35,
        ge=0,
        le=1,
        description="a scanned tile whose focus (grey Laplacian variance) is below this share of "
        "the median of the scanned tiles is out of focus: its detections and its tumour area are "
        "left out (0 = off)",
    )
    tripolar_min_score: float = Field(
        1.01,
        ge=0,
        le=1.01,
        description="a candidate classed tripolar also counts when P(tripolar) is at least this "
        "(> 1: off; 0.9 raised validation tripolar recall 0.84 -> 0.92 but F1 only 0.876 -> "
        "0.879, within noise, so it is off: see docs/model-quality-cells.md)",
    )
    nms_um: float = Field(
        12.5,
        gt=0,
        description="detections closer than this (µm) are one figure: the chromosome groups of "
        "one anaphase or tripolar figure lie up to ~12 µm apart, inside one cell",
    )
    hotspot_area_mm2: float = Field(2.0, gt=0, description="area of the hotspot circle (mm²)")
    hpf_area_mm2: float = Field(
        0.237,
        gt=0,
        description="area of one high-power field in mm² (FN 22 at 40× = 0.237; FN 20 = 0.196)",
    )
    n_hpf: int = Field(10, ge=1, description="number of HPFs in the per-HPF count (10 HPF)")
    hotspot_step_um: float = Field(
        50.0, gt=0, description="grid step of the densest-circle search (µm)"
    )
    max_slide_mpp: float = Field(
        0.5,
        gt=0,
        description="slides whose finest level is coarser than this (µm/px) get no mitosis count: "
        "mitotic figures are judged at 0.25 µm/px (40×); a 20× scan (≈0.5) is upsampled 2× and "
        "flagged, anything coarser is refused",
    )
    implausible_per_mm2: float = Field(
        40.0,
        gt=0,
        description="mitoses per mm² of viable tumour above which the report warns that the "
        "count is implausible (false positives likely: check the slide visually)",
    )


class TamSettings(_Frozen):
    """Tumour-associated macrophage density on H&E (detector) or CD68/CD163 IHC (DAB)."""

    route: Literal["auto", "he", "ihc"] = Field(
        "auto", description="auto chooses from the stain detected on the slide"
    )
    stain: Literal["cd68", "cd163"] = Field(
        "cd68", description="IHC marker named in the report when the IHC route runs"
    )
    model: str = Field(
        "atc-tam-v1", description="H&E macrophage detector: name, name@version or folder"
    )
    ihc_mpp: float = Field(
        0.5, gt=0, description="µm/px of the classical IHC pass (ihc_cells: dab_peaks)"
    )
    ihc_cells: Literal["net", "dab_peaks"] = Field(
        "net",
        description="IHC cell detection: net = atc-tam-ihc-v1 on the unmixed H and DAB "
        "concentrations; dab_peaks = distance-transform peaks of DAB-positive objects (classical)",
    )
    ihc_model: str = Field(
        "atc-tam-ihc-v1", description="registered IHC DAB-positive cell detector (ihc_cells: net)"
    )
    ihc_peak_threshold: float = Field(
        0.1, gt=0, le=1, description="heat-map peak height that counts as a DAB-positive cell"
    )
    tile_px: int = Field(256, ge=64, description="tile edge in target px of the TAM pass")
    min_tumour_prob: float = Field(
        0.35, ge=0, le=1, description="tiles below this viable-tumour probability are skipped"
    )
    peak_threshold: float = Field(
        0.32, gt=0, le=1, description="heat-map peak height that counts as a macrophage (H&E)"
    )
    nucleus_peak_threshold: float = Field(
        0.2, gt=0, le=1, description="heat-map peak height that counts as a nucleated cell (H&E)"
    )
    peak_min_distance_um: float = Field(
        4.0, gt=0, description="closest two detected cells may be (µm)"
    )
    dab_od_threshold: float = Field(
        0.15, gt=0, description="DAB optical density above which a pixel is DAB-positive"
    )
    dab_min_cell_um2: float = Field(
        12.0, gt=0, description="smallest DAB-positive object counted as a cell (µm²)"
    )
    dab_slide_fraction_ihc: float = Field(
        0.01,
        ge=0,
        le=1,
        description="auto route: DAB-positive fraction of tissue pixels above which a slide is IHC",
    )
    estimate_stain_vectors: bool = Field(
        True, description="estimate haematoxylin/DAB vectors per slide (else Ruifrok–Johnston)"
    )
    density_grid_um: float = Field(
        75.0, ge=10, description="cell edge of the density map (µm; 50–100 is typical)"
    )


class GradingSettings(_Frozen):
    """Thresholds of the grading flags (decision support, not a diagnosis)."""

    who_mitoses_per_2mm2: float = Field(
        5.0, ge=0, description="WHO 2022 high-grade: mitoses per 2 mm² at or above this"
    )
    turin_mitoses_per_10hpf: float = Field(
        3.0, ge=0, description="Turin poorly differentiated: mitoses per 10 HPF at or above this"
    )
    necrosis_min_area_mm2: float = Field(
        0.01, ge=0, description="tumour necrosis counts as present above this area (mm²)"
    )
    tam_high_per_mm2: float = Field(
        36.0, ge=0, description="TAM density called high (≥ 10 per 0.28 mm² in published series)"
    )
