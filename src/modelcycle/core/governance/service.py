"""Governance of one use case: the inventory, ``govern``, stage moves, custom facts, cleanup.

The local SQL store is always the record (so the inventory and factsheets work offline); the
governance backend plugin ``governance.backend`` names (see
:mod:`modelcycle.core.governance.backends`) mirrors each governed model elsewhere (``ibm``: IBM AI
Factsheets) and the remote ids it returns are kept on the asset, so ``cleanup --governance`` knows
what to delete. A backend may also offer ``check_ready(governance)``, called before ``govern``
changes anything, to refuse missing settings or credentials early.

:class:`~modelcycle.core.lifecycle.UseCase` delegates to :class:`Governance`; it works on the
narrow :class:`~modelcycle.core.view.UseCaseView` of the use case.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.core.governance.errors import AssetNotFoundError, GovernanceError, TransitionError
from modelcycle.core.governance.inventory import ENTRY_POINT, lineage, sync_inventory
from modelcycle.core.governance.stages import STAGES, check_transition
from modelcycle.core.governance.store import GovernanceStore, current_user, resolve_database_url

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.plugin_types import GovernanceBackend
    from modelcycle.core.state import State
    from modelcycle.core.view import UseCaseView

__all__ = ["Governance", "deployment_facts", "follow_stage_in_registry", "on_cleanup"]

log = logging.getLogger(__name__)


class Governance:
    """The governance of ``use_case`` (its store opened, its backend loaded on first use).

    Args:
        use_case: the use case (any :class:`~modelcycle.core.view.UseCaseView`).
        backend: a backend object to use instead of the configured one (tests, embedding).
    """

    def __init__(self, use_case: UseCaseView, backend: GovernanceBackend | None = None) -> None:
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
        """The configured backend (see :func:`~modelcycle.core.governance.backends.load_backend`
        for the errors loading it raises)."""
        if self._backend is None:
            from modelcycle.core.governance.backends import load_backend

            self._backend = load_backend(self.use_case)
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
        state = self.use_case.store.read()
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
        backend = self.backend  # a backend that cannot load changes nothing
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
        registered = follow_stage_in_registry(self.use_case, asset["run_id"], asset["stage"])
        remote = backend.publish(self, asset, deployment)
        if remote is not None:
            self.store.set_remote(asset["id"], remote)
            self.store.record_event(self.record["id"], f"{backend.name}.published", self.who, asset_id=asset["id"],
                                    details=remote)
        result = {
            "asset_id": asset["id"],
            "stage": asset["stage"],
            "backend": backend.name,
            "run_id": asset["run_id"],
            "endpoint": endpoint.get("name"),
            "deployment_id": deployment["id"],
        }
        if remote:
            result["remote"] = remote
        if registered:
            result["registered_model"] = registered
        return result

    # -- facts -------------------------------------------------------------------------------
    def set_fact(self, key: str, value: Any, run: str | None = None) -> dict[str, Any]:
        """Set a custom fact on an asset (default: the deployed or latest one); an asset the
        backend mirrors gets it remotely too (``record["remote"]``: what the backend reported)."""
        asset = self.asset(run)
        backend = self.backend if asset.get("remote") else None  # a backend that cannot load changes nothing
        record = self.store.set_fact(asset, key, value, self.who)
        record["run_id"] = asset["run_id"]
        if backend is not None:
            try:
                remote = backend.push_facts(self, self.store.get_asset(asset["id"]))
            except GovernanceError as exc:
                raise type(exc)(
                    f"fact '{key}' is recorded locally, but sending it to {backend.name} failed: {exc}. "
                    "It is sent again by the next 'modelcycle govern --force'"
                ) from exc
            if remote is not None:
                self.store.set_remote(asset["id"], remote)
                record["remote"] = {k: remote.get(k) for k in ("asset_id", "facts_set", "facts_skipped")}
        return record

    def facts(self, run: str | None = None) -> dict[str, Any]:
        """The custom facts of an asset (default: the deployed or latest one):
        ``{"run_id", "asset_id", "facts": {key: {"value", "who", "at"}}}``."""
        asset = self.asset(run)
        return {"run_id": asset["run_id"], "asset_id": asset["id"], "facts": self.store.custom_facts(asset["id"])}

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

    # -- the govern stage (UseCase.govern) ------------------------------------------------------
    def preflight(self, stage: str | None, force: bool, reason: str | None) -> None:
        """Refuse what would fail ``govern`` before the stage starts, so nothing changes: an
        unknown or misconfigured backend, missing credentials (the backend's ``check_ready``), an
        invalid ``stage`` move (the store checks again when it moves)."""
        check = getattr(self.backend, "check_ready", None)
        if check is not None:
            check(self)
        if stage is None:
            return
        if stage not in STAGES:
            raise TransitionError(f"unknown stage '{stage}'; stages are: {' → '.join(STAGES)}")
        run_id = self.use_case.store.read().stage("deploy").outputs.get("run_id")
        if not run_id:
            return  # the stage machinery explains that deploy must come first
        try:
            asset = self.asset(run_id)
        except AssetNotFoundError:
            return  # govern explains it
        current = STAGES[1] if asset["stage"] == STAGES[0] else asset["stage"]
        check_transition(current, stage, force=force, reason=reason)

    def govern_deployed(self, state: State, stage: str | None, force: bool, reason: str | None) -> dict[str, Any]:
        """The ``govern`` stage's action (run under the use case's lock): govern the endpoint the
        ``deploy`` stage recorded, once its platform reports it InService."""
        endpoint = dict(state.stage("deploy").outputs)
        if not endpoint.get("name"):
            raise GovernanceError("no endpoint is deployed: run 'modelcycle deploy' first")
        status = self.use_case.describe_endpoint(endpoint).get("status")
        if status != "InService":
            raise GovernanceError(
                f"endpoint {endpoint['name']} is {status}, not InService: run 'modelcycle deploy --force' first"
            )
        endpoint["status"] = status
        return self.govern(endpoint, stage=stage, force=force, reason=reason)

    def still_valid(self, outputs: dict[str, Any]) -> bool:
        """A done ``govern`` holds while it describes the deployed endpoint and the configured
        backend, and the store still holds that deployment (not wiped or swapped)."""
        deployed = self.use_case.store.read().stage("deploy").outputs
        if not (
            outputs.get("endpoint") == deployed.get("name")
            and outputs.get("run_id") == deployed.get("run_id")
            and outputs.get("backend") == self.config.backend
        ):
            return False
        if not self.exists():
            return False
        active = self.store.deployments(use_case_id=self.record["id"], active_only=True)
        return any(d["id"] == outputs.get("deployment_id") for d in active)

    # -- cleanup -----------------------------------------------------------------------------
    def cleanup(self, remove: bool) -> dict[str, int]:
        """After the endpoint is stopped: close its deployment records, and with ``remove`` delete
        every governance record of the use case (remote assets first)."""
        if not self.exists():
            return {"factsheets": 0} if remove else {}
        backend = self.backend if remove else None  # a backend that cannot load changes nothing
        record = self.record
        self.store.close_deployments(record["id"], self.who, reason="endpoint stopped by cleanup")
        if backend is None:
            return {}
        count = backend.remove(self, self.assets())
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


def follow_stage_in_registry(use_case: UseCaseView, run_id: str, stage: str) -> dict[str, Any] | None:
    """Move the MLflow Model Registry alias of the run's registered version to follow ``stage``
    (see :data:`modelcycle.core.mlflow_model.STAGE_ALIASES`). ``None`` when the run has no
    registered version (tracking or model logging off) or the registry cannot be reached: the
    local store stays the record of the stage, and a warning says the alias did not follow."""
    tracking = use_case.config.tracking
    if not (tracking.enabled and tracking.log_model):
        return None
    from modelcycle.core.mlflow_model import follow_stage
    from modelcycle.core.tracking import default_tracking_uri, mlflow_client, wait_for_pending_writes

    wait_for_pending_writes(use_case.work_dir)  # the run's version may still be being registered
    if not tracking.uri and not (use_case.work_dir / "mlflow.db").exists():
        return None
    try:
        client = mlflow_client(tracking.uri or default_tracking_uri(use_case.work_dir))
        return follow_stage(client, use_case.config.name, run_id, stage)
    except Exception as exc:  # noqa: BLE001 - the governance store is the record; MLflow mirrors it
        log.warning("governance: the MLflow registry alias of run %s did not follow stage %s: %s", run_id, stage, exc)
        return None


def on_cleanup(use_case: UseCaseView, remove: bool = False) -> dict[str, int]:
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

