"""The only place that chooses the device, the autocast precision and the memory format.

``resolve_device`` never initialises CUDA unless CUDA is chosen, and asks NVML (not the driver)
whether a GPU exists, so a parent process that forks afterwards (Celery prefork, DataLoader
workers) stays fork-safe. Call it in the process that runs the model.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch

DevicePref = Literal["auto", "cpu", "cuda"]
PrecisionPref = Literal["auto", "bf16", "fp16", "fp32"]

_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class DeviceChoice:
    """Where and how a model runs.

    Attributes:
        device: ``torch.device("cpu")`` or ``torch.device("cuda[:k]")``.
        amp_dtype: autocast dtype, or ``None`` for plain fp32.
        channels_last: use the NHWC memory format (faster convolutions on CUDA and oneDNN).
    """

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool

    @property
    def is_cuda(self) -> bool:
        """Whether the device is a CUDA GPU."""
        return self.device.type == "cuda"

    @property
    def precision(self) -> str:
        """Precision name as written in reports: ``fp32``, ``bf16`` or ``fp16``."""
        if self.amp_dtype is None:
            return "fp32"
        return "bf16" if self.amp_dtype == torch.bfloat16 else "fp16"

    def describe(self) -> str:
        """One line naming the device (with the GPU model) and precision."""
        if self.is_cuda:
            name = torch.cuda.get_device_name(self.device)
            return f"{self.device} ({name}), {self.precision}"
        return f"cpu ({torch.get_num_threads()} threads), {self.precision}"


def cuda_available() -> bool:
    """Return whether a CUDA GPU exists, without initialising CUDA in this process."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        return True
    return bool(torch.cuda.is_available())


def resolve_device(pref: str = "auto", precision: str = "auto") -> DeviceChoice:
    """Choose the device and autocast precision.

    Args:
        pref: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``; the environment
            variable ``ATC_DEVICE`` overrides ``auto``.
        precision: ``auto`` (bf16 on GPUs that support it, fp16 on older GPUs; on CPU bf16
            where the CPU has AMX tiles (:func:`cpu_has_amx`), fp32 elsewhere), ``bf16``,
            ``fp16`` or ``fp32``. The environment variable ``ATC_PRECISION`` overrides ``auto``.

    Raises:
        ValueError: an unknown preference, ``cuda`` asked for with no GPU, or fp16 on CPU.
    """
    if pref == "auto":
        pref = os.environ.get("ATC_DEVICE", "auto") or "auto"
    if precision == "auto":
        precision = os.environ.get("ATC_PRECISION", "auto") or "auto"
    if pref not in ("auto", "cpu", "cuda") and not pref.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda, got {pref!r}")
    if precision not in ("auto", "bf16", "fp16", "fp32"):
        raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {precision!r}")
    has_cuda = cuda_available() if pref != "cpu" else False
    if pref.startswith("cuda") and not has_cuda:
        raise ValueError(f"device {pref!r} asked for but no CUDA GPU is visible; use --device cpu")
    use_cuda = pref.startswith("cuda") or (pref == "auto" and has_cuda)
    device = torch.device(pref if pref.startswith("cuda:") else "cuda") if use_cuda else None
    if device is None:
        if precision == "fp16":
            raise ValueError("fp16 autocast is GPU-only; use bf16 or fp32 on CPU")
        if precision == "auto":
            # bf16 only where AMX makes it pay (2.4-4.3x on the cell networks, docs/benchmarks.md);
            # the trained layers only: fixed arithmetic runs in fp32 (see ``exact``)
            precision = "bf16" if cpu_has_amx() else "fp32"
        return DeviceChoice(torch.device("cpu"), _DTYPES.get(precision), channels_last=True)
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return DeviceChoice(device, _DTYPES.get(precision), channels_last=True)


@lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_amx() -> bool:
    """Return whether this CPU has AMX bf16 tiles (oneDNN runs bf16 convolutions on them)."""
    return "amx_bf16" in _cpu_flags()


@contextlib.contextmanager
def exact(x: torch.Tensor) -> Iterator[None]:
    """Run the enclosed code in fp32 whatever autocast is active around it.

    For the fixed arithmetic inside a model (colour deconvolution, smoothing, peak finding):
    autocast would run its matrix products and convolutions in bf16/fp16 and move candidates and
    thresholds; only trained layers should see the lower precision.
    """
    with torch.autocast(x.device.type, enabled=False):
        yield


_M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
_heap_bounded = False


def bound_heap(threshold_bytes: int = 128 * 1024) -> bool:
    """Keep the process heap from growing with the number of batches (glibc only).

    glibc raises its mmap threshold each time a large block is freed, after which tensor buffers
    of a few MB come from the heap and stay there, fragmented: analysing a 40,000 × 30,000 slide
    left the pattern pass at 1.76 GB peak RSS against 1.10 GB for a 10,000 × 7,500 slide. A fixed
    threshold (128 KiB, glibc's initial value) sends every large buffer back to the OS when it is
    freed: 1.09 GB for the large slide (``scripts/bench_memory.py``). Called by the engine unless
    ``engine.bounded_heap`` is false; a no-op where the C library has no ``mallopt``.

    The price is kernel time: every buffer is a fresh mapping whose pages fault in zeroed. On the
    2-core development VM (2026-11-26) the pattern, necrosis and TAM passes of that slide took
    63 s (35 s system time) against 43 s (10 s) with glibc's default, which peaked at 1.25–1.35 GB
    instead of 0.96 GB. Fixed thresholds of 4–256 MB, ``malloc_trim`` after every 1 or 8 batches
    and huge pages for the mappings were measured too: each was either nearly as slow or let the
    peak grow 15–26% from the small slide to the large one. Once set in a process, the threshold
    stays fixed for that process.

    Returns:
        Whether the threshold is fixed in this process.
    """
    global _heap_bounded
    if _heap_bounded:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        _heap_bounded = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)))
    except (OSError, AttributeError):
        return False
    return _heap_bounded
