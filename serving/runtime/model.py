"""One registered version, loaded for live trading: its features tick by tick and P(up) from the
compiled ensemble, exactly as the backtest computes them (serving.backtest.signals).

The feature vector holds the engine's role features first, in ``FeatureRoles`` order, then the
model's other inputs: the roles keep their positions whatever model is loaded, so the engine's
index survives a champion swap. The model's row is gathered from the vector each tick.

The LSTM reads its window on the training sampling grid (``autoscalp.sampling`` ``quote/<stride>``):
quotes are split into ``stride`` interleaved phases and each phase is one sequence, so the runtime
keeps ``stride`` LSTM rings and pushes each quote's row into its phase's. The phases count from the
first quote where every feature is warm and finite, the first row ``compute_signals`` gives a
probability for; from there every quote's row is pushed, NaN or not, as the batch does. ``ok`` is
``compute_signals``' too: every feature warm and finite and P(up) finite.

Once the features are warm, a quote is one compiled call (serving.runtime.quote_kernel: the
feature step, the row, the phase and the ensemble). Nothing compiles on the first live tick: the
calls are bound to their argument types (numba's cache) when the runtime is built, and run once on
a scratch copy of the arrays.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np

from pipeline.features.engine import FeatureEngine
from pipeline.features.l2book import DepthUpdate
from pipeline.models.compiled import CompiledEnsemble, export_ensemble, load_compiled
from pipeline.models.compiled.export import HEADER_FILE
from pipeline.models.ensemble import ENSEMBLE_FILE, Ensemble
from pipeline.training.aliases import VersionInfo
from pipeline.training.registry import ARTIFACT_KEY, COMPILED_DIR
from serving.backtest.evaluation import engine_for, stride_of
from serving.config import EngineConfig
from serving.events import Quote, Trade
from serving.runtime.quote_kernel import bind, gather_row, new_kernel

log = logging.getLogger(__name__)

NAN = math.nan


class ModelRuntime:
    """Features + ensemble for one symbol. Not thread-safe: one thread feeds it (the watcher warms a
    new one in its own thread, then hands it over)."""

    def __init__(self, engine_names: Sequence[str], compiled: CompiledEnsemble | None, stride: int,
                 version: VersionInfo | None = None, engine_config: EngineConfig | None = None) -> None:  # fmt: skip
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        model_names = tuple(compiled.header["feature_names"]) if compiled is not None else ()
        if compiled is not None and len(model_names) != compiled.n_features:
            raise ValueError(f"{len(model_names)} feature names for a model of {compiled.n_features} inputs")
        self.engine_names = tuple(engine_names)
        self.names: tuple[str, ...] = tuple(dict.fromkeys((*engine_names, *model_names)))
        self.model_names = model_names
        self.compiled = compiled
        self.stride = stride
        self.version = version
        self.engine_config = engine_config
        self.features = FeatureEngine(self.names)
        self._values = self.features.values
        self._columns = np.array([self.names.index(n) for n in model_names], dtype=np.intp)
        self._x = np.zeros(len(model_names))
        self._nan = np.full(len(self.names), NAN)
        self._gather = gather_row.compile(tuple(numba.typeof(a) for a in (self._values, self._columns, self._x)))
        self.quotes = 0
        self.last_ok = False
        self._kernel = None  # with a model: every array of the quote path (serving.runtime.quote_kernel)
        if compiled is not None:
            rings = [compiled.new_ring() for _ in range(stride)]
            # status[PHASE]: the phase of the last quote pushed; -1 until compute_signals' first row
            self._status = np.array([-1], dtype=np.int64)
            arrays = {
                **self.features.kernel_arrays(), "columns": self._columns, "x": self._x,
                **dict(zip(("members", "weights", "layout", "i32", "f32", "f64"), compiled.pack.arrays())),
                "rings": np.stack([r for r, _ in rings]), "ring_states": np.stack([st for _, st in rings]),
                "status": self._status,
            }  # fmt: skip
            self._kernel = new_kernel(arrays)
            self._quote_tick, self._model_row = bind(self._kernel)
            # run once on a scratch copy: the first live tick neither compiles nor faults in
            scratch = new_kernel({**{name: np.copy(a) for name, a in arrays.items()}, "status": np.zeros(1, np.int64)})
            self._quote_tick(scratch, 1, 100.0, 1.0, 100.1, 1.0)
            self._model_row(scratch)
            self._rewarm = compiled.tick_call(self._x, *compiled.new_ring())  # the last row, a scratch ring

    @property
    def version_label(self) -> str:
        return f"{self.version.name} v{self.version.version}" if self.version is not None else "no model"

    @property
    def warm(self) -> bool:
        """Every feature has seen its warm-up (values may still be NaN: see ``last_ok``)."""
        return self.features.warm

    def restarted(self) -> ModelRuntime:
        """The same model with empty features and LSTM rings (nothing is loaded or compiled again)."""
        return ModelRuntime(self.engine_names, self.compiled, self.stride, self.version, self.engine_config)

    def on_quote(self, quote: Quote) -> tuple[np.ndarray, float, bool]:
        """(the feature vector, P(up), ok) after a book update. Until the features are warm the
        vector is all NaN, as the backtest's rows are; it is reused: copy it to keep it."""
        self.quotes += 1
        features = self.features
        if features._warm and self._kernel is not None:  # the usual tick: one compiled call
            p_up, finite = self._quote_tick(self._kernel, quote.ts_ns, quote.bid, quote.bid_qty, quote.ask,
                                            quote.ask_qty)  # fmt: skip
            self.last_ok = ok = finite and p_up == p_up
            return self._values, p_up, ok
        values = features.on_quote(quote.ts_ns, quote.bid, quote.bid_qty, quote.ask, quote.ask_qty)
        if not features.warm:
            self.last_ok = False
            return self._nan, NAN, False
        if self._kernel is None:  # no model: the features only
            self.last_ok = finite = self._gather(values, self._columns, self._x)
            return values, NAN, finite
        p_up, finite = self._model_row(self._kernel)  # warm from this quote on (its features already stepped)
        self.last_ok = ok = finite and p_up == p_up
        return values, p_up, ok

    def rewarm(self) -> None:
        """The model once more on the last row, on a scratch ring (no state changes), to bring its
        trees back into the core's caches. The daemon calls it after a journal or venue write:
        the write (a live journal's fsync idles the core) and the booking around it evict them,
        and the next tick paid for it (bench/latency.py, fsync_per_write: its p99 23.6 -> 21.7 us
        with the rewarm). Costs one ensemble call (~4 us), off the tick path."""
        if self._kernel is not None:
            call, args = self._rewarm
            call(*args)

    def on_trade(self, trade: Trade) -> np.ndarray:
        return self.features.on_trade(trade.ts_ns, trade.price, trade.qty, trade.side)

    def on_depth(self, update: DepthUpdate) -> np.ndarray:
        return self.features.on_depth(update)

    def update(self, event: Any) -> None:
        """Fold any market event (the replay path; the daemon calls the typed methods): a Quote, a
        Trade, a DepthUpdate or what carries one as ``update`` (the feeds' DepthEvent)."""
        kind = type(event)
        if kind is Quote:
            self.on_quote(event)
        elif kind is Trade:
            self.on_trade(event)
        elif kind is DepthUpdate:
            self.on_depth(event)
        elif type(getattr(event, "update", None)) is DepthUpdate:
            self.on_depth(event.update)
        else:
            raise TypeError(f"not a market event: {kind.__name__}")

    def warm_up(self, events: Iterable[Any]) -> int:
        """Replay recent events, oldest first, before trading on this runtime; returns how many."""
        n = 0
        for event in events:
            self.update(event)
            n += 1
        return n


def compiled_ensemble(ensemble: Any) -> CompiledEnsemble:
    """The compiled form of an in-memory ensemble (what registration saves, exported now)."""
    return CompiledEnsemble(export_ensemble(ensemble))


def load_compiled_version(info: VersionInfo) -> CompiledEnsemble:
    """A registered version's compiled form, read from its artefacts: the ``compiled/`` arrays that
    registration saves into the ensemble artefact (pipeline.training.registry), else (a version
    registered before they were) exported from the ensemble loaded from the same artefact. With the
    arrays, no model library is loaded at all. Raises on an unreachable store, a missing or corrupt
    file, or arrays that disagree with the ensemble's feature names."""
    import mlflow.artifacts
    from mlflow.models import Model

    # A local store hands back its own directory (nothing is copied): read it, never write it.
    local = Path(mlflow.artifacts.download_artifacts(info.uri))
    pyfunc = Model.load(str(local / "MLmodel")).flavors["python_function"]
    ensemble_dir = local / pyfunc["artifacts"][ARTIFACT_KEY]["path"]
    names = json.loads((ensemble_dir / ENSEMBLE_FILE).read_text())["feature_names"]
    compiled_dir = ensemble_dir / COMPILED_DIR
    if (compiled_dir / HEADER_FILE).is_file():
        exported = load_compiled(compiled_dir)
    else:
        log.info("%s v%s has no compiled form: exporting it from the ensemble", info.name, info.version)
        exported = export_ensemble(Ensemble.load(ensemble_dir))
    if list(exported["header"]["feature_names"]) != list(names):
        raise ValueError(f"{info.name} v{info.version}: compiled arrays for features "
                         f"{exported['header']['feature_names']}, ensemble fitted on {names}")  # fmt: skip
    return CompiledEnsemble(exported)


def load_runtime(info: VersionInfo, engine_config: EngineConfig, default_stride: int) -> ModelRuntime:
    """A fresh runtime for a registered version, with the engine configuration it trades with
    (``engine_for``: its tuned strategy parameters) and its sampling grid (``stride_of``)."""
    started = time.perf_counter()
    compiled = load_compiled_version(info)
    config = engine_for(info, engine_config)
    roles = tuple(config.features.model_dump().values())
    runtime = ModelRuntime(roles, compiled, stride_of(info, default_stride), info, config)
    log.info("loaded %s (%d features, stride %d) in %.2f s", runtime.version_label, len(runtime.names),
             runtime.stride, time.perf_counter() - started)  # fmt: skip
    return runtime
