"""Tests of modelcycle.core.config: the strict, typed ``modelcycle.yaml`` with environment and
``--set`` overrides, and the framework-validated ``model:`` section."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from conftest import REPO, write_use_case
from modelcycle.core.config import (
    CONFIG_FILE,
    Hyperparameters,
    UseCaseConfig,
    load_config,
    parse_overrides,
)
from modelcycle.core.errors import ConfigError

EXAMPLE = REPO / "src" / "modelcycle" / "examples" / "mnist-pytorch" / CONFIG_FILE
TOP_LEVEL_KEYS = sorted(UseCaseConfig.model_fields)


def _write_raw(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(text)
    return directory


def _example_with(directory: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(EXAMPLE.read_text())
    mutate(data)
    return _write_raw(directory, yaml.safe_dump(data, sort_keys=False))


# -- the packaged example ---------------------------------------------------------------------


def test_packaged_example_loads(tmp_path: Path) -> None:
    config = load_config(EXAMPLE.parent, environ={})
    assert config.name == "mnist-pytorch"
    assert config.framework == "pytorch"
    assert config.capture == "manual"
    assert config.model == {"architecture": "cnn", "hidden_channels": 20}
    assert config.data.dataset == "mnist"
    assert config.hyperparameters.epochs == 2
    assert config.hyperparameters.batch_size == 64
    assert config.hyperparameters.learning_rate == pytest.approx(0.005)
    assert config.training.platform == "local" and config.serving.platform == "local"
    assert config.serving.port == 0
    assert config.serving.token is None


def test_write_use_case_merges_sections(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc", name="merged", hyperparameters={"epochs": 1})
    config = load_config(directory, environ={})
    assert config.name == "merged"
    assert config.hyperparameters.epochs == 1
    assert config.hyperparameters.batch_size == 64  # the rest of the section is kept


# -- strictness and error messages ------------------------------------------------------------


def test_unknown_top_level_key_names_it_and_lists_allowed_keys(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc", epochs=3)
    with pytest.raises(ConfigError) as info:
        load_config(directory, environ={})
    message = str(info.value)
    assert str(directory / CONFIG_FILE) in message
    assert "epochs: unknown key" in message
    allowed = re.search(r"epochs: unknown key; allowed keys: (.*)", message)
    assert allowed, message
    assert allowed.group(1).split(", ") == TOP_LEVEL_KEYS
    assert "hyperparameters" in TOP_LEVEL_KEYS


def test_unknown_nested_key_names_its_path_and_the_sections_keys(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc", hyperparameters={"epoch": 3})
    with pytest.raises(ConfigError) as info:
        load_config(directory, environ={})
    message = str(info.value)
    allowed = re.search(r"hyperparameters\.epoch: unknown key; allowed keys: (.*)", message)
    assert allowed, message
    keys = allowed.group(1).split(", ")
    assert "epochs" in keys
    assert keys == sorted(Hyperparameters.model_fields)


def test_bad_literal_names_the_allowed_values(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc", capture="sometimes")
    with pytest.raises(ConfigError) as info:
        load_config(directory, environ={})
    message = str(info.value)
    assert "capture:" in message
    assert "'autolog'" in message and "'manual'" in message
    assert "'sometimes'" in message


def test_bad_nested_literal_names_path_and_values(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc", hyperparameters={"optimizer": "rmsprop"})
    with pytest.raises(ConfigError) as info:
        load_config(directory, environ={})
    message = str(info.value)
    assert "hyperparameters.optimizer:" in message
    assert "'adam'" in message and "'sgd'" in message


def test_wrong_type_names_the_path(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc", hyperparameters={"epochs": "many"})
    with pytest.raises(ConfigError) as info:
        load_config(directory, environ={})
    message = str(info.value)
    assert re.search(r"hyperparameters\.epochs: .*integer.*\(got 'many'\)", message), message


@pytest.mark.parametrize("epochs", [0, -1])
def test_non_positive_epochs_rejected(tmp_path: Path, epochs: int) -> None:
    directory = write_use_case(tmp_path / "uc", hyperparameters={"epochs": epochs})
    with pytest.raises(ConfigError, match=r"hyperparameters\.epochs: Input should be greater than 0"):
        load_config(directory, environ={})


def test_every_problem_is_listed(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc", capture="sometimes", hyperparameters={"epochs": 0, "batch": 1})
    with pytest.raises(ConfigError) as info:
        load_config(directory, environ={})
    message = str(info.value)
    for path in ("capture:", "hyperparameters.epochs:", "hyperparameters.batch: unknown key"):
        assert path in message


def test_missing_name_rejected(tmp_path: Path) -> None:
    directory = _example_with(tmp_path / "uc", lambda data: data.pop("name"))
    with pytest.raises(ConfigError, match=r"name: required key is missing"):
        load_config(directory, environ={})


@pytest.mark.parametrize("name", ["has space", "-leading-dash", "x" * 64, "slash/name"])
def test_invalid_name_rejected(tmp_path: Path, name: str) -> None:
    directory = write_use_case(tmp_path / "uc", name=name)
    with pytest.raises(ConfigError, match=r"\bname: String should match pattern"):
        load_config(directory, environ={})


def test_missing_file_tells_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    message = str(info.value)
    assert f"no {CONFIG_FILE} in {tmp_path.resolve()}" in message
    assert "modelcycle init" in message


def test_invalid_yaml_rejected(tmp_path: Path) -> None:
    directory = _write_raw(tmp_path / "uc", "name: broken\nhyperparameters: {epochs: 1\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(directory, environ={})


def test_yaml_that_is_not_a_mapping_rejected(tmp_path: Path) -> None:
    directory = _write_raw(tmp_path / "uc", "- name\n- framework\n")
    with pytest.raises(ConfigError, match="must hold a mapping of sections"):
        load_config(directory, environ={})


def test_empty_file_reports_missing_name(tmp_path: Path) -> None:
    directory = _write_raw(tmp_path / "uc", "")
    with pytest.raises(ConfigError, match="name: required key is missing"):
        load_config(directory, environ={})


def test_null_model_section_is_empty(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc", model=None)
    assert load_config(directory, environ={}).model == {}


# -- overrides --------------------------------------------------------------------------------


def test_parse_overrides_parses_yaml_scalars() -> None:
    parsed = parse_overrides([
        "hyperparameters.epochs=3",
        "hyperparameters.learning_rate=0.01",
        "serving.port = 8080",
        "x.flag=true",
        "x.off=false",
        "x.text=hello",
        "x.empty=",
        "x.expr=a=b",
    ])
    assert parsed == {
        "hyperparameters.epochs": 3,
        "hyperparameters.learning_rate": 0.01,
        "serving.port": 8080,
        "x.flag": True,
        "x.off": False,
        "x.text": "hello",
        "x.empty": None,
        "x.expr": "a=b",
    }
    assert type(parsed["hyperparameters.epochs"]) is int
    assert type(parsed["hyperparameters.learning_rate"]) is float
    assert type(parsed["x.flag"]) is bool


@pytest.mark.parametrize("pair", ["hyperparameters.epochs", "=3", "  =3"])
def test_parse_overrides_rejects_malformed_items(pair: str) -> None:
    with pytest.raises(ConfigError, match="--set expects key=value"):
        parse_overrides([pair])


def test_override_applies(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc")
    config = load_config(directory, parse_overrides(["hyperparameters.epochs=3", "data.train_limit=100"]), environ={})
    assert config.hyperparameters.epochs == 3
    assert config.data.train_limit == 100
    assert config.hyperparameters.batch_size == 64


def test_override_of_a_value_as_a_section_errors_clearly(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc")
    with pytest.raises(ConfigError) as info:
        load_config(directory, parse_overrides(["name.x=1"]), environ={})
    message = str(info.value)
    assert "override 'name.x'" in message
    assert "'name' is a value, not a section" in message


def test_invalid_override_value_names_the_key(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc")
    with pytest.raises(ConfigError) as info:
        load_config(directory, parse_overrides(["hyperparameters.epochs=0"]), environ={})
    message = str(info.value)
    assert "hyperparameters.epochs:" in message
    assert "(with overrides)" in message


def test_unknown_override_key_lists_allowed_keys(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc")
    with pytest.raises(ConfigError, match=r"serving\.prot: unknown key; allowed keys: .*\bport\b"):
        load_config(directory, {"serving.prot": 1}, environ={})


def test_environment_variable_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = write_use_case(tmp_path / "uc", hyperparameters={"epochs": 2})
    monkeypatch.setenv("MODELCYCLE_HYPERPARAMETERS__EPOCHS", "5")
    monkeypatch.setenv("MODELCYCLE_SERVING__HOST", "0.0.0.0")
    config = load_config(directory)  # reads os.environ
    assert config.hyperparameters.epochs == 5
    assert config.serving.host == "0.0.0.0"


def test_environment_mapping_argument_is_used(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc")
    config = load_config(directory, environ={"MODELCYCLE_HYPERPARAMETERS__SEED": "42", "MODELCYCLE_CAPTURE": "autolog"})
    assert config.hyperparameters.seed == 42
    assert config.capture == "autolog"


def test_settings_variables_are_not_config_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = write_use_case(tmp_path / "uc")
    monkeypatch.setenv("MODELCYCLE_DATA_DIR", str(tmp_path / "somewhere"))
    monkeypatch.setenv("MODELCYCLE_DEBUG", "1")
    monkeypatch.setenv("MODELCYCLE_ENDPOINT_TOKEN", "secret")
    monkeypatch.setenv("MODELCYCLE_SERVING_THREADS", "2")
    monkeypatch.delenv("MODELCYCLE_TRACKING__LOG_MODEL", raising=False)  # a config key the test suite sets
    config = load_config(directory)
    assert config.data.path is None
    assert config.data.dataset == "mnist"
    assert config == load_config(directory, environ={})


def test_invalid_environment_value_is_reported(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc")
    with pytest.raises(ConfigError, match=r"hyperparameters\.epochs:"):
        load_config(directory, environ={"MODELCYCLE_HYPERPARAMETERS__EPOCHS": "zero"})


def test_precedence_file_then_environment_then_overrides(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc", hyperparameters={"epochs": 2, "batch_size": 32, "seed": 7})
    environ = {"MODELCYCLE_HYPERPARAMETERS__EPOCHS": "5", "MODELCYCLE_HYPERPARAMETERS__BATCH_SIZE": "16"}
    assert load_config(directory, environ={}).hyperparameters.epochs == 2
    config = load_config(directory, parse_overrides(["hyperparameters.epochs=9"]), environ=environ)
    assert config.hyperparameters.epochs == 9  # override beats environment
    assert config.hyperparameters.batch_size == 16  # environment beats file
    assert config.hyperparameters.seed == 7  # file where nothing else says


# -- model: section, validated by the framework plugin ----------------------------------------


def test_model_section_validated_by_the_framework_plugin(tmp_path: Path) -> None:
    from modelcycle.core.lifecycle import UseCase

    directory = write_use_case(tmp_path / "uc", model={"architecture": "rnn"})
    use_case = UseCase(directory)  # the core does not know the model: section's keys
    with pytest.raises(ConfigError) as info:
        use_case.model_config
    message = str(info.value)
    assert "model.architecture:" in message
    assert "'cnn'" in message and "'fc'" in message and "'cifar'" in message
    assert str(directory / CONFIG_FILE) in message


def test_unknown_model_key_names_its_path(tmp_path: Path) -> None:
    from modelcycle.core.lifecycle import UseCase

    directory = write_use_case(tmp_path / "uc", model={"hidden_channel": 10})
    with pytest.raises(ConfigError, match=r"model\.hidden_channel: unknown key; allowed keys: .*hidden_channels"):
        UseCase(directory).model_config


def test_valid_model_section_is_typed(tmp_path: Path) -> None:
    from modelcycle.core.lifecycle import UseCase
    from modelcycle.plugins.pytorch.config import PytorchModelConfig

    directory = write_use_case(tmp_path / "uc", model={"architecture": "fc", "hidden_size": 32})
    model_config = UseCase(directory).model_config
    assert isinstance(model_config, PytorchModelConfig)
    assert (model_config.architecture, model_config.hidden_size) == ("fc", 32)


# -- secrets ----------------------------------------------------------------------------------


def test_serving_token_is_a_secret(tmp_path: Path) -> None:
    token = "s3cr3t-token-value"
    directory = write_use_case(tmp_path / "uc", serving={"token": token})
    config = load_config(directory, environ={})
    assert isinstance(config.serving.token, SecretStr)
    assert token not in repr(config)
    assert token not in str(config)
    assert token not in config.model_dump_json()
    assert token not in repr(config.serving)
    assert config.endpoint_token() == token


def test_endpoint_token_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = write_use_case(tmp_path / "uc")
    config = load_config(directory, environ={})
    assert config.endpoint_token() is None
    monkeypatch.setenv("MODELCYCLE_ENDPOINT_TOKEN", "from-env")
    assert config.endpoint_token() == "from-env"


def test_sections_reject_invalid_assignment(tmp_path: Path) -> None:
    config = load_config(write_use_case(tmp_path / "uc"), environ={})
    with pytest.raises(ValueError):
        config.hyperparameters.epochs = 0
    assert config.hyperparameters.epochs == 2
