"""The governance store on SQLite and on a real PostgreSQL server: every table round-trips,
processes racing on one inventory agree, and ``govern`` records a live deployment.

PostgreSQL runs when ``MODELCYCLE_TEST_POSTGRES_URL`` names a database (``.ci/run`` starts a
server on loopback and sets it); each test gets a fresh schema (conftest ``database_url``).
Otherwise those cases are skipped saying what to install.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from governance_fakes import trained_use_case  # noqa: F401 - fixture

from modelcycle.core.governance.errors import TransitionError
from modelcycle.core.governance.store import GovernanceStore

RACERS = 4


def _asset_record(run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id, "mlflow_run_id": "m" + run_id, "name": f"uc-{run_id[:8]}", "framework": "pytorch",
        "framework_version": "0.1.0", "created_at": "2026-01-01T00:00:00+00:00", "model_dir": "/nowhere",
        "archive": None, "dataset_name": "mnist", "dataset_checksums": {"train.gz": "0" * 32},
        "facts": {"metrics": {"test_accuracy": 0.9}, "notes": "Ünïcode ✓", "history": [{"epoch": 1, "loss": 0.25}]},
    }


def test_every_table_round_trips(database_url: str) -> None:
    store = GovernanceStore(database_url)
    assert store.engine.dialect.name == database_url.split(":")[0].split("+")[0]
    use_case = store.ensure_use_case("uc", "alice", directory="/uc", description="round trip", framework="pytorch")
    assert store.ensure_use_case("uc", "bob") == use_case  # found, not made twice
    asset = store.add_asset(use_case["id"], _asset_record("a" * 32), "alice", reason="imported")
    assert store.add_asset(use_case["id"], _asset_record("a" * 32), "bob", reason="again") is None
    stored = store.get_asset(asset["id"])
    assert stored["facts"] == _asset_record("a")["facts"] and stored["dataset_checksums"] == {"train.gz": "0" * 32}

    assert store.move_stage(asset["id"], "test", "alice", reason="deployed")["moved"] is True
    with pytest.raises(TransitionError, match="allowed next stage: validate"):
        store.move_stage(asset["id"], "operate", "alice", reason="hurry")
    store.move_stage(asset["id"], "develop", "carol", reason="rolled back", force=True)
    history = store.stage_history(asset["id"])
    assert [(e["from_stage"], e["to_stage"], e["who"], e["forced"]) for e in history] == [
        (None, "develop", "alice", False), ("develop", "test", "alice", False), ("test", "develop", "carol", True)]

    endpoint = {"name": "ep-1", "url": "http://127.0.0.1:1", "platform": "local", "created_at": "2026-01-02T00:00:00+00:00",
                "details": {"pid": 1}}
    first = store.record_deployment(stored, endpoint, "alice")
    assert store.record_deployment(stored, {**endpoint, "url": "http://127.0.0.1:2"}, "alice")["id"] == first["id"]
    restarted = store.record_deployment(stored, {**endpoint, "created_at": "2026-01-03T00:00:00+00:00"}, "alice")
    assert restarted["id"] != first["id"]
    other = store.record_deployment(stored, {**endpoint, "name": "ep-2"}, "alice")
    assert store.close_deployments(use_case["id"], "alice", keep="ep-2") == 1
    active = store.deployments(use_case_id=use_case["id"], active_only=True)
    assert [d["id"] for d in active] == [other["id"]] and active[0]["details"] == {"pid": 1}
    assert len(store.deployments(asset_id=asset["id"])) == 3

    store.set_fact(stored, "owner", "alice", "alice")
    store.set_fact(stored, "owner", {"team": "ops", "people": ["bob"]}, "carol")
    assert store.custom_facts(asset["id"])["owner"] == {"value": {"team": "ops", "people": ["bob"]}, "who": "carol",
                                                        "at": store.custom_facts(asset["id"])["owner"]["at"]}
    store.set_remote(asset["id"], {"asset_id": "remote-1"})
    assert store.get_asset(asset["id"])["remote"] == {"asset_id": "remote-1"}
    trail = store.audit_trail(use_case_id=use_case["id"])
    assert [e["id"] for e in trail] == sorted(e["id"] for e in trail)
    assert [e["action"] for e in trail].count("fact.set") == 2

    counts = store.purge_use_case(use_case["id"])
    assert counts == {"assets": 1, "facts": 2, "deployments": 3, "audit": len(trail)}
    assert store.list_use_cases() == [] and store.audit_trail() == []


_RACER = """
import json, os, sys, time
from modelcycle.core.governance.store import GovernanceStore
url, start, phase, arg = sys.argv[1:5]
store = GovernanceStore(url)
open(f"{start}.ready.{os.getpid()}", "w").close()
while not os.path.exists(start):
    time.sleep(0.002)
if phase == "import":
    use_case = store.ensure_use_case("raced", "racer")
    added = store.add_asset(use_case["id"], json.loads(arg), "racer", reason="imported")
    print(json.dumps({"use_case": use_case["id"], "added": added is not None}))
else:
    print(json.dumps(store.move_stage(arg, "test", "racer", reason="deployed")))
"""


def _race(url: str, directory: Path, phase: str, arg: str) -> list[dict[str, Any]]:
    """``RACERS`` processes open the store, say they are ready, wait for one signal, then run
    ``phase`` at once."""
    start = directory / f"start-{phase}"
    processes = [subprocess.Popen([sys.executable, "-c", _RACER, url, str(start), phase, arg],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(RACERS)]
    try:
        deadline = time.monotonic() + 120
        while len(list(directory.glob(f"{start.name}.ready.*"))) < RACERS:
            assert time.monotonic() < deadline and all(p.poll() is None for p in processes), "a racer did not start"
            time.sleep(0.01)
        start.touch()
        outputs = [process.communicate(timeout=120) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err
    return [json.loads(out) for out, _ in outputs]


def test_processes_racing_on_one_inventory_agree(database_url: str, tmp_path: Path) -> None:
    imported = _race(database_url, tmp_path, "import", json.dumps(_asset_record("c" * 32)))
    store = GovernanceStore(database_url)
    [use_case] = store.list_use_cases()
    assert {r["use_case"] for r in imported} == {use_case["id"]}
    assert sum(r["added"] for r in imported) == 1
    [asset] = store.assets(use_case["id"])
    assert len(store.audit_trail(use_case_id=use_case["id"], action="asset.imported")) == 1

    moves = _race(database_url, tmp_path, "move", asset["id"])
    assert sorted(m["moved"] for m in moves) == [False] * (RACERS - 1) + [True]
    assert [(e["from_stage"], e["to_stage"]) for e in store.stage_history(asset["id"])] == [(None, "develop"), ("develop", "test")]


def test_govern_records_a_live_deployment(trained_use_case: Path, database_url: str) -> None:  # noqa: F811
    from modelcycle.core.governance.service import Governance
    from modelcycle.core.lifecycle import UseCase

    use_case = UseCase(trained_use_case, overrides={"governance.database_url": database_url})
    try:
        endpoint = use_case.deploy()
        result = use_case.govern()
        assert result["stage"] == "test" and result["run_id"] == endpoint["run_id"]
        moved = use_case.govern(stage="validate", reason="QA sign-off")
        assert moved["stage"] == "validate" and moved["asset_id"] == result["asset_id"]
        governance = Governance(use_case)
        assert governance.store.engine.dialect.name == database_url.split(":")[0].split("+")[0]
        [listing] = governance.inventory()
        assert len(listing["assets"]) == 2
        asset = next(a for a in listing["assets"] if a["id"] == result["asset_id"])
        assert asset["stage"] == "validate" and [d["name"] for d in asset["deployments"]] == [endpoint["name"]]
        assert [e["to_stage"] for e in asset["stage_history"]] == ["develop", "test", "validate"]
    finally:
        removed = use_case.cleanup(governance=True)
    assert removed["serving"] == 1 and GovernanceStore(database_url).list_use_cases() == []
