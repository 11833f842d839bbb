"""One-row inference latency: the four models and the ensemble, library vs compiled, and the LSTM's cost.

Not a test: run it (`.venv/bin/python bench/bench_inference.py`) and it records what it measured in
bench/results/inference.json, with the machine and the git revision. One thread throughout.

Models: default params of each kind (forest 100 trees depth 8, XGBoost up to 500 rounds
early-stopped, LSTM window 16 hidden 32, isotonic calibration), fitted on the planted signal of
bench_models.py (--train-rows x --features, then a quarter of that each for validation and test).

- fidelity: max |compiled - library| over the test rows, per member and for the ensemble.
- latency per tick (perf_counter_ns around each call, its ~0.05 us included; median and p99 over
  the test rows): the library as the project calls it (``model.predict_proba`` on one row; the LSTM
  and the ensemble on the last ``window`` rows, which the LSTM needs), and the compiled path: each
  member alone and the four together through ``CompiledEnsemble.proba_tick`` (one call).
- batch (us per row over the test rows): ``CompiledEnsemble.proba_batch`` vs ``Ensemble.predict_proba``,
  and each member's compiled batch vs its ``predict_proba``.
- LSTM per tick, compute only (a loop inside numba, no Python call): exact (the window's
  ``window x layers`` cell steps from a zero state, what the trained model computes) vs carried (one
  step per layer with h and c kept across ticks: cheaper, not the trained model's probability), for
  window 16 and hidden 16 / 32 / 64, random weights.
- allocations inside the compiled per-tick call (numba's NRT counters, minus the argument unboxing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NRT_STATS", "1")  # allocation counters (before numba is imported)

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench_models import planted  # noqa: E402
from provenance import provenance  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from numba import njit  # noqa: E402
from numba.core.runtime import rtsys  # noqa: E402

from pipeline.models.base import make_model  # noqa: E402
from pipeline.models.compiled import CompiledEnsemble, export_ensemble, member_proba_batch  # noqa: E402
from pipeline.models.compiled.evaluators import (  # noqa: E402
    lstm_cell,
    lstm_project,
    lstm_push,
    lstm_window_proba,
    new_lstm_ring,
    sigmoid32,
)
from pipeline.models.ensemble import DEFAULT_WEIGHTS, Ensemble  # noqa: E402

KINDS = ("logistic", "forest", "xgb", "lstm")


def percentiles_us(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1e3
    return {"median_us": round(float(np.median(a)), 2), "p99_us": round(float(np.percentile(a, 99)), 2)}


def time_calls(call, rows: list, warmup: int = 200) -> dict[str, float]:
    for row in rows[:warmup]:
        call(row)
    times = []
    for row in rows:
        t0 = time.perf_counter_ns()
        call(row)
        times.append(time.perf_counter_ns() - t0)
    return percentiles_us(times)


def single_member(exported: dict, name: str) -> CompiledEnsemble:
    member = next(m for m in exported["header"]["members"] if m["name"] == name)
    header = {**exported["header"], "members": [{**member, "weight": 1.0}]}
    return CompiledEnsemble({"header": header, "arrays": {name: exported["arrays"][name]}})


# -- the LSTM design question: exact window vs carried state ----------------------------------------

@njit(cache=True, error_model="numpy")
def lstm_exact_run(mean, std, w_ih0, w_ih_upper, w_hh, b_ih, b_hh, head_w, head_b, calibration, window, X):
    ring, state = new_lstm_ring(window, w_hh.shape[1], w_hh.shape[0])
    total = 0.0
    for i in range(X.shape[0]):
        lstm_push(mean, std, w_ih0, b_ih[0], ring, state, X[i])
        total += lstm_window_proba(w_ih_upper, w_hh, b_ih, b_hh, head_w, head_b, calibration, ring, state)
    return total


@njit(cache=True, error_model="numpy")
def lstm_carried_run(mean, std, w_ih0, w_ih_upper, w_hh, b_ih, b_hh, head_w, head_b, X):
    """One cell step per layer per tick, h and c carried from the previous tick (not the trained model)."""
    layers, hidden, gates = w_hh.shape[0], w_hh.shape[1], w_hh.shape[2]
    h, c = np.zeros((layers, hidden), np.float32), np.zeros((layers, hidden), np.float32)
    inputs, work = np.zeros(gates, np.float32), np.zeros(gates, np.float32)
    total = 0.0
    for i in range(X.shape[0]):
        lstm_project(mean, std, w_ih0, b_ih[0], X[i], inputs)
        for layer in range(layers):
            if layer > 0:
                inputs[:] = b_ih[layer]
                for j in range(hidden):
                    for u in range(gates):
                        inputs[u] += h[layer - 1, j] * w_ih_upper[layer - 1, j, u]
            lstm_cell(inputs, w_hh[layer], b_hh[layer], h[layer], c[layer], work, i == 0)
        logit = np.float32(0.0)
        for u in range(hidden):
            logit += h[layers - 1, u] * head_w[u]
        total += sigmoid32(logit + head_b[0])
    return total


def lstm_costs(features: int, rows: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    out = []
    for hidden in (16, 32, 64):
        for layers in (1, 2):
            window, gates = 16, 4 * hidden
            w = {
                "mean": np.zeros(features), "std": np.ones(features),
                "w_ih0": (rng.normal(size=(features, gates)) / np.sqrt(features)).astype(np.float32),
                "w_ih_upper": (rng.normal(size=(layers - 1, hidden, gates)) / np.sqrt(hidden)).astype(np.float32),
                "w_hh": (rng.normal(size=(layers, hidden, gates)) / np.sqrt(hidden)).astype(np.float32),
                "b_ih": np.zeros((layers, gates), np.float32), "b_hh": np.zeros((layers, gates), np.float32),
                "head_w": rng.normal(size=hidden).astype(np.float32), "head_b": np.zeros(1, np.float32),
            }
            no_calibration = np.array([0.0, 1.0, 0.0, 0.0])
            exact = lambda: lstm_exact_run(*w.values(), no_calibration, window, X)  # noqa: E731
            carried = lambda: lstm_carried_run(*w.values(), X)  # noqa: E731
            row = {"window": window, "hidden": hidden, "layers": layers}
            for name, run in (("exact_window", exact), ("carried_state", carried)):
                run()
                best = min(_seconds(run) for _ in range(3))
                row[f"{name}_us_per_tick"] = round(best / rows * 1e6, 2)
            row["exact_over_carried"] = round(row["exact_window_us_per_tick"] / row["carried_state_us_per_tick"], 1)
            out.append(row)
            print("lstm", json.dumps(row), flush=True)
    return out


def _seconds(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--features", type=int, default=25)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "inference.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {**provenance(), "threads": 1}

    a = args.train_rows
    b = a + a // 4
    X, y = planted(b + a // 4, args.features)
    Xt = X[b:]
    members = {}
    for kind in KINDS:
        started = time.perf_counter()
        members[kind] = make_model(kind, seed=7).fit(X[:a], y[:a], X[a:b], y[a:b])
        print(kind, f"fitted in {time.perf_counter() - started:.1f} s", flush=True)
    ensemble = Ensemble(members, dict(DEFAULT_WEIGHTS))
    window = members["lstm"].params["window"]
    exported = export_ensemble(ensemble)
    compiled = CompiledEnsemble(exported)
    results["models"] = {
        "rows": {"train": a, "validation": b - a, "test": len(Xt)}, "features": args.features,
        "forest_nodes": int(len(exported["arrays"]["forest"]["nodes"])),
        "xgb_trees": int(len(exported["arrays"]["xgb"]["roots"])),
        "xgb_nodes": int(len(exported["arrays"]["xgb"]["nodes"])),
        "lstm": {k: members["lstm"].params[k] for k in ("window", "hidden", "layers")},
        "calibration": {k: m.calibrator.method for k, m in members.items()},
    }

    # fidelity over the test rows
    library = ensemble.member_probas(Xt)
    mine = compiled.member_proba_batch(Xt)
    compiled.proba_batch(Xt[:2])  # load the compiled batch function before the clock starts
    started = time.perf_counter()
    batch = compiled.proba_batch(Xt)
    compiled_batch_s = time.perf_counter() - started
    started = time.perf_counter()
    library_ensemble = ensemble.predict_proba(Xt)
    library_batch_s = time.perf_counter() - started
    results["fidelity_max_abs"] = {k: float(np.max(np.abs(mine[:, i] - library[:, i]))) for i, k in enumerate(KINDS)}
    results["fidelity_max_abs"]["ensemble"] = float(np.max(np.abs(batch - library_ensemble)))
    results["batch"] = {"rows": len(Xt), "ensemble": {"compiled_us_per_row": round(compiled_batch_s / len(Xt) * 1e6, 2),
                                                      "library_us_per_row": round(library_batch_s / len(Xt) * 1e6, 2)}}
    for kind in KINDS:
        arrays = exported["arrays"][kind]
        member_proba_batch(kind, arrays, Xt[:2])
        compiled_s = min(_seconds(lambda: member_proba_batch(kind, arrays, Xt)) for _ in range(2))
        library_s = min(_seconds(lambda: members[kind].predict_proba(Xt)) for _ in range(2))
        results["batch"][kind] = {"compiled_us_per_row": round(compiled_s / len(Xt) * 1e6, 2),
                                  "library_us_per_row": round(library_s / len(Xt) * 1e6, 2)}
    print("fidelity", json.dumps(results["fidelity_max_abs"]), "batch", json.dumps(results["batch"]), flush=True)

    # latency per tick
    rows = [np.ascontiguousarray(r) for r in Xt]
    windows = [np.ascontiguousarray(Xt[max(0, i - window + 1):i + 1]) for i in range(len(Xt))]
    latency = {"library": {}, "compiled": {}}
    for kind in ("logistic", "forest", "xgb"):
        latency["library"][kind] = time_calls(lambda r, m=members[kind]: m.predict_proba(r[None, :]), rows)
    latency["library"]["lstm"] = time_calls(lambda w: members["lstm"].predict_proba(w)[-1], windows)
    latency["library"]["ensemble"] = time_calls(lambda w: ensemble.predict_proba(w)[-1], windows[: len(windows) // 2])
    for kind in KINDS:
        alone = single_member(exported, kind)
        latency["compiled"][kind] = time_calls(alone.proba_tick, rows)
    compiled.reset()
    latency["compiled"]["ensemble"] = time_calls(compiled.proba_tick, rows)
    results["latency_per_tick"] = latency
    print("latency", json.dumps(latency), flush=True)

    # allocations inside the per-tick call: the NRT counters minus one per unboxed array argument
    before = rtsys.get_allocation_stats().alloc
    for r in rows[:1000]:
        compiled.proba_tick(r)
    per_call = (rtsys.get_allocation_stats().alloc - before) / 1000
    results["allocations_per_tick"] = {"nrt_allocs_per_call": per_call, "array_arguments": 9,
                                       "inside_the_kernel": per_call - 9}

    results["lstm_cost_per_tick"] = lstm_costs(args.features, rows=5000)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
