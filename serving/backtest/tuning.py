"""Strategy parameter tuning ("self-adapting parameters"): an Optuna study over engine parameters
(spreads, thresholds, stops, trailing distances, leverage caps) scored by backtests on walk-forward
windows, and a held-back window that decides whether the result is adopted.

Cost: features and P(up) are pure functions of the data, computed once for the whole range
(signals.py); a trial replays only the engine and the simulated venue over the tuning windows. A
window is the range's events up to the window's end, trading from its first event: the features at
its start are warm from the events before it (the same arrays, the same indices), and each window
starts flat with the configured equity.

Overfitting: the best of N trials on the same windows is biased upwards (it was selected for being
best there), so its in-window score says little about new data. The gate: the best trial's
parameters and the incumbent's (the engine configuration given, which is also trial 0 of the study)
are both replayed on the held-back window, the latest, which no trial saw; the tuned parameters are
adopted only when they score more than ``min_improvement`` above the incumbent there, without a
liquidation or a drawdown beyond the engine's limit. The deflated Sharpe ratio of the best trial
(Bailey & López de Prado 2014, "The Deflated Sharpe Ratio", J. Portfolio Management 40(5)) is
reported beside it as a diagnostic only: the probability that its per-minute Sharpe ratio beats the
one the best of N trials would show by luck, given the trials' spread and the returns' skew and
kurtosis. It does not decide.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import optuna
import pyarrow.compute as pc
from pydantic import ValidationError
from scipy import stats

from pipeline.errors import AutoscalpError
from pipeline.training.tracking import git_sha
from serving.backtest.config import BacktestConfig, ParamRange, StrategyTuningConfig
from serving.backtest.data import ReplayData
from serving.backtest.runner import replay, run_config_hash
from serving.backtest.signals import Signals, compute_signals
from serving.config import EngineConfig
from serving.metrics import NS_PER_MINUTE, period_returns
from serving.venues.config import VenueConfig

PARAMS_TAG = "autoscalp.strategy_params"  # model version tag: JSON of the adopted dotted parameters
EULER_GAMMA = 0.5772156649015329
MAX_STARTUP_TRIALS = 10  # random trials before TPE models the good ones (a third of the budget, at most this)


class StrategyParamsError(AutoscalpError):
    """Engine parameters that name nothing in the engine config, or give an invalid one."""


class StrategyTuningError(AutoscalpError):
    """Too little data to cut into windows, or no trial that could be judged."""


# ---- parameters -------------------------------------------------------------------------------------


def _parent(raw: dict, path: str) -> tuple[dict, str]:
    """The dict holding ``path``'s value in a dumped engine config, and the value's key."""
    *parents, leaf = path.split(".")
    node: Any = raw
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict) or leaf not in node or isinstance(node[leaf], dict):
        raise StrategyParamsError(
            f"unknown engine parameter {path!r}: give the dotted path of one value of the engine config "
            "(e.g. market_making.min_half_spread_bps)"
        )
    return node, leaf


def value_at(engine_config: EngineConfig, path: str) -> Any:
    node, leaf = _parent(engine_config.model_dump(), path)
    return node[leaf]


def apply(engine_config: EngineConfig, params: Mapping[str, Any]) -> EngineConfig:
    """``engine_config`` with each dotted parameter set, validated as a whole: an unknown path or a
    refused value (out of its bounds, or breaking a rule across fields) is one clear line."""
    raw = engine_config.model_dump()
    for path, value in params.items():
        node, leaf = _parent(raw, path)
        node[leaf] = value
    try:
        return EngineConfig.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "engine"
        raise StrategyParamsError(f"engine parameter {where}: {error['msg']} (got {error.get('input')!r})") from None


def params_from_tags(tags: Mapping[str, str]) -> dict[str, Any]:
    """The adopted parameters a model version carries (``PARAMS_TAG``); {} when it has none."""
    text = tags.get(PARAMS_TAG)
    if not text:
        return {}
    try:
        params = json.loads(text)
    except json.JSONDecodeError:
        params = None
    if not isinstance(params, dict):
        raise StrategyParamsError(
            f"model version tag {PARAMS_TAG} is not a JSON object of dotted parameters: {text[:80]!r}"
        )
    return params


def check_space(engine_config: EngineConfig, space: Mapping[str, ParamRange]) -> dict[str, float | int]:
    """The incumbent's value of every searched parameter; fails before any replay when a path names
    nothing, is not a number, or a bound is refused by the engine config."""
    incumbent = {}
    for path, bounds in space.items():
        value = value_at(engine_config, path)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise StrategyParamsError(f"engine parameter {path!r} is {value!r}: only numbers can be tuned")
        low, high = _searched(bounds, value)
        if low > high:
            raise StrategyParamsError(f"engine parameter {path!r} is an integer: no integer in [{bounds.low:g}, {bounds.high:g}]")
        for bound in (low, high):
            apply(engine_config, {path: bound})
        incumbent[path] = value
    return incumbent


def _searched(bounds: ParamRange, incumbent: float | int) -> tuple[float, float] | tuple[int, int]:
    """The range searched: the integers in it for an integer parameter."""
    if isinstance(incumbent, int):
        return math.ceil(bounds.low), math.floor(bounds.high)
    return bounds.low, bounds.high


def suggest(trial: optuna.Trial, space: Mapping[str, ParamRange], incumbent: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for path, bounds in space.items():
        low, high = _searched(bounds, incumbent[path])
        if isinstance(incumbent[path], int):
            params[path] = trial.suggest_int(path, low, high, log=bounds.log)
        else:
            params[path] = trial.suggest_float(path, low, high, log=bounds.log)
    return params


# ---- windows ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    start: int  # index of its first event in the replay's events
    stop: int  # one past its last
    start_ns: int
    end_ns: int

    def to_json(self) -> dict:
        return {"start_ns": self.start_ns, "end_ns": self.end_ns, "events": self.stop - self.start}


def walk_forward_windows(data: ReplayData, tuning_windows: int) -> tuple[tuple[Window, ...], Window]:
    """``tuning_windows`` + 1 consecutive windows of equal event time over the replay's window: the
    tuning windows, and the latest one, held back."""
    count = tuning_windows + 1
    span = data.end_ns - data.start_ns
    edges_ns = [data.start_ns + span * k // count for k in range(count + 1)]
    inner = np.searchsorted(data.events.ts_ns, edges_ns[1:-1], side="left").tolist()
    index = [data.start, *inner, len(data.events)]
    windows = tuple(Window(index[k], index[k + 1], edges_ns[k], edges_ns[k + 1]) for k in range(count))
    empty = [k for k, w in enumerate(windows) if w.stop <= w.start]
    if empty:
        raise StrategyTuningError(
            f"window {empty[0] + 1} of {count} holds no events ({span / 60e9:.1f} min cut in {count}): "
            "tune on a longer range or with fewer windows"
        )
    return windows[:-1], windows[-1]


def window_data(data: ReplayData, window: Window) -> ReplayData:
    """The replay of one window: the events up to its end, trading from its start."""
    funding = data.funding
    if funding.num_rows:
        ts = funding.column("ts_ns")
        funding = funding.filter(pc.and_(pc.greater_equal(ts, window.start_ns), pc.less(ts, window.end_ns)))
    fingerprint = f"{data.fingerprint}[{window.start}:{window.stop}]"
    return replace(data, events=data.events.slice(0, window.stop), start=window.start, start_ns=window.start_ns,
                   end_ns=window.end_ns, funding=funding, fingerprint=fingerprint)  # fmt: skip


@dataclass(frozen=True)
class WindowRun:
    summary: dict  # serving.metrics.summarise
    minute_returns: np.ndarray  # equity returns per minute (the deflated Sharpe ratio's sample)


def run_window(data: ReplayData, window: Window, signals: Signals, engine_config: EngineConfig,
               venue_config: VenueConfig, config: BacktestConfig) -> WindowRun:  # fmt: skip
    run = replay(window_data(data, window), signals, engine_config, venue_config, config, f"window {window.start}")
    return WindowRun(run.summary, period_returns(run.ledger, NS_PER_MINUTE))


# ---- scores ----------------------------------------------------------------------------------------


def score(summaries: Sequence[dict], objective: str) -> float:
    """Summed net PnL (USDT) or mean Sharpe ratio over windows; a window without a value counts 0."""
    values = [float(v) if v is not None and math.isfinite(v) else 0.0 for v in (s.get(objective) for s in summaries)]
    return float(sum(values)) if objective == "net_pnl_usdt" else float(np.mean(values))


def breaches(summaries: Sequence[dict], max_drawdown_pct: float) -> tuple[int, float]:
    """(liquidations, worst drawdown beyond the limit in percentage points): feasible when both <= 0."""
    liquidations = sum(int(s.get("liquidations") or 0) for s in summaries)
    worst = max(float(s.get("max_drawdown_pct") or 0.0) for s in summaries)
    return liquidations, worst - max_drawdown_pct


def sharpe_stats(returns: np.ndarray) -> tuple[float, int, float, float]:
    """(Sharpe ratio per period, periods, skewness, kurtosis (normal = 3)) of a return series."""
    r = returns[np.isfinite(returns)]
    if len(r) < 3 or r.std(ddof=1) == 0:
        return 0.0, len(r), 0.0, 3.0
    return float(r.mean() / r.std(ddof=1)), len(r), float(stats.skew(r)), float(stats.kurtosis(r, fisher=False))


def deflated_sharpe(sharpe: float, trials: int, trials_sharpe_std: float, periods: int, skew: float,
                    kurtosis: float) -> float | None:  # fmt: skip
    """P(the true Sharpe ratio exceeds the best of ``trials`` unskilled ones), Bailey & López de Prado
    (2014): SR0 = std(SR_n) ((1 - g) Z^-1(1 - 1/N) + g Z^-1(1 - 1/(N e))), g Euler-Mascheroni, and
    DSR = Z((SR - SR0) sqrt(T - 1) / sqrt(1 - skew SR + (kurtosis - 1) / 4 SR^2)). Per-period units."""
    if trials < 2 or periods < 2:
        return None
    z = stats.norm.ppf
    sr0 = trials_sharpe_std * ((1 - EULER_GAMMA) * z(1 - 1 / trials) + EULER_GAMMA * z(1 - 1 / (trials * math.e)))
    spread = 1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe**2
    if spread <= 0:
        return None
    return float(stats.norm.cdf((sharpe - sr0) * math.sqrt(periods - 1) / math.sqrt(spread)))


def study_deflated_sharpe(trials: Sequence[optuna.trial.FrozenTrial], best: optuna.trial.FrozenTrial) -> float | None:
    """The best trial's deflated Sharpe ratio among the completed ``trials`` (per-minute returns)."""
    sharpes = [t.user_attrs["sharpe_stats"][0] for t in trials]
    sharpe, periods, skew, kurtosis = best.user_attrs["sharpe_stats"]
    spread = float(np.std(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0
    return deflated_sharpe(sharpe, len(trials), spread, int(periods), skew, kurtosis)


def judge_held_back(tuned: dict, incumbent: dict, changed: bool, config: StrategyTuningConfig,
                    max_drawdown_pct: float) -> tuple[bool, str]:  # fmt: skip
    """The gate on the held-back window's summaries: (adopt?, why)."""
    if not changed:
        return False, "the incumbent was the best trial: nothing to adopt"
    mine, theirs = score([tuned], config.objective), score([incumbent], config.objective)
    liquidations, over = breaches([tuned], max_drawdown_pct)
    if liquidations > 0 or over > 0:
        return False, (f"tuned parameters breach a limit on the held-back window ({liquidations} liquidation(s), "
                       f"drawdown {over + max_drawdown_pct:.2f} % vs limit {max_drawdown_pct:g} %): incumbent kept")  # fmt: skip
    if any(v > 0 for v in breaches([incumbent], max_drawdown_pct)):
        return True, "the incumbent breaches a limit on the held-back window, the tuned parameters do not: adopted"
    versus = f"incumbent {theirs:+.4g} + {config.min_improvement:g}"
    if mine > theirs + config.min_improvement:
        return True, f"held-back {config.objective}: tuned {mine:+.4g} > {versus}: adopted"
    return False, f"held-back {config.objective}: tuned {mine:+.4g} <= {versus}: incumbent kept"


# ---- the study -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrategyTuning:
    objective: str
    params: dict[str, Any]  # the best trial's dotted parameters (adopted or not)
    incumbent: dict[str, Any]  # the given engine config's values of the same parameters
    adopted: bool
    reason: str
    in_window: dict[str, float | None]  # {"tuned", "incumbent"}: score over the tuning windows
    held_back: dict[str, float]  # {"tuned", "incumbent"}: score on the held-back window (the gate)
    held_back_summaries: dict[str, dict]
    windows: tuple[Window, ...]
    held_back_window: Window
    trials: dict[str, int]  # run, complete, feasible, failed
    best_trial: int
    deflated_sharpe: float | None  # diagnostic, not the gate
    history: tuple[dict, ...]  # per trial: number, score, feasible, window scores, params
    seconds: dict[str, float]
    provenance: dict

    @property
    def adopted_params(self) -> dict[str, Any]:
        return dict(self.params) if self.adopted else {}

    def to_json(self) -> dict:
        return {
            "objective": self.objective, "adopted": self.adopted, "reason": self.reason, "params": self.params,
            "incumbent": self.incumbent, "in_window": self.in_window, "held_back": self.held_back,
            "held_back_summaries": self.held_back_summaries, "windows": [w.to_json() for w in self.windows],
            "held_back_window": self.held_back_window.to_json(), "trials": self.trials, "best_trial": self.best_trial,
            "deflated_sharpe": self.deflated_sharpe, "history": list(self.history), "seconds": self.seconds,
            "provenance": self.provenance,
        }  # fmt: skip


def tune_strategies(data: ReplayData, ensemble: Any, stride: int, engine_config: EngineConfig,
                    venue_config: VenueConfig, backtest_config: BacktestConfig, tuning_config: StrategyTuningConfig,
                    progress: Callable[[int], None] | None = None) -> StrategyTuning:  # fmt: skip
    """Tune ``tuning_config.space`` on the tuning windows, then gate the best on the held-back one."""
    t0 = time.perf_counter()
    cfg = tuning_config
    windows, held_back = walk_forward_windows(data, cfg.windows)
    incumbent = check_space(engine_config, cfg.space)
    signals = compute_signals(data.events, tuple(engine_config.features.model_dump().values()), ensemble, stride)
    t1 = time.perf_counter()
    max_dd = engine_config.risk.max_drawdown_pct

    def objective(trial: optuna.Trial) -> float:
        engine = apply(engine_config, suggest(trial, cfg.space, incumbent))
        runs = [run_window(data, w, signals, engine, venue_config, backtest_config) for w in windows]
        summaries = [run.summary for run in runs]
        liquidations, over = breaches(summaries, max_dd)
        trial.set_constraint("liquidations", liquidations)
        trial.set_constraint("drawdown_over_limit_pct", over)
        sharpe, periods, skew, kurtosis = sharpe_stats(np.concatenate([run.minute_returns for run in runs]))
        trial.set_user_attr("window_scores", [score([s], cfg.objective) for s in summaries])
        trial.set_user_attr("sharpe_stats", [sharpe, periods, skew, kurtosis])
        return score(summaries, cfg.objective)

    startup = max(1, min(MAX_STARTUP_TRIALS, cfg.trials // 3))
    sampler = optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=startup)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    callbacks = [lambda _study, trial: progress(trial.number + 1)] if progress is not None else []
    with warnings.catch_warnings():
        # An incumbent outside the searched range is still trial 0 (Optuna warns, and keeps it).
        warnings.filterwarnings("ignore", message="Fixed parameter", category=UserWarning)
        study.enqueue_trial(incumbent)
        # An invalid combination of values (a rule across fields) fails its trial, not the study.
        study.optimize(objective, n_trials=cfg.trials, catch=(StrategyParamsError,), callbacks=callbacks)
    t2 = time.perf_counter()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    feasible = [t for t in complete if all(v <= 0 for v in t.constraints.values())]
    if not feasible:
        raise StrategyTuningError(
            f"none of {len(study.trials)} trials was feasible (each had a liquidation or a drawdown beyond "
            f"{max_dd:g} %), the incumbent's included: widen the search space or check the engine's risk limits"
        )
    best = study.best_trial
    first = study.trials[0]
    changed = best.number != 0 and best.params != first.params
    summaries = {name: run_window(data, held_back, signals, engine, venue_config, backtest_config).summary
                 for name, engine in (("tuned", apply(engine_config, best.params)), ("incumbent", engine_config))}
    adopted, reason = judge_held_back(summaries["tuned"], summaries["incumbent"], changed, cfg, max_dd)
    t3 = time.perf_counter()
    feasible_numbers = {t.number for t in feasible}
    history = tuple(
        {"number": t.number, "score": t.value, "feasible": t.number in feasible_numbers, "state": t.state.name,
         "window_scores": t.user_attrs.get("window_scores"), "params": t.params}
        for t in study.trials
    )  # fmt: skip
    return StrategyTuning(
        objective=cfg.objective,
        params=dict(best.params),
        incumbent=incumbent,
        adopted=adopted,
        reason=reason,
        in_window={"tuned": float(best.value), "incumbent": first.value},
        held_back={k: score([s], cfg.objective) for k, s in summaries.items()},
        held_back_summaries=summaries,
        windows=windows,
        held_back_window=held_back,
        trials={"run": len(study.trials), "complete": len(complete), "feasible": len(feasible),
                "failed": len(study.trials) - len(complete)},  # fmt: skip
        best_trial=best.number,
        deflated_sharpe=study_deflated_sharpe(complete, best),
        history=history,
        seconds={"signals_s": t1 - t0, "study_s": t2 - t1, "per_trial_s": (t2 - t1) / max(len(study.trials), 1),
                 "held_back_s": t3 - t2, "total_s": time.perf_counter() - t0},  # fmt: skip
        provenance={"symbol": data.symbol, "exchange": data.exchange, "start_ns": data.start_ns, "end_ns": data.end_ns,
                    "data_fingerprint": data.fingerprint, "stride": stride, "code_version": git_sha(),
                    "incumbent_config_hash": run_config_hash(engine_config, venue_config, backtest_config, stride),
                    "tuning": cfg.model_dump(mode="json")},  # fmt: skip
    )
