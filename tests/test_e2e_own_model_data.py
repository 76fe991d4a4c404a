"""A user's own model on the user's own data through the whole lifecycle, as a user runs it (the
``modelcycle`` CLI in real processes): train → deploy → score over HTTP (JSON) → monitor →
log-payload → log-feedback → evaluate → cleanup.

- a PyTorch ``nn.Module`` from ``nets.py`` on ``imagefolder`` PNGs that are RGB and 24×32
  (written here from MNIST digits, each tinted with a random colour);
- a Keras model function from ``knets.py`` on an ``npz`` of uint8 images (an MNIST slice) with
  class names.

Every endpoint is stopped by pid, also when an assertion fails."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from PIL import Image

from modelcycle.platforms.local.endpoints import process_alive
from conftest import stop_deployed

TORCH_NETS = '''
import torch
from torch import nn


class ColourNet(nn.Module):
    """A small CNN for any image size and channel count; returns logits."""

    def __init__(self, input_shape, num_classes, width=16):
        super().__init__()
        channels = input_shape[0]
        self.features = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Linear(width * 16, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))
'''

KERAS_NETS = '''
import keras


def build(input_shape, num_classes, units=32):
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Flatten(),
        keras.layers.Dense(units, activation="relu"),
        keras.layers.Dense(num_classes, activation="softmax"),
    ])
'''

HYPERPARAMETERS = {"epochs": 1, "batch_size": 32, "test_batch_size": 100, "optimizer": "adam",
                   "learning_rate": 0.005, "lr_schedule": "constant", "seed": 1, "log_interval": 5}
TRAIN, TEST = 600, 200
PAYLOAD, FEEDBACK = 80, 60
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _cli(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelcycle.cli", "-C", str(directory), *args],
                          capture_output=True, text=True, timeout=600, env=os.environ.copy())


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _write_config(directory: Path, framework: str, model: dict[str, Any], data: dict[str, Any]) -> None:
    config = {"name": directory.name, "framework": framework, "capture": "manual", "model": model, "data": data,
              "hyperparameters": HYPERPARAMETERS, "training": {"platform": "local"},
              "serving": {"platform": "local", "host": "127.0.0.1", "port": 0},
              "monitoring": {"drift": {"min_samples": 50}}}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "modelcycle.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _mnist(data_dir: Path) -> tuple[Any, Any]:
    from modelcycle.core.datasets import load_dataset

    mnist = load_dataset("mnist", data_dir / "mnist")
    return mnist.train.take(TRAIN), mnist.test.take(TEST)


def _tinted(images: np.ndarray, rng: np.random.Generator, size: tuple[int, int]) -> list[Image.Image]:
    """Each digit tinted with a random colour (not the class's: the net must read the digit),
    resized to ``size`` (H, W)."""
    tints = rng.uniform(0.3, 1.0, size=(len(images), 3))
    return [Image.fromarray((image[..., None] * tint).astype(np.uint8)).resize((size[1], size[0]),
                                                                            Image.Resampling.BILINEAR)
            for image, tint in zip(images, tints)]


def _write_folders(root: Path, data_dir: Path) -> None:
    rng = np.random.default_rng(0)
    for name, split in zip(("train", "test"), _mnist(data_dir)):
        for index, (picture, label) in enumerate(zip(_tinted(split.images, rng, (24, 32)), split.labels)):
            folder = root / name / f"digit-{int(label)}"
            folder.mkdir(parents=True, exist_ok=True)
            picture.save(folder / f"{index:04d}.png")


def _lifecycle(directory: Path, images: np.ndarray, classes: list[str]) -> int:
    """The chain after training files are in place; ``images`` are user-held test images
    ``(N, H, W[, C])`` sent as JSON. The endpoint is stopped by pid whatever happens. Returns the
    number of dataset files the factsheet records."""
    pid = None
    try:
        train = _ok(_cli(directory, "train"))
        assert "Train Epoch: 1 [" in train and f"/{TEST} (" in train
        _ok(_cli(directory, "deploy"))
        status = json.loads(_ok(_cli(directory, "status", "--json")))
        pid, url = status["endpoint"]["pid"], status["endpoint"]["url"]
        assert process_alive(pid)

        response = httpx.post(f"{url}/invocations", timeout=60, headers={"Content-Type": "application/json"},
                              content=json.dumps({"input_data": [{"values": images.tolist()}]}))
        assert response.status_code == 200, response.text
        [prediction] = response.json()["predictions"]
        rows = prediction["values"]
        assert len(rows) == len(images)
        column = prediction["fields"].index("probability")
        assert all(len(row[column]) == len(classes) for row in rows)
        label = prediction["fields"].index("prediction_label")
        assert {row[label] for row in rows} <= set(classes), rows
        score = _ok(_cli(directory, "score", "--samples", "50"))
        correct = int(score.split("(")[-1].split("/")[0])
        assert correct > 10, score  # above chance (5 of 50) after one epoch

        monitor = _ok(_cli(directory, "monitor"))
        assert "Successfully finished adding subscription" in monitor
        payload = _ok(_cli(directory, "log-payload", "--samples", str(PAYLOAD)))
        assert f"{PAYLOAD} of {PAYLOAD} payload records" in payload
        feedback = _ok(_cli(directory, "log-feedback", "--samples", str(FEEDBACK)))
        assert f"{FEEDBACK} feedback records" in feedback

        evaluated = json.loads(_ok(_cli(directory, "evaluate", "--json")))
        plots = sorted(p.name for p in (directory / ".modelcycle" / "plots").rglob("*.png"))
        assert any("confusion" in name for name in plots) and any("drift" in name for name in plots), plots
        by_monitor = {m["monitor"]: m for m in evaluated}
        quality = by_monitor["quality"]
        assert quality["status"] == "finished", quality
        assert quality["records"]["feedback"] == FEEDBACK
        assert 0.1 < quality["metrics"]["accuracy"] <= 1.0, quality["metrics"]
        assert "weighted_f_measure" in quality["metrics"]
        drift = by_monitor["drift"]
        assert drift["status"] == "finished", drift
        assert drift["records"]["baseline"] == TEST  # every held-out image (fewer than baseline_samples)
        for metric in ("prediction_drift", "confidence_drift", "mean_intensity_drift", "ink_fraction_drift"):
            assert 0.0 <= drift["metrics"][metric] <= 1.0, drift["metrics"]
        text = _ok(_cli(directory, "evaluate", "--no-plots"))
        assert re.search(r"accuracy\s", text), text

        document = json.loads(_ok(_cli(directory, "factsheet", "--format", "json", "-o", "-")))
        files = len(document["dataset"]["checksums"])
        _ok(_cli(directory, "factsheet", "--format", "md", "-o", str(directory / "factsheet.md")))
        markdown = (directory / "factsheet.md").read_text()
        listed = len(re.findall(r"^\| `[^`]+` \| `[0-9a-f]{32}` \|$", markdown, re.M))
        assert listed == min(files, 20), markdown
        assert (f"and {files - 20} more files" in markdown) == (files > 20)
    finally:
        cleanup = _cli(directory, "cleanup", "--records")
        stop_deployed(directory)
    assert cleanup.returncode == 0, cleanup.stderr
    removed = eval(cleanup.stdout.strip().splitlines()[-1], {})  # the printed dict
    assert removed["serving"] == 1 and removed["monitoring"] == 1
    assert removed["payload_records"] == len(images) + 50 + PAYLOAD and removed["feedback_records"] == FEEDBACK
    assert pid is not None and not process_alive(pid)
    return files


def test_own_torch_module_on_rgb_24x32_image_folders(tmp_path: Path, data_dir: Path) -> None:
    directory = tmp_path / "own-images"
    _write_folders(directory / "pictures", data_dir)
    (directory / "nets.py").write_text(TORCH_NETS)
    _write_config(directory, "pytorch", {"class": "nets.py:ColourNet", "options": {"width": 16}, "output": "logits"},
                  {"dataset": "imagefolder", "path": "pictures", "options": {"color": "rgb"}})
    files = sorted((directory / "pictures" / "test").glob("*/*.png"))[::20]
    images = np.stack([np.asarray(Image.open(f)) for f in files])
    assert images.shape == (len(files), 24, 32, 3)
    assert _lifecycle(directory, images, [f"digit-{d}" for d in range(10)]) == TRAIN + TEST  # one md5 per PNG


def test_own_keras_function_on_npz_arrays(tmp_path: Path, data_dir: Path) -> None:
    directory = tmp_path / "own-arrays"
    train, test = _mnist(data_dir)
    directory.mkdir(parents=True)
    np.savez(directory / "digits.npz", x_train=np.asarray(train.images), y_train=np.asarray(train.labels),
             x_test=np.asarray(test.images), y_test=np.asarray(test.labels), classes=np.asarray(DIGITS))
    (directory / "knets.py").write_text(KERAS_NETS)
    _write_config(directory, "keras", {"class": "knets.py:build", "options": {"units": 32}},
                  {"dataset": "npz", "path": "digits.npz"})
    assert _lifecycle(directory, np.asarray(test.images[:12]), list(DIGITS)) == 1
