"""Monitoring backends are plugins of the ``modelcycle.monitoring`` entry-point group.

A third party's backend, registered in-process through a fake entry point exactly as ``pip
install`` would, mirrors a live endpoint's monitoring on real MNIST: monitor → log-payload →
log-feedback (labelled records scored by the serving platform) → evaluate (once and on a
schedule) → a backend switch → cleanup. Unknown backends and settings sections fail with
errors naming what to fix, before any state changes.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from conftest import SMALL, isolated_module_env, mark_trained, stop_deployed, write_use_case
from modelcycle.core import registry
from modelcycle.core.errors import ConfigError, PluginNotFoundError
from modelcycle.core.lifecycle import UseCase
from modelcycle.core.markers import hookimpl
from modelcycle.core.monitoring.store import MonitoringStore
from modelcycle.core.registry import MONITORING_GROUP


class RecorderSettings(BaseModel):
    """``monitoring.recorder:``"""

    model_config = ConfigDict(extra="forbid")
    project: str
    batch: int = 40


class Recorder:
    """A mirror kept in memory: what a third party's backend would send to its service."""

    name = "Recorder Service"

    def __init__(self, plugin: RecorderPlugin, settings: RecorderSettings) -> None:
        self.plugin, self.settings = plugin, settings

    def subscribe(self, use_case: str, deployment: dict[str, Any], run_id: str | None, quality: Any) -> dict[str, Any]:
        number = len(self.plugin.subscriptions) + len(self.plugin.deleted) + 1
        ids = {"subscription_id": f"sub-{number}", "payload_target": f"{self.settings.project}-payload-{number}",
               "feedback_target": f"{self.settings.project}-feedback-{number}"}
        self.plugin.subscriptions[ids["subscription_id"]] = {
            "use_case": use_case, "deployment": deployment["name"], "run_id": run_id, "min_feedback": quality.min_feedback_data_size}
        return ids

    def forward(self, store: Any, deployment_id: str, ids: dict[str, Any], input_shape: tuple[int, ...] | None) -> dict[str, int]:
        sent = {}
        for kind, unsent in (("payload", store.unforwarded_payload), ("feedback", store.unforwarded_feedback)):
            target, sent[kind] = ids[f"{kind}_target"], 0
            while records := unsent(deployment_id, target, self.settings.batch):
                self.plugin.received[kind] += records
                store.mark_forwarded(target, [r["scoring_id"] for r in records])
                sent[kind] += len(records)
        return sent

    def run_quality(self, ids: dict[str, Any]) -> dict[str, Any]:
        self.plugin.runs += 1
        rows = self.plugin.received["feedback"]
        accuracy = sum(int(r["prediction"]) == int(r["label"]) for r in rows) / len(rows)
        return {"run_id": f"run-{self.plugin.runs}", "state": "finished", "metrics": {"accuracy": accuracy}}

    def delete(self, ids: dict[str, Any]) -> int:
        self.plugin.deleted.append(ids["subscription_id"])
        return int(self.plugin.subscriptions.pop(ids["subscription_id"], None) is not None)


class RecorderPlugin:
    """The plugin module a third party ships (entry point ``recorder`` in ``modelcycle.monitoring``)."""

    def __init__(self) -> None:
        self.backends = 0
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.received: dict[str, list[dict[str, Any]]] = {"payload": [], "feedback": []}
        self.runs = 0

    @hookimpl
    def monitoring_settings_class(self) -> type:
        return RecorderSettings

    @hookimpl
    def monitoring_backend(self, settings: RecorderSettings) -> Recorder:
        self.backends += 1
        return Recorder(self, settings)


class FakeEntryPoint:
    name, group, value, dist = "recorder", MONITORING_GROUP, "recorder_plugin", None

    def __init__(self, plugin: RecorderPlugin) -> None:
        self.plugin = plugin

    def load(self) -> RecorderPlugin:
        return self.plugin


def install(monkeypatch: pytest.MonkeyPatch, plugin: RecorderPlugin) -> None:
    """Make the registry see the installed entry points plus ``recorder``."""
    real = importlib.metadata.entry_points

    def entry_points(*, group: str) -> list[Any]:
        return [*real(group=group), *([FakeEntryPoint(plugin)] if group == MONITORING_GROUP else [])]

    monkeypatch.setattr(registry, "entry_points", entry_points)


@pytest.fixture(scope="module")
def use_case_dir(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Path]:
    """A use case mirrored by ``recorder``, trained (state → the session's model) and deployed."""
    with isolated_module_env(tmp_path_factory, data_dir):
        directory = write_use_case(
            tmp_path_factory.mktemp("recorder") / "uc", name="recorded", tracking={"enabled": False},
            monitoring={"backend": "recorder", "recorder": {"project": "digits"}, "drift": {"enabled": False},
                        "quality": {"min_feedback_data_size": 20}},
            **SMALL)
        mark_trained(directory, trained_model_dir)
        try:
            UseCase(directory).deploy()
            yield directory
        finally:
            stop_deployed(directory)


def test_a_third_party_backend_mirrors_the_whole_lifecycle(use_case_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = RecorderPlugin()
    install(monkeypatch, plugin)
    use_case = UseCase(use_case_dir)

    subscription = use_case.monitor()
    ids = subscription["recorder"]
    assert subscription["backend"] == "recorder" and subscription["backend_title"] == "Recorder Service"
    deployment = subscription["deployment_id"]
    assert plugin.subscriptions == {ids["subscription_id"]: {
        "use_case": "recorded", "deployment": deployment, "run_id": subscription["asset_revision"], "min_feedback": 20}}
    assert use_case.monitor() == subscription  # still valid: nothing is made twice
    assert len(plugin.subscriptions) == 1

    payload = use_case.log_payload(samples=20)
    assert payload["stored"] == 20 and payload["recorder"] == {"payload": 20, "feedback": 0}
    assert sorted(r["scoring_id"] for r in plugin.received["payload"]) == sorted(payload["scoring_ids"])
    # 20 logged records have a known label; the serving platform scores 30 more with theirs
    feedback = use_case.log_feedback(samples=50)
    assert (feedback["matched_payload"], feedback["scored"], feedback["total_feedback"]) == (20, 30, 50)
    assert feedback["recorder"] == {"payload": 30, "feedback": 50}
    store = MonitoringStore(f"sqlite:///{use_case_dir / '.modelcycle' / 'monitoring.db'}")
    assert store.payload_count(deployment) == 50

    backends = plugin.backends
    (quality,) = use_case.evaluate(plots=False)
    remote = quality["details"]["recorder"]
    assert remote["run_id"] == "run-1" and remote["backend_title"] == "Recorder Service"
    assert remote["metrics"]["accuracy"] == pytest.approx(quality["metrics"]["accuracy"], abs=1e-12)
    seen: list[list[dict[str, Any]]] = []
    scheduled = use_case.evaluate(plots=False, every=0.05, times=2, on_result=seen.append)
    assert [m["run_id"] for m in scheduled] == [batch[0]["run_id"] for batch in seen] and len(set(m["run_id"] for m in scheduled)) == 2
    assert plugin.runs == 3 and plugin.backends == backends + 2  # one backend per command, not per evaluation

    # switching backends replaces the subscription: the backend that made it deletes it
    local = UseCase(use_case_dir, overrides={"monitoring.backend": "local"}).monitor()
    assert local["backend"] == "local" and "recorder" not in local and plugin.deleted == [ids["subscription_id"]]
    assert store.forwarded_count(ids["payload_target"]) == 0
    ids = UseCase(use_case_dir).monitor()["recorder"]
    assert list(plugin.subscriptions) == [ids["subscription_id"]]

    removed = UseCase(use_case_dir).cleanup(records=True)
    assert removed["recorder"] == 1 and removed["monitoring"] == 1 and removed["payload_records"] == 50
    assert plugin.subscriptions == {} and plugin.deleted[-1] == ids["subscription_id"]
    assert store.payload_count(deployment) == 0


def test_an_unknown_backend_fails_naming_the_installed_ones_before_any_state_changes(tmp_path: Path) -> None:
    use_case = UseCase(write_use_case(tmp_path / "uc", monitoring={"backend": "nosuch"}))
    pattern = r"monitoring\.backend: monitoring 'nosuch' is not installed; .*local, openscale"
    for action in (use_case.monitor, use_case.log_payload, use_case.log_feedback, use_case.evaluate,
                   lambda: use_case.attach_feedback({"id": 1})):
        with pytest.raises(PluginNotFoundError, match=pattern):
            action()
    assert use_case.state().stages == {}


def test_backend_sections_are_mappings_named_after_installed_backends(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"monitoring: .*'openscal' is no monitoring setting \(allowed keys: backend, "
                                          r"database_url, drift, payload, quality\)"):
        UseCase(write_use_case(tmp_path / "a", monitoring={"openscal": "https://example.invalid"}))
    misspelled = UseCase(write_use_case(tmp_path / "b", monitoring={"openscal": {"url": "https://example.invalid"}}))
    with pytest.raises(ConfigError, match=r"monitoring\.openscal: unknown key: no installed monitoring backend is named "
                                          r"'openscal'; allowed keys: backend, .*quality, local, openscale"):
        misspelled.monitor()
    with pytest.raises(ConfigError, match=r"monitoring\.local: monitoring backend 'local' takes no settings"):
        UseCase(write_use_case(tmp_path / "c", monitoring={"local": {"anything": 1}})).evaluate()


def test_a_backends_settings_are_validated_by_its_own_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, RecorderPlugin())
    use_case = UseCase(write_use_case(tmp_path / "uc", monitoring={"backend": "recorder", "recorder": {"batch": 0}}))
    with pytest.raises(ConfigError, match=r"monitoring\.recorder\.project: required key is missing"):
        use_case.monitor()
    assert use_case.state().stages == {}


def test_backend_modules_stay_light() -> None:
    """``modelcycle --help`` imports every monitoring plugin module (for its commands)."""
    probe = ("import sys, modelcycle.platforms.ibm.openscale, modelcycle.platforms.local.monitoring; "
             "print(sorted(m for m in ('numpy', 'pydantic', 'ibm_watson_openscale', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
