"""Strategy tuning: seeded and repeatable, the held-back window unseen by the study and deciding
adoption, parameters applied by dotted path with clear errors, and the adopted ones travelling with
the model version (tag -> backtest)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import optuna
import pytest

from pipeline.config import QualityConfig, SyntheticSourceConfig, TrackingConfig
from pipeline.data.ingest import ingest
from pipeline.data.sources.synthetic import SyntheticSource
from pipeline.data.store import TickStore
from pipeline.training import aliases, tracking
from pipeline.training.registry import log_ensemble, register_challenger
from serving.backtest import evaluation, tuning
from serving.backtest.config import BacktestConfig, ParamRange, PromotionGate, StrategyTuningConfig
from serving.backtest.data import load_replay, store_range
from serving.backtest.runner import run_config_hash
from serving.backtest.tuning import PARAMS_TAG, StrategyParamsError, WindowRun, apply, tune_strategies, value_at
from serving.config import EngineConfig
from serving.venues.config import VenueConfig

from .conftest import STRIDE, SYMBOL

optuna.logging.set_verbosity(optuna.logging.WARNING)
BACKTEST = BacktestConfig(warmup_s=1e6)
SPREAD = "market_making.min_half_spread_bps"
SMALL = StrategyTuningConfig(trials=5, windows=3, seed=11, space={
    SPREAD: ParamRange(low=0.5, high=6.0, log=True),
    "market_making.vol_spread_mult": ParamRange(low=2.0, high=20.0),
    "market_making.trailing.tick_mult": ParamRange(low=1.5, high=8.0),
    "leverage.adaptive_base": ParamRange(low=1.0, high=8.0),
})  # fmt: skip


@pytest.fixture(scope="module")
def long_store(tmp_path_factory) -> TickStore:
    """~80 minutes of ticks: the engine's slowest feature (volume spike) is warm after ~25."""
    store = TickStore(tmp_path_factory.mktemp("long"))
    ingest(SyntheticSource(SyntheticSourceConfig(seed=5, ticks=120_000), (SYMBOL,)), store, QualityConfig())
    return store


@pytest.fixture(scope="module")
def fit_end_ns(long_store) -> int:
    first, last = store_range(long_store, "synthetic", SYMBOL)
    return first + (last - first) * 2 // 5


@pytest.fixture(scope="module")
def data(long_store, fit_end_ns):
    _, last = store_range(long_store, "synthetic", SYMBOL)
    return load_replay(long_store, "synthetic", SYMBOL, fit_end_ns + 1, last + 1, BACKTEST.warmup_s)


def tune(data, ensemble, config: StrategyTuningConfig = SMALL, engine: EngineConfig | None = None):
    return tune_strategies(data, ensemble, STRIDE, engine or EngineConfig(), VenueConfig(), BACKTEST, config)


@pytest.fixture(scope="module")
def spied(data, ensemble):
    """One real study, with every replay's event range recorded in call order."""
    calls: list[tuple[int, int]] = []
    real = tuning.replay

    def spy(window, *args, **kwargs):
        calls.append((window.start, len(window.events)))
        return real(window, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tuning, "replay", spy)
        result = tune(data, ensemble)
    return result, calls


# ---- parameters -------------------------------------------------------------------------------------


def test_apply_sets_dotted_parameters_and_leaves_the_rest():
    base = EngineConfig()
    tuned = apply(base, {SPREAD: 3.5, "momentum_breakout.trailing.momentum_bps": 12.0})
    assert value_at(tuned, SPREAD) == 3.5 and tuned.momentum_breakout.trailing.momentum_bps == 12.0
    assert base.market_making.min_half_spread_bps == 2.0  # frozen: a new config, not an edit
    assert tuned.model_copy(update={"market_making": base.market_making, "momentum_breakout": base.momentum_breakout}) == base


@pytest.mark.parametrize("path", ["market_making.min_half_spread", "market_making", "nope.stop_loss_bps", "risk.x.y"])
def test_apply_rejects_unknown_paths_with_one_line(path):
    with pytest.raises(StrategyParamsError, match="unknown engine parameter") as caught:
        apply(EngineConfig(), {path: 1.0})
    assert path in str(caught.value) and "\n" not in str(caught.value)


def test_apply_rejects_refused_values_naming_the_parameter():
    with pytest.raises(StrategyParamsError, match=r"^engine parameter mean_reversion\.model_edge: .*0\.7") as caught:
        apply(EngineConfig(), {"mean_reversion.model_edge": 0.7})
    assert "\n" not in str(caught.value)
    with pytest.raises(StrategyParamsError, match="regime"):  # a rule across fields
        apply(EngineConfig(), {"regime.vol_ratio_exit": 3.0})


def test_a_bad_search_space_fails_before_any_replay(data, monkeypatch):
    monkeypatch.setattr(tuning, "compute_signals", lambda *a, **k: pytest.fail("replayed before checking the space"))
    for space, match in (({"market_making.spread": ParamRange(low=1, high=2)}, "unknown engine parameter"),
                         ({"mean_reversion.model_edge": ParamRange(low=0.1, high=0.9)}, "less than 0.5"),
                         ({"leverage.mode": ParamRange(low=1, high=2)}, "only numbers"),
                         ({"regime.confirm_ticks": ParamRange(low=1.2, high=1.8)}, "no integer")):  # fmt: skip
        with pytest.raises(StrategyParamsError, match=match):
            tune(data, None, SMALL.model_copy(update={"space": space}))


def test_the_tag_round_trips_and_a_malformed_one_is_refused():
    assert tuning.params_from_tags({}) == {}
    assert tuning.params_from_tags({PARAMS_TAG: '{"a.b": 1.5}'}) == {"a.b": 1.5}
    with pytest.raises(StrategyParamsError, match=PARAMS_TAG):
        tuning.params_from_tags({PARAMS_TAG: "[1, 2]"})


# ---- windows and the study ---------------------------------------------------------------------------


def test_windows_are_consecutive_and_the_last_is_held_back(data, spied):
    result, _ = spied
    windows = (*result.windows, result.held_back_window)
    assert len(result.windows) == SMALL.windows
    assert windows[0].start == data.start and windows[0].start_ns == data.start_ns
    assert windows[-1].stop == len(data.events) and windows[-1].end_ns == data.end_ns
    for before, after in zip(windows, windows[1:]):
        assert before.stop == after.start and before.end_ns == after.start_ns
        assert after.stop > after.start
        assert data.events.ts_ns[after.start] >= after.start_ns > data.events.ts_ns[after.start - 1]


def test_the_study_never_replays_the_held_back_window(spied):
    result, calls = spied
    held = result.held_back_window
    study_calls = calls[: result.trials["run"] * len(result.windows)]
    assert set(study_calls) == {(w.start, w.stop) for w in result.windows}
    assert all(stop <= held.start for _, stop in study_calls)  # no event of the held-back window, even as warm-up
    assert calls[len(study_calls):] == [(held.start, held.stop)] * 2  # the gate: tuned, then incumbent


def test_the_incumbent_is_trial_zero_and_the_report_is_complete(spied):
    result, _ = spied
    assert result.history[0]["params"] == result.incumbent == {p: value_at(EngineConfig(), p) for p in SMALL.space}
    assert result.in_window["incumbent"] == result.history[0]["score"]
    assert result.in_window["tuned"] == max(h["score"] for h in result.history if h["feasible"])
    assert result.trials == {"run": 5, "complete": 5, "feasible": 5, "failed": 0}
    assert result.adopted == (result.reason.endswith("adopted"))
    assert result.deflated_sharpe is None or 0.0 <= result.deflated_sharpe <= 1.0
    assert result.seconds["per_trial_s"] > 0 and set(result.held_back) == {"tuned", "incumbent"}
    assert any(h["score"] != 0 for h in result.history)  # the windows trade: the study had something to compare


def test_the_same_seed_gives_the_same_study(data, ensemble, spied):
    first, _ = spied
    again = tune(data, ensemble)
    assert again.params == first.params and again.best_trial == first.best_trial
    assert [h["score"] for h in again.history] == [h["score"] for h in first.history]
    assert again.held_back == first.held_back and again.adopted == first.adopted
    other = tune(data, ensemble, SMALL.model_copy(update={"seed": 12}))
    assert [h["params"] for h in other.history[1:]] != [h["params"] for h in first.history[1:]]


# ---- the gate, on scripted outcomes ---------------------------------------------------------------


def scripted(held_back_sign: float, liquidate_above: float = np.inf):
    """Each window's net PnL is +spread in the tuning windows (the study wants wide spreads) and
    ``held_back_sign`` x spread on the held-back one; a spread above ``liquidate_above`` liquidates."""

    def run_window(data, window, signals, engine_config, venue_config, config):
        spread = engine_config.market_making.min_half_spread_bps
        held = window.stop == len(data.events)
        summary = {"net_pnl_usdt": (held_back_sign if held else 1.0) * spread, "sharpe": None,
                   "max_drawdown_pct": 0.1, "liquidations": int(spread > liquidate_above)}  # fmt: skip
        return WindowRun(summary, np.random.default_rng(int(spread * 1e6)).normal(0, 1e-4, 30))

    return run_window


ONE_PARAM = StrategyTuningConfig(trials=6, windows=2, seed=3, space={SPREAD: ParamRange(low=0.5, high=8.0)})


def test_the_gate_keeps_the_incumbent_when_the_tuned_parameters_lose_held_back(data, monkeypatch):
    monkeypatch.setattr(tuning, "run_window", scripted(held_back_sign=-1.0))
    result = tune(data, None, ONE_PARAM)
    assert result.params[SPREAD] > 2.0 and result.in_window["tuned"] > result.in_window["incumbent"]
    assert result.held_back["tuned"] < result.held_back["incumbent"]
    assert not result.adopted and result.adopted_params == {} and "incumbent kept" in result.reason


def test_the_gate_adopts_when_the_tuned_parameters_win_held_back(data, monkeypatch):
    monkeypatch.setattr(tuning, "run_window", scripted(held_back_sign=+1.0))
    result = tune(data, None, ONE_PARAM)
    assert result.held_back["tuned"] > result.held_back["incumbent"]
    assert result.adopted and result.adopted_params == result.params
    raised = ONE_PARAM.model_copy(update={"min_improvement": 100.0})
    assert not tune(data, None, raised).adopted  # a margin it does not clear


def test_a_liquidating_trial_is_never_the_best(data, monkeypatch):
    monkeypatch.setattr(tuning, "run_window", scripted(held_back_sign=+1.0, liquidate_above=4.0))
    result = tune(data, None, ONE_PARAM)
    infeasible = [h for h in result.history if not h["feasible"]]
    assert infeasible and all(h["params"][SPREAD] > 4.0 for h in infeasible)
    assert result.params[SPREAD] <= 4.0
    assert result.trials["feasible"] == len(result.history) - len(infeasible)


def test_integer_parameters_are_searched_over_integers_and_an_unchanged_best_is_not_adopted(data, monkeypatch):
    monkeypatch.setattr(tuning, "run_window", scripted(held_back_sign=+1.0))  # PnL ignores confirm_ticks
    result = tune(data, None, ONE_PARAM.model_copy(update={"space": {"regime.confirm_ticks": ParamRange(low=5, high=40)}}))
    assert all(type(h["params"]["regime.confirm_ticks"]) is int for h in result.history)
    assert result.best_trial == 0 and not result.adopted and "nothing to adopt" in result.reason


def test_the_deflated_sharpe_ratio_matches_the_paper():
    # Bailey & López de Prado (2014), numerical example: annualised SR 2.5 over 5 years of daily
    # returns, 100 trials with annualised SR variance 0.5, skew -3, kurtosis 10 -> DSR 0.9004.
    dsr = tuning.deflated_sharpe(2.5 / np.sqrt(250), 100, np.sqrt(0.5 / 250), 1250, -3.0, 10.0)
    assert dsr == pytest.approx(0.9004, abs=1e-4)
    assert tuning.deflated_sharpe(0.1, 1, 0.0, 100, 0.0, 3.0) is None


# ---- the registry: parameters travel with the version ------------------------------------------------


@pytest.fixture()
def version(home, ensemble, fit_end_ns) -> aliases.VersionInfo:
    import mlflow

    _, experiment_id = tracking.connect(TrackingConfig())  # artefacts under the home, not ./mlruns
    tags = {"autoscalp.fit_end_ns": str(fit_end_ns), "autoscalp.sampling": f"quote/{STRIDE}"}
    with mlflow.start_run(experiment_id=experiment_id) as run, tempfile.TemporaryDirectory() as tmp:
        directory = ensemble.save(Path(tmp) / "ensemble")
        info = log_ensemble(directory, ensemble, np.zeros((2, len(ensemble.feature_names))), {})
        registered = register_challenger(info.model_uri, SYMBOL, tags, run.info.run_id)
    return aliases.resolve(SYMBOL, str(registered.version))


def configs() -> evaluation.Configs:
    return evaluation.Configs(EngineConfig(), VenueConfig(), BACKTEST, PromotionGate(), TrackingConfig(), STRIDE)


def test_adopted_parameters_are_logged_tagged_and_used_by_backtests(version, long_store, fit_end_ns, monkeypatch):
    import mlflow

    monkeypatch.setattr(tuning, "judge_held_back", lambda *a, **k: (True, "adopted by the test"))
    small = SMALL.model_copy(update={"trials": 3})
    result, info = evaluation.tune_version(long_store, SYMBOL, "challenger", None, None, configs(), small)
    assert info.version == version.version and result.provenance["start_ns"] == fit_end_ns + 1  # unseen data only
    run_id = evaluation.log_strategy_tuning(result, SYMBOL, info, TrackingConfig())

    run = mlflow.get_run(run_id)
    assert run.data.tags["autoscalp.kind"] == "strategy_tuning" and run.data.tags["autoscalp.adopted"] == "true"
    assert float(run.data.params[f"tuned.{SPREAD}"]) == pytest.approx(result.params[SPREAD])
    assert run.data.metrics["held_back_tuned"] == pytest.approx(result.held_back["tuned"])
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "strategy")}
    assert artifacts == {"strategy/params.json", "strategy/tuning.json"}

    tagged = aliases.resolve(SYMBOL, str(version.version))
    assert tuning.params_from_tags(tagged.tags) == result.params
    assert tagged.tags["autoscalp.strategy_tuning_run"] == run_id
    engine = evaluation.engine_for(tagged, EngineConfig())
    assert engine == apply(EngineConfig(), result.params) and evaluation.engine_for(None, EngineConfig()) == EngineConfig()

    backtest, _ = evaluation.backtest_version(long_store, SYMBOL, "challenger", fit_end_ns + 1, None, configs(),
                                              baselines=False)  # fmt: skip
    assert backtest.provenance["strategy_params"] == result.params
    assert backtest.provenance["config_hash"] == run_config_hash(engine, VenueConfig(), BACKTEST, STRIDE)


def test_rejected_parameters_leave_the_version_untouched(version, long_store, monkeypatch):
    import mlflow

    monkeypatch.setattr(tuning, "judge_held_back", lambda *a, **k: (False, "incumbent kept by the test"))
    result, info = evaluation.tune_version(long_store, SYMBOL, "challenger", None, None, configs(),
                                           SMALL.model_copy(update={"trials": 2}))  # fmt: skip
    run_id = evaluation.log_strategy_tuning(result, SYMBOL, info, TrackingConfig())
    assert mlflow.get_run(run_id).data.tags["autoscalp.adopted"] == "false"
    assert PARAMS_TAG not in aliases.resolve(SYMBOL, str(version.version)).tags
    backtest, _ = evaluation.backtest_version(long_store, SYMBOL, "challenger", None, None, configs(), baselines=False)
    assert backtest.provenance["strategy_params"] is None


def test_the_cli_tunes_a_version_and_reports_the_gate(version, long_store, tmp_path):
    import json

    from typer.testing import CliRunner

    from flows.cli import app

    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{store_dir: {long_store.root}}}\nbacktest: {{warmup_s: 1000000.0}}\n"
                      "features: {sampling: {stride: 10}}\n"  # fmt: skip
                      "strategy_tuning: {windows: 2, space: {market_making.min_half_spread_bps: {low: 1.0, high: 4.0}}}\n")
    runner = CliRunner()
    out = runner.invoke(app, ["tune-strategy", "-c", str(config), "--model", "challenger", "--trials", "3", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["model"]["version"] == version.version and report["trials"]["run"] == 3
    assert report["tagged"] == report["adopted"] and report["mlflow_run_id"]
    table = runner.invoke(app, ["tune-strategy", "-c", str(config), "-m", str(version.version), "--trials", "2", "--no-mlflow"])
    assert table.exit_code == 0, table.output
    assert "held-back" in table.stdout and ("adopted" in table.stdout) and "deflated Sharpe" in table.stdout
    bad = runner.invoke(app, ["tune-strategy", "-c", str(config), "--model", "champion"])
    assert bad.exit_code == 2 and "no alias @champion" in bad.output
