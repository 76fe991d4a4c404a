"""The framework-adapter contract as a pytest suite any adapter package runs against itself.

Subclass :class:`FrameworkConformance` in your adapter's tests and set ``framework`` (your
entry-point name in ``modelcycle.frameworks``) — the built-in plugins do exactly this::

    from modelcycle.testing import FrameworkConformance

    class TestMyAdapter(FrameworkConformance):
        framework = "sklearn-mlp"
        model_options = {"hidden_units": 32}

The suite trains on a small slice of real MNIST (found through ``MODELCYCLE_DATA_DIR``, the user
cache, or downloaded), so it checks real behaviour: a trained model that predicts, survives a
save → load round trip with equal predictions, serves JSON and NPY through the four handlers,
trains in both capture modes, names the installed distribution providing it (``framework_info``
or the entry point) in the manifest and the archive's ``code/requirements.txt``, and goes
through the whole lifecycle to cleanup.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from modelcycle.core.errors import PluginContractError
from modelcycle.core.registry import REQUIRED_FRAMEWORK_HOOKS, PluginRegistry

__all__ = ["FrameworkConformance"]


class FrameworkConformance:
    """Contract tests for a framework plugin. Override the class attributes, or the fixtures."""

    #: entry-point name of the plugin under test (required)
    framework: str = ""
    #: the ``model:`` section used for the tests
    model_options: dict[str, Any] = {}
    #: extra hyperparameters (kept small: the suite trains several times)
    hyperparameters: dict[str, Any] = {}
    train_limit: int = 1024
    test_limit: int = 256
    #: how close a reloaded model's probabilities must be to the in-memory ones
    tolerance: float = 1e-5

    # -- fixtures an adapter may override ---------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def registry(cls) -> PluginRegistry:
        if not cls.framework:
            raise NotImplementedError("set `framework = '<entry point name>'` on your conformance class")
        registry = PluginRegistry()
        registry.load_framework(cls.framework)
        return registry

    @classmethod
    def write_config(cls, directory: Path, **overrides: Any) -> Path:
        """Write a small ``modelcycle.yaml`` for this framework into ``directory``."""
        config: dict[str, Any] = {
            "name": f"conformance-{cls.framework}",
            "framework": cls.framework,
            "capture": "manual",
            "model": dict(cls.model_options),
            "data": {"dataset": "mnist", "train_limit": cls.train_limit, "test_limit": cls.test_limit},
            "hyperparameters": {"epochs": 1, "batch_size": 32, "log_interval": 10, **cls.hyperparameters},
        }
        config.update(overrides)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "modelcycle.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        return directory

    @pytest.fixture(scope="class")
    @classmethod
    def trained(cls, registry: PluginRegistry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
        """One real training of the use case: the train stage's outputs and its directory."""
        from modelcycle.core.lifecycle import UseCase

        directory = cls.write_config(tmp_path_factory.mktemp(f"conformance-{cls.framework}") / "uc")
        use_case = UseCase(directory)
        outputs = use_case.train()
        return {"outputs": outputs, "directory": directory}

    @pytest.fixture(scope="class")
    @classmethod
    def sample_images(cls) -> tuple[np.ndarray, np.ndarray]:
        """Raw uint8 MNIST test images (N×28×28) and labels the predictions are checked on."""
        from modelcycle.core.datasets import load_dataset

        test = load_dataset("mnist").test.take(32)
        return np.array(test.images), np.array(test.labels)

    # -- the contract -----------------------------------------------------------------------
    def test_plugin_implements_every_required_hook(self, registry: PluginRegistry) -> None:
        plugin = registry.pm.get_plugin(self.framework)
        implemented = {caller.name for caller in registry.pm.get_hookcallers(plugin) or []}
        assert REQUIRED_FRAMEWORK_HOOKS <= implemented, REQUIRED_FRAMEWORK_HOOKS - implemented

    def test_model_options_validate_with_the_plugins_config_class(self, registry: PluginRegistry) -> None:
        config_class = registry.pm.hook.model_config_class()
        if config_class is None:
            pytest.skip("the plugin declares no model config class")
        config_class.model_validate(self.model_options)
        with pytest.raises(Exception):
            config_class.model_validate({**self.model_options, "surely_not_an_option": 1})

    def test_training_reports_metrics_and_writes_an_artifact(self, trained: dict[str, Any]) -> None:
        outputs = trained["outputs"]
        metrics = outputs["metrics"]
        assert {"train_loss", "test_loss", "test_accuracy"} <= set(metrics), metrics
        assert metrics["test_accuracy"] > 0.3, f"a trained MNIST model must beat chance clearly: {metrics}"
        assert len(outputs["history"]) == 1
        model_dir = Path(outputs["model_dir"])
        from modelcycle.core.artifacts import read_manifest

        manifest = read_manifest(model_dir, expected_framework=self.framework)
        assert manifest.run_id == outputs["run_id"]
        for name in manifest.model_files:
            assert (model_dir / name).exists(), name
        assert Path(outputs["archive"]).is_file()

    def test_framework_info_names_the_installed_distribution(self, registry: PluginRegistry) -> None:
        from modelcycle.core.providers import framework_info, framework_provider
        from modelcycle.core.registry import plugin_distribution

        info = framework_info(registry, self.framework)  # raises if the hook answers a wrong type
        installed = plugin_distribution("framework", self.framework)
        assert installed is not None
        provider = framework_provider(registry, self.framework)
        assert provider.version != "?", f"framework_info names '{info.distribution}', which is not installed"
        for text in info.examples.values():
            assert isinstance(yaml.safe_load(text.replace("{name}", "example")), dict)

    def test_the_artifact_names_its_providers_and_requires_them(self, trained: dict[str, Any]) -> None:
        import tarfile

        from modelcycle.core.artifacts import read_manifest

        manifest = read_manifest(Path(trained["outputs"]["model_dir"]))
        framework = manifest.providers["framework"]
        assert framework.name == self.framework and manifest.framework_version == framework.version
        assert "dataset" in manifest.providers
        with tarfile.open(trained["outputs"]["archive"]) as tar:
            member = tar.extractfile("code/requirements.txt")
            assert member is not None
            requirements = member.read().decode().split()
        assert requirements[0].startswith("modelcycle")
        assert any(line.startswith(f"{framework.distribution}") and line.endswith(f"=={framework.version}")
                   for line in requirements), requirements

    def test_save_load_predicts_what_the_trained_model_predicted(
        self, registry: PluginRegistry, trained: dict[str, Any], sample_images: tuple[np.ndarray, np.ndarray],
        tmp_path: Path,
    ) -> None:
        from modelcycle.core.serving.pipeline import InferencePipeline

        model_dir = Path(trained["outputs"]["model_dir"])
        first = InferencePipeline(model_dir)
        raw = sample_images[0][:, None].astype(np.float32)
        expected = first.predict(raw)
        copy = shutil.copytree(model_dir, tmp_path / "copy")
        again = InferencePipeline(copy).predict(raw)
        assert expected.shape == (len(raw), 10)
        np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-4)
        np.testing.assert_allclose(again, expected, atol=self.tolerance)
        accuracy = float((expected.argmax(1) == sample_images[1]).mean())
        assert accuracy > 0.3, f"served predictions must match the labels better than chance: {accuracy:.2f}"

    def test_handlers_round_trip_json_and_npy(
        self, trained: dict[str, Any], sample_images: tuple[np.ndarray, np.ndarray]
    ) -> None:
        import orjson

        from modelcycle.core.serving.codecs import JSON, NPY
        from modelcycle.core.serving.pipeline import InferencePipeline

        pipeline = InferencePipeline(Path(trained["outputs"]["model_dir"]))
        images = sample_images[0][:8]
        body = orjson.dumps({"input_data": [{"values": images}]}, option=orjson.OPT_SERIALIZE_NUMPY)
        json_probs = pipeline.predict(pipeline.decode(body, JSON))
        out, content_type = pipeline.encode(json_probs, JSON, "sid")
        document = orjson.loads(out)
        assert content_type == JSON and document["scoring_id"] == "sid"
        values = document["predictions"][0]["values"]
        assert [row[0] for row in values] == json_probs.argmax(1).tolist()
        buffer = io.BytesIO()
        np.save(buffer, images)
        npy_probs = pipeline.predict(pipeline.decode(buffer.getvalue(), NPY))
        out, content_type = pipeline.encode(npy_probs, NPY)
        assert content_type == NPY
        np.testing.assert_allclose(np.load(io.BytesIO(out)), json_probs, atol=1e-6)

    def test_both_capture_modes_train_with_the_same_metrics(
        self, registry: PluginRegistry, trained: dict[str, Any], tmp_path: Path
    ) -> None:
        from modelcycle.core.lifecycle import UseCase

        directory = self.write_config(tmp_path / "autolog", capture="autolog")
        outputs = UseCase(directory).train()
        assert set(outputs["metrics"]) == set(trained["outputs"]["metrics"])

    def test_an_artifact_of_another_framework_is_refused_with_its_maker_named(self, trained: dict[str, Any]) -> None:
        from modelcycle.core.artifacts import read_manifest
        from modelcycle.core.errors import ArtifactError

        with pytest.raises(ArtifactError, match=self.framework):
            read_manifest(Path(trained["outputs"]["model_dir"]), expected_framework="not-" + self.framework)

    def test_lifecycle_from_train_to_cleanup(
        self, trained: dict[str, Any], sample_images: tuple[np.ndarray, np.ndarray]
    ) -> None:
        from modelcycle.core.lifecycle import UseCase

        use_case = UseCase(trained["directory"])
        endpoint = None
        try:
            endpoint = use_case.deploy()
            assert use_case.describe_endpoint(endpoint)["status"] == "InService"
            result = use_case.score(images=sample_images[0][:10], labels=sample_images[1][:10])
            assert len(result.predictions) == 10 and result.scoring_id
            status = use_case.status()
            assert status["trained"] and status["deployed"]
        finally:
            removed = use_case.cleanup()
        assert removed.get("serving") == 1
        assert endpoint is not None
        # its platform (local: by the server's pid) reports the endpoint's process gone
        assert use_case.describe_endpoint(endpoint)["status"] == "Stopped"
        assert not use_case.status()["deployed"]

    def test_unanswered_hooks_raise_instead_of_returning_none(self, registry: PluginRegistry) -> None:
        # no platform is loaded in this registry, so nobody answers run_training_job
        with pytest.raises(PluginContractError, match="run_training_job"):
            registry.call_first("run_training_job", context=None)
