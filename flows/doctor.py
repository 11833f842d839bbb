"""``autoscalp doctor``: checks an installation and says what to fix.

Each check is ok, warn or fail with one line of detail and, unless ok, one line saying what to do;
any fail exits 1. Secrets are only ever reported as present or missing, never shown.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import tomllib
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import import_module, metadata
from pathlib import Path

import typer
from rich.table import Table

from flows._cli_common import ConfigOption, JsonOption, stdout

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
TIMEOUT_S = 3.0
# numba functions called from Python on the feature and serving paths: each has its own cache entry
# (kernels they call are compiled into them, so those never get one of their own).
CACHED_ENTRY_POINTS = ("pipeline.features.step:step", "pipeline.features.step:run_batch",
                       "pipeline.features.l2book:apply_update", "serving.runtime.model:gather_row")  # fmt: skip
OK, WARN, FAIL = "ok", "warn", "fail"
STYLE = {OK: "green", WARN: "yellow", FAIL: "red"}


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def run_checks(config_path: Path | None, live: bool = False) -> list[Check]:
    """Every check, in the order a user fixes them (a config that does not load skips those needing it)."""
    checks = [_guard("python", python_version), _guard("packages", pinned_packages),
              _guard("AUTOSCALP_HOME", home_writable)]  # fmt: skip
    config_check, config = load_config(config_path)
    checks.append(config_check)
    if config is not None:
        checks += [_guard("store dirs", lambda: store_dirs(config)), _guard("mlflow", lambda: mlflow_store(config)),
                   _guard("credentials", lambda: credentials(config, live))]  # fmt: skip
    checks += [_guard("prefect", prefect_api), _guard("numba cache", numba_cache), _guard("shared data", shared_data)]
    return checks


def _guard(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 (a broken check must not hide the others)
        return Check(name, FAIL, f"the check itself failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                     "report this with the output of `autoscalp -v doctor`")  # fmt: skip


# ---- the checks ---------------------------------------------------------------------------------


def python_version() -> Check:
    need = _pyproject().get("project", {}).get("requires-python", ">=3.11")
    from packaging.specifiers import SpecifierSet

    have = ".".join(map(str, sys.version_info[:3]))
    if SpecifierSet(need).contains(have):
        return Check("python", OK, f"{have} at {sys.executable}")
    return Check("python", FAIL, f"{have}, the project needs {need}", f"create the venv with a Python {need}")


def pinned_packages() -> Check:
    """The dependencies of pyproject.toml (the installed metadata when the source tree is absent)."""
    from packaging.requirements import Requirement

    raw = _pyproject().get("project", {}).get("dependencies")
    source = "pyproject.toml"
    if raw is None:
        raw, source = metadata.requires("autoscalp") or [], "the installed autoscalp metadata"
    missing, wrong = [], []
    for line in raw:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra (test) is not part of an installation
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(str(req))
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            wrong.append(f"{req.name} {version} (needs {req.specifier})")
    if missing or wrong:
        problems = [f"missing {m}" for m in missing] + wrong
        return Check("packages", FAIL, "; ".join(problems), f"{sys.executable} -m pip install -e {REPO} "
                     "(torch first on its own: see the Makefile)")  # fmt: skip
    return Check("packages", OK, f"{len(raw)} requirements of {source} satisfied")


def home_writable() -> Check:
    from pipeline.home import autoscalp_home

    root = autoscalp_home().root
    problem = _writable_problem(root)
    if problem:
        return Check("AUTOSCALP_HOME", FAIL, f"{root}: {problem}",
                     "set AUTOSCALP_HOME to a writable directory (or fix its permissions)")  # fmt: skip
    return Check("AUTOSCALP_HOME", OK, f"{root} is writable" + ("" if root.exists() else " (created on first use)"))


def load_config(path: Path | None) -> tuple[Check, object | None]:
    from flows.config import load_product_config
    from pipeline.config import CONFIG_ENV
    from pipeline.errors import ConfigError

    shown = path or os.environ.get(CONFIG_ENV) or "built-in defaults"
    try:
        config = load_product_config(path)
    except ConfigError as exc:
        return Check("config", FAIL, str(exc), "fix the key named above; `autoscalp config reference` lists them all"), None
    return Check("config", OK, f"valid: {shown} ({len(config.symbols)} symbol(s), serve broker {config.serve.broker})"), config


def store_dirs(config) -> Check:  # noqa: ANN001 (ProductConfig)
    dirs = {"data.store_dir": config.data.store_dir, "features.store_dir": config.features.store_dir}
    problems = [f"{key} {value}: {p}" for key, value in dirs.items() if value and (p := _writable_problem(Path(value)))]
    if problems:
        return Check("store dirs", FAIL, "; ".join(problems), "point the key at a writable directory (or null)")
    named = [f"{k} {v}" for k, v in dirs.items() if v]
    return Check("store dirs", OK, ", ".join(named) + " writable" if named else "under AUTOSCALP_HOME")


def mlflow_store(config) -> Check:  # noqa: ANN001
    from pipeline.training import tracking

    uri = tracking.tracking_uri(config.training.tracking)
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            problem = _writable_problem(path.parent)
            if problem:
                return Check("mlflow", FAIL, f"{uri}: {path.parent}: {problem}", "set training.tracking.uri or MLFLOW_TRACKING_URI")
            return Check("mlflow", OK, f"{uri} (not created yet: the first `autoscalp train` creates it)")
    try:
        tracking.check_reachable(uri)
        from mlflow import MlflowClient

        experiments = MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=5)
    except Exception as exc:  # noqa: BLE001 (any store error is the finding)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "upgrade" in first.lower():
            fix = f"upgrade the store: mlflow db upgrade {uri}"
        elif uri.startswith("sqlite:///"):
            fix = f"move {uri.removeprefix('sqlite:///')} aside (a new store is created) or restore it from a backup"
        else:
            fix = "start the tracking server or fix training.tracking.uri / MLFLOW_TRACKING_URI"
        return Check("mlflow", FAIL, f"{uri}: {first}", fix)
    return Check("mlflow", OK, f"{uri} opens ({len(experiments)} experiment(s))")


def prefect_api() -> Check:
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        return Check("prefect", OK, "PREFECT_API_URL not set: flow runs start a temporary local server")
    try:
        with urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=TIMEOUT_S) as response:
            response.read()
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        return Check("prefect", FAIL, f"{api} does not answer ({reason})",
                     "start it (`prefect server start`, `autoscalp up`) or unset PREFECT_API_URL")  # fmt: skip
    return Check("prefect", OK, f"{api} answers")


def credentials(config, live: bool) -> Check:  # noqa: ANN001
    """Present or missing, by variable name only: a value is never shown."""
    from pipeline.config import Credentials

    exchange = config.exchange.id
    creds = Credentials.from_env(exchange)
    live = live or config.serve.broker == "live"
    names = f"AUTOSCALP_{exchange.upper()}_API_KEY / _API_SECRET (or AUTOSCALP_API_KEY / AUTOSCALP_API_SECRET)"
    have = [n for n, v in (("API key", creds.api_key), ("API secret", creds.api_secret)) if v is not None]
    if live and not creds.complete:
        missing = [n for n in ("API key", "API secret") if n not in have]
        return Check("credentials", FAIL, f"live trading on {exchange}: {' and '.join(missing)} missing",
                     f"export {names} in the daemon's environment (never in YAML)")  # fmt: skip
    if live:
        return Check("credentials", OK, f"{exchange} API key and secret present (live)")
    return Check("credentials", OK, f"paper mode: no keys needed ({', '.join(have) or 'none'} present)")


def numba_cache() -> Check:
    cold = []
    for entry in CACHED_ENTRY_POINTS:
        module, _, name = entry.partition(":")
        try:
            dispatcher = getattr(import_module(module), name)
            # numba's own index: empty when nothing was cached or the source changed since
            if not dispatcher._cache._cache_file._load_index():
                cold.append(entry)
        except Exception as exc:  # noqa: BLE001 (numba internals or a renamed kernel)
            return Check("numba cache", WARN, f"cannot inspect {entry}: {type(exc).__name__}: {exc}",
                         "update CACHED_ENTRY_POINTS in flows/doctor.py")  # fmt: skip
    if cold:
        return Check("numba cache", WARN, f"{len(cold)}/{len(CACHED_ENTRY_POINTS)} kernels not compiled yet: {', '.join(cold)}",
                     "run `autoscalp features build` and a short `autoscalp serve --duration 30` once; "
                     "otherwise the first run compiles them (tens of seconds)")  # fmt: skip
    return Check("numba cache", OK, f"{len(CACHED_ENTRY_POINTS)} kernel entry points cached")


def shared_data() -> Check:
    path = os.environ.get("AUTOSCALP_SHARED_DATA")
    if not path:
        return Check("shared data", OK, "AUTOSCALP_SHARED_DATA not set (only the real-data tests use it)")
    if not (Path(path) / "README.md").is_file():
        return Check("shared data", FAIL, f"AUTOSCALP_SHARED_DATA={path} holds no README.md (not the shared data dir)",
                     "point it at the shared data directory or unset it")  # fmt: skip
    return Check("shared data", OK, f"{path}")


# ---- helpers ------------------------------------------------------------------------------------


def _pyproject() -> dict:
    if not PYPROJECT.is_file():
        return {}
    with PYPROJECT.open("rb") as handle:
        return tomllib.load(handle)


def _writable_problem(directory: Path) -> str | None:
    """Why files cannot be created in ``directory`` or, when it does not exist yet, in the nearest
    directory above it that does (nothing is created but a probe file, removed at once); None when
    they can. A real write, not os.access: it answers for root and read-only mounts too."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".doctor-"):
            pass
    except OSError as exc:
        return f"cannot write in {existing} ({exc.strerror or type(exc).__name__})"
    return None


# ---- the command --------------------------------------------------------------------------------


def doctor_command(
    config: ConfigOption = None,
    live: bool = typer.Option(False, "--live", help="Check as for live trading (exchange keys required)."),
    as_json: JsonOption = False,
) -> None:
    """Check the installation: Python and pinned packages, AUTOSCALP_HOME, the config, the MLflow
    store, the Prefect API, exchange keys (live), the numba cache, the shared data dir. Exit 1 on a fail."""
    checks = run_checks(config, live)
    if as_json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        table = Table("check", "status", "detail", "fix")
        for c in checks:
            table.add_row(c.name, f"[{STYLE[c.status]}]{c.status}[/]", c.detail, c.fix)
        stdout.print(table)
        fails = sum(c.status == FAIL for c in checks)
        warns = sum(c.status == WARN for c in checks)
        stdout.print(f"{fails} fail(s), {warns} warning(s)" if fails or warns else "all checks passed")
    if any(c.status == FAIL for c in checks):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)
