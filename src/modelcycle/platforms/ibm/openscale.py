"""The Watson OpenScale monitoring backend (``monitoring: {backend: openscale, openscale: {...}}``).

The local monitoring store stays the system of record (the endpoint journals every scored record
into it, nothing is lost when OpenScale is unreachable); this backend mirrors it into OpenScale
through ``ibm-watson-openscale``, the way the seed's ``configure_wos_subscription`` did:

1. ``subscribe``: the data mart (configured, else the instance's first, else a new one), a
   custom machine-learning service provider, a subscription for the endpoint (multiclass,
   unstructured image, ``prediction``/``probability`` output fields) and — when the quality
   monitor is enabled — its monitor instance with ``min_feedback_data_size`` and the thresholds
   *under the key* ``value`` (mlmonitor's ``lower_limit`` key is ignored by the service);
2. ``forward``: payload records as ``PayloadRecord`` (scoring_id, timestamp, pixels, prediction,
   probabilities, latency), then feedback records (``scoring_id``, ``prediction``,
   ``probability``, ``label``) into the subscription's payload and feedback data sets, in
   batches of ``batch_records``. A record is marked sent (``mc_forwarded``) only after the
   service acknowledged its batch, so an outage loses nothing and resends at most the batch
   in flight;
3. ``run_quality``: a quality monitor run, waited for, and its measurement (metrics, limits,
   issue count);
4. ``delete``: the subscription (OpenScale drops its data sets with it).

The API key comes from the variable named by ``openscale.api_key_env`` and is scrubbed from every
error. The SDK's progress banners go to this module's debug log, not to stdout.

This module is the ``openscale`` entry point of ``modelcycle.monitoring``: its hooks
``monitoring_settings_class`` (:class:`~modelcycle.platforms.ibm.openscale_settings.OpenScaleConfig`,
the ``monitoring.openscale:`` section) and ``monitoring_backend``. Its module level imports neither
the SDK nor numpy nor pydantic (``modelcycle --help`` imports it).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from modelcycle.core.markers import hookimpl
from modelcycle.core.monitoring.errors import MonitoringError

__all__ = ["OpenScaleBackend", "monitoring_settings_class", "monitoring_backend"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class OpenScaleBackend:
    """One use case's mirror in a Watson OpenScale instance (a
    :class:`~modelcycle.core.plugin_types.MonitoringBackend`); signs in on first use.

    Args:
        config: ``monitoring.openscale`` (an ``OpenScaleConfig``).
    """

    name = "Watson OpenScale"

    def __init__(self, config: Any) -> None:
        self.config = config
        self._client: Any = None
        self._key = ""

    # -- connection ----------------------------------------------------------------------------
    def _api_key(self) -> str:
        variable = self.config.api_key_env
        key = os.environ.get(variable, "")
        if not key:
            raise MonitoringError(
                f"no Watson OpenScale API key: set the environment variable {variable} "
                "(monitoring.openscale.api_key_env names it; the key never goes into modelcycle.yaml)")
        return key

    def _call(self, action: str, function: Callable[[], T]) -> T:
        """Run one SDK call with its stdout banners logged; SDK and transport errors become a
        :class:`MonitoringError` naming the action and the service, with the key scrubbed."""
        banner = io.StringIO()
        try:
            with contextlib.redirect_stdout(banner):
                return function()
        except MonitoringError:
            raise
        except Exception as exc:
            message = str(getattr(exc, "message", None) or exc)
            if self._key:
                message = message.replace(self._key, "***")
            raise MonitoringError(
                f"Watson OpenScale at {self.config.url}: {action} failed: {type(exc).__name__}: {message.strip()[:600]}"
            ) from None
        finally:
            if banner.getvalue().strip():
                log.debug("openscale %s: %s", action, " ".join(banner.getvalue().split()))

    def _wait(self, action: str, fetch: Callable[[], Any], state: Callable[[Any], Any], done: tuple[str, ...]) -> Any:
        """Poll ``fetch`` (0.05 s, doubling to 2 s; the SDK's own waits sleep 5 s per poll) until
        ``state(result)`` is one of ``done``; returns that result.

        Raises:
            MonitoringError: another final state (error, failed, cancelled), or ``timeout_s`` passed.
        """
        deadline = time.monotonic() + self.config.timeout_s
        delay = 0.05
        while True:
            result = self._call(action, fetch)
            current = str(getattr(state(result), "value", state(result)))
            if current in done:
                return result
            if current in _FAILED:
                raise MonitoringError(f"Watson OpenScale at {self.config.url}: {action} ended '{current}': {_failure(result)}")
            if time.monotonic() > deadline:
                raise MonitoringError(
                    f"Watson OpenScale at {self.config.url}: {action} did not finish within {self.config.timeout_s:.0f} s "
                    f"(state '{current}'; monitoring.openscale.timeout_s sets the limit)")
            time.sleep(delay)
            delay = min(2.0, delay * 2)

    def _create(self, action: str, collection: Any, create: Callable[[], Any], force_delete: bool = False) -> str:
        """Create a resource in ``collection`` (``create`` answers at once, background mode) and
        wait until it is active; returns its id. A resource that ends in a failed state or is
        not active within ``timeout_s`` is deleted again (nothing half-made stays behind) before
        the :class:`MonitoringError` propagates (``force_delete``: a hard delete, for subscriptions)."""
        resource_id = str(self._call(action, create).result.metadata.id)
        try:
            self._wait(action, lambda: collection.get(resource_id).result, lambda r: r.entity.status.state, ("active",))
        except BaseException:
            with contextlib.suppress(Exception):
                self._call(f"{action}: removing the unfinished resource",
                           lambda: collection.delete(resource_id, background_mode=True, **({"force": True} if force_delete else {})))
            raise
        return resource_id

    @property
    def client(self) -> Any:
        """The ``ibm_watson_openscale.APIClient`` (authenticated on first use)."""
        if self._client is None:
            self._key = self._api_key()
            try:
                from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
                from ibm_watson_openscale import APIClient
                from ibm_watson_openscale.supporting_classes.cp4d_authenticator import CloudPakForDataAuthenticator
            except ImportError as exc:
                raise MonitoringError(
                    f"monitoring backend openscale needs ibm-watson-openscale: pip install 'modelcycle[ibm]' ({exc})"
                ) from None
            config = self.config

            def connect() -> Any:
                if config.username:
                    authenticator = CloudPakForDataAuthenticator(
                        url=config.url, username=config.username, apikey=self._key,
                        disable_ssl_verification=not config.verify_tls)
                else:
                    kwargs = {"url": config.iam_url} if config.iam_url else {}
                    authenticator = IAMAuthenticator(apikey=self._key, disable_ssl_verification=not config.verify_tls, **kwargs)
                return APIClient(authenticator=authenticator, service_url=config.url,
                                 service_instance_id=config.service_instance_id)

            # the SDK points REQUESTS_CA_BUNDLE at certifi for the whole process (requests' default
            # anyway): keep the caller's environment as it was
            bundle = os.environ.get("REQUESTS_CA_BUNDLE")
            try:
                self._client = self._call("sign-in", connect)
            finally:
                if bundle is None:
                    os.environ.pop("REQUESTS_CA_BUNDLE", None)
                else:
                    os.environ["REQUESTS_CA_BUNDLE"] = bundle
        return self._client

    # -- subscription --------------------------------------------------------------------------
    def _data_mart_id(self) -> str:
        if self.config.data_mart_id:
            return str(self.config.data_mart_id)
        marts = self.client.data_marts
        existing = self._call("listing data marts", lambda: marts.list().result.data_marts)
        if existing:
            return str(existing[0].metadata.id)
        return self._create("creating a data mart", marts, lambda: marts.add(
            name="modelcycle", description="created by modelcycle", internal_database=True, background_mode=True))

    def _service_provider_id(self, endpoint_url: str | None) -> str:
        from ibm_watson_openscale.base_classes.watson_open_scale_v2 import CustomCredentials
        from ibm_watson_openscale.supporting_classes.enums import ServiceTypes

        name = self.config.service_provider
        providers = self.client.service_providers
        for provider in self._call("listing service providers", lambda: providers.list().result.service_providers):
            if provider.entity.name == name:
                return str(provider.metadata.id)
        return self._create("creating the service provider", providers, lambda: providers.add(
            name=name, description="modelcycle endpoints", service_type=ServiceTypes.CUSTOM_MACHINE_LEARNING,
            credentials=CustomCredentials(url=endpoint_url or "http://127.0.0.1"), operational_space_id="production",
            background_mode=True))

    def _data_set_id(self, subscription_id: str, kind: str) -> str:
        from ibm_watson_openscale.supporting_classes.enums import DataSetTypes, TargetTypes

        kinds = {"payload": DataSetTypes.PAYLOAD_LOGGING, "feedback": DataSetTypes.FEEDBACK}
        found = self._call(f"finding the {kind} data set", lambda: self.client.data_sets.list(
            type=kinds[kind], target_target_id=subscription_id, target_target_type=TargetTypes.SUBSCRIPTION).result.data_sets)
        if not found:
            raise MonitoringError(f"Watson OpenScale subscription {subscription_id} has no {kind} data set")
        return str(found[0].metadata.id)

    def subscribe(self, use_case: str, deployment: dict[str, Any], asset_revision: str | None, quality: Any) -> dict[str, Any]:
        """Create the subscription for ``deployment`` (the deploy stage's outputs) and, when
        ``quality.enabled``, its quality monitor. Returns the OpenScale ids to keep."""
        from ibm_watson_openscale.base_classes.watson_open_scale_v2 import (
            Asset,
            AssetDeploymentRequest,
            AssetPropertiesRequest,
            Target,
        )
        from ibm_watson_openscale.supporting_classes.enums import (
            AssetTypes,
            DeploymentTypes,
            InputDataType,
            ProblemType,
            TargetTypes,
        )

        from modelcycle.core.monitoring.thresholds import effective_thresholds

        url = deployment.get("url")
        data_mart_id = self._data_mart_id()
        provider_id = self._service_provider_id(url)
        subscriptions = self.client.subscriptions
        subscription_id = self._create("adding the subscription", subscriptions, lambda: subscriptions.add(
            data_mart_id=data_mart_id, service_provider_id=provider_id,
            asset=Asset(asset_id=asset_revision or deployment["name"], name=use_case, url=url, asset_type=AssetTypes.MODEL,
                        input_data_type=InputDataType.UNSTRUCTURED_IMAGE, problem_type=ProblemType.MULTICLASS_CLASSIFICATION),
            deployment=AssetDeploymentRequest(deployment_id=deployment["name"], name=deployment["name"],
                                              deployment_type=DeploymentTypes.ONLINE, url=url),
            asset_properties=AssetPropertiesRequest(label_column="label", prediction_field="prediction",
                                                    probability_fields=["probability"]),
            background_mode=True), force_delete=True)
        ids: dict[str, Any] = {
            "url": self.config.url, "service_instance_id": self.config.service_instance_id,
            "data_mart_id": data_mart_id, "service_provider_id": provider_id, "subscription_id": subscription_id,
        }
        try:
            ids["payload_data_set_id"] = self._data_set_id(subscription_id, "payload")
            ids["feedback_data_set_id"] = self._data_set_id(subscription_id, "feedback")
            if quality.enabled:
                thresholds = effective_thresholds("quality", quality.thresholds)  # {metric_id, type, value}
                monitors = self.client.monitor_instances
                ids["quality_monitor_instance_id"] = self._create("creating the quality monitor", monitors, lambda: monitors.create(
                    data_mart_id=data_mart_id, monitor_definition_id=self.client.monitor_definitions.MONITORS.QUALITY.ID,
                    target=Target(target_type=TargetTypes.SUBSCRIPTION, target_id=subscription_id),
                    parameters={"min_feedback_data_size": quality.min_feedback_data_size}, thresholds=thresholds,
                    background_mode=True))
        except BaseException:
            with contextlib.suppress(MonitoringError):
                self.delete(ids)
            raise
        return ids

    def delete(self, ids: dict[str, Any]) -> int:
        """Delete the subscription (and with it its data sets) where it was made, even if the
        configuration moved on since; 1 when it existed, 0 when it was already gone."""
        located = {key: ids[key] for key in ("url", "service_instance_id")
                   if ids.get(key) and ids[key] != getattr(self.config, key)}
        if located:
            return OpenScaleBackend(self.config.model_copy(update=located)).delete(ids)
        from ibm_cloud_sdk_core import ApiException

        def remove() -> bool:
            try:
                self.client.subscriptions.delete(ids["subscription_id"], force=True, background_mode=True)
            except ApiException as exc:
                if exc.code == 404:
                    return False
                raise
            return True

        return int(self._call("deleting the subscription", remove))

    # -- records -------------------------------------------------------------------------------
    def forward(self, store: Any, deployment_id: str, ids: dict[str, Any], input_shape: Any) -> dict[str, int]:
        """Send the payload and feedback records OpenScale does not hold yet; returns the counts
        sent. ``input_shape``: an image's ``(C, H, W)``, or a tabular model's field names (its
        records go out with those ``fields``). Raises :class:`MonitoringError` when the service refuses a batch (the records sent
        before it stay marked; the rest go next time)."""
        from ibm_watson_openscale.supporting_classes.payload_record import PayloadRecord

        batch = self.config.batch_records

        def payload_body(records: list[dict[str, Any]]) -> list[Any]:
            return [PayloadRecord(
                scoring_id=r["scoring_id"], scoring_timestamp=_iso(r["scoring_timestamp"]),
                request=_request(r["scoring_input"], input_shape),
                response={"fields": ["prediction", "probability"], "values": [[int(r["prediction"]), _probabilities(r["probability"])]]},
                response_time=int(round(r["latency_ms"] or 0)),
            ) for r in records]

        def feedback_body(records: list[dict[str, Any]]) -> list[Any]:
            return [{"fields": ["scoring_id", "prediction", "probability", "label"],
                     "values": [[r["scoring_id"], int(r["prediction"]), _probabilities(r["probability"]), int(r["label"])] for r in records]}]

        sent = {}
        for kind, unsent, body in (("payload", store.unforwarded_payload, payload_body),
                                   ("feedback", store.unforwarded_feedback, feedback_body)):
            target, sent[kind] = ids[f"{kind}_data_set_id"], 0
            while records := unsent(deployment_id, target, batch):  # each page is marked before the next
                self._store_records(kind, target, body(records))
                store.mark_forwarded(target, [r["scoring_id"] for r in records])
                sent[kind] += len(records)
        return sent

    def _store_records(self, kind: str, data_set_id: str, body: list[Any]) -> None:
        """One ``store_records`` request, waited for until the service stored it."""
        action = f"storing {kind} records"
        data_sets = self.client.data_sets
        response = self._call(action, lambda: data_sets.store_records(data_set_id=data_set_id, request_body=body, background_mode=True))
        request_id = str(response.get_headers()["Location"]).rstrip("/").rsplit("/", 1)[-1]
        self._wait(action, lambda: data_sets.get_update_status(data_set_id=data_set_id, request_id=request_id).result,
                   lambda r: r.state, ("active",))

    # -- evaluation ----------------------------------------------------------------------------
    def run_quality(self, ids: dict[str, Any]) -> dict[str, Any]:
        """Run the quality monitor and wait; returns ``{run_id, state, metrics, limits,
        issue_count, measurement_id}`` (``message`` instead of metrics when the run failed)."""
        monitor_id = ids.get("quality_monitor_instance_id")
        if not monitor_id:
            raise MonitoringError("the OpenScale subscription has no quality monitor: enable monitoring.quality and run 'modelcycle monitor --force'")
        monitors = self.client.monitor_instances
        action = "running the quality monitor"
        started = self._call(action, lambda: monitors.run(monitor_instance_id=monitor_id, background_mode=True).result)
        run_id = str(started.metadata.id)
        run = self._wait(action, lambda: monitors.get_run_details(monitor_id, run_id).result,
                         lambda r: r.entity.status.state, ("finished", "error", "failed"))
        status = run.entity.status
        result: dict[str, Any] = {"monitor_instance_id": monitor_id, "run_id": run_id,
                                  "state": str(getattr(status.state, "value", status.state))}
        if result["state"] != "finished":
            result["message"] = _failure(run)
            return result
        now = datetime.now(timezone.utc)
        measurements = self._call("reading the quality measurement", lambda: self.client.monitor_instances.measurements.list(
            monitor_instance_id=monitor_id, start=now - timedelta(days=1), end=now + timedelta(hours=1), run_id=run_id,
        ).result.measurements)
        if not measurements:
            result["message"] = "the run finished without a measurement"
            return result
        entity = measurements[-1].entity
        metrics, limits = {}, {}
        for value in entity.values or []:
            for metric in value.metrics or []:
                metrics[metric.id] = float(metric.value)
                limits[metric.id] = {k: getattr(metric, k) for k in ("lower_limit", "upper_limit") if getattr(metric, k, None) is not None}
        result.update(measurement_id=str(measurements[-1].metadata.id), metrics=metrics, limits=limits,
                      issue_count=int(entity.issue_count or 0))
        return result


_FAILED = ("error", "failed", "failure", "cancelled", "canceled")


def _failure(result: Any) -> str:
    """The error messages a resource, run or request status carries."""
    status = getattr(getattr(result, "entity", None), "status", None) or result
    failure = getattr(status, "failure", None)
    errors = getattr(failure, "errors", None) if failure is not None else None
    if errors:
        return "; ".join(str(getattr(error, "message", error)) for error in errors)
    return str(failure) if failure else "no reason given"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _request(raw: bytes | None, shape: Any) -> dict[str, Any]:
    """A payload record's request: a tabular record under its field names (``shape`` a list of
    names; values as stored, categories as their index), else ``scoring_input`` pixels."""
    import numpy as np

    if isinstance(shape, list):
        values = [] if raw is None else np.frombuffer(raw, "<f4").astype(np.float64).tolist()
        return {"fields": list(shape), "values": [values]}
    return {"fields": ["scoring_input"], "values": [[_pixels(raw, shape)]]}


def _pixels(raw: bytes | None, shape: tuple[int, ...] | None) -> Any:
    import numpy as np

    if raw is None:
        return None
    pixels = np.frombuffer(raw, np.uint8)
    if shape and int(np.prod(shape)) == pixels.size:
        pixels = pixels.reshape(shape)
    return pixels.tolist()


def _probabilities(raw: bytes | None) -> list[float]:
    import numpy as np

    return [] if raw is None else [round(float(p), 6) for p in np.frombuffer(raw, "<f4")]


# -- plugin hooks (entry point ``openscale`` in ``modelcycle.monitoring``) ------------------------
@hookimpl
def monitoring_settings_class() -> type:
    """``monitoring.openscale:`` is validated by :class:`OpenScaleConfig` (it needs
    ``service_instance_id``)."""
    from modelcycle.platforms.ibm.openscale_settings import OpenScaleConfig

    return OpenScaleConfig


@hookimpl
def monitoring_backend(settings: Any) -> OpenScaleBackend:
    """One :class:`OpenScaleBackend` per command: it signs in once, on first use."""
    return OpenScaleBackend(settings)
