"""Analysis plugins: each analysis is a class with ``name``, ``requires``, ``after`` and ``run``.

An analysis module registers its class with :func:`register_analysis`; ``analyze_slide`` imports
the built-in modules by name on demand, orders the requested analyses so that prerequisites run
first, and hands each one an :class:`AnalysisContext` holding the slide, its tissue mask, the
settings, the engine and the outputs of the analyses that ran before it.

Writing a new analysis::

    @register_analysis
    class MyAnalysis:
        name = "mine"
        requires = ("pattern",)   # added to the plan and run first
        after = ()                # run after these when they are in the plan

        def run(self, ctx: AnalysisContext) -> AnalysisOutput:
            spec, model = ctx.model(ctx.settings.mine.model)
            grid = TileGrid.for_slide(ctx.slide, target_mpp=spec.input_mpp, ...)
            acc = TileArrayAccumulator(len(grid), "probs", (len(spec.classes),))
            stats = ctx.run_engine(model, spec, grid, [acc], tag=self.name)
            return AnalysisOutput(self.name, report={...}, qc=ctx.engine_qc(stats))
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from models.errors import AnalysisCancelled, InvalidSettingsError, UnknownModelError
from wsi.results import Circle, PointSet, PolygonSet, RasterMap, TileTable

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from torch import nn

    from models.accumulate import Accumulator
    from models.device import DeviceChoice
    from models.engine import Engine, EngineStats, HeadFn, TileInputsFn
    from models.registry import ModelSpec
    from models.settings import PipelineSettings
    from wsi.slide import Slide
    from wsi.tiling import TileGrid
    from wsi.tissue import TissueMask

StageProgress = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]

#: Built-in analyses and the module that registers each; imported on first use.
BUILTIN_MODULES: dict[str, str] = {
    "pattern": "models.analyses.pattern",
    "scope": "models.analyses.scope",
    "necrosis": "models.analyses.necrosis",
    "mitosis": "models.analyses.mitosis",
    "tam": "models.analyses.tam",
    "grading": "models.analyses.grading",
}


@dataclass(frozen=True)
class EngineRun:
    """One engine run of an analysis, as it was made: what the benchmarks replay.

    ``scripts/bench_pipeline.py`` measures the read and model limits on exactly these tiles, this
    model and this head, so the pipeline is compared with limits of the same work.

    Attributes:
        tag: the run's progress/checkpoint tag.
        model: the network as the analysis passed it to the engine.
        spec: its spec.
        grid: the tile grid.
        indices: grid indices processed (None: all).
        head: the head applied to the logits.
        tile_stats: whether per-tile focus was computed.
        stats: what the engine reported.
        tile_inputs: the per-batch extra model inputs (None: none).
    """

    tag: str
    model: nn.Module
    spec: ModelSpec
    grid: TileGrid
    indices: NDArray[np.int64] | None
    head: HeadFn
    tile_stats: bool
    stats: EngineStats
    tile_inputs: TileInputsFn | None = None


@dataclass
class AnalysisOutput:
    """What one analysis produced.

    Attributes:
        name: the analysis name (its report section).
        report: JSON-ready section of ``report.json``.
        maps, points, polygons, circles, tiles: spatial outputs for the writers (level-0 px).
        models: provenance of each model used (``ModelSpec.provenance()``).
        qc: tiles processed, unreadable tiles, throughput.
        data: in-memory values for later analyses (not written anywhere).
        seconds: wall time of ``run``.
        engine_runs: the engine runs ``run`` made (filled in by ``analyze_slide``).
    """

    name: str
    report: dict[str, Any]
    maps: list[RasterMap] = field(default_factory=list)
    points: list[PointSet] = field(default_factory=list)
    polygons: list[PolygonSet] = field(default_factory=list)
    circles: list[Circle] = field(default_factory=list)
    tiles: TileTable | None = None
    models: list[dict[str, Any]] = field(default_factory=list)
    qc: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    engine_runs: list[EngineRun] = field(default_factory=list)


@dataclass
class AnalysisContext:
    """Everything an analysis may use; built once per slide by ``analyze_slide``.

    Attributes:
        slide_path: the slide file.
        slide: the open slide (main process only: never hand it to a worker process).
        tissue: the tissue mask.
        settings: the whole pipeline settings.
        device: device and precision chosen by ``models.device.resolve_device``.
        engine: the inference engine for that device.
        mpp_override: µm/px forced by the user, or None.
        work_dir: checkpoint folder (None: no checkpoints).
        results: outputs of the analyses that already ran, by name.
        engine_runs: every engine run made so far, in order (see :class:`EngineRun`).
        progress: ``(stage, done, total)`` callback, or None.
        cancel: returns True when the job should stop, or None.
    """

    slide_path: Path
    slide: Slide
    tissue: TissueMask
    settings: PipelineSettings
    device: DeviceChoice
    engine: Engine
    mpp_override: float | None = None
    work_dir: Path | None = None
    results: dict[str, AnalysisOutput] = field(default_factory=dict)
    engine_runs: list[EngineRun] = field(default_factory=list)
    progress: StageProgress | None = None
    cancel: CancelFn | None = None
    _models: dict[str, tuple[ModelSpec, nn.Module]] = field(default_factory=dict, repr=False)

    def model(self, name: str) -> tuple[ModelSpec, nn.Module]:
        """Return the spec and checksummed pretrained network registered as ``name`` (cached)."""
        if name not in self._models:
            from models.registry import create_model, get_spec

            self._models[name] = (get_spec(name), create_model(name))
        return self._models[name]

    def report_progress(self, stage: str, done: int, total: int) -> None:
        """Forward progress of ``stage`` to the callback, if any."""
        if self.progress is not None:
            self.progress(stage, done, total)

    def check_cancel(self) -> None:
        """Raise :class:`AnalysisCancelled` when the cancel callback says so."""
        if self.cancel is not None and self.cancel():
            raise AnalysisCancelled("analysis cancelled")

    def run_engine(
        self,
        model: nn.Module,
        spec: ModelSpec,
        grid: TileGrid,
        accumulators: list[Accumulator],
        *,
        tag: str,
        head: HeadFn | None = None,
        indices: NDArray[np.int64] | None = None,
        tile_stats: bool = False,
        tile_inputs: TileInputsFn | None = None,
    ) -> EngineStats:
        """Run ``model`` over ``grid`` with this context's engine, progress, cancel and work_dir.

        ``tag`` names the progress stage and the checkpoint files (unique per engine run);
        ``tile_inputs`` gives the model per-batch extra inputs (``models.engine.TileInputsFn``).
        """
        from models.engine import softmax_head
        from wsi.tiling import TileReader

        reader = TileReader(self.slide_path, grid, self.mpp_override, settings=self.slide.settings)
        stats = self.engine.run(
            model,
            spec,
            reader,
            accumulators,
            indices=indices,
            head=head or softmax_head,
            progress=lambda d, t: self.report_progress(tag, d, t),
            cancel=self.cancel,
            work_dir=self.work_dir,
            tag=tag,
            tile_stats=tile_stats,
            tile_inputs=tile_inputs,
        )
        run = EngineRun(
            tag, model, spec, grid, indices, head or softmax_head, tile_stats, stats, tile_inputs
        )
        self.engine_runs.append(run)
        return stats

    @staticmethod
    def engine_qc(stats: EngineStats) -> dict[str, Any]:
        """The QC entries every analysis reports about its engine run."""
        return {
            "tiles": stats.n_tiles,
            "unreadable_tiles": stats.n_unreadable,
            "chunks_resumed": stats.chunks_loaded,
            "tiles_per_s": round(stats.tiles_per_s, 2),
            "batch_size": stats.batch_size,
        }


class Analysis(Protocol):
    """The plugin interface."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]
    after: ClassVar[tuple[str, ...]]

    def run(self, ctx: AnalysisContext) -> AnalysisOutput:
        """Analyse the slide in ``ctx`` and return its outputs."""
        ...


A = TypeVar("A", bound=type)
_REGISTRY: dict[str, type] = {}


def register_analysis(cls: A) -> A:
    """Class decorator registering an analysis under its ``name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} needs a class attribute 'name'")
    for attr in ("requires", "after"):
        if not isinstance(getattr(cls, attr, ()), tuple):
            raise TypeError(f"{cls.__qualname__}.{attr} must be a tuple of analysis names")
    _REGISTRY[name] = cls
    return cls


def list_analyses() -> list[str]:
    """Names of the registered and built-in analyses."""
    return sorted(set(_REGISTRY) | set(BUILTIN_MODULES))


def get_analysis(name: str) -> Analysis:
    """Return a new instance of the analysis ``name``.

    Raises:
        UnknownModelError: no such analysis; the message lists the known ones.
        InvalidSettingsError: a built-in analysis whose module is not installed.
    """
    if name not in _REGISTRY and name in BUILTIN_MODULES:
        try:
            importlib.import_module(BUILTIN_MODULES[name])
        except ModuleNotFoundError as exc:
            if exc.name != BUILTIN_MODULES[name]:
                raise
            raise InvalidSettingsError(
                f"analysis {name!r} is not available in this installation "
                f"({BUILTIN_MODULES[name]} is missing); drop it from --analyses"
            ) from None
    if name not in _REGISTRY:
        raise UnknownModelError(name, list_analyses(), what="analysis")
    analysis: Analysis = _REGISTRY[name]()
    return analysis


def plan_analyses(names: tuple[str, ...] | list[str]) -> list[Analysis]:
    """Instantiate the requested analyses plus their prerequisites, in a valid order.

    Raises:
        UnknownModelError: a name that is not an analysis.
        InvalidSettingsError: a dependency cycle.
    """
    chosen: dict[str, Analysis] = {}
    stack = list(names)
    while stack:
        n = stack.pop()
        if n not in chosen:
            chosen[n] = get_analysis(n)
            stack.extend(chosen[n].requires)
    order: list[Analysis] = []
    placed: set[str] = set()
    while len(order) < len(chosen):
        ready = [
            a
            for n, a in chosen.items()
            if n not in placed
            and all(d in placed for d in a.requires)
            and all(d in placed or d not in chosen for d in a.after)
        ]
        if not ready:
            raise InvalidSettingsError(
                f"analyses depend on each other in a cycle: {sorted(chosen)}"
            )
        ready.sort(key=lambda a: _rank(a.name))
        order.append(ready[0])
        placed.add(ready[0].name)
    return order


def _rank(name: str) -> tuple[int, str]:
    keys = list(BUILTIN_MODULES)
    return (keys.index(name) if name in keys else len(keys), name)
