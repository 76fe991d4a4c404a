"""Weighted production variants and blue/green updates of an in-service SageMaker endpoint.

:func:`production_variants` turns ``serving.variants`` (or, without them, one ``AllTraffic``
variant) into an endpoint config's ``ProductionVariants``. :func:`update` replaces an endpoint's
config without downtime: a new endpoint config (unique name), ``UpdateEndpoint`` (SageMaker
starts the new fleet, shifts the traffic, then retires the old one), a wait until the endpoint is
InService *on the new config*, and only then the old endpoint config (and the models no variant
uses any more) is deleted. If the update fails or rolls back, the endpoint keeps serving its old
config, which is kept; what this update created is removed again.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Mapping
from typing import Any

from modelcycle.core.errors import EndpointError
from modelcycle.platforms.sagemaker import session as aws

__all__ = ["unique_name", "production_variants", "create_config", "update"]

#: Statuses from which an update does not reach InService on the new config by itself.
_BROKEN = ("Failed", "UpdateRollbackFailed", "OutOfService", "Deleting")


def unique_name(base: str) -> str:
    """``<base>-<UTC yyyymmddHHMMSS>-<4 hex>``, cut to SageMaker's 63 characters."""
    suffix = f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"
    return f"{base[:63 - len(suffix) - 1].rstrip('-')}-{suffix}"


def production_variants(serving: Any, models: Mapping[str | None, str]) -> list[dict[str, Any]]:
    """The ``ProductionVariants`` of ``serving`` (the ``serving:`` section): one per
    ``serving.variants`` entry, else one ``AllTraffic``. ``models`` maps a variant's ``run``
    (``None``: the deployed model) to its SageMaker model name."""
    if not serving.variants:
        return [{"VariantName": "AllTraffic", "ModelName": models[None], "InitialInstanceCount": serving.instance_count,
                 "InstanceType": serving.instance_type, "InitialVariantWeight": 1.0}]
    return [
        {
            "VariantName": variant.name,
            "ModelName": models[variant.run],
            "InitialInstanceCount": variant.instance_count or serving.instance_count,
            "InstanceType": variant.instance_type or serving.instance_type,
            "InitialVariantWeight": float(variant.weight),
        }
        for variant in serving.variants
    ]


def create_config(client: Any, base: str, variants: list[dict[str, Any]], data_capture: dict[str, Any] | None = None) -> str:
    """CreateEndpointConfig under a :func:`unique_name` of ``base``; returns the name."""
    name = unique_name(base)
    request: dict[str, Any] = {"EndpointConfigName": name, "ProductionVariants": variants}
    if data_capture:
        request["DataCaptureConfig"] = data_capture
    client.create_endpoint_config(**request)
    return name


def _models(variants: list[dict[str, Any]]) -> set[str]:
    return {variant["ModelName"] for variant in variants}


def _wait_updated(client: Any, endpoint: str, config: str, timeout_s: float) -> dict[str, Any]:
    """The endpoint's description once it is InService on ``config``.

    Raises:
        EndpointError: it failed, rolled back to another config (``FailureReason``), or is still
            updating after ``timeout_s`` (``.in_flight`` is then True).
    """
    moved = False

    def settled(description: dict[str, Any]) -> bool:
        nonlocal moved
        status, current = description["EndpointStatus"], description.get("EndpointConfigName")
        if status == "InService" and current == config:
            return True
        moved = moved or status != "InService"
        if status in _BROKEN or (status == "InService" and (moved or description.get("FailureReason"))):
            raise EndpointError(f"it is {status} on {current}: {description.get('FailureReason') or 'no reason given'}")
        return False

    def timed_out(description: dict[str, Any]) -> Exception:
        error = EndpointError(f"it is still {description['EndpointStatus']} after {timeout_s:.0f} s (serving.deploy_timeout_s)")
        error.in_flight = True  # type: ignore[attr-defined]
        return error

    return aws.wait_until(lambda: client.describe_endpoint(EndpointName=endpoint),
                          lambda d: f"{d['EndpointStatus']} ({d.get('EndpointConfigName')})", settled, timeout_s,
                          timed_out, f"endpoint {endpoint}")


def _delete_quietly(client: Any, configs: set[str], models: set[str]) -> list[str]:
    """Delete ``configs`` then ``models``; returns what could not be deleted."""
    from botocore.exceptions import BotoCoreError, ClientError

    left = []
    for kind, names in (("endpoint config", sorted(configs)), ("model", sorted(models))):
        for name in names:
            try:
                if kind == "model":
                    client.delete_model(ModelName=name)
                else:
                    client.delete_endpoint_config(EndpointConfigName=name)
            except (BotoCoreError, ClientError):
                left.append(f"{kind} {name}")
    return left


#: ``update(data_capture=KEEP)``: the new endpoint config captures as the old one did.
KEEP: Any = object()


def update(client: Any, endpoint: str, current: dict[str, Any], variants: list[dict[str, Any]],
           timeout_s: float, data_capture: dict[str, Any] | None = KEEP) -> dict[str, Any]:
    """Blue/green: move the in-service ``endpoint`` (``current``: its DescribeEndpoint) to a new
    endpoint config of ``variants`` with the DataCaptureConfig ``data_capture`` (``None``: no
    capture; :data:`KEEP`, the default: the old config's, carried over).

    Returns:
        The endpoint's description, InService on the new config; the old config and the models
        only it used are deleted.

    Raises:
        EndpointError: the update failed or rolled back (the endpoint keeps serving the old
            config, which is kept; the new config and models are deleted) or timed out (nothing
            is deleted: the update may still finish).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    old_config = current["EndpointConfigName"]
    old = client.describe_endpoint_config(EndpointConfigName=old_config)
    old_models, new_models = _models(old["ProductionVariants"]), _models(variants)
    capture = old.get("DataCaptureConfig") if data_capture is KEEP else data_capture
    config = create_config(client, endpoint, variants, capture)
    weights = ", ".join(f"{v['VariantName']} {v['InitialVariantWeight']:g}" for v in variants)
    print(f"updating SageMaker endpoint {endpoint}: endpoint config {old_config} → {config} ({weights})",
          file=sys.stderr, flush=True)
    try:
        client.update_endpoint(EndpointName=endpoint, EndpointConfigName=config)
        description = _wait_updated(client, endpoint, config, timeout_s)
    except (EndpointError, BotoCoreError, ClientError) as exc:
        reason = str(exc)
        if getattr(exc, "in_flight", False):
            raise EndpointError(
                f"updating SageMaker endpoint {endpoint} to endpoint config {config}: {reason}. The update may still "
                f"finish; until it does the endpoint serves {old_config}. Nothing was deleted: remove whichever "
                "config the endpoint does not use afterwards"
            ) from exc
        left = _delete_quietly(client, {config}, new_models - old_models)
        raise EndpointError(
            f"updating SageMaker endpoint {endpoint} to endpoint config {config} failed: {reason}. The endpoint "
            f"keeps serving its previous endpoint config {old_config}, which is kept"
            + (f"; could not remove {', '.join(left)}" if left else "; the new config and models were removed")
            + f". Container logs: CloudWatch group /aws/sagemaker/Endpoints/{endpoint}"
        ) from exc
    left = _delete_quietly(client, {old_config}, old_models - new_models)
    if left:
        print(f"warning: the endpoint serves {config}, but {', '.join(left)} could not be deleted; delete by hand",
              file=sys.stderr)
    return description
