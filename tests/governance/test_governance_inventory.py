"""The model inventory after real trainings: one asset per run, every fact, lineage with checksums."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from governance_fakes import open_use_case, trained_use_case  # noqa: F401 - fixture

from modelcycle.cli import main
from modelcycle.core.governance.service import Governance


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_two_trainings_make_two_assets_with_lineage(trained_use_case: Path, tmp_path: Path, data_dir: Path) -> None:
    from modelcycle.core.experiments import list_runs

    use_case = open_use_case(trained_use_case, tmp_path / "gov.db")
    governance = Governance(use_case)
    listing = governance.inventory()
    assert [entry["name"] for entry in listing] == ["gov-mnist"]
    assets = listing[0]["assets"]
    run_dirs = {p.name for p in (trained_use_case / ".modelcycle" / "runs").iterdir()}
    assert len(assets) == 2 and {a["run_id"] for a in assets} == run_dirs
    tracked = {r["run_id"]: r for r in list_runs(use_case)}
    for asset in assets:
        assert asset["stage"] == "develop"
        assert asset["mlflow_run_id"] == tracked[asset["run_id"]]["mlflow_run_id"]
        assert asset["metrics"]["test_accuracy"] == pytest.approx(tracked[asset["run_id"]]["metrics"]["test_accuracy"])
        nodes = {n["kind"]: n for n in asset["lineage"]["nodes"]}
        assert set(nodes) == {"dataset", "run", "model"}  # not deployed yet
        checksums = nodes["dataset"]["checksums"]
        assert len(checksums) == 4
        for name, digest in checksums.items():  # the real files' md5, as read when training
            assert digest == _md5(data_dir / "mnist" / name)
        assert nodes["run"]["run_id"] == asset["run_id"] and nodes["model"]["asset_id"] == asset["id"]
        assert [(e["from"], e["to"]) for e in asset["lineage"]["edges"]] == [
            (nodes["dataset"]["id"], nodes["run"]["id"]), (nodes["run"]["id"], nodes["model"]["id"])]
        assert [(e["from_stage"], e["to_stage"]) for e in asset["stage_history"]] == [(None, "develop")]

    asset = governance.asset(assets[0]["run_id"][:8])
    facts = asset["facts"]
    assert facts["history"] and facts["history"][0]["epoch"] == 1
    assert {"train_loss", "test_loss", "test_accuracy"} <= set(facts["history"][0])
    assert facts["params"]["learning_rate"] == "0.005" and facts["params"]["model.hidden_channels"] == "20"
    assert facts["preprocessing"]["mean"][0] == pytest.approx(0.1307, abs=1e-3)
    assert "Conv2d" in facts["model_summary"]
    assert facts["identity"]["libraries"]["torch"].startswith("2.")
    assert (Path(asset["model_dir"]) / facts["artifacts"]["entry_point"]).is_file()
    assert Path(asset["archive"]).is_file()

    assert governance.sync() == []  # idempotent: known runs are not imported twice
    assert len(governance.store.audit_trail(use_case_id=governance.record["id"], action="asset.imported")) == 2


def test_inventory_and_facts_commands(trained_use_case: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCYCLE_USER", "jane")
    base = ["-C", str(trained_use_case), "--set", f"governance.database_url=sqlite:///{tmp_path / 'gov.db'}"]
    assert main([*base, "inventory", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    runs = sorted(a["run_id"] for a in listing[0]["assets"])
    assert len(runs) == 2

    assert main([*base, "facts", "set", "owner", "Jane Doe", "--run", runs[0][:8]]) == 0
    assert main([*base, "facts", "set", "risk_tier", "2", "--run", runs[0][:8]]) == 0
    assert f"set on run {runs[0]} by jane" in capsys.readouterr().out
    assert main([*base, "facts", "list", "--run", runs[0][:8], "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)["facts"]
    assert facts["owner"]["value"] == "Jane Doe" and facts["risk_tier"]["value"] == 2 and facts["owner"]["who"] == "jane"
    assert main([*base, "facts", "list", "--run", runs[1][:8], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["facts"] == {}  # facts belong to one asset

    assert main([*base, "facts", "set", "owner", "x", "--run", "zzzz"]) == 2
    assert "matches 0 model assets; known runs:" in capsys.readouterr().err

    assert main([*base, "inventory"]) == 0
    table = capsys.readouterr().out
    assert "use case gov-mnist" in table and table.count("develop") == 2
