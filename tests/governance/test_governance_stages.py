"""Lifecycle stages and the audit trail of the governance store (no training needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelcycle.core.governance.errors import AssetNotFoundError, TransitionError
from modelcycle.core.governance.stages import STAGES, allowed_next, check_transition
from modelcycle.core.governance.store import GovernanceStore, current_user


def _asset_record(run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id, "mlflow_run_id": "m" + run_id, "name": f"uc-{run_id[:8]}", "framework": "pytorch",
        "framework_version": "0.1.0", "created_at": "2026-01-01T00:00:00+00:00", "model_dir": "/nowhere",
        "archive": None, "dataset_name": "mnist", "dataset_checksums": {"a.gz": "0" * 32},
        "facts": {"metrics": {"test_accuracy": 0.9}},
    }


@pytest.fixture
def store(tmp_path: Path) -> GovernanceStore:
    return GovernanceStore(f"sqlite:///{tmp_path / 'governance.db'}")


@pytest.fixture
def asset(store: GovernanceStore, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("MODELCYCLE_USER", "alice")
    use_case = store.ensure_use_case("uc", current_user(), directory="/uc")
    added = store.add_asset(use_case["id"], _asset_record("a" * 32), current_user(), reason="imported")
    assert added is not None
    return added


def test_stage_order_and_allowed_moves() -> None:
    assert STAGES == ("develop", "test", "validate", "operate")
    assert allowed_next("develop") == ["test"] and allowed_next("operate") == []
    check_transition("test", "validate")
    check_transition("validate", "validate")  # staying is not a move
    with pytest.raises(TransitionError, match="allowed next stage: test"):
        check_transition("develop", "operate")
    with pytest.raises(TransitionError, match=r"from validate to test \(back\); allowed next stage: operate"):
        check_transition("validate", "test")
    with pytest.raises(TransitionError, match="needs a reason"):
        check_transition("validate", "test", force=True)
    check_transition("validate", "test", force=True, reason="bug found")
    with pytest.raises(TransitionError, match="unknown stage 'prod'"):
        check_transition("test", "prod")
    with pytest.raises(TransitionError, match=r"none \(operate is the last stage\)"):
        check_transition("operate", "develop")


def test_moves_are_audited_with_who_when_why(store: GovernanceStore, asset: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    assert asset["stage"] == "develop"
    store.move_stage(asset["id"], "test", current_user(), reason="deployed")
    monkeypatch.setenv("MODELCYCLE_USER", "bob")
    store.move_stage(asset["id"], "validate", current_user(), reason="reviewed by QA")
    history = store.stage_history(asset["id"])
    assert [(e["from_stage"], e["to_stage"]) for e in history] == [(None, "develop"), ("develop", "test"), ("test", "validate")]
    assert [e["who"] for e in history] == ["alice", "alice", "bob"]
    assert [e["reason"] for e in history] == ["imported", "deployed", "reviewed by QA"]
    assert all(e["at"].endswith("+00:00") for e in history)
    assert [e["at"] for e in history] == sorted(e["at"] for e in history)
    assert store.get_asset(asset["id"])["stage"] == "validate"


def test_invalid_moves_are_refused_and_leave_no_trace(store: GovernanceStore, asset: dict[str, Any]) -> None:
    before = store.audit_trail(asset_id=asset["id"])
    with pytest.raises(TransitionError, match="allowed next stage: test"):
        store.move_stage(asset["id"], "operate", "alice", reason="hurry")
    store.move_stage(asset["id"], "test", "alice")
    with pytest.raises(TransitionError, match="allowed next stage: validate"):
        store.move_stage(asset["id"], "develop", "alice", reason="oops")
    assert store.get_asset(asset["id"])["stage"] == "test"
    assert len(store.audit_trail(asset_id=asset["id"])) == len(before) + 1  # only the valid move
    unchanged = store.move_stage(asset["id"], "test", "alice")
    assert unchanged["moved"] is False and len(store.stage_history(asset["id"])) == 2


def test_forced_moves_are_flagged(store: GovernanceStore, asset: dict[str, Any]) -> None:
    store.move_stage(asset["id"], "operate", "alice", reason="hotfix approved by CAB-42", force=True)
    store.move_stage(asset["id"], "develop", "alice", reason="rolled back", force=True)
    last_two = store.stage_history(asset["id"])[-2:]
    assert [(e["from_stage"], e["to_stage"], e["forced"]) for e in last_two] == [("develop", "operate", True), ("operate", "develop", True)]
    store.move_stage(asset["id"], "test", "alice", force=True)  # a normal step: force changes nothing
    assert store.stage_history(asset["id"])[-1]["forced"] is False


def test_custom_facts_keep_history_and_latest_value(store: GovernanceStore, asset: dict[str, Any]) -> None:
    store.set_fact(asset, "owner", "alice", "alice")
    store.set_fact(asset, "owner", "bob", "carol")
    store.set_fact(asset, "risk_tier", 2, "carol")
    facts = store.custom_facts(asset["id"])
    assert facts["owner"]["value"] == "bob" and facts["owner"]["who"] == "carol"
    assert facts["risk_tier"]["value"] == 2
    fact_events = store.audit_trail(asset_id=asset["id"], action="fact.set")
    assert [e["details"]["value"] for e in fact_events] == ["alice", "bob", 2]


def test_find_asset_by_prefix_and_purge(store: GovernanceStore, asset: dict[str, Any]) -> None:
    other = store.add_asset(asset["use_case_id"], _asset_record("b" * 32), "alice", reason="imported")
    assert store.add_asset(asset["use_case_id"], _asset_record("b" * 32), "alice", reason="again") is None  # idempotent
    assert store.find_asset(asset["use_case_id"], "bbbb")["id"] == other["id"]
    with pytest.raises(AssetNotFoundError, match="known runs: aaaaaaaa, bbbbbbbb"):
        store.find_asset(asset["use_case_id"], "zz")  # ids are hex: nothing starts with z
    store.set_fact(asset, "owner", "alice", "alice")
    counts = store.purge_use_case(asset["use_case_id"])
    assert counts["assets"] == 2 and counts["facts"] == 1 and counts["audit"] >= 6
    assert store.get_use_case("uc") is None and store.audit_trail(use_case_id=asset["use_case_id"]) == []
