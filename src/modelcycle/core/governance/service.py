"""Governance of one use case: the inventory, ``govern``, stage moves, custom facts, cleanup.

The local SQL store is always the record (so the inventory and factsheets work offline); a
remote backend (``governance.backend: ibm``) mirrors each governed model into IBM AI Factsheets
and its ids are kept on the asset, so ``cleanup --governance`` knows what to delete.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from modelcycle.core.governance.errors import AssetNotFoundError, GovernanceError, TransitionError
from modelcycle.core.governance.inventory import ENTRY_POINT, lineage, sync_inventory
from modelcycle.core.governance.stages import STAGES, check_transition
from modelcycle.core.governance.store import GovernanceStore, current_user, resolve_database_url

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.lifecycle import UseCase
    from modelcycle.core.state import State

__all__ = ["Governance", "GovernanceBackend", "LocalBackend", "preflight", "govern_stage", "govern_still_valid", "on_cleanup"]

log = logging.getLogger(__name__)


class GovernanceBackend(Protocol):
    """Where governed models are mirrored beyond the local store."""

    name: str

    def publish(self, governance: Governance, asset: dict[str, Any], deployment: dict[str, Any] | None) -> dict[str, Any] | None:
        """Create or update the remote model asset (facts, deployment, tracking, stage, custom
        facts); returns the remote ids to keep on the asset."""

    def push_facts(self, governance: Governance, asset: dict[str, Any]) -> dict[str, Any] | None:
        """Send the asset's custom facts to its remote asset (if it has one)."""

    def remove(self, governance: Governance, assets: list[dict[str, Any]]) -> int:
        """Delete the remote assets; returns how many were deleted."""


class LocalBackend:
    """The local store alone: nothing to mirror."""

    name = "local"

    def publish(self, governance: Governance, asset: dict[str, Any], deployment: dict[str, Any] | None) -> dict[str, Any] | None:
        return None

    def push_facts(self, governance: Governance, asset: dict[str, Any]) -> dict[str, Any] | None:
        return None

    def remove(self, governance: Governance, assets: list[dict[str, Any]]) -> int:
        return len(assets)


def _backend(name: str) -> GovernanceBackend:
    if name == "local":
        return LocalBackend()
    if name == "ibm":
        from modelcycle.platforms.ibm.factsheets import IBMFactsheetsBackend

        return IBMFactsheetsBackend()
    raise GovernanceError(f"unknown governance backend '{name}'; choose local or ibm")


class Governance:
    """The governance of ``use_case`` (its store opened on first use).

    Args:
        use_case: the use case.
        backend: a backend object to use instead of the configured one (tests, embedding).
    """

    def __init__(self, use_case: UseCase, backend: GovernanceBackend | None = None) -> None:
        self.use_case = use_case
        self.config = use_case.config.governance
        self.url = resolve_database_url(self.config.database_url, use_case.work_dir)
        self._store: GovernanceStore | None = None
        self._backend = backend
        self._record: dict[str, Any] | None = None
        self.who = current_user()

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def store(self) -> GovernanceStore:
        if self._store is None:
            self._store = GovernanceStore(self.url)
        return self._store

    @property
    def backend(self) -> GovernanceBackend:
        if self._backend is None:
            self._backend = _backend(self.config.backend)
        return self._backend

    @property
    def record(self) -> dict[str, Any]:
        """The use case's row (created on first use)."""
        if self._record is None:
            config = self.use_case.config
            self._record = self.store.ensure_use_case(
                config.name, self.who, directory=str(self.use_case.directory), description=config.description,
                framework=config.framework,
            )
        return self._record

    def exists(self) -> bool:
        """Whether this use case has governance records (without creating any)."""
        if self.url.startswith("sqlite:///") and not Path(self.url[len("sqlite:///"):]).exists():
            return False
        return self.store.get_use_case(self.use_case.config.name) is not None

    def sync(self) -> list[dict[str, Any]]:
        """Import the finished training runs the inventory does not hold yet."""
        return sync_inventory(self.use_case, self.store, self.record["id"], self.who)

    # -- assets ------------------------------------------------------------------------------
    def assets(self) -> list[dict[str, Any]]:
        return self.store.assets(self.record["id"])

    def asset(self, run: str | None = None) -> dict[str, Any]:
        """The asset of run ``run`` (a prefix), else the deployed one, else the latest trained.

        Raises:
            AssetNotFoundError: no such run, or no asset at all.
        """
        self.sync()
        if run:
            return self.store.find_asset(self.record["id"], run)
        state = self.use_case.state()
        for stage in ("deploy", "train"):
            record = state.stages.get(stage)
            if record is not None and record.status == "done" and record.outputs.get("run_id"):
                try:
                    return self.store.find_asset(self.record["id"], record.outputs["run_id"])
                except AssetNotFoundError:
                    continue
        assets = self.assets()
        if not assets:
            raise AssetNotFoundError("the inventory holds no model asset yet: run 'modelcycle train' first")
        return assets[-1]

    # -- govern ------------------------------------------------------------------------------
    def govern(self, endpoint: dict[str, Any], stage: str | None = None, force: bool = False,
               reason: str | None = None) -> dict[str, Any]:
        """Record the deployment behind ``endpoint`` and move the deployed asset's stage.

        The first time an asset is governed it moves develop → test (deployed); ``stage`` moves it
        on explicitly (``force`` allows skipping ahead or going back, with a ``reason``).
        """
        if stage is not None and stage not in STAGES:
            raise GovernanceError(f"unknown stage '{stage}'; stages are: {' → '.join(STAGES)}")
        self.sync()
        run_id = endpoint.get("run_id")
        if not run_id:
            raise GovernanceError("the deployed endpoint names no run id; redeploy with 'modelcycle deploy --force'")
        try:
            asset = self.store.find_asset(self.record["id"], run_id)
        except AssetNotFoundError:
            raise GovernanceError(
                f"the deployed run {run_id} is not in the inventory: its model under "
                f"{self.use_case.work_dir / 'runs' / run_id} is missing or its MLflow run did not finish"
            ) from None
        deployment = self.store.record_deployment(asset, deployment_facts(asset, endpoint), self.who)
        self.store.close_deployments(self.record["id"], self.who, keep=endpoint.get("name"),
                                     reason="replaced by another deployment")
        if asset["stage"] == STAGES[0]:
            self.store.move_stage(asset["id"], STAGES[1], self.who, source="govern",
                                  reason=f"deployed to endpoint {endpoint.get('name')} ({endpoint.get('platform')})")
        if stage is not None:
            self.store.move_stage(asset["id"], stage, self.who, reason=reason, force=force, source="govern")
        asset = self.store.get_asset(asset["id"])
        remote = self.backend.publish(self, asset, deployment)
        if remote is not None:
            self.store.set_remote(asset["id"], remote)
            self.store.record_event(self.record["id"], f"{self.backend.name}.published", self.who, asset_id=asset["id"],
                                    details=remote)
        result = {
            "asset_id": asset["id"],
            "stage": asset["stage"],
            "backend": self.backend.name,
            "run_id": asset["run_id"],
            "endpoint": endpoint.get("name"),
            "deployment_id": deployment["id"],
        }
        if remote:
            result["remote"] = remote
        return result

    def move(self, stage: str, run: str | None = None, force: bool = False, reason: str | None = None) -> dict[str, Any]:
        """Move one asset's stage without recording a deployment (the remote asset follows on the
        next ``govern``)."""
        asset = self.asset(run)
        return self.store.move_stage(asset["id"], stage, self.who, reason=reason, force=force, source="cli")

    # -- facts -------------------------------------------------------------------------------
    def set_fact(self, key: str, value: Any, run: str | None = None) -> dict[str, Any]:
        """Set a custom fact on an asset (default: the deployed or latest one)."""
        asset = self.asset(run)
        record = self.store.set_fact(asset, key, value, self.who)
        record["run_id"] = asset["run_id"]
        if asset.get("remote"):
            try:
                remote = self.backend.push_facts(self, self.store.get_asset(asset["id"]))
            except GovernanceError as exc:
                raise type(exc)(
                    f"fact '{key}' is recorded locally, but sending it to {self.backend.name} failed: {exc}. "
                    "It is sent again by the next 'modelcycle govern --force'"
                ) from exc
            if remote is not None:
                self.store.set_remote(asset["id"], remote)
                record["remote"] = {k: remote.get(k) for k in ("asset_id", "facts_set", "facts_skipped")}
        return record

    # -- views -------------------------------------------------------------------------------
    def describe(self, asset: dict[str, Any]) -> dict[str, Any]:
        """One asset with its deployments, lineage, stage history and custom facts."""
        deployments = self.store.deployments(asset_id=asset["id"])
        return {
            **{k: v for k, v in asset.items() if k != "facts"},
            "metrics": asset["facts"].get("metrics", {}),
            "deployments": deployments,
            "lineage": lineage(asset, deployments),
            "stage_history": self.store.stage_history(asset["id"]),
            "custom_facts": self.store.custom_facts(asset["id"]),
        }

    def inventory(self) -> list[dict[str, Any]]:
        """Every use case of the store with its assets (this use case synced first)."""
        self.sync()
        listing = []
        for use_case in self.store.list_use_cases():
            listing.append({**use_case, "assets": [self.describe(a) for a in self.store.assets(use_case["id"])]})
        return listing

    # -- cleanup -----------------------------------------------------------------------------
    def cleanup(self, remove: bool) -> dict[str, int]:
        """After the endpoint is stopped: close its deployment records, and with ``remove`` delete
        every governance record of the use case (remote assets first)."""
        if not self.exists():
            return {"factsheets": 0} if remove else {}
        record = self.record
        self.store.close_deployments(record["id"], self.who, reason="endpoint stopped by cleanup")
        if not remove:
            return {}
        assets = self.assets()
        count = self.backend.remove(self, assets)
        self.store.purge_use_case(record["id"])
        self._record = None
        return {"factsheets": count}


def deployment_facts(asset: dict[str, Any], endpoint: dict[str, Any]) -> dict[str, Any]:
    """The facts of a deployment, as the seed's ``govern()`` records them."""
    facts = asset["facts"]
    libraries = facts["identity"].get("libraries", {})
    details = {k: v for k, v in endpoint.items() if k not in ("token",)}
    details["framework_versions"] = libraries
    return {
        "name": endpoint.get("name"),
        "url": endpoint.get("url"),
        "platform": endpoint.get("platform"),
        "model_data": endpoint.get("model_data") or asset.get("archive") or endpoint.get("model_dir"),
        "framework": asset.get("framework"),
        "entry_point": endpoint.get("entry_point") or ENTRY_POINT,
        "image": endpoint.get("image") or endpoint.get("image_uri"),
        "created_at": endpoint.get("started_at") or endpoint.get("created_at"),
        "details": details,
    }


def preflight(use_case: UseCase, stage: str | None, force: bool, reason: str | None) -> None:
    """Refuse an invalid ``govern --stage`` before the ``govern`` stage starts (so a refused move
    leaves the use case governed); the store checks again when it moves. A remote backend checks
    its settings and credentials first, so a missing API key changes nothing."""
    if use_case.config.governance.backend != "local":
        backend = _backend(use_case.config.governance.backend)
        check = getattr(backend, "check_ready", None)
        if check is not None:
            check(Governance(use_case, backend=backend))
    if stage is None:
        return
    if stage not in STAGES:
        raise TransitionError(f"unknown stage '{stage}'; stages are: {' → '.join(STAGES)}")
    run_id = use_case.state().stage("deploy").outputs.get("run_id")
    if not run_id:
        return  # _run_stage explains that deploy must come first
    governance = Governance(use_case)
    try:
        asset = governance.asset(run_id)
    except AssetNotFoundError:
        return  # govern explains it
    current = STAGES[1] if asset["stage"] == STAGES[0] else asset["stage"]
    check_transition(current, stage, force=force, reason=reason)


def govern_stage(use_case: UseCase, state: State, stage: str | None, force: bool, reason: str | None) -> dict[str, Any]:
    """The ``govern`` lifecycle stage's action (``UseCase.govern`` runs it under the lock)."""
    endpoint = dict(state.stage("deploy").outputs)
    if not endpoint.get("name"):
        raise GovernanceError("no endpoint is deployed: run 'modelcycle deploy' first")
    status = use_case.describe_endpoint(endpoint).get("status")
    if status != "InService":
        raise GovernanceError(
            f"endpoint {endpoint['name']} is {status}, not InService: run 'modelcycle deploy --force' first"
        )
    endpoint["status"] = status
    return Governance(use_case).govern(endpoint, stage=stage, force=force, reason=reason)


def govern_still_valid(use_case: UseCase, outputs: dict[str, Any]) -> bool:
    """A done ``govern`` holds while it describes the deployed endpoint and the configured backend."""
    deployed = use_case.state().stage("deploy").outputs
    if not (
        outputs.get("endpoint") == deployed.get("name")
        and outputs.get("run_id") == deployed.get("run_id")
        and outputs.get("backend") == use_case.config.governance.backend
    ):
        return False
    governance = Governance(use_case)  # the store still holds that deployment (not wiped or swapped)
    if not governance.exists():
        return False
    return any(d["id"] == outputs.get("deployment_id") for d in governance.store.deployments(use_case_id=governance.record["id"], active_only=True))


def on_cleanup(use_case: UseCase, remove: bool = False) -> dict[str, int]:
    """Called by ``UseCase.cleanup``: close deployment records; with ``remove`` delete them all.

    Without ``remove`` a governance failure never stops the cleanup of the endpoint.
    """
    try:
        return Governance(use_case).cleanup(remove)
    except Exception as exc:
        if remove:
            raise
        log.warning("governance: could not close the deployment records: %s", exc)
        return {}

