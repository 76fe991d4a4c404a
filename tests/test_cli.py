"""Tests of the ``modelcycle`` command line: lazy imports, init, plugins, error reporting, and the
small lifecycle (train → deploy → score → status → endpoints → cleanup) run as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, write_use_case
from modelcycle.cli import main
from modelcycle.platforms.local.endpoints import process_alive, stop_endpoint

MODELCYCLE = Path(sys.executable).parent / "modelcycle"
EXAMPLE = REPO / "src" / "modelcycle" / "examples" / "mnist-pytorch" / "modelcycle.yaml"


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MODELCYCLE), *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


# -- help and lazy imports --------------------------------------------------------------------


def test_console_script_help() -> None:
    assert MODELCYCLE.is_file(), f"console script missing: {MODELCYCLE}"
    result = _cli("--help", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: modelcycle")
    for command in ("init", "plugins", "train", "deploy", "score", "status", "endpoints", "cleanup", "run"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command


def test_subcommand_help() -> None:
    result = _cli("train", "--help", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--force" in result.stdout


_HEAVY = ("torch", "fastapi", "pydantic", "uvicorn", "starlette")


@pytest.mark.parametrize(
    "code",
    [
        "import modelcycle.cli",
        "from modelcycle.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    ],
    ids=["import", "help"],
)
def test_cli_imports_no_heavy_module(code: str) -> None:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(m for m in {_HEAVY!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["-C", "{dir}", "--set", "hyperparameters.epochs=3", "--set", "hyperparameters.batch_size=32", "status"],
        ["status", "-C", "{dir}", "--set", "hyperparameters.epochs=3", "--set", "hyperparameters.batch_size=32"],
        ["--set", "hyperparameters.epochs=3", "status", "-C", "{dir}", "--set", "hyperparameters.batch_size=32"],
        ["-C", "/nonexistent", "--set", "hyperparameters.epochs=3", "status", "-C", "{dir}",
         "--set", "hyperparameters.batch_size=32"],
    ],
    ids=["before", "after", "both", "after-wins"],
)
def test_global_options_before_and_after_the_subcommand(tmp_path: Path, argv: list[str]) -> None:
    from modelcycle.cli import _merge_global_options, _use_case, build_parser

    directory = write_use_case(tmp_path / "uc", name="options")
    args = _merge_global_options(build_parser().parse_args([a.replace("{dir}", str(directory)) for a in argv]))
    use_case = _use_case(args)
    assert use_case.directory == directory.resolve()
    assert use_case.config.hyperparameters.epochs == 3
    assert use_case.config.hyperparameters.batch_size == 32


def test_global_options_reach_plugin_and_nested_commands(tmp_path: Path) -> None:
    from modelcycle.cli import _merge_global_options, build_parser

    args = _merge_global_options(build_parser().parse_args(
        ["pipeline", "export", "-C", str(tmp_path), "--set", "training.role=x", "--lock-timeout", "3"]))
    assert (args.directory, args.set, args.lock_timeout) == (str(tmp_path), ["training.role=x"], 3.0)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert re.fullmatch(r"modelcycle \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


# -- init -------------------------------------------------------------------------------------


def test_init_writes_a_config_named_after_the_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "my-digits"
    assert main(["init", str(target), "--framework", "pytorch", "--example", "mnist"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {target / 'modelcycle.yaml'}" in out
    written = yaml.safe_load((target / "modelcycle.yaml").read_text())
    assert written["name"] == "my-digits"
    example = yaml.safe_load(EXAMPLE.read_text())
    assert {k: v for k, v in written.items() if k != "name"} == {k: v for k, v in example.items() if k != "name"}

    from modelcycle.core.config import load_config

    assert load_config(target, environ={}).name == "my-digits"


def test_init_sanitises_the_directory_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "My Digits!"
    assert main(["init", str(target)]) == 0
    from modelcycle.core.config import load_config

    assert load_config(target, environ={}).name == "My-Digits"


def test_init_twice_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "twice"
    assert main(["init", str(target)]) == 0
    config = target / "modelcycle.yaml"
    config.write_text(config.read_text() + "\n# edited by the user\n")
    capsys.readouterr()

    assert main(["init", str(target)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert "already exists" in captured.err and "--force" in captured.err
    assert config.read_text().endswith("# edited by the user\n")  # untouched

    assert main(["init", str(target), "--force"]) == 0
    assert "# edited by the user" not in config.read_text()


def test_init_unknown_framework_lists_installed_frameworks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "jax-uc"
    assert main(["init", str(target), "--framework", "pytorh", "--example", "mnist"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: framework 'pytorh' is not installed")
    assert re.search(r"installed frameworks: .*\bpytorch\b", err), err
    assert not target.exists()


def test_init_unknown_example_lists_the_frameworks_examples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path / "x"), "--example", "imagenet"]) == 2
    err = capsys.readouterr().err
    assert "imagenet" in err and "mnist" in err and "generic" in err, err
    assert not (tmp_path / "x").exists()


def test_init_third_party_framework_writes_a_generic_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "mlp"
    assert main(["init", str(target), "--framework", "sklearn-mlp"]) == 0
    from modelcycle.core.config import load_config

    config = load_config(target, environ={})
    assert (config.name, config.framework) == ("mlp", "sklearn-mlp")


# -- plugins ----------------------------------------------------------------------------------


def test_plugins_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    listed = {(p["kind"], p["name"]): p for p in json.loads(capsys.readouterr().out)}
    assert listed[("framework", "pytorch")]["distribution"] == "modelcycle"
    assert listed[("framework", "pytorch")]["value"] == "modelcycle.plugins.pytorch.plugin"
    assert listed[("platform", "local")]["distribution"] == "modelcycle"
    assert listed[("platform", "local")]["group"] == "modelcycle.platforms"


def test_plugins_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"framework\s.*\bpytorch\b.*\bmodelcycle\b", out), out
    assert re.search(r"platform\s.*\blocal\b.*\bmodelcycle\b", out), out


# -- errors -----------------------------------------------------------------------------------


def test_status_without_config_tells_to_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-C", str(tmp_path), "status"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: no modelcycle.yaml in ")
    assert "modelcycle init" in captured.err


def test_status_without_config_through_the_console_script(tmp_path: Path) -> None:
    result = _cli("-C", str(tmp_path), "status", timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "modelcycle init" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_set_override_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = write_use_case(tmp_path / "uc", name="set-test")
    assert main(["-C", str(directory), "--set", "hyperparameters.epochs=0", "train"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "hyperparameters.epochs" in err
    assert "greater than 0" in err
    assert not (directory / ".modelcycle" / "state.json").exists()


def test_malformed_set_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = write_use_case(tmp_path / "uc", name="set-test")
    assert main(["-C", str(directory), "--set", "hyperparameters.epochs", "status"]) == 2
    assert "--set expects key=value" in capsys.readouterr().err


def test_deploy_before_train_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = write_use_case(tmp_path / "uc", name="order-test")
    assert main(["-C", str(directory), "deploy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: stage 'deploy': needs 'train' first")


def test_status_and_endpoints_of_a_fresh_use_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = write_use_case(tmp_path / "uc", name="fresh")
    assert main(["-C", str(directory), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["use_case"] == "fresh"
    assert (status["trained"], status["deployed"], status["endpoint"]) == (False, False, None)
    assert main(["-C", str(directory), "endpoints"]) == 0
    assert capsys.readouterr().out.strip() == "no endpoint deployed"
    assert main(["-C", str(directory), "endpoints", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


# -- the lifecycle through the console script -------------------------------------------------

def _deployed_record(directory: Path) -> dict[str, Any] | None:
    """The endpoint record persisted in the use case's state, if a deploy got that far."""
    try:
        state = json.loads((directory / ".modelcycle" / "state.json").read_text())
    except (OSError, ValueError):
        return None
    outputs = state.get("stages", {}).get("deploy", {}).get("outputs", {})
    return outputs if outputs.get("pid") else None


TRAIN_LINE = re.compile(r"^Train Epoch: 1 \[\d+/2000 \(\d+%\)\] Loss: \d+\.\d{6}$", re.MULTILINE)
TEST_LINE = re.compile(r"^Test set: Average loss: \d+\.\d{4}, Accuracy: \d+/500 \(\d+\.\d{2}%\)$", re.MULTILINE)


def test_small_lifecycle_through_the_cli(small_use_case: Path) -> None:
    directory = str(small_use_case)
    endpoint: dict[str, Any] | None = None
    try:
        # global options after the subcommand, where users type them (-C and --set)
        train = _cli("train", "-C", directory, "--set", "hyperparameters.epochs=1")
        assert train.returncode == 0, train.stderr
        # MLflow, alembic and their plugins stay off the terminal, in the library log instead
        for noise in ("UserWarning", "INFO", "alembic", "Creating initial MLflow database tables"):
            assert noise not in train.stderr + train.stdout, train.stderr
        library_log = (small_use_case / ".modelcycle" / "logs" / "libraries.log").read_text()
        assert "Creating initial MLflow database tables" in library_log
        assert len(TRAIN_LINE.findall(train.stdout)) == 3, train.stdout  # 32 batches, log_interval 10
        assert len(TEST_LINE.findall(train.stdout)) == 1, train.stdout
        run_id = re.search(r"^Current RunID ([0-9a-f]{32})$", train.stdout, re.MULTILINE)
        assert run_id, train.stdout
        assert re.search(r"^Model artifact .*model\.tar\.gz$", train.stdout, re.MULTILINE)

        again = _cli("-C", directory, "train")
        assert again.returncode == 0, again.stderr
        assert f"already trained (run {run_id.group(1)})" in again.stdout
        assert not TRAIN_LINE.search(again.stdout)

        deploy = _cli("-C", directory, "deploy")
        assert deploy.returncode == 0, deploy.stderr
        assert f"Endpoint name saved: small-mnist-{run_id.group(1)[:8]}" in deploy.stdout

        status_run = _cli("-C", directory, "status", "--json")
        assert status_run.returncode == 0, status_run.stderr
        status = json.loads(status_run.stdout)
        endpoint = status["endpoint"]
        assert status["trained"] is True and status["deployed"] is True
        assert status["run_id"] == run_id.group(1)
        assert endpoint["status"] == "InService" and process_alive(endpoint["pid"])

        score = _cli("-C", directory, "score", "--samples", "5")
        assert score.returncode == 0, score.stderr
        assert re.search(r"^response_time \d+ms$", score.stdout, re.MULTILINE), score.stdout
        predicted = re.search(r"^Predicted digits:\s+\[([\d, ]+)\]$", score.stdout, re.MULTILINE)
        assert predicted, score.stdout
        assert len(predicted.group(1).split(",")) == 5
        assert re.search(r"^True labels:\s+\[[\d, ]+\]\s+\(\d/5 correct\)$", score.stdout, re.MULTILINE)

        endpoints = _cli("-C", directory, "endpoints")
        assert endpoints.returncode == 0, endpoints.stderr
        line = endpoints.stdout.strip()
        assert line.split("\t")[:4] == [endpoint["name"], "local", endpoint["url"], "InService"]
        assert line.endswith(f"pid {endpoint['pid']}")

        cleanup = _cli("-C", directory, "cleanup")
        assert cleanup.returncode == 0, cleanup.stderr
        assert cleanup.stdout.strip() == "{'serving': 1}"
        assert not process_alive(endpoint["pid"])

        after = json.loads(_cli("-C", directory, "status", "--json").stdout)
        assert after["deployed"] is False and after["trained"] is True and after["endpoint"] is None
        second = _cli("-C", directory, "cleanup")
        assert second.stdout.strip() == "{'serving': 0}"
    finally:
        record = endpoint or _deployed_record(small_use_case)
        _cli("-C", directory, "cleanup", timeout=120)
        if record is not None:
            if process_alive(record["pid"]):
                stop_endpoint(record)
            assert not process_alive(record["pid"])


# -- exit codes ---------------------------------------------------------------------------------

#: Runs the real command line with one command replaced by a faulty one (a stand-in for a bug):
#: ``python -c FAULTY <command to break> <what it does: raise|wait> <argv...>``.
FAULTY = """
import sys, time
import modelcycle.cli as cli
name, fault, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
def faulty(args):
    if fault == "wait":
        print("waiting", flush=True)
        time.sleep(120)
    raise RuntimeError("boom in " + name)
setattr(cli, "cmd_" + name, faulty)
sys.exit(cli.main(argv))
"""


def _faulty(name: str, fault: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", FAULTY, name, fault, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def test_help_documents_the_exit_codes() -> None:
    result = _cli("--help", timeout=120)
    assert result.returncode == 0, result.stderr
    epilog = result.stdout[result.stdout.index("exit codes"):]
    for code, meaning in (("0", "success"), ("1", "--fail-on-violation"), ("2", "user error"),
                          ("3", "internal error"), ("130", "interrupted")):
        assert re.search(rf"^\s+{code}\s+.*{re.escape(meaning)}", epilog, re.MULTILINE), code


def test_an_internal_error_exits_3_with_one_line_and_the_traceback_in_a_file(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc", name="buggy")
    process = _faulty("status", "raise", "-C", str(directory), "status")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 3 and out == ""
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("internal error: RuntimeError: boom in status (full traceback in ")
    where = re.search(r"full traceback in (\S+?);", err)
    assert where is not None
    log = Path(where.group(1))
    assert log.parent == directory / ".modelcycle" / "logs"
    text = log.read_text()
    assert text.startswith("Traceback") and "RuntimeError: boom in status" in text and "faulty" in text


def test_modelcycle_debug_prints_the_traceback_of_an_internal_error(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc", name="buggy")
    process = _faulty("status", "raise", "-C", str(directory), "status", env={"MODELCYCLE_DEBUG": "1"})
    _, err = process.communicate(timeout=120)
    assert process.returncode == 3
    assert err.startswith("Traceback") and err.splitlines()[-1].startswith("internal error: RuntimeError: boom")


def test_a_user_error_exits_2_and_an_interrupt_130(tmp_path: Path) -> None:
    assert _cli("-C", str(tmp_path), "deploy", timeout=120).returncode == 2  # no use case here
    assert _cli("no-such-command", timeout=120).returncode == 2  # argparse: a usage error
    process = _faulty("status", "wait", "-C", str(tmp_path), "status")
    try:
        assert process.stdout is not None and process.stdout.readline() == "waiting\n"
        process.send_signal(2)  # SIGINT, as Ctrl-C sends
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130 and err.strip() == "interrupted"
