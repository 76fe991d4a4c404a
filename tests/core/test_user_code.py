"""The framework-free user-code helper: parsing ``model.class``, importing a file under a
content-addressed name, constructing with sizes, packaging into ``code/user/`` and loading the
packaged copy — and every error naming the file and the fix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from modelcycle.core.config import ConfigError
from modelcycle.core.experiments import sweep_overrides
from modelcycle.core.user_code import (
    USER_CODE_DIR,
    UserCodeError,
    construct,
    load_packaged_code,
    load_user_code,
    package_user_code,
    parse_code_ref,
    ship_user_code,
)

NETS = '''
class Net:
    def __init__(self, input_shape, num_classes, width=4):
        self.input_shape, self.num_classes, self.width = input_shape, num_classes, width

class Loose:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

class Bare:
    def __init__(self, width=1):
        self.width = width

class Broken:
    def __init__(self, width=1):
        raise ValueError(f"width {width} is too small")

VERSION = 1
'''


def _write(directory: Path, text: str = NETS, name: str = "nets.py") -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_parse_file_and_module_forms() -> None:
    file_ref = parse_code_ref("models/nets.py:MyNet")
    assert (file_ref.file, file_ref.module, file_ref.name) == ("models/nets.py", None, "MyNet")
    module_ref = parse_code_ref("my_package.nets:MyNet")
    assert (module_ref.file, module_ref.module, module_ref.name) == (None, "my_package.nets", "MyNet")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nets.py", "write 'file.py:ClassName'"),
        ("nets.py:My:Net", "write 'file.py:ClassName'"),
        ("nets.py:", "write 'file.py:ClassName'"),
        ("nets.py:class", "write 'file.py:ClassName'"),
        ("../nets.py:Net", "must be inside the use case directory"),
        ("/abs/nets.py:Net", "must be inside the use case directory"),
        ("nets.txt/x:Net", "is not a Python file"),
        ("train.py:Net", "rename the file"),
        ("my-package.nets:Net", "write 'file.py:ClassName'"),
    ],
)
def test_bad_specs_are_refused_with_the_form_to_use(spec: str, expected: str) -> None:
    with pytest.raises(UserCodeError, match=expected) as caught:
        parse_code_ref(spec)
    assert isinstance(caught.value, ConfigError)  # the CLI prints it without a traceback


def test_missing_file_names_the_path_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UserCodeError, match=r"nets\.py does not exist; put the file in the use case directory"):
        load_user_code("nets.py:Net", tmp_path)


def test_missing_class_lists_what_the_file_defines(tmp_path: Path) -> None:
    _write(tmp_path)
    with pytest.raises(UserCodeError, match=r"defines no 'Nett' \(classes and functions it defines: Bare, Broken, Loose, Net\)"):
        load_user_code("nets.py:Nett", tmp_path)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "class Net:\n    def __init__(self)\n        pass\n")
    with pytest.raises(UserCodeError, match=rf"{path} has a syntax error at line 2"):
        load_user_code("nets.py:Net", tmp_path)


def test_import_error_says_the_file_must_be_self_contained(tmp_path: Path) -> None:
    _write(tmp_path, "import helpers_beside_nets\nclass Net: pass\n")
    with pytest.raises(UserCodeError, match=r"No module named 'helpers_beside_nets'.*must be self-contained"):
        load_user_code("nets.py:Net", tmp_path)
    assert not [name for name in sys.modules if name.startswith("modelcycle_user_code.nets_") and
                "helpers" in str(getattr(sys.modules[name], "__file__", ""))]


def test_error_at_import_time_shows_the_user_line(tmp_path: Path) -> None:
    _write(tmp_path, "X = 1\nY = X / 0\nclass Net: pass\n")
    with pytest.raises(UserCodeError, match=r"raised ZeroDivisionError: division by zero\n.*line 2") as caught:
        load_user_code("nets.py:Net", tmp_path)
    assert "Y = X / 0" in str(caught.value)


def test_installed_module_is_imported_and_its_file_recorded(tmp_path: Path) -> None:
    code = load_user_code("json.decoder:JSONDecoder", tmp_path)
    import json.decoder

    assert code.obj is json.decoder.JSONDecoder
    assert code.source == Path(json.decoder.__file__).resolve()
    with pytest.raises(UserCodeError, match="cannot import module 'no_such_pkg_xyz.nets'.*install the package"):
        load_user_code("no_such_pkg_xyz.nets:Net", tmp_path)


def test_construct_passes_sizes_only_when_the_signature_takes_them(tmp_path: Path) -> None:
    _write(tmp_path)
    net = construct(load_user_code("nets.py:Net", tmp_path), {"width": 8}, (1, 28, 28), 10)
    assert (net.input_shape, net.num_classes, net.width) == ((1, 28, 28), 10, 8)
    loose = construct(load_user_code("nets.py:Loose", tmp_path), {"a": 1}, (3, 32, 32), 5)
    assert loose.kwargs == {"a": 1, "input_shape": (3, 32, 32), "num_classes": 5}
    bare = construct(load_user_code("nets.py:Bare", tmp_path), {"width": 3}, (1, 28, 28), 10)
    assert bare.width == 3
    explicit = construct(load_user_code("nets.py:Net", tmp_path), {"num_classes": 2}, (1, 28, 28), 10)
    assert explicit.num_classes == 2  # options win over the sizes


def test_constructor_errors_show_the_exception_and_arguments(tmp_path: Path) -> None:
    _write(tmp_path)
    with pytest.raises(UserCodeError, match=r"calling it with \(width=0\) raised ValueError: width 0 is too small") as caught:
        construct(load_user_code("nets.py:Broken", tmp_path), {"width": 0}, (1, 28, 28), 10)
    assert 'raise ValueError(f"width {width} is too small")' in str(caught.value)
    with pytest.raises(UserCodeError, match=r"unexpected keyword argument 'depth'"):
        construct(load_user_code("nets.py:Bare", tmp_path), {"depth": 2}, (1, 28, 28), 10)
    with pytest.raises(UserCodeError, match="is a int, not a class or function"):
        construct(load_user_code("nets.py:VERSION", tmp_path), {}, (1, 28, 28), 10)


def test_edited_file_is_a_new_module_and_the_same_bytes_the_same(tmp_path: Path) -> None:
    _write(tmp_path)
    first = load_user_code("nets.py:Net", tmp_path)
    again = load_user_code("nets.py:Net", tmp_path)
    assert again.obj is first.obj
    _write(tmp_path, NETS.replace("VERSION = 1", "VERSION = 2"))
    edited = load_user_code("nets.py:VERSION", tmp_path)
    assert edited.obj == 2 and edited.sha256 != first.sha256
    assert first.obj.__module__.startswith("modelcycle_user_code.nets_")
    assert "nets" not in sys.modules or sys.modules["nets"].__file__ != str(tmp_path / "nets.py")


def test_packaged_copy_is_what_loads_after_the_original_changes(tmp_path: Path) -> None:
    use_case, model_dir = tmp_path / "uc", tmp_path / "model"
    _write(use_case, NETS, "models/nets.py")
    record = package_user_code(load_user_code("models/nets.py:Net", use_case), model_dir)
    assert record["file"] == f"{USER_CODE_DIR}/nets.py" and record["class"] == "models/nets.py:Net"
    assert (model_dir / record["file"]).read_text() == NETS
    _write(use_case, "raise SystemExit('edited after training')\n", "models/nets.py")
    loaded = load_packaged_code(model_dir, record)
    assert loaded.__name__ == "Net" and Path(sys.modules[loaded.__module__].__file__) == (model_dir / record["file"]).resolve()


def test_packaged_copy_that_changed_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "uc")
    record = package_user_code(load_user_code("nets.py:Net", tmp_path / "uc"), tmp_path / "model")
    (tmp_path / "model" / record["file"]).write_text(NETS + "\n# tampered\n")
    with pytest.raises(UserCodeError, match="does not match the SHA-256 recorded at training"):
        load_packaged_code(tmp_path / "model", record)
    (tmp_path / "model" / record["file"]).unlink()
    with pytest.raises(UserCodeError, match="the file is missing; retrain"):
        load_packaged_code(tmp_path / "model", record)


def test_ship_copies_the_file_at_its_relative_path(tmp_path: Path) -> None:
    _write(tmp_path / "uc", NETS, "models/nets.py")
    copy = ship_user_code("models/nets.py:Net", tmp_path / "uc", tmp_path / "source")
    assert copy == tmp_path / "source" / "models" / "nets.py" and copy.read_text() == NETS
    assert ship_user_code("json.decoder:JSONDecoder", tmp_path / "uc", tmp_path / "source") is None
    with pytest.raises(UserCodeError, match="does not exist"):
        ship_user_code("other.py:Net", tmp_path / "uc", tmp_path / "source")


def test_torch_model_section_refuses_mixed_keys() -> None:
    from modelcycle.core.config import validate_section
    from modelcycle.lib.torch.config import PytorchModelConfig

    with pytest.raises(ConfigError, match="hidden_channels configure a built-in network and do not apply with 'class'"):
        validate_section(PytorchModelConfig, {"class": "nets.py:Net", "hidden_channels": 4}, "model", "f")
    with pytest.raises(ConfigError, match="options, output apply only to your own network"):
        validate_section(PytorchModelConfig, {"options": {"a": 1}, "output": "probs"}, "model", "f")
    with pytest.raises(ConfigError, match="model.output"):
        validate_section(PytorchModelConfig, {"class": "nets.py:Net", "output": "softmax"}, "model", "f")
    config = PytorchModelConfig.model_validate({"class": "nets.py:Net", "options": {"width": 8}})
    assert config.model_dump() == {"class": "nets.py:Net", "options": {"width": 8}, "output": "logits"}
    again = PytorchModelConfig.model_validate(config.model_dump())  # the manifest round-trips
    assert again.model_dump() == config.model_dump() and again.effective_output == "logits"
    built_in = PytorchModelConfig()
    assert built_in.model_dump() == {"architecture": "cnn", "hidden_channels": 20, "kernel_size": 5,
                                     "fc_size": 50, "dropout": 0.5, "conv_dropout": 0.5, "hidden_size": 64}
    assert built_in.effective_output == "log_probs"


def test_keras_model_section_refuses_mixed_keys() -> None:
    from modelcycle.core.config import validate_section
    from modelcycle.plugins.keras.config import KerasModelConfig

    with pytest.raises(ConfigError, match="dense_units configure the built-in network"):
        validate_section(KerasModelConfig, {"class": "nets.py:build", "dense_units": 4}, "model", "f")
    with pytest.raises(ConfigError, match="options apply only to your own network"):
        validate_section(KerasModelConfig, {"options": {"units": 1}}, "model", "f")
    config = KerasModelConfig.model_validate({"class": "nets.py:build", "options": {"units": 8}})
    assert KerasModelConfig.model_validate(config.model_dump()) == config


def test_sweep_maps_options_to_the_model_section() -> None:
    assert sweep_overrides("options.width", ["8", "16"]) == [{"model.options.width": 8}, {"model.options.width": 16}]
