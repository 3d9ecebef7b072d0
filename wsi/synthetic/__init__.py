"""Synthetic anaplastic thyroid carcinoma: patches and whole slides with ground truth.

One deterministic scene renderer draws both the training patches (``sample_patches``) and the
pyramidal slides (``generate_slide``), so they look the same; see ``docs/synthetic.md``.
"""

from wsi.synthetic.patches import PATCH_KINDS, PatchBatch, PatchKind, sample_patches
from wsi.synthetic.slide import generate_slide
from wsi.synthetic.spec import PRESETS, SynthSpec
from wsi.synthetic.truth import SlideTruth, load_truth

__all__ = [
    "PATCH_KINDS",
    "PRESETS",
    "PatchBatch",
    "PatchKind",
    "SlideTruth",
    "SynthSpec",
    "generate_slide",
    "load_truth",
    "sample_patches",
]
