"""Seeding, a step-based training loop with a cosine schedule, and a JSON-lines log."""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a torch generator seeded likewise."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def cosine_lr(step: int, total: int, base: float, warmup: int = 50, progress: float = 0.0) -> float:
    """Linear warm-up then cosine decay to 2% of ``base``.

    ``progress`` (0–1, e.g. the share of a time budget used) advances the decay when it is ahead
    of ``step / total``, so a run cut by its time budget still ends at a low learning rate.
    """
    if step < warmup:
        return base * (step + 1) / warmup
    t = max((step - warmup) / max(1, total - warmup), progress)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


class TrainLog:
    """Append-only JSON-lines log of training metrics (also echoed to stdout)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.t0 = time.perf_counter()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("", encoding="utf-8")

    def __call__(self, **record: Any) -> None:
        record = {"t_s": round(time.perf_counter() - self.t0, 1), **record}
        line = json.dumps(record)
        print(line, flush=True)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    @property
    def elapsed(self) -> float:
        """Seconds since the log was created."""
        return time.perf_counter() - self.t0


Batch = tuple[torch.Tensor, torch.Tensor]


def train_steps(
    model: nn.Module,
    batches: Iterator[Batch],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    steps: int,
    lr: float,
    weight_decay: float = 1e-4,
    log: TrainLog | None = None,
    log_every: int = 25,
    time_budget_s: float | None = None,
    on_eval: Callable[[int], dict[str, float]] | None = None,
    eval_every: int = 0,
    warmup: int = 50,
    device: torch.device | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    start_step: int = 0,
    on_step: Callable[[int, torch.optim.Optimizer], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` for ``steps`` optimiser steps (AdamW, cosine schedule).

    Args:
        model: the network (put in train mode here).
        batches: yields (inputs, targets) ready for ``model`` and ``loss_fn``.
        loss_fn: (outputs, targets) → scalar loss.
        steps: number of steps; the schedule spans them.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        log: metrics log.
        log_every: steps between log lines.
        time_budget_s: stop when training exceeds this; the schedule decays by elapsed time
            too, so a cut run still ends at a low learning rate.
        on_eval: called every ``eval_every`` steps and at the end; returns metrics to log.
        eval_every: 0 = only at the end.
        warmup: steps of linear learning-rate warm-up.
        device: move each batch here (the model must already be there); None = leave as is.
        optimizer: an AdamW built (and possibly restored from a checkpoint) by the caller.
        start_step: first step to run (resuming: the steps before it are done and ``batches``
            has been advanced past them).
        on_step: called after every step with (steps done, optimizer), e.g. to checkpoint.

    Returns:
        ``{"steps": done, "seconds": s, "final_loss": mean of the last 50 losses, **last eval}``.
    """
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    t0 = time.perf_counter()
    losses: list[float] = []
    last_eval: dict[str, float] = {}
    step = start_step - 1
    model.train()
    for step in range(start_step, steps):
        used = (time.perf_counter() - t0) / time_budget_s if time_budget_s else 0.0
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup=warmup, progress=used)
        x, y = next(batches)
        if device is not None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, opt)
        if log is not None and (step + 1) % log_every == 0:
            log(
                step=step + 1,
                loss=round(float(np.mean(losses[-log_every:])), 4),
                lr=round(opt.param_groups[0]["lr"], 6),
            )
        if on_eval is not None and eval_every and (step + 1) % eval_every == 0:
            last_eval = on_eval(step + 1)
            model.train()
        if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
            if log is not None:
                log(event="time budget reached", step=step + 1)
            break
    model.eval()
    if on_eval is not None:
        last_eval = on_eval(step + 1)
    return {
        "steps": step + 1,
        "seconds": round(time.perf_counter() - t0, 1),
        "final_loss": round(float(np.mean(losses[-50:])), 4) if losses else None,
        **last_eval,
    }
