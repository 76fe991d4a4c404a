"""A trained model as MLflow users expect it: logged, registered, its alias following governance.

* **The experiment** carries MLflow 3's experiment-kind tag for model development
  (``mlflow.experimentKind = custom_model_development``, set by :mod:`.tracking`), so MLflow's UI
  opens it on the runs table, not on the GenAI traces overview.
* **The logged model** (MLflow 3 ``LoggedModel``, linked to the run as its output): a pyfunc
  named ``model`` that serves the modelcycle model directory through the endpoint's own
  inference pipeline (:mod:`.mlflow_pyfunc`), with a signature and an input example; plus, for
  torch artifacts (``pytorch``, ``lightning``), the bare network as an ``mlflow.pytorch`` model
  named ``network`` (it takes preprocessed tensors, not raw inputs).
* **The registered model**: every logged pyfunc becomes a version of the registered model named
  after the use case, tagged ``modelcycle.run_id``. The version's alias follows the governance
  stage of the run (:data:`STAGE_ALIASES`): ``validate`` ↔ ``challenger``, ``operate`` ↔
  ``champion``; a version moved out of a stage loses that alias, and the alias moves to
  whichever version reaches the stage next. Every version also carries its stage as the tag
  ``modelcycle.stage``.

``mlflow models serve -m models:/<use case>@champion --env-manager local`` then serves the
operated model with modelcycle's preprocessing. Everything here imports MLflow lazily.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = [
    "STAGE_ALIASES",
    "PYFUNC_NAME",
    "queue_model_logging",
    "log_trained_model",
    "follow_stage",
]

log = logging.getLogger(__name__)

#: governance stage → the registry alias of the version in that stage (other stages: no alias).
STAGE_ALIASES: dict[str, str] = {"validate": "challenger", "operate": "champion"}
#: the name of the logged pyfunc model in each run
PYFUNC_NAME = "pyfunc"  # not "model": runs:/<id>/model would resolve to it, not to the run's model/ artifacts
NETWORK_NAME = "network"
_TORCH_FRAMEWORKS = frozenset({"pytorch", "lightning"})
# MLflow's model logging reads the process-wide tracking URI: one logger at a time sets it.
_URI_LOCK = threading.Lock()


def _signature_and_example(manifest: Any) -> tuple[Any, Any]:
    """The pyfunc's signature (raw inputs → prediction, probability) and a raw input example."""
    import numpy as np
    import pandas as pd
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Schema, TensorSpec

    schema = manifest.input_schema
    outputs = [ColSpec(DataType.long, "prediction")]
    from modelcycle.core.serving.codecs import class_names

    if class_names(manifest.classes) is not None:
        outputs.append(ColSpec(DataType.string, "prediction_label"))
    outputs.append(ColSpec(Array(DataType.float), "probability"))
    if schema.kind == "tabular":
        columns, example = [], {}
        for field in schema.fields:
            categorical = field.kind == "categorical"
            columns.append(ColSpec(DataType.string if categorical else DataType.double, field.name))
            example[field.name] = [field.categories[0] if categorical else 0.0]
        return ModelSignature(Schema(columns), Schema(outputs)), pd.DataFrame(example)
    c, h, w = schema.shape
    shape = (h, w) if c == 1 else (h, w, c)
    low, high = schema.value_range
    example = np.linspace(low, high, num=int(np.prod(shape)), dtype=np.float32).reshape(1, *shape)
    return ModelSignature(Schema([TensorSpec(np.dtype(np.float32), (-1, *shape))]), Schema(outputs)), example


def _requirements(manifest: Any) -> list[str]:
    """Pinned requirements of the model's environment (never inferred: that would load the model)."""
    import mlflow

    pins = {"mlflow": mlflow.__version__, "modelcycle": manifest.modelcycle_version, **manifest.libraries}
    return [f"{name}=={version}" for name, version in sorted(pins.items()) if version and name != "python"]


def _with_tracking_uri(uri: str, action: Any) -> Any:
    import mlflow

    with _URI_LOCK:
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(uri)
        try:
            return action()
        finally:
            mlflow.set_tracking_uri(previous)


def queue_model_logging(tracker: Any, model_dir: Path, registered_name: str) -> None:
    """Have ``tracker``'s detached writer (a :class:`~modelcycle.core.tracking.RunTracker`) run
    :func:`log_trained_model` once the run has ended: off the training path, and the run's
    duration is the training's. Readers of the store wait for it
    (:func:`~modelcycle.core.tracking.wait_for_pending_writes`)."""
    tracker.log_model_after_end(Path(model_dir), registered_name)


def log_trained_model(client: Any, uri: str, run_id: str, model_dir: Path, registered_name: str) -> dict[str, Any]:
    """Log ``model_dir`` to MLflow run ``run_id`` as a pyfunc (plus the torch network for torch
    artifacts) and register the pyfunc as a new version of ``registered_name``.

    Returns ``{"model_id", "model_uri", "version", "network_model_id"}``. MLflow errors propagate
    (the writer reports them in its log; training is never failed by them).
    """
    # MLflow reloads the logged model to check the input example: no progress bars on the terminal
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow.pyfunc
    from modelcycle.core.artifacts import read_manifest
    from modelcycle.core.mlflow_pyfunc import MODEL_CODE, MODEL_DIR_ARTIFACT

    manifest = read_manifest(Path(model_dir))
    signature, example = _signature_and_example(manifest)
    requirements = _requirements(manifest)
    tags = {"modelcycle.run_id": manifest.run_id, "modelcycle.framework": manifest.framework}

    with tempfile.TemporaryDirectory(prefix="modelcycle-pyfunc-") as scratch:
        code = Path(scratch) / "modelcycle_model.py"  # models from code: nothing is pickled
        code.write_text(MODEL_CODE)
        model_id = _log(client, uri, run_id, PYFUNC_NAME, mlflow.pyfunc, tags, python_model=str(code),
                        artifacts={MODEL_DIR_ARTIFACT: str(model_dir)}, signature=signature, input_example=example,
                        pip_requirements=requirements)
    result: dict[str, Any] = {"model_id": model_id, "model_uri": f"models:/{model_id}"}
    # the registry resolves the version's models:/ source through the process-wide tracking URI
    result["version"] = _with_tracking_uri(
        uri, lambda: _register(client, registered_name, model_id, run_id, manifest.run_id))
    if manifest.framework in _TORCH_FRAMEWORKS:
        try:
            result["network_model_id"] = _log_network(client, uri, run_id, manifest, model_dir, requirements, tags)
        except Exception as exc:  # noqa: BLE001 - the pyfunc is the model; the bare network is a bonus
            log.warning("the torch network of run %s is not logged as an MLflow pytorch model: %s",
                        manifest.run_id, exc)
    return result


def _log(client: Any, uri: str, run_id: str, name: str, flavor: Any, tags: dict[str, str], **kwargs: Any) -> str:
    """Log one MLflow model of ``flavor`` to run ``run_id`` (in the run's experiment, linked to
    the run as its output, ``READY``); returns its model id. ``kwargs`` go to the flavor."""
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model

    experiment_id = client.get_run(run_id).info.experiment_id
    model = client.create_logged_model(experiment_id, name=name, source_run_id=run_id, tags=tags)
    try:
        _with_tracking_uri(uri, lambda: Model.log(None, name=name, flavor=flavor, run_id=run_id,
                                                  model_id=model.model_id, **kwargs))
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    return str(model.model_id)


def _log_network(client: Any, uri: str, run_id: str, manifest: Any, model_dir: Path, requirements: list[str],
                 tags: dict[str, str]) -> str | None:
    """The torch network as an ``mlflow.pytorch`` model (exported as a traced graph on a zero
    input of the network's shape; it takes preprocessed float32 tensors); ``None`` when the
    artifact's plugin answers no ``torch.nn.Module``."""
    import numpy as np

    import mlflow.pytorch
    from modelcycle.core.serving.pipeline import InferencePipeline

    network = InferencePipeline(model_dir).model
    if not hasattr(network, "state_dict"):
        return None
    example = np.zeros((1, *manifest.model_input_shape), dtype=np.float32)
    exporter = logging.getLogger("torch._export")  # its notes on the example's batch size are noise here
    level = exporter.level
    exporter.setLevel(logging.ERROR)
    try:
        return _log(client, uri, run_id, NETWORK_NAME, mlflow.pytorch, tags, pytorch_model=network.eval(),
                    input_example=example, pip_requirements=requirements)
    finally:
        exporter.setLevel(level)


def _register(client: Any, name: str, model_id: str, mlflow_run_id: str, run_id: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, tags={"modelcycle.use_case": name},
                                       description=f"Models of the modelcycle use case '{name}'")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name, source=f"models:/{model_id}", run_id=mlflow_run_id, model_id=model_id,
        tags={"modelcycle.run_id": run_id, "modelcycle.stage": "develop"},
    )
    return str(version.version)


def follow_stage(client: Any, name: str, run_id: str, stage: str) -> dict[str, Any] | None:
    """Give the registered version of modelcycle run ``run_id`` the alias of ``stage`` (taking
    it from any other version), drop the aliases of stages it left, tag it ``modelcycle.stage``.

    Returns ``{"name", "version", "alias"}`` (``alias`` ``None`` for a stage without one), or
    ``None`` when the run has no registered version (tracking off, trained before models were
    logged).
    """
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}' AND tag.`modelcycle.run_id` = '{run_id}'")
    except MlflowException:
        return None
    if not versions:
        return None
    newest = max(versions, key=lambda v: int(v.version))
    version = client.get_model_version(name, newest.version)  # a search result may omit the aliases
    alias = STAGE_ALIASES.get(stage)
    for other_alias in set(STAGE_ALIASES.values()) - {alias}:
        if other_alias in (version.aliases or []):
            client.delete_registered_model_alias(name, other_alias)
    if alias is not None:
        client.set_registered_model_alias(name, alias, version.version)
    client.set_model_version_tag(name, version.version, "modelcycle.stage", stage)
    return {"name": name, "version": str(version.version), "alias": alias}
