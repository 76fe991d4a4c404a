"""Self-contained jobs and archives: a training job's source dir and a model archive's ``code/``
install modelcycle from the wheels they carry, with no package index, into an image that brings
its own torch — then the job trains and the handlers serve.

The "image" is a plain virtual environment (``python -m venv --without-pip``: no system site
packages, no modelcycle, nothing of the shared test environment) plus a layer that stands for
what SageMaker's PyTorch containers bring: torch and the scientific stack (numpy, scipy, pandas,
pyarrow, scikit-learn, matplotlib, pillow, with their dependencies), exposed through a ``.pth``
file from the test environment's own installs, read-only. Not a ``--system-site-packages``
venv of the test environment: that would see the editable modelcycle and every dependency,
and prove nothing. The index is replaced by a wheelhouse of modelcycle's remaining (light)
dependencies packed from their installs here — never modelcycle or a plugin, which must come
from the shipped wheels — and pip runs with ``--no-index`` and no configuration, from another
working directory than the requirements file's.

Slow: the two clean-venv tests took about 7 minutes together here (two busy shared cores): packing
the wheelhouse (~70 wheels), two installs into fresh venvs, a short training job.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, write_use_case

pytestmark = pytest.mark.slow

#: What the framework image brings (with their dependencies); everything else must be installed.
IMAGE = ("torch", "numpy", "scipy", "pandas", "pyarrow", "scikit-learn", "matplotlib", "pillow")
PIP_TIMEOUT_S = 600


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(roots: tuple[str, ...]) -> set[str]:
    """The installed distributions ``roots`` need, following the extras they request."""
    from packaging.requirements import Requirement

    installed = {_canonical(d.metadata["Name"]): d for d in md.distributions()}
    seen: set[tuple[str, str]] = set()
    stack = [(_canonical(r), "") for r in roots]
    while stack:
        name, extra = stack.pop()
        if (name, extra) in seen or name not in installed:
            continue
        seen.add((name, extra))
        for line in installed[name].requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                child = _canonical(requirement.name)
                stack += [(child, "")] + [(child, e) for e in requirement.extras]
    return {name for name, _ in seen}


def _top_level_entries(name: str) -> set[str]:
    dist = md.distribution(name)
    return {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _image(root: Path) -> Path:
    """A fresh image: a plain venv, plus the framework layer linked in read-only."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    layer = root / "image-layer"
    layer.mkdir()
    shared = Path(str(md.distribution("torch").locate_file("")))
    for name in _closure(IMAGE):
        for entry in _top_level_entries(name):
            if (shared / entry).exists() and not (layer / entry).exists():
                (layer / entry).symlink_to(shared / entry)
    (_site_packages(venv) / "framework_image.pth").write_text(f"{layer}\n")
    return venv / "bin" / "python"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "SM_"))}
    env["PIP_CONFIG_FILE"] = os.devnull  # no configured index, find-links or constraints
    return {**env, **extra}


def _pip_install(python: Path, requirements: Path, wheelhouse: Path, cwd: Path) -> str:
    command = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index",
               "--find-links", str(wheelhouse), "--disable-pip-version-check", "--no-compile", "-r", str(requirements)]
    done = subprocess.run(command, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of what the image lacks: modelcycle's dependencies and the pytorch framework's
    ``requirements``/``training_requirements`` (torchinfo) — not of modelcycle or its plugins."""
    from modelcycle.core.wheels import distribution_wheel

    house = tmp_path_factory.mktemp("wheelhouse")
    cache = tmp_path_factory.mktemp("wheelhouse-cache")
    own = {"modelcycle", "modelcycle-example-adapter"}
    from modelcycle.core.providers import installed_framework_info

    info = installed_framework_info("pytorch")
    extra = tuple(re.split(r"[<>=!~\[; ]", line)[0] for line in info.requirements + info.training_requirements)
    for name in sorted(_closure(("modelcycle", *_declared_dependencies(), *extra)) - _closure(IMAGE) - own):
        wheel = distribution_wheel(name, cache)
        (house / wheel.path.name).write_bytes(wheel.path.read_bytes())
    assert not list(house.glob("modelcycle*")) and not list(house.glob("torch-*"))
    return house


def _declared_dependencies() -> tuple[str, ...]:
    """The names in this checkout's ``[project] dependencies``: the shipped wheel is built from
    them, and an editable install's metadata may predate a dependency added since."""
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return tuple(re.split(r"[<>=!~\[; ]", line)[0] for line in declared)


def _installed_from(python: Path, module: str) -> Path:
    done = subprocess.run([str(python), "-c", f"import {module}; print({module}.__file__)"], env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def test_the_source_dir_installs_without_an_index_and_the_job_trains(tmp_path: Path, data_dir: Path,
                                                                     wheelhouse: Path) -> None:
    from modelcycle.core.config import load_config
    from modelcycle.core.entrypoint import write_source_dir

    config = load_config(write_use_case(
        tmp_path / "uc", name="self-contained",
        data={"dataset": "mnist", "train_limit": 600, "test_limit": 200},
        hyperparameters={"epochs": 1, "log_interval": 5}))
    source = tmp_path / "source"
    files = write_source_dir(config, source)
    wheels = sorted(p.name for p in files if p.suffix == ".whl")
    assert wheels == ["modelcycle-0.1.0-py3-none-any.whl"]
    requirements = (source / "requirements.txt").read_text().splitlines()
    assert requirements[0] == "modelcycle==0.1.0" and "--find-links ." in requirements
    assert not [line for line in requirements if re.match(r"(torch|tensorflow)\b", line) or "[" in line]

    python = _image(tmp_path / "image")
    log = _pip_install(python, source / "requirements.txt", wheelhouse, cwd=tmp_path)
    assert "torch" not in re.sub(r"torchinfo\S*", "", log.split("Successfully installed")[-1])
    assert _installed_from(python, "modelcycle").is_relative_to(_site_packages(python.parent.parent))
    assert _installed_from(python, "torch").is_relative_to(tmp_path / "image" / "image-layer")

    job = tmp_path / "job"
    env = _clean_env(SM_MODEL_DIR=str(job / "model"), SM_OUTPUT_DATA_DIR=str(job / "output" / "data"),
                     SM_OUTPUT_DIR=str(job / "output"), SM_CHANNEL_TRAINING=str(data_dir / "mnist"),
                     SM_HOSTS='["algo-1"]', SM_CURRENT_HOST="algo-1", SM_HPS=json.dumps({"epochs": 1}),
                     MLFLOW_TRACKING_URI=(tmp_path / "mlruns").as_uri(), HOME=str(tmp_path))
    done = subprocess.run([str(python), "train.py", "--epochs", "1"], cwd=source, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Test set: Average loss:" in done.stdout
    assert (job / "model" / "modelcycle.json").is_file() and (job / "model" / "code" / "inference.py").is_file()


def test_the_archive_code_installs_without_an_index_and_the_handlers_serve(
        tmp_path: Path, trained_model_dir: Path, wheelhouse: Path, mnist_test_images: Any) -> None:
    import numpy as np

    from modelcycle.core.artifacts import extract_archive, read_manifest
    from modelcycle.core.serving.pipeline import InferencePipeline
    from modelcycle.platforms.sagemaker.endpoints import _serving_code

    model_dir = extract_archive(trained_model_dir.parent / "model.tar.gz", tmp_path / "opt-ml-model")
    repacked = _serving_code(model_dir, read_manifest(model_dir), None, tmp_path / "repack")
    assert sorted(p.name for p in repacked.glob("*.whl")) == ["modelcycle-0.1.0-py3-none-any.whl"]
    requirements = (repacked / "requirements.txt").read_text().splitlines()
    assert requirements[0] == "modelcycle==0.1.0" and "--find-links ." in requirements
    assert not [line for line in requirements if re.match(r"(torch|tensorflow)\b", line) or "[" in line]
    # as the SDK repacks it: the archive's code/ replaced by the serving code
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            if path.name != "code":
                tar.add(path, arcname=path.name)
        tar.add(repacked, arcname="code")
    served = extract_archive(archive, tmp_path / "served")

    python = _image(tmp_path / "image")
    _pip_install(python, served / "code" / "requirements.txt", wheelhouse, cwd=tmp_path)
    assert _installed_from(python, "modelcycle").is_relative_to(_site_packages(python.parent.parent))

    images, _ = mnist_test_images
    np.save(tmp_path / "images.npy", images[:16])
    script = (
        "import sys, io, json, numpy as np\n"
        f"sys.path.insert(0, {str(served / 'code')!r})\n"
        "import inference\n"
        f"model = inference.model_fn({str(served)!r})\n"
        f"body = open({str(tmp_path / 'images.npy')!r}, 'rb').read()\n"
        "data = inference.input_fn(body, 'application/x-npy')\n"
        "out, kind = inference.output_fn(inference.predict_fn(data, model), 'application/x-npy')\n"
        "print(json.dumps({'kind': kind, 'probabilities': np.load(io.BytesIO(out)).tolist(),"
        " 'modelcycle': sys.modules['modelcycle'].__file__}))\n"
    )
    done = subprocess.run([str(python), "-c", script], cwd=tmp_path, env=_clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["kind"] == "application/x-npy"
    assert Path(answer["modelcycle"]).is_relative_to(_site_packages(python.parent.parent))
    pipeline = InferencePipeline(trained_model_dir)
    expected = pipeline.predict(pipeline.decode(
        (tmp_path / "images.npy").read_bytes(), "application/x-npy"))
    np.testing.assert_allclose(np.array(answer["probabilities"]), expected, atol=1e-5)


def test_requirements_pin_the_shipped_wheels_and_drop_their_other_pins_and_extras(tmp_path: Path) -> None:
    from modelcycle.core.wheels import ShippedWheel, wheel_requirements

    shipped = [ShippedWheel("modelcycle", "0.1.0", tmp_path / "m.whl"),
               ShippedWheel("modelcycle-example-adapter", "0.1.0", tmp_path / "a.whl")]
    lines = ["modelcycle[pytorch]==0.1.0", "modelcycle_example_adapter==0.0.9", "torchinfo>=1.8"]
    assert wheel_requirements(shipped, lines) == [
        "modelcycle==0.1.0", "modelcycle-example-adapter==0.1.0", "torchinfo>=1.8", "--find-links ."]


def test_a_regular_install_is_packed_from_its_files_and_an_editable_one_built_once(tmp_path: Path) -> None:
    import zipfile

    from modelcycle.core.wheels import distribution_wheel

    adapter = distribution_wheel("modelcycle-example-adapter", tmp_path)  # a regular install
    assert adapter.path.name == "modelcycle_example_adapter-0.1.0-py3-none-any.whl"
    names = zipfile.ZipFile(adapter.path).namelist()
    assert "modelcycle_example_adapter-0.1.0.dist-info/entry_points.txt" in names
    assert not [n for n in names if n.endswith(".pyc") or "direct_url.json" in n]
    first = distribution_wheel("modelcycle", tmp_path)  # this checkout: built, then cached
    assert "modelcycle/core/wheels.py" in zipfile.ZipFile(first.path).namelist()
    assert distribution_wheel("modelcycle", tmp_path).path == first.path
