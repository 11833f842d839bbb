"""bench/latency.py's comparisons: the libraries' path, the LSTM both ways, the backtest's throughput
(see latency.py's docstring; run that, not this)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench_runtime import MODEL_25, STRIDE, SYMBOL, percentiles
from pipeline.config import SyntheticSourceConfig
from pipeline.features.check import synthetic_events
from serving.events import Quote
from serving.runtime.model import ModelRuntime

NAN = float("nan")


def library_path(ensemble, runtime: ModelRuntime, stream: list, ok_quotes: np.ndarray, n: int) -> dict:  # noqa: ANN001
    """The ensemble through the libraries, one row per tick, on ``n`` consecutive ok quotes from the
    middle of the run; the LSTM steps the phase's torch state (brought to the block's start in one
    batch call per phase, not timed)."""
    import torch

    from pipeline.models.compiled import CompiledEnsemble

    columns = np.array([runtime.names.index(name) for name in MODEL_25])
    fresh = ModelRuntime(runtime.engine_names, runtime.compiled, runtime.stride)
    rows = []
    for event in stream:
        if type(event) is Quote:
            values, _, _ = fresh.on_quote(event)
            rows.append(values[columns].copy())
        else:
            fresh.on_trade(event)
    X = np.array(rows)
    first_ok = int(ok_quotes[0])
    start = first_ok + (len(X) - first_ok) // 2
    block = range(start, start + n)
    members, weights = ensemble.members, ensemble.weights
    lstm = members["lstm"]
    net = lstm.net
    states = {}
    with torch.no_grad():
        for phase in range(STRIDE):
            offset = (phase - first_ok) % STRIDE
            prefix = X[first_ok + offset:start:STRIDE]
            prefix = prefix[np.isfinite(prefix).all(axis=1)]
            _, states[(first_ok + offset) % STRIDE] = net.steps(torch.from_numpy(lstm._standard(prefix))[None], None)
    clock, ns, p_lib = time.perf_counter_ns, [], []
    torch.set_num_threads(1)
    with torch.no_grad():
        for i in block:
            row = X[i][None, :]
            t0 = clock()
            total = 0.0
            for name, model in members.items():
                if name == "lstm" and not np.isfinite(row).all():
                    p = NAN  # not part of the sequence (the carried model's definition)
                elif name == "lstm":
                    logit, states[i % STRIDE] = net.steps(torch.from_numpy(lstm._standard(row))[None], states[i % STRIDE])
                    p = float(lstm.calibrator(torch.sigmoid(logit).numpy().ravel().astype(np.float64))[0])
                else:
                    p = float(model.predict_proba(row)[0])
                total += weights[name] * p
            ns.append(clock() - t0)
            p_lib.append(total)
    compiled = CompiledEnsemble({"header": runtime.compiled.header, "arrays": runtime.compiled.arrays})
    p_compiled = np.full(len(X), NAN)
    for offset in range(STRIDE):  # the runtime's phases: every STRIDE-th quote from the first ok one
        p_compiled[first_ok + offset::STRIDE] = compiled.proba_batch(X[first_ok + offset::STRIDE])
    gap = float(np.nanmax(np.abs(p_compiled[start:start + n] - np.array(p_lib))))
    return {"ensemble_ns": np.array(ns), "block": (start, start + n), "max_abs_p_up_gap_vs_compiled": gap}


def backtest_throughput(ensemble, capture: Path | None, repeat: int) -> dict | None:  # noqa: ANN001
    if capture is None:
        return None
    from bench_backtest import measure, tiled_real

    data = tiled_real(capture, repeat)
    full, replay = measure(data, ensemble, "full decision path"), measure(data, None, "replay only (no model)")
    return {"data": f"real capture tiled x{repeat}", "full": full, "replay_only": replay,
            "p_up": "serving.backtest.signals: CompiledEnsemble.proba_batch per sampling phase"}


def lstm_state_quality(train_rows: int) -> dict:
    """The LSTM both ways on the same rows (bench_runtime's rows and label), scored on held-out rows."""
    import torch

    from pipeline.models.base import Calibrator, make_model
    from pipeline.models.compiled import CompiledEnsemble, export_ensemble, member_proba_batch
    from pipeline.models.compiled.export import calibration_array
    from pipeline.models.ensemble import Ensemble
    from pipeline.training.metrics import log_loss, roc_auc
    from serving.backtest.signals import feature_rows

    torch.set_num_threads(1)
    events = synthetic_events(SyntheticSourceConfig(seed=11, ticks=300_000), SYMBOL)
    quote_index, values, warm = feature_rows(events, MODEL_25)
    mid = 0.5 * (events.bid + events.ask)[quote_index]
    ahead = np.r_[mid[STRIDE:], np.full(STRIDE, np.nan)]
    rows = np.flatnonzero(warm & np.isfinite(ahead))[::STRIDE]
    X, y = values[rows], (ahead[rows] > mid[rows]).astype(np.int64)
    a = min(train_rows, int(len(X) * 0.7))
    b = min(len(X), a + a // 4)
    out = {"rows": {"train": a, "validation": b - a, "test": len(X) - b}}
    for state in ("carried", "window"):
        t0 = time.perf_counter()
        model = make_model("lstm", {"state": state}, seed=7).fit(X[:a], y[:a], X[a:b], y[a:b])
        fit_s = time.perf_counter() - t0
        p = model.predict_proba(X[a:])[b - a:]  # the test rows continue the validation sequence
        compiled = CompiledEnsemble(export_ensemble(Ensemble({"lstm": model}, {"lstm": 1.0})))
        ring, st = compiled.new_ring()
        Xt = np.ascontiguousarray(X[b:])
        for x in Xt[:200]:
            compiled.proba_tick_in(x, ring, st)
        clock, ns = time.perf_counter_ns, []
        for x in Xt:
            t = clock()
            compiled.proba_tick_in(x, ring, st)
            ns.append(clock() - t)
        out[state] = {"oos_auc": round(float(roc_auc(y[b:], p)), 4), "oos_log_loss": round(float(log_loss(y[b:], p)), 5),
                      "fit_s": round(fit_s, 1), "epochs": model.fit_info["epochs"],
                      "compiled_tick": percentiles(np.array(ns))}  # fmt: skip
        # A stream's P(up) depends on where it started (the window model's for `window` rows, the
        # carried one's until its forget gates have faded the start): two starts 500 rows apart.
        # Raw (before the isotonic calibration, whose flat steps would hide small gaps).
        raw = {**compiled.arrays["lstm"], "calibration": calibration_array(Calibrator())}
        early, late = member_proba_batch("lstm", raw, Xt), member_proba_batch("lstm", raw, Xt[500:])
        out[state]["raw_start_gap_max_abs"] = {f"after_{n}_rows": float(np.nanmax(np.abs(early[500 + n:] - late[n:])))
                                               for n in (16, 100, 1000) if 500 + n < len(Xt)}  # fmt: skip
    return out
