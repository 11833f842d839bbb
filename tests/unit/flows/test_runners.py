"""The scale-out settings: the `runner` section picks the flows' task runner, `schedule.work_pool`
turns served deployments into work-pool deployments named by module path. No server is started."""

from __future__ import annotations

import pytest
from prefect.deployments.runner import EntrypointType
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner

from flows.config import ProductConfig, RunnerConfig, ScheduleConfig, load_product_config
from flows.runners import prefect_api_url, task_runner
from flows.schedule import deploy_to_pool, deployments
from pipeline.errors import ConfigError


def test_the_default_is_todays_single_process_behaviour():
    config = ProductConfig()
    assert config.runner == RunnerConfig(kind="threads", dask_address=None, n_workers=2)
    assert config.schedule.work_pool is None
    runner = task_runner(config.runner, max_threads=3)
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3


def test_sequential_is_one_task_at_a_time():
    runner = task_runner(RunnerConfig(kind="sequential"), max_threads=8)
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 1


def test_dask_without_an_address_is_a_local_cluster_on_loopback_without_a_dashboard():
    from prefect_dask import DaskTaskRunner

    runner = task_runner(RunnerConfig(kind="dask", n_workers=3))
    assert isinstance(runner, DaskTaskRunner) and runner.address is None
    kwargs = runner.cluster_kwargs
    assert (kwargs["n_workers"], kwargs["threads_per_worker"], kwargs["host"]) == (3, 1, "127.0.0.1")
    assert kwargs["dashboard_address"] is None  # 8787 is the daemon's port


def test_dask_with_an_address_connects_to_that_scheduler():
    runner = task_runner(RunnerConfig(kind="dask", dask_address="tcp://10.0.0.5:8786"))
    assert runner.address == "tcp://10.0.0.5:8786" and runner.cluster_kwargs == {}


def test_local_cluster_workers_report_to_the_flows_prefect_api():
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert prefect_api_url() == "http://127.0.0.1:4200/api"
        runner = task_runner(RunnerConfig(kind="dask"))
        assert runner.cluster_kwargs["env"] == {"PREFECT_API_URL": "http://127.0.0.1:4200/api"}


def test_a_dask_address_without_kind_dask_is_refused_in_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("runner:\n  dask_address: tcp://scheduler:8786\n")
    with pytest.raises(ConfigError, match=r"runner: dask_address is set but kind is 'threads'") as info:
        load_product_config(path)
    assert "\n" not in str(info.value)
    path.write_text("runner:\n  kind: ray\n")
    with pytest.raises(ConfigError, match=r"runner\.kind"):
        load_product_config(path)


def test_pool_deployments_name_their_flows_by_module_path():
    config = ProductConfig(schedule=ScheduleConfig(work_pool="gpu-box", retrain_cron="0 */6 * * *"))
    ingest, retrain = deployments(config, "/etc/autoscalp/prod.yaml", EntrypointType.MODULE_PATH)
    # a worker imports the installed package: no checkout, no file path of this machine
    assert (ingest.entrypoint, retrain.entrypoint) == ("flows.ingest.ingest_flow", "flows.retrain.retrain_flow")
    assert retrain.parameters == {"config_path": "/etc/autoscalp/prod.yaml"}
    assert retrain.schedules[0].schedule.cron == "0 */6 * * *"
    served = deployments(config, None)[1]
    assert served.entrypoint.endswith("flows/retrain.py:retrain_flow")


def test_deploying_to_a_pool_needs_one():
    with pytest.raises(ValueError, match="schedule.work_pool is not set"):
        deploy_to_pool(ProductConfig(), None)


def test_schedule_to_a_pool_without_a_prefect_server_says_what_to_set(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    path = tmp_path / "c.yaml"
    path.write_text("schedule:\n  work_pool: retrain-pool\n")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        done = CliRunner().invoke(app, ["schedule", "--config", str(path)])
    assert done.exit_code == 2
    [line] = [line for line in done.output.splitlines() if line.startswith("error:")]
    assert "need a running Prefect server; set PREFECT_API_URL" in line
