"""A user's own RGB image folder of a non-square, non-28 size through the CLI: the
``imagefolder`` example's files, train, deploy, score over HTTP (JSON and NPY), cleanup."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import yaml
from PIL import Image

from modelcycle.platforms.local.endpoints import process_alive


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelcycle.cli", *args], capture_output=True, text=True,
                          timeout=600, env=os.environ.copy(), cwd=cwd)


def test_rgb_24x32_image_folder_trains_deploys_and_scores_over_http(tmp_path: Path, data_dir: Path) -> None:
    directory = tmp_path / "my-images"
    init = _cli("init", str(directory), "--framework", "pytorch", "--example", "imagefolder")
    assert init.returncode == 0, init.stderr
    assert "make_folders.py" in init.stdout and (directory / "make_folders.py").is_file()
    made = subprocess.run([sys.executable, "make_folders.py", "--train", "400", "--test", "100", "--color",
                           "--size", "24", "32"], capture_output=True, text=True, timeout=300, cwd=directory,
                          env=os.environ.copy())
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in (directory / "images" / "train").iterdir()) == [str(d) for d in range(10)]
    sample = next((directory / "images" / "test" / "7").iterdir())
    with Image.open(sample) as png:
        assert (png.mode, png.size) == ("RGB", (32, 24))

    pid = None
    # run from elsewhere: data.path 'images' is relative to the use case directory, not the cwd
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    try:
        train = _cli("-C", str(directory), "--set", "hyperparameters.epochs=1", "train", cwd=elsewhere)
        assert train.returncode == 0, train.stderr
        assert "/100 (" in train.stdout  # the 100 test images were evaluated
        deploy = _cli("-C", str(directory), "deploy")
        assert deploy.returncode == 0, deploy.stderr
        status = json.loads(_cli("-C", str(directory), "status", "--json").stdout)
        pid, url = status["endpoint"]["pid"], status["endpoint"]["url"]

        test_dir = directory / "images" / "test"
        files = sorted(test_dir.glob("*/*.png"))[::10]
        images = np.stack([np.asarray(Image.open(f)) for f in files])  # (N, 24, 32, 3) as a user holds them
        truth = [int(f.parent.name) for f in files]
        as_json = httpx.post(f"{url}/invocations", timeout=60, headers={"Content-Type": "application/json"},
                             content=json.dumps({"input_data": [{"values": images.tolist()}]}))
        assert as_json.status_code == 200, as_json.text
        values = as_json.json()["predictions"][0]["values"]
        assert len(values) == len(files) and all(len(row[1]) == 10 for row in values)
        buffer = io.BytesIO()
        np.save(buffer, images.transpose(0, 3, 1, 2).astype(np.uint8))  # channels-first works too
        as_npy = httpx.post(f"{url}/invocations", timeout=60, content=buffer.getvalue(),
                            headers={"Content-Type": "application/x-npy", "Accept": "application/x-npy"})
        assert as_npy.status_code == 200, as_npy.text
        probabilities = np.load(io.BytesIO(as_npy.content))
        assert probabilities.shape == (len(files), 10)
        assert probabilities.argmax(1).tolist() == [row[0] for row in values]
        assert np.mean(probabilities.argmax(1) == np.array(truth)) > 0.3  # learnt something in 1 epoch
        wrong = httpx.post(f"{url}/invocations", timeout=60, headers={"Content-Type": "application/json"},
                           content=json.dumps({"input_data": [{"values": np.zeros((1, 28, 28)).tolist()}]}))
        assert wrong.status_code == 400 and "24" in wrong.text and "32" in wrong.text
    finally:
        cleanup = _cli("-C", str(directory), "cleanup")
    assert cleanup.returncode == 0, cleanup.stderr
    assert pid is not None and not process_alive(pid)
    config = yaml.safe_load((directory / "modelcycle.yaml").read_text())
    assert config["data"] == {"dataset": "imagefolder", "path": "images", "options": {"color": "auto"}}
