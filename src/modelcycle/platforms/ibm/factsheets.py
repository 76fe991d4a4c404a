"""The IBM AI Factsheets governance backend (``governance: {backend: ibm, ...}``).

Each governed model asset is mirrored as an *external model* asset in ``catalog_id``, the way the
seed's SageMaker jobs did it with ``ibm-aigov-facts-client``:

1. the run's facts (params, final and per-epoch metrics, tags incl. job name, entry point, dataset
   checksums) are exported as a notebook experiment — manually for plain PyTorch, through the
   autolog payload for the frameworks the client autologs (Lightning, Keras);
2. ``save_external_model_asset`` creates or updates the model asset (model details and the
   deployment details of the endpoint: name, scoring URL, model data, entry point, framework);
3. the asset is tracked into the AI use case ``model_entry_id`` (first approach unless
   ``approach_id``; version bumped by ``version_number``);
4. its environment is set to the asset's lifecycle stage (develop/test/validate/operate);
5. custom facts set with ``modelcycle facts set`` are sent when the catalog defines them.

``cleanup --governance`` untracks and deletes the assets it created. The client runs in a child
process (see :mod:`modelcycle.platforms.ibm.worker`) inside ``.modelcycle/governance/ibm/``; the API
key is read from the variable named by ``governance.api_key_env``, passed to the child through its
environment only, and scrubbed from everything written or raised.

The plugin (entry point ``ibm`` in ``modelcycle.governance``) is
:mod:`modelcycle.platforms.ibm.governance`; its settings are :class:`FactsheetsSettings`, written
flat under ``governance:`` or under ``governance.ibm:``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelcycle.core.governance.errors import BackendError, GovernanceError
from modelcycle.core.state import utcnow
from modelcycle.platforms.ibm.worker import API_KEY_VARIABLE

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.governance.service import Governance

__all__ = [
    "FactsheetsSettings", "IBMFactsheetsBackend", "PROVIDERS", "AUTOLOG_FLAVOURS",
]

#: ``ModelDetails.provider`` per serving platform (the client's ``Provider`` values).
PROVIDERS = {"sagemaker": "Amazon SageMaker", "local": "Custom Environment"}
#: MLflow autolog flavour per framework the facts client autologs (plain PyTorch is manual).
AUTOLOG_FLAVOURS = {"lightning": "pytorch", "keras": "keras", "tensorflow": "tensorflow", "sklearn": "sklearn"}
_LOG_NAME = "factsheets.log"


class FactsheetsSettings(BaseModel):
    """Settings of the ``ibm`` governance backend (``governance: {backend: ibm, ...}``).

    ``catalog_id`` is required to publish (checked before ``govern`` changes anything); without
    ``service_url`` the client talks to IBM Cloud in ``region``, with it to that Cloud Pak for
    Data cluster as ``username``. The API key is read from the environment variable named by
    ``api_key_env``; it never goes into ``modelcycle.yaml``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    catalog_id: str | None = Field(default=None, description="catalog (inventory) holding the model assets and the AI use case")
    model_entry_id: str | None = Field(default=None, description="the AI use case (model entry) models are tracked in")
    approach_id: str | None = Field(default=None, description="approach of the AI use case; default: its first")
    version_number: str = Field(default="minor", description="version when tracking: major | minor | patch | a semver")
    api_key_env: str = Field(default="IBM_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="name of the variable holding the API key")
    service_url: str | None = Field(default=None, description="Cloud Pak for Data URL; unset: IBM Cloud")
    username: str | None = Field(default=None, description="Cloud Pak for Data user the API key belongs to")
    region: Literal["dallas", "frankfurt", "london", "tokyo", "toronto", "sydney"] | None = None
    verify_tls: bool = Field(default=True, description="verify the service's TLS certificate")
    timeout_s: float = Field(default=600.0, gt=0, description="limit for one exchange with the service")


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


class IBMFactsheetsBackend:
    """Mirror governed model assets into IBM AI Factsheets.

    Args:
        settings: the backend's validated settings.
        python: the interpreter that runs the worker (default: this one).
        worker_module: the worker's module (``-m``); tests may point at a wrapper.
    """

    name = "ibm"

    def __init__(self, settings: FactsheetsSettings, python: str | None = None,
                 worker_module: str = "modelcycle.platforms.ibm.worker") -> None:
        self.settings = settings
        self.python = python or sys.executable
        self.worker_module = worker_module

    # -- plumbing ----------------------------------------------------------------------------
    def _checked_settings(self) -> FactsheetsSettings:
        config = self.settings
        if not config.catalog_id:
            raise GovernanceError(
                "governance.backend is ibm but governance.catalog_id is not set: name the catalog (inventory) "
                "that holds the AI use case, e.g. --set governance.catalog_id=<id>"
            )
        if config.service_url and not config.username:
            raise GovernanceError(
                "governance.service_url names a Cloud Pak for Data cluster: set governance.username too "
                "(the user the API key belongs to)"
            )
        return config

    def _api_key(self) -> str:
        variable = self.settings.api_key_env
        key = os.environ.get(variable, "")
        if not key:
            raise BackendError(
                f"no IBM API key: set the environment variable {variable} (governance.api_key_env names it; "
                "keys never go into modelcycle.yaml)"
            )
        return key

    def check_ready(self, governance: Governance) -> None:
        """Fail early (before anything is recorded) when settings or the API key are missing."""
        self._checked_settings()
        self._api_key()

    def _connection(self) -> dict[str, Any]:
        config = self.settings
        return {"service_url": config.service_url, "username": config.username, "region": config.region,
                "verify_tls": config.verify_tls}

    @staticmethod
    def work_dir(governance: Governance) -> Path:
        """Where the facts client keeps its local experiment store (``./mlruns``) and the log."""
        return governance.use_case.work_dir / "governance" / "ibm"

    def _run(self, governance: Governance, request: dict[str, Any]) -> dict[str, Any]:
        key = self._api_key()
        work = self.work_dir(governance)
        work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="exchange-", dir=work) as tmp:
            request_path, result_path = Path(tmp) / "request.json", Path(tmp) / "result.json"
            request_path.write_text(json.dumps({**request, "connection": self._connection()}, default=str))
            env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")}
            env[API_KEY_VARIABLE] = key
            command = [self.python, "-m", self.worker_module, str(request_path), str(result_path)]
            try:
                process = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                                         timeout=self.settings.timeout_s)
                output = process.stdout + process.stderr
            except subprocess.TimeoutExpired as exc:
                output = f"{exc.stdout or ''}{exc.stderr or ''}"
                self._log(work, request["op"], output, key)
                raise BackendError(
                    f"IBM AI Factsheets did not answer within {self.settings.timeout_s:.0f} s "
                    f"(governance.timeout_s); log: {work / _LOG_NAME}"
                ) from None
            self._log(work, request["op"], output, key)
            outcome = json.loads(result_path.read_text()) if result_path.exists() else None
        if outcome is None:
            tail = _scrub(output, key).strip().splitlines()[-5:]
            raise BackendError(f"the IBM AI Factsheets worker failed (exit {process.returncode}): {' / '.join(tail)}")
        if not outcome.get("ok"):
            raise BackendError(
                f"IBM AI Factsheets refused '{request['op']}': {_scrub(outcome.get('error', '?'), key)} "
                f"(log: {work / _LOG_NAME})"
            )
        return outcome["result"]

    @staticmethod
    def _log(work: Path, op: str, output: str, key: str) -> None:
        with open(work / _LOG_NAME, "a") as handle:
            handle.write(f"--- {utcnow()} {op}\n{_scrub(output, key)}\n")

    # -- requests ----------------------------------------------------------------------------
    @staticmethod
    def run_facts(asset: dict[str, Any], deployment: dict[str, Any] | None) -> dict[str, Any]:
        """The params, metrics, history and tags exported to the notebook experiment."""
        facts = asset["facts"]
        identity, dataset = facts["identity"], facts["dataset"]
        params = dict(facts.get("params") or {})
        if not params:
            params = {**facts.get("hyperparameters", {}), **{f"model.{k}": v for k, v in facts.get("model", {}).items()}}
        metrics = {k: v for k, v in (facts.get("metrics") or {}).items() if isinstance(v, (int, float))}
        tags = {k: v for k, v in (facts.get("tags") or {}).items() if not k.startswith("mlflow.")}
        libraries = identity.get("libraries", {})
        tags.update({
            "job_name": identity["job_name"],
            "user_entry_point": facts.get("artifacts", {}).get("entry_point", "code/inference.py"),
            "framework": identity["framework"],
            "framework_version": next((libraries[n] for n in ("torch", "lightning", "keras", "tensorflow") if n in libraries), identity["framework_version"]),
            "modelcycle.run_id": asset["run_id"],
            "modelcycle.mlflow_run_id": asset.get("mlflow_run_id") or "",
            "modelcycle.version": identity.get("modelcycle_version", ""),
            "dataset.name": dataset["name"],
            **{f"dataset.md5.{name}": digest for name, digest in dataset["checksums"].items()},
        })
        if identity.get("git_commit"):
            tags["git_commit"] = identity["git_commit"]
        if deployment:
            tags.update({"endpoint_name": deployment["name"], "model_data": deployment.get("model_data") or "",
                         "image": deployment.get("image") or ""})
        autologging = (facts.get("tags") or {}).get("mlflow.autologging") or AUTOLOG_FLAVOURS.get(identity["framework"])
        if autologging:
            tags["mlflow.autologging"] = autologging
        return {"params": params, "metrics": metrics, "history": facts.get("history", []), "tags": tags}

    def publish(self, governance: Governance, asset: dict[str, Any], deployment: dict[str, Any] | None) -> dict[str, Any] | None:
        config = self._checked_settings()
        remote = dict(asset.get("remote") or {})
        facts = asset["facts"]
        framework = asset["framework"]
        autolog = governance.use_case.config.capture == "autolog" and framework in AUTOLOG_FLAVOURS
        metrics = facts.get("metrics", {})
        accuracy = f", test_accuracy {metrics['test_accuracy']:.4f}" if "test_accuracy" in metrics else ""
        deployment_spec = None
        if deployment:
            scoring = (deployment.get("url") or "").rstrip("/") + "/invocations"
            deployment_spec = {
                "identifier": deployment["name"], "name": deployment["name"], "scoring_endpoint": scoring,
                "description": (
                    f"{deployment.get('platform')} endpoint {deployment['name']}; model data {deployment.get('model_data')}; "
                    f"entry point {deployment.get('entry_point')}"
                    + (f"; image {deployment['image']}" if deployment.get("image") else "")
                    + f"; framework {framework}"
                ),
            }
        request = {
            "op": "publish",
            "experiment_name": asset["name"],
            "autolog": autolog,
            "export": not remote.get("notebook_experiment_asset_id"),
            "asset_id": remote.get("asset_id"),  # published before: kept even if this exchange fails
            "run": self.run_facts(asset, deployment),
            "model": {
                "identifier": f"modelcycle:{governance.use_case.config.name}:{asset['run_id']}",
                "name": asset["name"],
                "description": f"{governance.use_case.config.name}: {framework} model of run {asset['run_id']} trained by modelcycle{accuracy}",
                "details": {
                    "provider": PROVIDERS.get((deployment or {}).get("platform") or "local", PROVIDERS["local"]),
                    "model_type": framework,
                    "input_type": "image",
                    "algorithm": str(facts.get("model", {}).get("architecture", framework)),
                    "label_type": "categorical",
                    "prediction_type": "multiclass",
                },
            },
            "deployment": deployment_spec,
            "catalog_id": config.catalog_id,
            "model_entry_id": config.model_entry_id,
            "approach_id": config.approach_id,
            "version_number": config.version_number,
            "stage": asset["stage"],
            "remote_stage": remote.get("environment"),
            "previous_stage": remote.get("environment") or "develop",
            "custom_facts": {k: v["value"] for k, v in governance.store.custom_facts(asset["id"]).items()},
        }
        result = self._run(governance, request)
        result.pop("track_response", None)
        remote.update({k: v for k, v in result.items() if v is not None})
        remote.update(service="ibm", deployment=deployment["name"] if deployment else remote.get("deployment"),
                      published_at=utcnow(), service_url=config.service_url or f"IBM Cloud ({config.region or 'dallas'})")
        return remote

    def push_facts(self, governance: Governance, asset: dict[str, Any]) -> dict[str, Any] | None:
        remote = dict(asset.get("remote") or {})
        if not remote.get("asset_id"):
            return None
        self._checked_settings()
        result = self._run(governance, {
            "op": "facts", "asset_id": remote["asset_id"], "catalog_id": remote["catalog_id"],
            "custom_facts": {k: v["value"] for k, v in governance.store.custom_facts(asset["id"]).items()},
        })
        remote.update(result)
        return remote

    def remove(self, governance: Governance, assets: list[dict[str, Any]]) -> int:
        targets = [
            {"asset_id": a["remote"]["asset_id"], "catalog_id": a["remote"].get("catalog_id") or self.settings.catalog_id,
             "notebook_experiment_asset_id": a["remote"].get("notebook_experiment_asset_id")}
            for a in assets if (a.get("remote") or {}).get("asset_id")
        ]
        removed = 0
        if targets:
            result = self._run(governance, {"op": "remove", "assets": targets})
            removed = len(result["removed"])
            governance.store.record_event(governance.record["id"], "ibm.removed", governance.who, details=result)
        work = self.work_dir(governance)
        shutil.rmtree(work, ignore_errors=True)
        try:
            work.parent.rmdir()  # .modelcycle/governance, when nothing else is in it
        except OSError:
            pass
        return removed
