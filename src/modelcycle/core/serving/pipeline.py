"""The inference pipeline: the four handlers bound once, for the endpoint and for SageMaker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelcycle.core.artifacts import read_manifest, verify_files
from modelcycle.core.errors import PluginContractError
from modelcycle.core.providers import load_artifact_framework
from modelcycle.core.registry import PluginRegistry
from modelcycle.core.serving.context import ServingContext

__all__ = ["InferencePipeline", "load_pipeline", "sagemaker_handlers"]


class InferencePipeline:
    """Loads the model in ``model_dir`` with the plugin its manifest names, then decodes,
    predicts and encodes requests through the ``input_fn``/``predict_fn``/``output_fn`` hooks.

    Every file the manifest records is checked against its SHA-256 before the model loads (an
    ArtifactError names a corrupt or missing file), so the endpoint and SageMaker's ``model_fn``
    never serve a model that changed after training.
    """

    def __init__(self, model_dir: str | Path, registry: PluginRegistry | None = None) -> None:
        self.model_dir = Path(model_dir)
        manifest = read_manifest(self.model_dir)
        verify_files(self.model_dir, manifest)
        self.registry = registry or PluginRegistry()
        load_artifact_framework(self.registry, manifest)  # not installed: names what to pip install
        self.context = ServingContext(manifest=manifest, model_dir=self.model_dir)
        self.model = self.registry.call_first("model_fn", model_dir=self.model_dir, context=self.context)
        hook = self.registry.hook
        self._input_fn, self._predict_fn, self._output_fn = hook.input_fn, hook.predict_fn, hook.output_fn

    @property
    def manifest(self) -> Any:
        return self.context.manifest

    def decode(self, body: bytes, content_type: str) -> np.ndarray:
        """Body → raw pixels ``(N, C, H, W)``; raises ServingError (4xx) for bad input."""
        return self._input_fn(body=body, content_type=content_type, context=self.context)

    def predict(self, data: np.ndarray) -> np.ndarray:
        """Raw pixels → class probabilities ``(N, K)``."""
        result = self._predict_fn(data=data, model=self.model, context=self.context)
        if result is None:
            raise PluginContractError(f"framework '{self.manifest.framework}' did not answer 'predict_fn'")
        return result

    def encode(self, probabilities: np.ndarray, accept: str, scoring_id: str | None = None) -> tuple[bytes, str]:
        """Probabilities → ``(body, content_type)`` for the negotiated ``accept`` type."""
        return self._output_fn(prediction=probabilities, accept=accept, context=self.context, scoring_id=scoring_id)


def load_pipeline(model_dir: str | Path, registry: PluginRegistry | None = None) -> Any:
    """The endpoint's pipeline for ``model_dir``: a model trained by the user's own script
    (``manifest.script``) is served through its SageMaker handlers
    (:class:`~modelcycle.core.serving.script_pipeline.ScriptPipeline`), a built-in one by the
    framework plugin's hooks (:class:`InferencePipeline`)."""
    if read_manifest(Path(model_dir)).script is not None:
        from modelcycle.core.serving.script_pipeline import ScriptPipeline

        return ScriptPipeline(model_dir, registry)
    return InferencePipeline(model_dir, registry)


def sagemaker_handlers() -> tuple[Any, Any, Any, Any]:
    """``model_fn, input_fn, predict_fn, output_fn`` with SageMaker's signatures.

    ``model_fn`` returns the pipeline itself, which the other three receive as ``model``.
    A client's mistake (a :class:`~modelcycle.core.errors.ServingError`) raised by
    ``input_fn``/``predict_fn``/``output_fn`` is also the inference toolkit's error with the
    same status (see :mod:`.toolkit`), so SageMaker answers it with the 4xx the local endpoint
    gives. ``input_fn`` takes the body as the toolkit passes it: ``str`` for JSON, else bytes.
    """
    from modelcycle.core.serving.codecs import negotiate_accept
    from modelcycle.core.serving.toolkit import speaks_toolkit

    pipelines: dict[str, InferencePipeline] = {}

    def model_fn(model_dir: str) -> InferencePipeline:
        pipelines["current"] = InferencePipeline(model_dir)
        return pipelines["current"]

    @speaks_toolkit
    def input_fn(body: bytes | str, content_type: str) -> np.ndarray:
        raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        return pipelines["current"].decode(raw, content_type)

    @speaks_toolkit
    def predict_fn(data: np.ndarray, model: InferencePipeline) -> np.ndarray:
        return model.predict(data)

    @speaks_toolkit
    def output_fn(prediction: np.ndarray, accept: str) -> tuple[bytes, str]:
        return pipelines["current"].encode(prediction, negotiate_accept(accept))

    return model_fn, input_fn, predict_fn, output_fn
