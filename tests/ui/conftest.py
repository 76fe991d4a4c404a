"""Fixtures of the dashboard's browser tests: two trained use cases (PyTorch and Keras) under one
directory, ``modelcycle ui`` serving them from a subprocess, and a headless Chromium driven by
Selenium; a failing browser test leaves a screenshot and the page source under
``test-artifacts/ui/``.

Needs Debian's ``chromium`` and its matching ``chromium-driver`` (``apt-get install chromium
chromium-driver``, as root) and the ``selenium`` package; without them the browser tests skip,
saying what to install — unless ``MODELCYCLE_TEST_REQUIRE_BROWSER=1`` (``.ci/run`` sets it), which
makes a missing browser an error. Every process started here is stopped by pid, also on failure.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


def _suite_conftest() -> ModuleType:
    """The suite's ``tests/conftest.py`` helpers, loaded under their own name: conftest files out
    of a package share the module name ``conftest``, and pytest drops the outer one from
    ``sys.modules`` when it imports this one."""
    spec = importlib.util.spec_from_file_location("modelcycle_suite_conftest", HERE.parent / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_suite = _suite_conftest()
# Once this file is loaded, ``import conftest`` anywhere in the run yields it (test modules of other
# directories imported later too): it re-exports the suite's helpers and constants — never its
# fixtures or hooks, which the suite's conftest already provides.
globals().update({
    name: value for name, value in vars(_suite).items()
    if not name.startswith(("_", "pytest_")) and name not in globals()
    and not hasattr(value, "_fixture_function_marker")
})
REPO: Path = _suite.REPO
SMALL: dict[str, Any] = _suite.SMALL
NO_LOGGED_MODELS: tuple[str, str] = _suite.NO_LOGGED_MODELS
write_use_case = _suite.write_use_case
isolated_module_env = _suite.isolated_module_env
stop_deployed = _suite.stop_deployed

ARTIFACTS = REPO / "test-artifacts" / "ui"
#: read at import: the suite's autouse fixture removes MODELCYCLE_* variables inside tests
REQUIRE_BROWSER = os.environ.get("MODELCYCLE_TEST_REQUIRE_BROWSER", "") not in ("", "0", "false")
INSTALL_HINT = (
    "install Debian's Chromium and its matching driver (as root: apt-get install -y chromium chromium-driver) "
    "and Selenium (pip install selenium, or the project's [test] extra); .ci/run installs them"
)
SERVING_LINE = re.compile(r"^modelcycle ui: serving on (http://[^/\s]+:(\d+)/)$", re.MULTILINE)
SERVER_START_S = 90.0
PYTORCH_EPOCHS = 2

#: the quality threshold every evaluation of the PyTorch use case fails (a 2,000-image model)
FAILING_THRESHOLD = {"metric_id": "accuracy", "type": "lower_limit", "value": 0.999}


def browser_binaries() -> tuple[str, str]:
    """``(chromium, chromedriver)`` paths; skips (or fails under ``MODELCYCLE_TEST_REQUIRE_BROWSER``)
    naming what to install when one of them or Selenium is missing."""
    missing = []
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None:
        missing.append("chromium")
    if driver is None:
        missing.append("chromedriver (chromium-driver)")
    if importlib.util.find_spec("selenium") is None:
        missing.append("the selenium package")
    if missing:
        message = f"browser tests need {', '.join(missing)}: {INSTALL_HINT}"
        if REQUIRE_BROWSER:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    assert chromium is not None and driver is not None
    return chromium, driver


# -- the use cases --------------------------------------------------------------------------
@dataclass(frozen=True)
class Dashboard:
    """The use cases the dashboard shows: ``root`` holds ``pytorch/`` (two tracked runs of
    ``PYTORCH_EPOCHS`` epochs, the more accurate one deployed, governed and monitored with
    :data:`FAILING_THRESHOLD`)
    and ``keras/`` (one run of one epoch, a small dense network)."""

    root: Path
    pytorch: Path
    keras: Path
    pytorch_name: str = "ui-pytorch"
    keras_name: str = "ui-keras"


def _train_use_cases(root: Path) -> Dashboard:
    from modelcycle.core.lifecycle import UseCase

    pytorch = write_use_case(
        root / "pytorch", name="ui-pytorch",
        data=SMALL["data"], hyperparameters={"epochs": PYTORCH_EPOCHS, "log_interval": 10},
        monitoring={"quality": {"thresholds": [FAILING_THRESHOLD]}, "drift": {"min_samples": 100}},
    )
    keras = write_use_case(
        root / "keras", example="mnist-keras", name="ui-keras",
        model={"architecture": "fc", "dense_units": 32}, **SMALL,
    )
    UseCase(pytorch).train()
    UseCase(pytorch, overrides={"model.hidden_channels": 4}).train(force=True)  # a narrower second run
    UseCase(keras).train()
    use_case = UseCase(pytorch)
    use_case.deploy(best="test_accuracy")
    use_case.govern()  # develop → test: the model page can move it on to validate
    use_case.monitor()
    return Dashboard(root=root, pytorch=pytorch, keras=keras)


@pytest.fixture(scope="session")
def dashboard(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Dashboard]:
    """The trained use cases (see :class:`Dashboard`); the PyTorch endpoint is stopped by pid
    at the end, also on failure."""
    browser_binaries()  # no training when the browser tests cannot run
    root = tmp_path_factory.mktemp("dashboard")
    with isolated_module_env(tmp_path_factory, data_dir):
        try:
            yield _train_use_cases(root)
        finally:
            if (root / "pytorch" / ".modelcycle").is_dir():
                stop_deployed(root / "pytorch")


# -- the server -----------------------------------------------------------------------------
@dataclass(frozen=True)
class UiServer:
    """A running ``modelcycle ui``: its base URL (ending in ``/``), process and error output."""

    url: str
    process: subprocess.Popen[bytes]
    stderr: Path


def server_environment(data_dir: Path, cache_dir: Path) -> dict[str, str]:
    """The caller's environment without its ``MODELCYCLE_*`` settings, with the real data, a
    private cache and this checkout's code first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELCYCLE_")}
    env.update(MODELCYCLE_DATA_DIR=str(data_dir), MODELCYCLE_CACHE_DIR=str(cache_dir), PYTHONUNBUFFERED="1")
    env[NO_LOGGED_MODELS[0]] = NO_LOGGED_MODELS[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process by pid, SIGKILL it when it outlives ``timeout``; reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def start_ui(directories: list[Path], env: dict[str, str], logs: Path) -> UiServer:
    """Start ``modelcycle ui DIR… --port 0`` and wait (bounded) for its one
    ``modelcycle ui: serving on http://HOST:PORT/`` line; its output goes to files under ``logs``.

    Raises:
        AssertionError: the process ended or printed no such line in time (with its output).
    """
    logs.mkdir(parents=True, exist_ok=True)
    stdout, stderr = logs / "ui.stdout", logs / "ui.stderr"
    command = [sys.executable, "-m", "modelcycle.cli", "ui", *map(str, directories), "--port", "0"]
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=logs)
    deadline = time.monotonic() + SERVER_START_S
    try:
        while True:
            found = SERVING_LINE.search(stdout.read_text(errors="replace"))
            if found:
                assert found.group(2) != "0", f"the real port, not 0: {found.group(0)}"
                return UiServer(url=found.group(1), process=process, stderr=stderr)
            ended = process.poll()
            if ended is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{' '.join(command)} {'ended with ' + str(ended) if ended is not None else 'printed no address'}"
                    f" within {SERVER_START_S:.0f} s\nstdout: {stdout.read_text(errors='replace')}"
                    f"\nstderr: {stderr.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.1)
    except BaseException:
        stop_process(process)
        raise


@pytest.fixture(scope="session")
def ui_server(dashboard: Dashboard, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    """``modelcycle ui`` over the dashboard's root directory, stopped by pid at the end."""
    env = server_environment(data_dir, tmp_path_factory.getbasetemp() / "cache")
    server = start_ui([dashboard.root], env, tmp_path_factory.mktemp("ui-logs"))
    try:
        yield server
    finally:
        stop_process(server.process)
        assert server.process.poll() is not None


# -- the browser ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium (1280×900) driven through Debian's chromedriver; quit at the end."""
    chromium, driver_path = browser_binaries()
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager never downloads a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1280,900", "--disable-dev-shm-usage",
                     "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()


def _artifact_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1]).strip("_")[:120] or "test"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failed browser test, save what the browser showed: ``test-artifacts/ui/<test>.png``
    (a screenshot) and ``<test>.html`` (the page source); the report adds the end of the
    server's error output."""
    report = yield
    server = getattr(item, "funcargs", {}).get("ui_server")
    if server is not None and report.failed and report.when in ("setup", "call"):
        report.sections.append(("modelcycle ui stderr (end)", server.stderr.read_text(errors="replace")[-4000:]))
    driver = getattr(item, "funcargs", {}).get("browser")
    if driver is not None and report.failed and report.when in ("setup", "call"):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = _artifact_name(item.nodeid)
        try:
            driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
            (ARTIFACTS / f"{name}.html").write_text(f"<!-- {driver.current_url} -->\n{driver.page_source}")
            report.sections.append(("browser artifacts", f"saved {ARTIFACTS / name}.png and .html"))
        except Exception as exc:  # a dead browser must not hide the test's own failure
            report.sections.append(("browser artifacts", f"could not save them: {exc!r}"))
    return report
