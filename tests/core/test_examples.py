"""``modelcycle init``'s configs for any installed framework: its declared examples, else the
generic template; an unknown framework names the installed ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelcycle.core.config import load_config
from modelcycle.core.errors import ConfigError, PluginNotFoundError
from modelcycle.core.examples import GENERIC, example_config, list_examples


def _write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "modelcycle.yaml").write_text(text)
    return directory


@pytest.mark.parametrize("framework", ["pytorch", "lightning"])
def test_built_ins_offer_their_packaged_mnist_example(framework: str, tmp_path: Path) -> None:
    more = ["fashion-mnist", "imagefolder"] if framework == "pytorch" else []
    tabular = ["tabular"] if framework == "pytorch" else []
    assert list_examples(framework) == [*more, "mnist", *tabular, GENERIC]
    text = example_config(framework, "mnist", "digits")
    config = load_config(_write(tmp_path / "uc", text))
    assert (config.name, config.framework, config.data.dataset) == ("digits", framework, "mnist")
    assert example_config(framework, None, "digits") == text  # the first declared example by default


def test_the_adapter_without_examples_gets_the_generic_template_naming_its_options(tmp_path: Path) -> None:
    assert list_examples("sklearn-mlp") == [GENERIC]
    text = example_config("sklearn-mlp", None, "mlp-uc")
    assert text == example_config("sklearn-mlp", GENERIC, "mlp-uc")
    assert "framework 'sklearn-mlp' (modelcycle-example-adapter)" in text
    assert "TODO" in text  # says what to fill in
    document = yaml.safe_load(text)
    assert document["model"] == {"hidden_units": 64, "alpha": 0.0001}  # the adapter's own options
    config = load_config(_write(tmp_path / "uc", text))  # valid as written
    assert (config.name, config.framework) == ("mlp-uc", "sklearn-mlp")
    assert config.hyperparameters.epochs >= 1 and config.serving.platform == "local"


def test_the_generic_template_of_a_built_in_lists_its_model_options(tmp_path: Path) -> None:
    text = example_config("pytorch", GENERIC, "generic-uc")
    model = yaml.safe_load(text)["model"]
    assert model["architecture"] == "cnn" and model["hidden_channels"] == 20
    assert load_config(_write(tmp_path / "uc", text)).model == model


def test_an_unknown_framework_names_the_installed_ones() -> None:
    with pytest.raises(PluginNotFoundError) as caught:
        example_config("pytorh", "mnist", "uc")
    message = str(caught.value)
    assert "framework 'pytorh' is not installed" in message
    assert "pytorch" in message and "sklearn-mlp" in message
    with pytest.raises(PluginNotFoundError, match="installed frameworks"):
        list_examples("pytorh")


def test_an_unknown_example_lists_the_frameworks_examples() -> None:
    with pytest.raises(ConfigError, match=r"framework 'sklearn-mlp' has no example 'mnist'; its examples: generic"):
        example_config("sklearn-mlp", "mnist", "uc")
    with pytest.raises(ConfigError, match="its examples: mnist, generic"):
        example_config("lightning", "cifar", "uc")
    with pytest.raises(ConfigError, match="its examples: fashion-mnist, imagefolder, mnist, tabular, generic"):
        example_config("pytorch", "cifar", "uc")


def test_an_example_ships_its_extra_files_and_the_default_stays_mnist() -> None:
    from modelcycle.core.examples import example_files

    files = example_files("pytorch", "imagefolder")
    assert set(files) == {"make_folders.py"} and "def main(" in files["make_folders.py"]
    assert example_files("pytorch", "mnist") == {} and example_files("pytorch", GENERIC) == {}
    assert example_files("pytorch") == {}  # the default example is mnist, declared first
    assert "dataset: mnist" in example_config("pytorch", None, "uc")


def test_init_writes_the_extra_files_and_refuses_to_overwrite_them_without_force(tmp_path: Path) -> None:
    from modelcycle.cli import main

    target = tmp_path / "images-uc"
    assert main(["init", str(target), "--framework", "pytorch", "--example", "imagefolder"]) == 0
    script = target / "make_folders.py"
    assert script.is_file() and load_config(target).data.dataset == "imagefolder"
    (target / "modelcycle.yaml").unlink()
    script.write_text("# mine\n")
    assert main(["init", str(target), "--framework", "pytorch", "--example", "imagefolder"]) == 2
    assert script.read_text() == "# mine\n" and not (target / "modelcycle.yaml").exists()
    assert main(["init", str(target), "--framework", "pytorch", "--example", "imagefolder", "--force"]) == 0
    assert "def main(" in script.read_text()
