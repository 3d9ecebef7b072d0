"""Shared training utilities: seeding, stain augmentation, training loops, model cards.

Generic on purpose: ``atc-wsi train`` and the pattern, necrosis, mitosis and macrophage training
scripts all use them.
"""

from models.training.augment import StainAugment, augment_batch, geometric
from models.training.card import publish_weights, set_sha256_constant, write_model_card
from models.training.loop import TrainLog, cosine_lr, seed_everything, train_steps

__all__ = [
    "StainAugment",
    "TrainLog",
    "augment_batch",
    "cosine_lr",
    "geometric",
    "publish_weights",
    "seed_everything",
    "set_sha256_constant",
    "train_steps",
    "write_model_card",
]
