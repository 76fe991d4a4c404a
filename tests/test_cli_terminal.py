"""A terminal that reads well: tables keep words whole at 80 columns, ``runs`` shows only the
parameters that vary, ``status`` reports the served run, set-up errors list everything missing,
unknown plugin names get a did-you-mean.

Real CLI processes (``COLUMNS=80``) on a use case swept for real; the endpoint a test deploys
is stopped by pid, also on failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, isolated_module_env, stop_deployed, write_use_case

from modelcycle.cli import main, varying_params
from modelcycle.cli.tables import render_table

#: Where a value may be folded; a word is what lies between them.
WORD_SPLIT = re.compile(r"[\s./,=:_\-]+")
TINY = {"data": {"dataset": "mnist", "train_limit": 600, "test_limit": 200},
        "hyperparameters": {"epochs": 1, "log_interval": 100}}


def words(text: str) -> set[str]:
    return {w for w in WORD_SPLIT.split(text) if w}


def assert_words_whole(output: str, expected: list[str], width: int = 80) -> None:
    """Every line fits ``width`` cells and every word of ``expected`` appears whole in a line."""
    lines = output.splitlines()
    assert all(len(line) <= width for line in lines), "\n".join(line for line in lines if len(line) > width)
    line_words = [words(line) for line in lines]
    for text in expected:
        for word in words(text):
            assert any(word in found for found in line_words), f"'{word}' (of '{text}') is broken apart:\n{output}"


def run_cli(*args: str, columns: int = 80, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "modelcycle.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600, check=False)


def _text(renderables: list[Any], width: int) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    for renderable in renderables:
        console.print(renderable)
    return console.export_text()


# -- the table helper -------------------------------------------------------------------------

HEADERS = ["run", "status", "model.hidden_channels", "hyperparameters.learning_rate", "test_accuracy", "test_loss"]
ROWS = [["4afac212", "FINISHED", "20", "0.005", "0.9641", "0.1182"],
        ["ff28b7a4", "FAILED", "2", "0.05", "", ""]]


def test_a_table_that_fits_is_drawn_side_by_side_unfolded() -> None:
    text = _text(render_table("runs", HEADERS[:2], [r[:2] for r in ROWS], width=80), 80)
    assert re.search(r"│ 4afac212 │ FINISHED │", text), text


def test_a_wide_table_folds_at_separators_and_keeps_every_word_whole() -> None:
    text = _text(render_table("runs of mnist", HEADERS, ROWS, width=80), 80)
    assert "┃ run" in text and "│ 4afac212 │" in text  # still side by side
    assert_words_whole(text, HEADERS + [v for row in ROWS for v in row])
    assert "hidden_channels" not in text  # the long header was folded (at '_' or '.')


def test_a_table_too_wide_to_fold_becomes_records() -> None:
    text = _text(render_table("runs of mnist", HEADERS, ROWS, caption="sorted", width=40), 40)
    assert "┃" not in text and "1 of 2" in text and "2 of 2" in text
    assert re.search(r"^model\.hidden_channels\s+20$", text, re.MULTILINE), text
    assert_words_whole(text, HEADERS + [v for row in ROWS for v in row], width=40)


def test_spaces_are_folded_before_other_separators() -> None:
    rows = [["2026-12-01 22:05:13", "quality", "weighted_false_positive_rate", "0.0100", "≥ 0.8", "VIOLATION"]]
    text = _text(render_table(None, ["time (UTC)", "monitor", "metric", "value", "limit", "status"], rows, width=80), 80)
    assert re.search(r"│ 2026-12-01 │", text) and re.search(r"│ 22:05:13\s+│", text), text
    assert_words_whole(text, rows[0])


def test_markup_styles_but_does_not_count() -> None:
    text = _text(render_table(None, ["metric", "status"], [["accuracy", "[red]VIOLATION[/]"]], width=80), 80)
    assert "VIOLATION" in text and "[red]" not in text


@pytest.mark.parametrize("columns", [80, 50])
def test_plugins_table_keeps_words_whole(columns: int) -> None:
    result = run_cli("plugins", columns=columns)
    assert result.returncode == 0, result.stderr
    from modelcycle.core.registry import installed_plugins

    expected = [v for p in installed_plugins() for v in (p.kind, p.name, p.distribution, p.version)]
    assert "sklearn-mlp" in expected  # the test adapter is installed: a long distribution name
    assert_words_whole(result.stdout, ["kind", "name", "distribution", "version", *expected], width=columns)


# -- runs: only what varies -------------------------------------------------------------------


def test_varying_params_ignore_runs_without_the_param() -> None:
    runs = [
        {"params": {"model.hidden_channels": "2", "preprocessing.mean": "0.1307", "epochs": "1"}},
        {"params": {"model.hidden_channels": "5", "preprocessing.mean": "0.1307", "epochs": "1"}},
        {"params": {"model.hidden_channels": "5", "epochs": "1"}},  # failed before logging the rest
    ]
    assert varying_params(runs) == ["model.hidden_channels"]
    assert varying_params(runs[2:]) == []


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[dict[str, Any]]:
    """A use case swept over hidden_channels=2,3 through the CLI, plus a FAILED run written into
    its MLflow store as a crash leaves it (fewer params logged)."""
    with isolated_module_env(tmp_path_factory, data_dir):
        yield _sweep(tmp_path_factory)


def _sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = write_use_case(tmp_path_factory.mktemp("terminal") / "uc", name="terminal", **TINY)
    result = run_cli("-C", str(directory), "sweep", "--param", "hidden_channels=2,3")
    assert result.returncode == 0, result.stderr
    from modelcycle.core.lifecycle import UseCase
    from modelcycle.core.tracking import default_tracking_uri, mlflow_client

    use_case = UseCase(directory)
    runs = use_case.runs()
    client = mlflow_client(default_tracking_uri(use_case.work_dir))
    experiment = client.get_experiment_by_name("terminal")
    failed = client.create_run(experiment.experiment_id, tags={"modelcycle.run_id": "f" * 32})
    client.log_param(failed.info.run_id, "model.hidden_channels", "4")
    client.set_terminated(failed.info.run_id, "FAILED")
    return {"directory": directory, "runs": runs, "sweep_out": result.stdout}


def test_runs_after_a_sweep_and_a_failed_run_at_80_columns(swept: dict[str, Any]) -> None:
    result = run_cli("-C", str(swept["directory"]), "runs")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "preprocessing" not in out and "learning_rate" not in out  # equal wherever logged
    assert "FAILED" in out and "ffffffff" in out
    expected = ["run", "status", "model.hidden_channels", "test_accuracy", "test_loss", "duration_s", "FINISHED", "FAILED"]
    expected += [r["run_id"][:8] for r in swept["runs"]] + [f"{r['metrics']['test_accuracy']:.4f}" for r in swept["runs"]]
    assert_words_whole(out, expected)
    for run in swept["runs"]:  # the sweep's own table lists its runs too
        assert run["run_id"][:8] in swept["sweep_out"], swept["sweep_out"]
    params = {r["params"]["model.hidden_channels"] for r in swept["runs"]}
    assert params == {"2", "3"}
    for line in out.splitlines():  # each run's row carries its own hidden_channels
        for run in swept["runs"]:
            if run["run_id"][:8] in line:
                assert re.search(rf"│ {run['params']['model.hidden_channels']}\s+│", line), line


def test_status_reports_the_served_run_not_the_latest(swept: dict[str, Any]) -> None:
    directory = swept["directory"]
    oldest, latest = swept["runs"][-1], swept["runs"][0]  # newest first
    assert oldest["run_id"] != latest["run_id"]
    try:
        deployed = run_cli("-C", str(directory), "deploy", "--run", oldest["run_id"][:8])
        assert deployed.returncode == 0, deployed.stderr
        out = run_cli("-C", str(directory), "status").stdout
    finally:
        stop_deployed(directory)
    served = re.search(r"^served run\s+([0-9a-f]{32})\s+test accuracy ([\d.]+)%$", out, re.MULTILINE)
    assert served, out
    assert served.group(1) == oldest["run_id"]
    assert float(served.group(2)) == pytest.approx(oldest["metrics"]["test_accuracy"] * 100, abs=0.005)
    other = re.search(r"^latest run\s+([0-9a-f]{32})\s+test accuracy ([\d.]+)%\s+\(not deployed", out, re.MULTILINE)
    assert other and other.group(1) == latest["run_id"], out


# -- set-up errors ----------------------------------------------------------------------------


def test_pipeline_export_names_role_bucket_and_region_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "MODELCYCLE_SAGEMAKER_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    directory = write_use_case(tmp_path / "uc", name="bare", training={"platform": "sagemaker"})
    assert main(["-C", str(directory), "pipeline", "export"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 3 settings are missing:"), err
    for key in ("training.role is not set", "training.region is not set", "training.bucket is not set"):
        assert key in err, err
    assert "MODELCYCLE_SAGEMAKER_ROLE" in err and "MODELCYCLE_SAGEMAKER_BUCKET" in err and "AWS_DEFAULT_REGION" in err


def test_sagemaker_settings_name_role_and_region_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelcycle.core.config import load_config
    from modelcycle.core.errors import ConfigError
    from modelcycle.platforms.sagemaker.session import resolve_settings

    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "MODELCYCLE_SAGEMAKER_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    config = load_config(write_use_case(tmp_path / "uc", name="bare"), environ={})
    with pytest.raises(ConfigError) as raised:
        resolve_settings(config.serving, "bare", role_key="serving.role")
    assert "serving.role is not set" in str(raised.value) and "serving.region is not set" in str(raised.value)
    assert "bucket" not in str(raised.value)  # found later (SageMaker's default bucket) when not named


# -- names ------------------------------------------------------------------------------------


def test_an_unknown_framework_gets_a_did_you_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path / "x"), "--framework", "pytorh"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'pytorch'?" in err and re.search(r"installed frameworks: .*\bkeras\b", err), err
    assert "example" not in err


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert re.fullmatch(r"modelcycle \S+\n", capsys.readouterr().out)
