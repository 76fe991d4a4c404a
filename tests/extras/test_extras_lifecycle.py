"""The extras' dataset and governance backend through the whole CLI lifecycle:
init → train (on sklearn-digits) → deploy → score → govern (ledger) → cleanup --governance."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelcycle.core.registry import plugin_distribution


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelcycle.cli", *args], capture_output=True, text=True, timeout=300)


def _ok(*args: str) -> subprocess.CompletedProcess[str]:
    run = _cli(*args)
    assert run.returncode == 0, f"modelcycle {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}"
    return run


def test_digits_and_the_ledger_through_the_cli_lifecycle(tmp_path: Path) -> None:
    if plugin_distribution("governance", "ledger") is None:
        pytest.fail("install it: pip install tests/resources/modelcycle-example-extras (make test does)")
    from modelcycle_example_extras.digits import bundled_file

    directory, ledger = tmp_path / "digits-uc", tmp_path / "audit" / "ledger.jsonl"
    _ok("init", str(directory), "--framework", "pytorch", "--example", "mnist")
    config = yaml.safe_load((directory / "modelcycle.yaml").read_text())
    config.update(
        data={"dataset": "sklearn-digits"},
        model={"architecture": "fc", "hidden_size": 64},  # the fully connected net sizes itself to 8x8
        governance={"backend": "ledger", "ledger": {"path": str(ledger)}},
    )
    config["hyperparameters"].update(epochs=1, batch_size=32, learning_rate=0.01, log_interval=10)
    (directory / "modelcycle.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    uc = ("-C", str(directory))
    try:
        _ok(*uc, "train")
        _ok(*uc, "deploy")
        score = _ok(*uc, "score", "--samples", "50").stdout
        assert int(score.split("(")[-1].split("/")[0]) > 5, score  # better than chance (10 classes)
        status = json.loads(_ok(*uc, "status", "--json").stdout)
        assert status["metrics"]["test_accuracy"] > 0.3, status["metrics"]
        run_id = status["endpoint"]["run_id"]
        manifest = json.loads((Path(status["model_archive"]).parent / "model" / "modelcycle.json").read_text())
        digits = bundled_file()
        assert manifest["dataset"] == {
            "name": "sklearn-digits",
            "checksums": {"digits.csv.gz": hashlib.md5(digits.read_bytes()).hexdigest()},
            "train_records": 1433,
            "test_records": 364,
        }
        assert manifest["input_schema"]["shape"][-2:] == [8, 8]
        governed = json.loads(_ok(*uc, "govern", "--json").stdout)
        assert governed["backend"] == "ledger" and governed["run_id"] == run_id
        published = [json.loads(line) for line in ledger.read_text().splitlines()]
        assert [e["event"] for e in published] == ["publish"]
        assert published[0]["run_id"] == run_id and published[0]["asset_id"] == governed["asset_id"]
        assert published[0]["stage"] == "test" and published[0]["dataset"]["name"] == "sklearn-digits"
        assert published[0]["deployment"]["name"] == status["endpoint"]["name"]
    finally:
        cleanup = _cli(*uc, "cleanup", "--governance")
    assert cleanup.returncode == 0, cleanup.stderr
    events = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [e["event"] for e in events] == ["publish", "remove"]
    assert events[1]["asset_id"] == governed["asset_id"] and events[1]["run_id"] == run_id
