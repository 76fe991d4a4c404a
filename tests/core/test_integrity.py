"""Integrity end to end: corrupt model files and archives are refused naming the file, a damaged or
deleted ``state.json`` is one clear error that ``status --repair`` recovers from (with a live
endpoint too), ``cleanup`` works without a readable state, and undecodable files are clear errors.

Real trained models, real ``modelcycle`` processes and real endpoint processes (stopped by pid).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcycle.core.artifacts import (
    ARCHIVE_NAME,
    MANIFEST_NAME,
    hash_files,
    read_manifest,
    verify_archive,
    verify_model,
)
from modelcycle.core.errors import ArtifactError, ConfigError
from modelcycle.core.state import StateStore
from conftest import mark_trained

WEIGHTS = "model.pth"


def _cli(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelcycle.cli", "-C", str(directory), *args],
        capture_output=True, text=True, timeout=600, env=os.environ.copy(),
    )


def _flip(path: Path, count: int = 64) -> None:
    """Invert ``count`` bytes in the middle of ``path``."""
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _copy_run(trained_model_dir: Path, directory: Path) -> Path:
    """Copy the trained run (model/, model.tar.gz and its sidecar) into ``directory``'s runs and
    record it as trained; returns the copied model directory."""
    run_id = read_manifest(trained_model_dir).run_id
    run_dir = directory / ".modelcycle" / "runs" / run_id
    run_dir.mkdir(parents=True)
    shutil.copytree(trained_model_dir, run_dir / "model")
    for name in (ARCHIVE_NAME, ARCHIVE_NAME + ".sha256"):
        shutil.copyfile(trained_model_dir.parent / name, run_dir / name)
    mark_trained(directory, run_dir / "model")
    return run_dir / "model"


def _servers_of(directory: Path) -> list[int]:
    """Pids of live endpoint servers started for the use case in ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"modelcycle.platforms.local.server" in cmdline and str(directory).encode() in cmdline:
                found.append(int(entry.name))
    return found


def _kill(pids: list[int]) -> None:
    """SIGKILL each pid and wait (bounded) until it is gone."""
    import signal
    import time

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    def running(pid: int) -> bool:
        try:
            return bool(Path(f"/proc/{pid}/cmdline").read_bytes())  # empty: a zombie
        except OSError:
            return False

    deadline = time.monotonic() + 30
    while any(running(pid) for pid in pids):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)


@pytest.fixture
def trained_use_case(small_use_case: Path, trained_model_dir: Path) -> Iterator[Path]:
    """``small_use_case`` with the session's trained run copied in; any endpoint a test starts
    for it is killed by pid afterwards."""
    _copy_run(trained_model_dir, small_use_case)
    try:
        yield small_use_case
    finally:
        leftover = _servers_of(small_use_case)
        _kill(leftover)
        assert not leftover or not _servers_of(small_use_case)


# -- what training records ---------------------------------------------------------------------


def test_manifest_records_every_model_file_and_the_archive_its_digest(trained_model_dir: Path) -> None:
    manifest = read_manifest(trained_model_dir)
    on_disk = {
        path.relative_to(trained_model_dir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in trained_model_dir.rglob("*")
        if path.is_file() and path.name != MANIFEST_NAME and "__pycache__" not in path.parts
    }
    assert {WEIGHTS, "code/inference.py", "code/requirements.txt"} <= set(on_disk)
    assert manifest.files == on_disk
    assert manifest.format_version == 2
    archive = trained_model_dir.parent / ARCHIVE_NAME
    sidecar = (trained_model_dir.parent / (ARCHIVE_NAME + ".sha256")).read_text().split()
    assert sidecar == [hashlib.sha256(archive.read_bytes()).hexdigest(), ARCHIVE_NAME]
    with tarfile.open(archive) as tar:  # the packaged manifest carries the hashes too
        packed = json.loads(tar.extractfile(MANIFEST_NAME).read())  # type: ignore[union-attr]
    assert packed["files"] == on_disk
    assert verify_model(trained_model_dir).run_id == manifest.run_id


# -- corrupt model files -----------------------------------------------------------------------


def test_flipped_weights_and_a_missing_file_are_refused_by_name(trained_model_dir: Path, tmp_path: Path) -> None:
    from modelcycle.core.serving.pipeline import InferencePipeline

    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model)
    _flip(model / WEIGHTS)
    (model / "code" / "inference.py").unlink()
    for load in (verify_model, InferencePipeline):  # deploy's check and the endpoint's model_fn path
        with pytest.raises(ArtifactError) as info:
            load(model)
        message = str(info.value)
        assert f"{model / WEIGHTS} does not match its SHA-256" in message
        assert f"{model / 'code' / 'inference.py'} is missing" in message
        assert "modelcycle train --force" in message and "restore" in message


def test_a_manifest_without_hashes_is_served_with_a_warning(
    trained_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelcycle.core.serving.pipeline import InferencePipeline

    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model)
    document = json.loads((model / MANIFEST_NAME).read_text())
    document.pop("files")
    document["format_version"] = 1
    (model / MANIFEST_NAME).write_text(json.dumps(document))
    pipeline = InferencePipeline(model)
    assert pipeline.manifest.files == {}
    warning = capsys.readouterr().err
    assert f"{model / MANIFEST_NAME} records no file hashes" in warning and "cannot be checked" in warning


def test_truncated_archive_is_caught_with_and_without_its_sidecar(trained_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_model_dir.parent, run, ignore=shutil.ignore_patterns("jobs"))
    archive = run / ARCHIVE_NAME
    _truncate(archive)
    with pytest.raises(ArtifactError, match="does not match its SHA-256 in .*sha256: it is truncated or corrupt"):
        verify_model(run / "model")  # the model files are intact: the archive beside them is checked
    (run / (ARCHIVE_NAME + ".sha256")).unlink()  # an archive a container job packed: no sidecar
    with pytest.raises(ArtifactError) as info:
        verify_archive(archive)
    assert str(archive) in str(info.value) and "truncated or corrupt" in str(info.value)


def test_an_archive_whose_member_changed_is_caught_without_a_sidecar(trained_model_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model)
    _flip(model / WEIGHTS)  # packed after the manifest was written: a well-formed archive that lies
    archive = tmp_path / ARCHIVE_NAME
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(model).as_posix())
    with pytest.raises(ArtifactError, match=f"does not match the SHA-256 its manifest records for {WEIGHTS}"):
        verify_archive(archive)
    good = tmp_path / "good.tar.gz"
    shutil.copyfile(trained_model_dir.parent / ARCHIVE_NAME, good)
    verify_archive(good)  # no sidecar beside this name: verified member by member


def test_flipped_weights_make_the_deploy_command_exit_2_naming_the_file(trained_use_case: Path) -> None:
    model = Path(StateStore(trained_use_case / ".modelcycle").read().stage("train").outputs["model_dir"])
    _flip(model / WEIGHTS)
    result = _cli(trained_use_case, "deploy")
    assert result.returncode == 2, result.stderr
    assert f"{model / WEIGHTS} does not match its SHA-256" in result.stderr
    assert "Traceback" not in result.stderr
    assert _servers_of(trained_use_case) == []
    assert not list((trained_use_case / ".modelcycle").glob("endpoints/*"))  # refused before any start
    deploy = StateStore(trained_use_case / ".modelcycle").read().stage("deploy")
    assert deploy.status == "failed" and not deploy.outputs.get("pid")


def test_truncated_archive_fails_deploy_and_factsheet(trained_use_case: Path) -> None:
    from modelcycle.core.lifecycle import UseCase

    model = Path(StateStore(trained_use_case / ".modelcycle").read().stage("train").outputs["model_dir"])
    _truncate(model.parent / ARCHIVE_NAME)
    result = _cli(trained_use_case, "deploy")
    assert result.returncode == 2, result.stderr
    assert f"{model.parent / ARCHIVE_NAME} does not match its SHA-256" in result.stderr
    assert _servers_of(trained_use_case) == []
    assert not list((trained_use_case / ".modelcycle").glob("endpoints/*"))
    with pytest.raises(ArtifactError, match="truncated or corrupt"):
        UseCase(trained_use_case).factsheet(format="json", output="-")


# -- a damaged or deleted state.json -----------------------------------------------------------

DAMAGE = {
    "truncated": lambda text: text[: len(text) // 2].encode(),
    "empty": lambda text: b"",
    "binary": lambda text: os.urandom(64) + b"\xff\xfe",
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_state_is_one_clear_error_and_repair_recovers_the_trained_model(
    damage: str, trained_use_case: Path
) -> None:
    state = trained_use_case / ".modelcycle" / "state.json"
    run_id = StateStore(state.parent).read().stage("train").outputs["run_id"]
    state.write_bytes(DAMAGE[damage](state.read_text()))
    damaged = state.read_bytes()
    for command in (("status",), ("deploy",)):
        result = _cli(trained_use_case, *command)
        assert result.returncode == 2, result.stderr
        assert f"{state} is damaged" in result.stderr and "status --repair" in result.stderr
        assert "Traceback" not in result.stderr
    assert state.read_bytes() == damaged  # nothing overwrote it

    repaired = _cli(trained_use_case, "status", "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert f"recovered trained run {run_id}" in repaired.stdout
    backups = list(state.parent.glob("state.json.damaged-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == damaged
    status = json.loads(_cli(trained_use_case, "status", "--json").stdout)
    assert status["trained"] is True and status["deployed"] is False and status["run_id"] == run_id
    again = _cli(trained_use_case, "status", "--repair")  # a readable state is left alone
    assert again.returncode == 0 and "nothing to repair" in again.stdout


def test_deleted_state_says_how_to_recover_the_trained_model(trained_use_case: Path) -> None:
    state = trained_use_case / ".modelcycle" / "state.json"
    run_id = StateStore(state.parent).read().stage("train").outputs["run_id"]
    state.unlink()
    result = _cli(trained_use_case, "status")
    assert result.returncode == 0, result.stderr
    assert "trained:   [False]" in result.stdout
    assert f"{state} is missing" in result.stdout and "status --repair" in result.stdout
    repaired = _cli(trained_use_case, "status", "--repair", "--json")
    assert repaired.returncode == 0, repaired.stderr
    document = json.loads(repaired.stdout)
    assert document["repair"]["backup"] is None and document["repair"]["train"] == run_id
    assert document["trained"] is True and document["recovery"] is None


def test_repair_recovers_a_live_endpoint_and_cleanup_stops_it_with_a_damaged_state(trained_use_case: Path) -> None:
    store = StateStore(trained_use_case / ".modelcycle")
    deployed = _cli(trained_use_case, "deploy")
    assert deployed.returncode == 0, deployed.stderr
    endpoint = store.read().stage("deploy").outputs
    assert _servers_of(trained_use_case) == [endpoint["pid"]]

    store.path.write_bytes(b"\x00\xff" * 100)  # binary garbage
    repaired = _cli(trained_use_case, "status", "--repair", "--json")
    assert repaired.returncode == 0, repaired.stderr
    document = json.loads(repaired.stdout)
    assert document["repair"]["deploy"] == endpoint["name"]
    assert document["deployed"] is True and document["endpoint"]["status"] == "InService"
    recovered = store.read().stage("deploy").outputs
    assert {k: recovered[k] for k in ("name", "pid", "port", "run_id", "model_dir")} == {
        k: endpoint[k] for k in ("name", "pid", "port", "run_id", "model_dir")
    }
    scored = _cli(trained_use_case, "score", "--samples", "3")  # the recovered record really serves
    assert scored.returncode == 0, scored.stderr

    _truncate(store.path)
    cleaned = _cli(trained_use_case, "cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    assert "{'serving': 1}" in cleaned.stdout and "is damaged" in cleaned.stderr
    assert _servers_of(trained_use_case) == []
    assert not Path(endpoint["ready_file"]).exists()


def test_cleanup_stops_the_endpoint_when_the_state_was_deleted(trained_use_case: Path) -> None:
    deployed = _cli(trained_use_case, "deploy")
    assert deployed.returncode == 0, deployed.stderr
    assert len(_servers_of(trained_use_case)) == 1
    (trained_use_case / ".modelcycle" / "state.json").unlink()
    cleaned = _cli(trained_use_case, "cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    assert "'serving': 1" in cleaned.stdout
    assert _servers_of(trained_use_case) == []


def test_repair_skips_a_corrupt_run_and_an_unreadable_ready_file(trained_use_case: Path) -> None:
    from modelcycle.core.lifecycle import UseCase

    work = trained_use_case / ".modelcycle"
    model = Path(StateStore(work).read().stage("train").outputs["model_dir"])
    _flip(model / WEIGHTS)
    (work / "endpoints").mkdir()
    (work / "endpoints" / "small-mnist-deadbeef.ready.json").write_bytes(b"\xff{}")
    (work / "state.json").write_text('{"stages": {"train": {"status": "finished"}}}')  # wrong schema
    with pytest.raises(Exception) as info:
        StateStore(work).read()
    assert "stages.train.status" in str(info.value) and "status --repair" in str(info.value)
    result = UseCase(trained_use_case).repair()
    assert result["repaired"] is True and result["train"] is None and result["deploy"] is None
    notes = "\n".join(result["notes"])
    assert f"{model / WEIGHTS} does not match its SHA-256" in notes
    assert "small-mnist-deadbeef.ready.json" in notes and "not UTF-8" in notes
    assert StateStore(work).read().done("train") is False


# -- undecodable files -------------------------------------------------------------------------


def test_non_utf8_config_and_manifest_are_clear_errors(trained_use_case: Path) -> None:
    from modelcycle.core.config import load_config

    model = Path(StateStore(trained_use_case / ".modelcycle").read().stage("train").outputs["model_dir"])
    manifest = model / MANIFEST_NAME
    manifest.write_bytes(manifest.read_bytes().replace(b'"use_case"', b'"use_\xe9case"', 1))
    with pytest.raises(ArtifactError, match=f"{manifest} is not UTF-8 text .*byte 0xe9"):
        read_manifest(model)
    result = _cli(trained_use_case, "deploy")
    assert result.returncode == 2 and f"{manifest} is not UTF-8 text" in result.stderr
    assert "Traceback" not in result.stderr

    config = trained_use_case / "modelcycle.yaml"
    config.write_bytes(config.read_bytes() + b"\n# caf\xe9 in Latin-1\n")
    with pytest.raises(ConfigError, match=f"{config} is not UTF-8 text"):
        load_config(trained_use_case)
    result = _cli(trained_use_case, "status")
    assert result.returncode == 2, result.stderr
    assert f"{config} is not UTF-8 text" in result.stderr and "save modelcycle.yaml as UTF-8" in result.stderr
    assert "Traceback" not in result.stderr


def test_hash_files_ignores_the_manifest_and_pycache(tmp_path: Path) -> None:
    (tmp_path / "code" / "__pycache__").mkdir(parents=True)
    (tmp_path / "code" / "__pycache__" / "inference.cpython-311.pyc").write_bytes(b"compiled")
    (tmp_path / "code" / "inference.py").write_text("pass\n")
    (tmp_path / MANIFEST_NAME).write_text("{}")
    (tmp_path / "w.bin").write_bytes(b"\x00" * 10)
    assert hash_files(tmp_path) == {
        "code/inference.py": hashlib.sha256(b"pass\n").hexdigest(),
        "w.bin": hashlib.sha256(b"\x00" * 10).hexdigest(),
    }
