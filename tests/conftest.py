"""Shared fixtures: real MNIST, a small trained model, a live local endpoint (stopped by pid), and
the SQL databases the stores run on (SQLite always; PostgreSQL when ``MODELCYCLE_TEST_POSTGRES_URL``
names one, as ``.ci/run`` arranges)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# read at import: the autouse fixture below removes MODELCYCLE_* variables inside tests
POSTGRES_URL = os.environ.get("MODELCYCLE_TEST_POSTGRES_URL") or None
NO_POSTGRES = (
    "PostgreSQL case skipped: MODELCYCLE_TEST_POSTGRES_URL is not set. Install the PostgreSQL server "
    "(Debian/Ubuntu: apt-get install postgresql) and run .ci/run, which starts a throwaway one on loopback, "
    "or set MODELCYCLE_TEST_POSTGRES_URL to a database you own (postgresql+psycopg://user:password@host:port/db)"
)
DATABASES = ("sqlite", "postgresql")
#: Trained models are not logged to MLflow as MLflow models (``tracking.log_model``) in tests but
#: those of ``tests/core/test_mlflow_native.py``, which remove this: elsewhere it only costs time.
NO_LOGGED_MODELS = ("MODELCYCLE_TRACKING__LOG_MODEL", "false")


def _data_dir() -> Path | None:
    configured = os.environ.get("MODELCYCLE_DATA_DIR")
    if configured and (Path(configured) / "mnist").is_dir():
        return Path(configured)
    return SHARED_DATA if (SHARED_DATA / "mnist").is_dir() else None


def pytest_configure(config: pytest.Config) -> None:
    """Class- and session-scoped fixtures run before the per-test environment is set: give them
    the real data and a private dataset cache from the start."""
    found = _data_dir()
    if found is not None:
        os.environ.setdefault("MODELCYCLE_DATA_DIR", str(found))
    import tempfile

    os.environ.setdefault("MODELCYCLE_CACHE_DIR", tempfile.mkdtemp(prefix="modelcycle-test-cache-"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The session stops what it started: wait (bounded) for the detached MLflow writers of the
    runs it tracked, in this process or in the CLI processes it ran under its temporary root."""
    import time

    from modelcycle.core.tracking_spool import LOCK_NAME, writer_running

    factory = getattr(session.config, "_tmp_path_factory", None)
    root = getattr(factory, "_basetemp", None)
    directories = list(Path(root).rglob(LOCK_NAME)) if root is not None else []
    deadline = time.monotonic() + 300
    for lock in directories:
        while writer_running(lock.parent) and time.monotonic() < deadline:
            time.sleep(0.1)
        if writer_running(lock.parent):
            print(f"warning: a tracking writer still works on {lock.parent}")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The directory holding ``mnist/`` and ``fashion-mnist/`` (real IDX files)."""
    found = _data_dir()
    if found is None:
        pytest.skip("real MNIST not found: set MODELCYCLE_DATA_DIR or put ../shared/data beside the repo")
    return found


@contextmanager
def isolated_module_env(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[pytest.MonkeyPatch]:
    """For module-scoped fixtures (which run outside the per-test environment): no
    ``MODELCYCLE_*`` variable of the caller, the real data, a private dataset cache."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("MODELCYCLE_"):
                mp.delenv(name)
        mp.setenv("MODELCYCLE_DATA_DIR", str(data_dir))
        mp.setenv("MODELCYCLE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        mp.setenv(*NO_LOGGED_MODELS)
        yield mp


def mark_trained(directory: Path, model_dir: Path) -> None:
    """Record ``model_dir`` as the use case's trained model (train stage done) without training."""
    from modelcycle.core.artifacts import read_manifest
    from modelcycle.core.state import State, StateStore

    state = State()
    train = state.stage("train")
    train.status = "done"
    train.outputs = {"run_id": read_manifest(model_dir).run_id, "model_dir": str(model_dir)}
    StateStore(directory / ".modelcycle").write(state)


def stop_deployed(directory: Path) -> None:
    """Stop the use case's local endpoint by pid if it still runs; assert it is gone."""
    from modelcycle.core.state import StateStore
    from modelcycle.platforms.local.endpoints import process_alive, stop_endpoint

    record = StateStore(directory / ".modelcycle").read().stage("deploy").outputs
    if record.get("pid") and process_alive(record["pid"]):
        stop_endpoint(record)
    assert not record.get("pid") or not process_alive(record["pid"])


@contextmanager
def deployed_and_monitored(directory: Path, trained_model_dir: Path) -> Iterator[Path]:
    """The use case in ``directory`` marked trained with ``trained_model_dir``, deployed and
    monitored; its endpoint is stopped by pid on exit, also on failure."""
    from modelcycle.core.lifecycle import UseCase

    mark_trained(directory, trained_model_dir)
    try:
        use_case = UseCase(directory)
        use_case.deploy()
        use_case.monitor()
        yield directory
    finally:
        stop_deployed(directory)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test reads the user's cache, token or config overrides from the environment."""
    for name in list(os.environ):
        if name.startswith("MODELCYCLE_") and name != "MODELCYCLE_DATA_DIR":
            monkeypatch.delenv(name)
    monkeypatch.setenv("MODELCYCLE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv(*NO_LOGGED_MODELS)
    found = _data_dir()
    if found is not None:
        monkeypatch.setenv("MODELCYCLE_DATA_DIR", str(found))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def write_use_case(directory: Path, example: str = "mnist-pytorch", **sections: Any) -> Path:
    """Write a packaged example (``mnist-pytorch``, ``mnist-keras``, ...) into ``directory`` with
    ``sections`` merged in; ``model`` replaces the whole section (options are per framework)."""
    template = REPO / "src" / "modelcycle" / "examples" / example / "modelcycle.yaml"
    config = yaml.safe_load(template.read_text())
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict) and key != "model":
            config[key].update(value)
        else:
            config[key] = value
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "modelcycle.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return directory


SMALL = {
    "data": {"dataset": "mnist", "train_limit": 2000, "test_limit": 500},
    "hyperparameters": {"epochs": 1, "log_interval": 10},
}


@pytest.fixture
def small_use_case(tmp_path: Path, data_dir: Path) -> Path:
    """A use case directory that trains on 2,000 MNIST images for one epoch (seconds)."""
    return write_use_case(tmp_path / "uc", name="small-mnist", **SMALL)


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory (manifest, weights, code/) trained once per session on 2,000 images."""
    data = _data_dir()
    if data is None:
        pytest.skip("real MNIST not found")
    from modelcycle.core.lifecycle import UseCase

    directory = write_use_case(tmp_path_factory.mktemp("trained") / "uc", name="trained-mnist", **SMALL)
    previous = os.environ.get("MODELCYCLE_DATA_DIR")
    os.environ["MODELCYCLE_DATA_DIR"] = str(data)
    try:
        outputs = UseCase(directory).train()
    finally:
        if previous is None:
            os.environ.pop("MODELCYCLE_DATA_DIR", None)
    return Path(outputs["model_dir"])


@pytest.fixture(scope="module")
def endpoint(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A live local endpoint serving ``trained_model_dir``; stopped by pid afterwards."""
    from modelcycle.platforms.local.endpoints import process_alive, start_endpoint, stop_endpoint

    record = start_endpoint("test-endpoint", trained_model_dir, tmp_path_factory.mktemp("endpoint"))
    try:
        yield record
    finally:
        stop_endpoint(record)
        assert not process_alive(record["pid"])


@pytest.fixture(scope="session")
def mnist_test_images() -> tuple[Any, Any]:
    """The first 64 raw MNIST test images (uint8 N×28×28) and their labels."""
    data = _data_dir()
    if data is None:
        pytest.skip("real MNIST not found")
    from modelcycle.core.datasets import load_dataset

    test = load_dataset("mnist", data / "mnist").test.take(64)
    return test.images, test.labels


def copy_model(model_dir: Path, destination: Path) -> Path:
    """A private copy of a model directory a test may modify."""
    shutil.copytree(model_dir, destination)
    return destination


@contextmanager
def scratch_database(kind: str, directory: Path) -> Iterator[str]:
    """A SQLAlchemy URL of an empty database of ``kind`` (``sqlite``: a file under ``directory``;
    ``postgresql``: a fresh schema of the ``MODELCYCLE_TEST_POSTGRES_URL`` database, selected by the
    URL's ``search_path`` so every process given the URL sees only it). The schema is dropped with
    everything in it afterwards, and this process's engines on it are closed.

    Skips (saying what to install) when PostgreSQL is asked for and no server is configured; a
    configured server that cannot be reached fails the test."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'test.db'}"
        return
    if kind != "postgresql":
        raise ValueError(f"unknown test database {kind!r}: use one of {DATABASES}")
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    import uuid

    import sqlalchemy as sa
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    from modelcycle.core import sql

    schema = f"mc_test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(POSTGRES_URL, poolclass=NullPool)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        rendered = url.render_as_string(hide_password=False)
        try:
            yield rendered
        finally:
            for key, engine in list(sql._ENGINES.items()):  # pooled connections would outlive the schema
                if key[0] == rendered:
                    sql.forget_engine(engine)
            with admin.begin() as conn:
                conn.exec_driver_sql("SET LOCAL lock_timeout = '30s'")
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    finally:
        admin.dispose()


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind in turn (see :func:`scratch_database`), for one test."""
    with scratch_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(scope="module", params=DATABASES)
def module_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database of each kind in turn (see :func:`scratch_database`), for one module."""
    with scratch_database(request.param, tmp_path_factory.mktemp(request.param)) as url:
        yield url
