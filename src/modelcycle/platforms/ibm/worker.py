"""One exchange with IBM AI Factsheets through ``ibm-aigov-facts-client``, in a child process.

``python -m modelcycle.platforms.ibm.worker REQUEST.json RESULT.json`` (run by
:mod:`modelcycle.platforms.ibm.factsheets`, in a private working directory). The facts client keeps
process-wide state (class attributes, the MLflow tracking URI and active run, ``./mlruns`` in the
working directory, environment variables), so it never runs inside a modelcycle process. The API
key arrives in the environment variable ``MODELCYCLE_IBM_API_KEY`` (never on the command line) and
is removed from the environment once read.

Operations (``request["op"]``):

* ``publish``: the run's facts into a notebook experiment (manual export for plain PyTorch:
  ``manual_log.start_trace`` → ``runs.log_params/log_metrics/set_tags`` →
  ``export_facts.export_payload_manual``; autolog otherwise: a run tagged with the framework's
  ``mlflow.autologging`` flavour → ``export_facts.export_payload``), then
  ``external_model_facts.save_external_model_asset`` with the deployment details, ``track`` into
  the AI use case (``model_entry_id``) and approach, ``set_environment_type`` to the asset's stage,
  and ``set_custom_facts`` for the custom facts the catalog defines.
* ``facts``: ``set_custom_facts`` on an existing asset.
* ``remove``: ``untrack`` then ``assets.remove_asset`` for each asset (and its notebook experiment).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

API_KEY_VARIABLE = "MODELCYCLE_IBM_API_KEY"
log = logging.getLogger("modelcycle.ibm")


def _client(connection: dict[str, Any], api_key: str, experiment: str | None = None, autolog: bool = False) -> Any:
    from ibm_aigov_facts_client import AIGovFactsClient, CloudPakforDataConfig

    kwargs: dict[str, Any] = {"external_model": True}
    if connection.get("service_url"):
        kwargs["cloud_pak_for_data_configs"] = CloudPakforDataConfig(
            service_url=connection["service_url"], username=connection["username"], api_key=api_key,
            disable_ssl_verification=not connection.get("verify_tls", True),
        )
    else:
        kwargs["api_key"] = api_key
        if connection.get("region"):
            kwargs["region"] = connection["region"]
    if experiment:
        kwargs.update(experiment_name=experiment, set_as_current_experiment=True, enable_autolog=autolog)
    else:
        kwargs["disable_tracing"] = True
    return AIGovFactsClient(**kwargs)


def _export_facts(client: Any, run: dict[str, Any], autolog: bool) -> dict[str, Any]:
    """Log the run's params, metrics (per epoch, then final) and tags into a facts-client run and
    export it to the notebook experiment; returns its ids."""
    import mlflow

    params = {k: str(v)[:5000] for k, v in run["params"].items()}
    tags = {k: str(v)[:5000] for k, v in run["tags"].items()}
    if autolog:
        active = mlflow.start_run()
        run_id = active.info.run_id
        tracking = mlflow.tracking.MlflowClient()
        for row in run.get("history", []):
            for key, value in row.items():
                if key != "epoch":
                    tracking.log_metric(run_id, key, float(value), step=int(row["epoch"]))
        for key, value in run["metrics"].items():
            tracking.log_metric(run_id, key, float(value), step=len(run.get("history", [])))
        for key, value in params.items():
            tracking.log_param(run_id, key, value)
        for key, value in tags.items():
            tracking.set_tag(run_id, key, value)
        mlflow.end_run()
        client.export_facts.export_payload(run_id)
    else:
        client.manual_log.start_trace()
        run_id = mlflow.active_run().info.run_id
        for row in run.get("history", []):
            client.runs.log_metrics(run_id, {k: float(v) for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        client.runs.log_params(run_id, params)
        client.runs.log_metrics(run_id, {k: float(v) for k, v in run["metrics"].items()})
        client.runs.set_tags(run_id, tags)
        client.export_facts.export_payload_manual(run_id)
        client.manual_log.end_trace()
    asset_id = getattr(client.export_facts, "asset_id", None)
    if not asset_id:
        raise RuntimeError("the notebook experiment export did not return an asset id (see the log above)")
    return {"facts_run_id": run_id, "notebook_experiment_asset_id": asset_id}


def _defined_facts(client: Any, catalog_id: str) -> set[str]:
    try:
        definitions = client.assets.get_facts_definitions(type_name="modelfacts_user", container_type="catalog", container_id=catalog_id)
    except Exception as exc:  # noqa: BLE001 - no definitions in this catalog
        log.info("no custom fact definitions in catalog %s: %s", catalog_id, exc)
        return set()
    return set((definitions or {}).get("properties", {}) or {})


def _set_facts(client: Any, model: Any, catalog_id: str, facts: dict[str, Any]) -> dict[str, Any]:
    if not facts:
        return {"facts_set": [], "facts_skipped": []}
    defined = _defined_facts(client, catalog_id)
    chosen = {k: v for k, v in facts.items() if k in defined}
    if chosen:
        model.set_custom_facts(chosen)
    return {"facts_set": sorted(chosen), "facts_skipped": sorted(set(facts) - set(chosen))}


def publish(request: dict[str, Any], api_key: str) -> dict[str, Any]:
    """The ``publish`` operation (see the module docstring); what it created is removed again
    when a step fails, so the caller (which records nothing then) leaves no orphan behind."""
    run, model_spec = request["run"], request["model"]
    catalog_id = request["catalog_id"]
    client = _client(request["connection"], api_key, experiment=request["experiment_name"], autolog=request["autolog"])
    result: dict[str, Any] = {}
    created: list[str] = []  # assets this exchange made: removed again if a later step fails
    try:
        _publish(client, request, run, model_spec, catalog_id, result, created)
    except BaseException:
        _discard(client, created, catalog_id)
        raise
    return result


def _discard(client: Any, asset_ids: list[str], catalog_id: str) -> None:
    """Remove ``asset_ids`` (a model untracked first), so a failed publish leaves nothing in the
    catalog that modelcycle does not know about; failures are logged, the original error wins."""
    for asset_id in asset_ids:
        try:
            try:
                model = client.assets.get_model(model_id=asset_id, container_type="catalog", container_id=catalog_id)
                if model._is_model_tracked()[0]:
                    model.untrack()
            except Exception:  # noqa: BLE001 - not a model (the notebook experiment)
                pass
            client.assets.remove_asset(asset_id=asset_id, container_type="catalog", container_id=catalog_id)
            log.warning("publish failed: removed asset %s it had created", asset_id)
        except Exception as exc:  # noqa: BLE001 - reported, the publish error is what the user sees
            log.warning("publish failed and asset %s it created could not be removed: %s", asset_id, exc)


def _publish(client: Any, request: dict[str, Any], run: dict[str, Any], model_spec: dict[str, Any], catalog_id: str,
             result: dict[str, Any], created: list[str]) -> None:
    from ibm_aigov_facts_client.supporting_classes.factsheet_utils import (
        DeploymentDetails,
        ExternalModelSchemas,
        ModelDetails,
    )

    if request.get("export", True):
        result.update(_export_facts(client, run, request["autolog"]))
        created.append(result["notebook_experiment_asset_id"])
    deployment = request.get("deployment")
    details = None
    if deployment:
        details = DeploymentDetails(
            identifier=deployment["identifier"], name=deployment["name"], deployment_type="online",
            scoring_endpoint=deployment["scoring_endpoint"], description=deployment.get("description"),
        )
    model = client.external_model_facts.save_external_model_asset(
        model_identifier=model_spec["identifier"],
        name=model_spec["name"],
        description=model_spec.get("description"),
        model_details=ModelDetails(**model_spec["details"]) if model_spec.get("details") else None,
        schemas=ExternalModelSchemas(**model_spec["schemas"]) if model_spec.get("schemas") else None,
        deployment_details=details,
        catalog_id=catalog_id,
    )
    info = model.to_dict()
    asset_id, asset_catalog = info.get("asset_id"), info.get("container_id") or catalog_id
    result.update(asset_id=asset_id, catalog_id=asset_catalog)
    if asset_id and asset_id != request.get("asset_id"):  # a new asset, not the one published before
        created.insert(0, asset_id)
    if request.get("model_entry_id"):
        tracked, usecase_info = model._is_model_tracked()
        if tracked:
            result.update(model_entry_id=usecase_info.get("model_usecase_id"), tracked=True, linked=False)
        else:
            usecase = client.assets.get_ai_usecase(ai_usecase_id=request["model_entry_id"], catalog_id=catalog_id)
            approaches = usecase.get_approaches()
            wanted = request.get("approach_id")
            approach = next((a for a in approaches if wanted and a.get_id() == wanted), None) or (approaches[0] if approaches else None)
            if approach is None:
                raise RuntimeError(f"the AI use case {request['model_entry_id']} has no approach to track the model in")
            response = model.track(usecase=usecase, approach=approach, version_number=request.get("version_number") or "minor")
            versions = approach.get_versions() or []
            result.update(model_entry_id=request["model_entry_id"], approach_id=approach.get_id(), tracked=True, linked=True,
                          version=versions[-1]["number"] if versions else None, track_response=response)
    stage, previous = request.get("stage"), request.get("previous_stage") or "develop"
    if stage and stage != request.get("remote_stage"):
        model.set_environment_type(from_container=previous, to_container=stage)
    result["environment"] = stage
    result.update(_set_facts(client, model, asset_catalog, request.get("custom_facts") or {}))


def facts(request: dict[str, Any], api_key: str) -> dict[str, Any]:
    client = _client(request["connection"], api_key)
    model = client.assets.get_model(model_id=request["asset_id"], container_type="catalog", container_id=request["catalog_id"])
    return _set_facts(client, model, request["catalog_id"], request.get("custom_facts") or {})


def remove(request: dict[str, Any], api_key: str) -> dict[str, Any]:
    client = _client(request["connection"], api_key)
    removed, untracked, experiments, missing = [], [], 0, []
    for asset in request["assets"]:
        asset_id, catalog_id = asset["asset_id"], asset["catalog_id"]
        try:
            model = client.assets.get_model(model_id=asset_id, container_type="catalog", container_id=catalog_id)
        except Exception as exc:  # noqa: BLE001 - deleted by hand already
            log.warning("model asset %s not found: %s", asset_id, exc)
            missing.append(asset_id)
            continue
        tracked, _ = model._is_model_tracked()
        if tracked:
            model.untrack()
            untracked.append(asset_id)
        client.assets.remove_asset(asset_id=asset_id, container_type="catalog", container_id=catalog_id)
        removed.append(asset_id)
        experiment = asset.get("notebook_experiment_asset_id")
        if experiment:
            try:
                client.assets.remove_asset(asset_id=experiment, container_type="catalog", container_id=catalog_id)
                experiments += 1
            except Exception as exc:  # noqa: BLE001 - kept by the service with the model, or gone
                log.warning("notebook experiment %s not removed: %s", experiment, exc)
    return {"removed": removed, "untracked": untracked, "notebook_experiments_removed": experiments, "missing": missing}


OPERATIONS = {"publish": publish, "facts": facts, "remove": remove}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    request_path, result_path = Path(argv[0]), Path(argv[1])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api_key = os.environ.pop(API_KEY_VARIABLE, "")
    request = json.loads(request_path.read_text())
    try:
        if not api_key:
            raise RuntimeError(f"no API key: {API_KEY_VARIABLE} is not set for the worker")
        if not request["connection"].get("verify_tls", True):
            os.environ["FACTS_CLIENT_VERIFY_REQUESTS"] = "False"
        outcome = {"ok": True, "result": OPERATIONS[request["op"]](request, api_key)}
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, with the key scrubbed there
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    result_path.write_text(json.dumps(outcome, default=str))
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
