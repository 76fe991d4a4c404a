"""Governance backends are plugins (entry-point group ``modelcycle.governance``): how the
selected one is found, how its settings are read and validated, and a third-party backend
driven through the whole governance lifecycle."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from governance_fakes import PluginEntryPoint, install_entry_points, open_use_case, trained_use_case  # noqa: F401
from pydantic import BaseModel, ConfigDict

from modelcycle import hookimpl
from modelcycle.cli import main
from modelcycle.core.errors import ConfigError, PluginNotFoundError
from modelcycle.core.governance.service import Governance
from modelcycle.core.lifecycle import UseCase

IBM_KEYS = ("api_key_env, approach_id, catalog_id, model_entry_id, region, service_url, timeout_s, username, "
            "verify_tls, version_number")


@pytest.fixture(scope="module")
def served(trained_use_case: Path) -> Iterator[Path]:
    """The trained use case; endpoints the tests deploy are stopped at the end."""
    try:
        yield trained_use_case
    finally:
        UseCase(trained_use_case).cleanup()


def _config_only(tmp_path: Path, **governance: Any) -> UseCase:
    """A use case whose modelcycle.yaml has ``governance`` as written (nothing trained)."""
    from conftest import write_use_case

    directory = write_use_case(tmp_path / "uc", name="settings-uc", governance=governance)
    return UseCase(directory)


def _stage(use_case: UseCase, name: str) -> tuple[str, dict[str, Any]] | None:
    record = use_case.store.read().stages.get(name)
    return None if record is None else (record.status, dict(record.outputs))


# -- finding the backend ----------------------------------------------------------------------


def test_unknown_backend_lists_the_installed_ones_and_changes_nothing(served: Path, tmp_path: Path) -> None:
    deployed = open_use_case(served, tmp_path / "gov.db").deploy()
    use_case = open_use_case(served, tmp_path / "gov.db", **{"governance.backend": "factsheetz"})
    before = _stage(use_case, "govern")
    with pytest.raises(PluginNotFoundError) as info:
        use_case.govern()
    message = str(info.value)
    assert "governance 'factsheetz' is not installed" in message
    listed = re.search(r"installed governances: ([\w, -]+)\.", message)
    assert listed and {"ibm", "local"} <= set(listed.group(1).split(", ")), message
    assert _stage(use_case, "govern") == before and _stage(use_case, "deploy")[1]["name"] == deployed["name"]
    assert Governance(use_case).exists() is False  # not even the use case's row was written


# -- settings ---------------------------------------------------------------------------------


def test_a_misspelled_ibm_key_written_flat_is_named(tmp_path: Path) -> None:
    use_case = _config_only(tmp_path, backend="ibm", catalog_id="catalog-1", model_entryid="usecase-1")
    with pytest.raises(ConfigError) as info:
        use_case.govern()
    message = str(info.value)
    assert f"governance.model_entryid: unknown key; allowed keys: {IBM_KEYS}" in message
    assert str(use_case.directory / "modelcycle.yaml") in message
    assert _stage(use_case, "govern") is None


def test_an_invalid_ibm_value_is_named(tmp_path: Path) -> None:
    use_case = _config_only(tmp_path, backend="ibm", catalog_id="catalog-1", region="mars", timeout_s=0)
    with pytest.raises(ConfigError) as info:
        Governance(use_case).backend
    message = str(info.value)
    assert "governance.region: Input should be 'dallas', 'frankfurt'" in message
    assert "governance.timeout_s: Input should be greater than 0" in message


def test_ibm_settings_under_their_own_section(tmp_path: Path) -> None:
    use_case = _config_only(tmp_path, backend="ibm", ibm={"catalog_id": "catalog-1", "region": "london",
                                                          "api_key_env": "MY_IBM_KEY"})
    backend = Governance(use_case).backend
    assert backend.name == "ibm"
    assert (backend.settings.catalog_id, backend.settings.region, backend.settings.api_key_env) == (
        "catalog-1", "london", "MY_IBM_KEY")

    mixed = UseCase(use_case.directory, overrides={"governance.model_entry_id": "usecase-1"})
    assert Governance(mixed).backend.settings.model_entry_id == "usecase-1"  # flat and section together

    misspelled = UseCase(use_case.directory, overrides={"governance.ibm.regoin": "tokyo"})
    with pytest.raises(ConfigError, match=r"governance\.ibm\.regoin: unknown key; allowed keys: api_key_env"):
        Governance(misspelled).backend

    twice = UseCase(use_case.directory, overrides={"governance.catalog_id": "catalog-2"})
    with pytest.raises(ConfigError, match=r"governance\.catalog_id and governance\.ibm\.catalog_id: two different values"):
        Governance(twice).backend


def test_the_local_backend_takes_no_settings(tmp_path: Path) -> None:
    use_case = _config_only(tmp_path, backend="local", catalog_id="catalog-1")
    with pytest.raises(ConfigError) as info:
        Governance(use_case).backend
    assert ("governance.catalog_id: unknown key; allowed keys: backend, database_url "
            "(the governance backend 'local' takes no settings)") in str(info.value)

    # another installed backend's section is kept for when that backend is selected
    switched = _config_only(tmp_path, backend="local", ibm={"catalog_id": "catalog-1"})
    assert Governance(switched).backend.name == "local"
    assert Governance(UseCase(switched.directory, overrides={"governance.backend": "ibm"})).backend.settings.catalog_id == "catalog-1"


# -- a third-party backend --------------------------------------------------------------------


class AuditTrailSettings(BaseModel):
    """The settings of the test backend ``audit-trail``."""

    model_config = ConfigDict(extra="forbid")
    project: str
    region: str = "eu"


class AuditTrailBackend:
    """Mirrors governed assets into a list (the "remote service"), recording every call."""

    name = "audit-trail"

    def __init__(self, settings: AuditTrailSettings, calls: list[tuple[Any, ...]]) -> None:
        self.settings = settings
        self.calls = calls

    def publish(self, governance: Any, asset: dict[str, Any], deployment: dict[str, Any] | None) -> dict[str, Any]:
        self.calls.append(("publish", asset["run_id"], deployment["name"] if deployment else None, asset["stage"]))
        remote = dict(asset.get("remote") or {})
        remote.update(asset_id=f"{self.settings.project}/{asset['run_id'][:8]}", region=self.settings.region,
                      stage=asset["stage"])
        return remote

    def push_facts(self, governance: Any, asset: dict[str, Any]) -> dict[str, Any]:
        facts = {key: fact["value"] for key, fact in governance.store.custom_facts(asset["id"]).items()}
        self.calls.append(("push_facts", asset["remote"]["asset_id"], facts))
        return {**asset["remote"], "facts_set": sorted(facts)}

    def remove(self, governance: Any, assets: list[dict[str, Any]]) -> int:
        mirrored = sorted(a["remote"]["asset_id"] for a in assets if a.get("remote"))
        self.calls.append(("remove", mirrored))
        return len(mirrored)


class AuditTrailPlugin:
    """The plugin object its entry point loads."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.settings: list[AuditTrailSettings] = []

    @hookimpl
    def governance_settings_class(self) -> type[AuditTrailSettings]:
        return AuditTrailSettings

    @hookimpl
    def governance_backend(self, settings: AuditTrailSettings) -> AuditTrailBackend:
        self.settings.append(settings)
        return AuditTrailBackend(settings, self.calls)


def test_a_third_party_backend_is_called_by_govern_facts_and_cleanup(served: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    plugin = AuditTrailPlugin()
    install_entry_points(monkeypatch, PluginEntryPoint("audit-trail", "modelcycle.governance", plugin))
    settings = {"governance.backend": "audit-trail", "governance.project": "mnist-audit"}
    use_case = open_use_case(served, tmp_path / "gov.db", **settings)
    cli = ["-C", str(served), "--set", f"governance.database_url=sqlite:///{tmp_path / 'gov.db'}",
           *[arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]]

    endpoint = use_case.deploy()
    result = use_case.govern()
    remote_id = f"mnist-audit/{endpoint['run_id'][:8]}"
    assert result["backend"] == "audit-trail" and result["remote"]["asset_id"] == remote_id
    assert plugin.calls == [("publish", endpoint["run_id"], endpoint["name"], "test")]
    assert [(s.project, s.region) for s in plugin.settings] == [("mnist-audit", "eu")]  # once per command
    governance = Governance(use_case)
    assert governance.store.get_asset(result["asset_id"])["remote"]["asset_id"] == remote_id

    assert use_case.govern() == result and len(plugin.calls) == 1  # still governed: not published again

    assert main([*cli, "govern", "--stage", "validate", "--reason", "QA sign-off"]) == 0
    assert "stage: validate   backend: audit-trail" in capsys.readouterr().out
    assert plugin.calls[-1] == ("publish", endpoint["run_id"], endpoint["name"], "validate")

    assert main([*cli, "facts", "set", "owner", "Jane Doe"]) == 0
    assert plugin.calls[-1] == ("push_facts", remote_id, {"owner": "Jane Doe"})
    record = use_case.set_fact("risk_tier", 3)
    assert plugin.calls[-1] == ("push_facts", remote_id, {"owner": "Jane Doe", "risk_tier": 3})
    assert record["remote"]["facts_set"] == ["owner", "risk_tier"]
    assert use_case.facts()["facts"]["risk_tier"]["value"] == 3

    removed = use_case.cleanup(governance=True)
    assert removed["serving"] == 1 and removed["factsheets"] == 1
    assert plugin.calls[-1] == ("remove", [remote_id])
    assert Governance(use_case).exists() is False
