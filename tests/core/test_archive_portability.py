"""A third-party adapter's ``model.tar.gz`` loads and predicts in a fresh virtualenv holding only
modelcycle and the distributions its ``code/requirements.txt`` names, and without the adapter
it fails naming the distribution to install.

No network: both distributions are built as wheels from this checkout and installed with
``--no-index --no-deps``; third-party libraries (numpy, pydantic, pluggy, scikit-learn, ...) reach
the venv through a ``.pth`` naming a directory of links to the test interpreter's site-packages
entries, modelcycle's and every modelcycle plugin distribution's excepted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import REPO, isolated_module_env

ADAPTER = REPO / "tests" / "resources" / "modelcycle-example-adapter"
#: What a wheel of this checkout is built from.
_REPO_FILES = ("pyproject.toml", "README.md", "src")

#: Runs the archive's own SageMaker handlers (``code/inference.py``) on a JSON request.
_SCORE = """
import json, sys
model_dir, request = sys.argv[1], sys.argv[2]
sys.path.insert(0, model_dir + "/code")
import inference
model = inference.model_fn(model_dir)
body, content_type = inference.output_fn(inference.predict_fn(inference.input_fn(open(request, "rb").read(), "application/json"), model), "application/json")
import modelcycle, modelcycle_sklearn_mlp
print(json.dumps({"content_type": content_type, "body": json.loads(body),
                  "modelcycle": modelcycle.__file__, "adapter": modelcycle_sklearn_mlp.__file__}))
"""


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("MODELCYCLE_")}
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env=env, **kwargs)


def _wheel(source: Path, names: tuple[str, ...], scratch: Path, wheels: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of ``names`` in ``source`` (the checkout stays free of
    build files)."""
    copy = scratch / f"build-{source.name}"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in names:
        if (source / name).is_dir():
            shutil.copytree(source / name, copy / name, ignore=ignore)
        else:
            copy.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, copy / name)
    before = set(wheels.glob("*.whl"))
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                  "-w", str(wheels), str(copy)])
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = set(wheels.glob("*.whl")) - before
    return wheel


def _plugin_distribution(entry: Path) -> bool:
    """Whether a site-packages entry belongs to modelcycle or a modelcycle plugin distribution."""
    if entry.name.lower().startswith(("modelcycle", "__editable__")):
        return True
    points = entry / "entry_points.txt"
    return entry.suffix == ".dist-info" and points.is_file() and "[modelcycle." in points.read_text()


def _third_party(target: Path) -> Path:
    """A directory of links to this interpreter's site-packages entries, without modelcycle,
    the modelcycle plugin distributions (and their modules) and ``.pth`` files."""
    site = Path(sysconfig.get_paths()["purelib"])
    plugin_modules: set[str] = set()
    for entry in site.iterdir():
        if entry.suffix == ".dist-info" and _plugin_distribution(entry):
            top = entry / "top_level.txt"
            record = entry / "RECORD"
            if top.is_file():
                plugin_modules |= set(top.read_text().split())
            elif record.is_file():
                plugin_modules |= {line.split("/", 1)[0] for line in record.read_text().splitlines() if "/" in line}
    target.mkdir()
    for entry in site.iterdir():
        if entry.suffix == ".pth" or _plugin_distribution(entry) or entry.name in plugin_modules:
            continue
        (target / entry.name).symlink_to(entry)
    return target


@pytest.fixture(scope="module")
def adapter_archive(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The example adapter trained through UseCase on a small MNIST slice: its model.tar.gz."""
    from modelcycle.core.lifecycle import UseCase

    directory = tmp_path_factory.mktemp("portable") / "uc"
    directory.mkdir()
    config = {
        "name": "portable-mlp", "framework": "sklearn-mlp", "model": {"hidden_units": 32},
        "data": {"dataset": "mnist", "train_limit": 2000, "test_limit": 200},
        "hyperparameters": {"epochs": 2, "batch_size": 64},
    }
    (directory / "modelcycle.yaml").write_text(yaml.safe_dump(config))
    with isolated_module_env(tmp_path_factory, data_dir):
        outputs = UseCase(directory).train()
    return Path(outputs["archive"])


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A new virtualenv with exactly the modelcycle and adapter wheels installed."""
    root = tmp_path_factory.mktemp("fresh")
    wheels = root / "wheels"
    wheels.mkdir()
    built = {
        "modelcycle": _wheel(REPO, _REPO_FILES, root, wheels),
        "adapter": _wheel(ADAPTER, ("pyproject.toml", "README.md", "src"), root, wheels),
    }
    venv = root / "venv"
    created = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "third_party.pth").write_text(str(_third_party(root / "third-party")) + "\n")
    installed = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--no-deps",
                      *map(str, built.values())])
    assert installed.returncode == 0, installed.stderr[-3000:]
    return {"python": python, "wheels": built, "root": root}


def _request(root: Path) -> tuple[Path, np.ndarray]:
    from modelcycle.core.datasets import load_dataset

    test = load_dataset("mnist").test.take(40)
    request = root / "request.json"
    request.write_text(json.dumps({"input_data": [{"values": np.asarray(test.images).tolist()}]}))
    return request, np.asarray(test.labels)


def test_requirements_name_modelcycle_and_the_adapter_distribution(adapter_archive: Path, tmp_path: Path) -> None:
    from modelcycle.core.artifacts import extract_archive, modelcycle_version, read_manifest

    model_dir = extract_archive(adapter_archive, tmp_path / "model")
    requirements = (model_dir / "code" / "requirements.txt").read_text().split()
    assert requirements == [f"modelcycle=={modelcycle_version()}", "modelcycle-example-adapter==0.1.0"]
    manifest = read_manifest(model_dir)
    framework = manifest.providers["framework"]
    assert (framework.name, framework.distribution, framework.version) == ("sklearn-mlp", "modelcycle-example-adapter", "0.1.0")
    assert manifest.providers["dataset"].name == "mnist"
    assert set(manifest.libraries) == {"python", "scikit-learn", "numpy"}  # what the adapter declares


def test_the_archive_loads_and_predicts_in_a_fresh_venv_holding_only_its_requirements(
    adapter_archive: Path, fresh_venv: dict[str, Any], tmp_path: Path, data_dir: Path
) -> None:
    from modelcycle.core.artifacts import extract_archive

    model_dir = extract_archive(adapter_archive, tmp_path / "model")
    requirements = (model_dir / "code" / "requirements.txt").read_text().split()
    wanted = {re.split(r"[\[=<>]", line, maxsplit=1)[0].replace("-", "_") for line in requirements}
    wheels = {wheel.name.split("-", 1)[0] for wheel in fresh_venv["wheels"].values()}
    assert wheels == wanted  # the venv holds exactly the named distributions
    request, labels = _request(tmp_path)
    scored = _run([str(fresh_venv["python"]), "-c", _SCORE, str(model_dir), str(request)], cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]
    result = json.loads(scored.stdout.strip().splitlines()[-1])
    for module in ("modelcycle", "adapter"):  # imported from the fresh venv, not this checkout
        assert str(fresh_venv["root"] / "venv") in result[module], result
    assert result["content_type"] == "application/json"
    values = result["body"]["predictions"][0]["values"]
    predicted = np.array([row[0] for row in values])
    assert len(predicted) == len(labels)
    assert float((predicted == labels).mean()) > 0.6


def test_without_the_adapter_loading_names_the_distribution_to_install(
    adapter_archive: Path, fresh_venv: dict[str, Any], tmp_path: Path
) -> None:
    from modelcycle.core.artifacts import extract_archive

    model_dir = extract_archive(adapter_archive, tmp_path / "model")
    request, _ = _request(tmp_path)
    python = str(fresh_venv["python"])
    removed = _run([sys.executable, "-m", "pip", "--python", python, "uninstall", "-y", "modelcycle-example-adapter"])
    assert removed.returncode == 0, removed.stderr
    try:
        scored = _run([python, "-c", _SCORE, str(model_dir), str(request)], cwd=tmp_path)
        assert scored.returncode != 0
        assert "PluginNotFoundError" in scored.stderr
        assert "pip install 'modelcycle-example-adapter==0.1.0'" in scored.stderr, scored.stderr[-2000:]
    finally:
        reinstalled = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "--no-deps",
                            str(fresh_venv["wheels"]["adapter"])])
        assert reinstalled.returncode == 0, reinstalled.stderr
