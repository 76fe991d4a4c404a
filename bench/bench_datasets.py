"""Dataset loading: a 60,000-image PNG folder through ``imagefolder`` (cold: every file decoded;
warm: the on-disk array cache), and MNIST through the ``mnist`` plugin + one training epoch vs a
direct IDX read + the same epoch (goal ratio ≤ 1.02; the order alternates round by round, A B,
B A, …; the same seed on both sides). ``run`` returns the raw seconds per round:
``{"rounds", "png_images", "png_cold_load_s", "png_warm_load_s", "plugin_s", "direct_s",
"train_records"}`` (the PNG loads once each, as lists of one).

    python bench/bench_datasets.py [ROUNDS] [IMAGES] [TRAIN_RECORDS]

The PNG folder is written once from MNIST into ``$MODELCYCLE_BENCH_DIR`` (default
``/tmp/modelcycle-bench``) and reused by later runs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_mnist, mnist_dir  # noqa: E402
from compare import alternate  # noqa: E402

from modelcycle.core.config import DataConfig, Hyperparameters, UseCaseConfig  # noqa: E402
from modelcycle.core.datasets import Dataset, Split, clear_cache, load_dataset  # noqa: E402


def png_folder(images: int) -> Path:
    """``<bench dir>/mnist-png-<images>/{train,test}/<digit>/*.png``, written once (6:1 train:test)."""
    from PIL import Image

    root = Path(os.environ.get("MODELCYCLE_BENCH_DIR", "/tmp/modelcycle-bench")) / f"mnist-png-{images}"
    if (root / "complete").is_file():
        return root
    counts = {"train": images, "test": max(images // 6, 10)}
    for split, count in counts.items():
        x, y = load_mnist(split)
        for index in range(min(count, len(x))):
            folder = root / split / str(int(y[index]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[index]).save(folder / f"{index:05d}.png")
    (root / "complete").write_text("")
    return root


def folder_load(root: Path, cache: bool) -> tuple[float, int]:
    """Seconds to load ``root`` in a fresh process state (no in-process cache), and its images."""
    clear_cache()
    started = time.perf_counter()
    data = load_dataset("imagefolder", settings=DataConfig(dataset="imagefolder", path=str(root),
                                                           options={"cache": cache}))
    return time.perf_counter() - started, len(data.train) + len(data.test)


def _config(limit: int | None) -> UseCaseConfig:
    hp = Hyperparameters(epochs=1, batch_size=64, learning_rate=1e-3, lr_schedule="constant")
    return UseCaseConfig(name="bench", framework="pytorch", hyperparameters=hp,
                         data=DataConfig(dataset="mnist", train_limit=limit))


def _epoch(registry: Any, config: UseCaseConfig, dataset: Dataset) -> None:
    from modelcycle.core.training import TrainingContext, TrainingReporter, dataset_input_shape
    from modelcycle.core.artifacts import Preprocessing

    mean, std = dataset.normalization()
    limit = config.data.train_limit or len(dataset.train)
    dataset = Dataset(dataset.name, dataset.train.take(limit), dataset.test, dataset.classes, dataset.source,
                      dataset.checksums)
    context = TrainingContext(
        config=config, model_config=registry.pm.hook.model_config_class()(), registry=registry,
        reporter=TrainingReporter(registry.hook, quiet=True), run_id="bench", output_dir=Path(tempfile.gettempdir()),
        preprocessing=Preprocessing(scale=255.0, mean=mean, std=std), input_shape=dataset_input_shape(dataset),
    )
    model = registry.call_first("build_model", model_config=context.model_config, dataset=dataset, context=context)
    registry.call_first("fit", model=model, dataset=dataset, context=context)


def through_plugin(registry: Any, config: UseCaseConfig) -> float:
    """Seconds: ``load_dataset('mnist')`` from the files (no in-process cache) + one epoch."""
    clear_cache()
    started = time.perf_counter()
    _epoch(registry, config, load_dataset("mnist", settings=config.data))
    return time.perf_counter() - started


def direct(registry: Any, config: UseCaseConfig) -> float:
    """Seconds: the IDX files read directly (``bench/_common.py``) + the same epoch."""
    started = time.perf_counter()
    (xt, yt), (xs, ys) = load_mnist("train"), load_mnist("test")
    dataset = Dataset("mnist", Split(xt, yt.astype(np.int64)), Split(xs, ys.astype(np.int64)),
                      tuple(str(i) for i in range(10)), mnist_dir(), {})
    _epoch(registry, config, dataset)
    return time.perf_counter() - started


def run(rounds: int = 5, images: int = 60_000, train_records: int | None = None) -> dict[str, Any]:
    from modelcycle.core.registry import PluginRegistry

    root = png_folder(images)
    with tempfile.TemporaryDirectory() as cache:
        previous = os.environ.get("MODELCYCLE_CACHE_DIR")
        os.environ["MODELCYCLE_CACHE_DIR"] = cache
        try:
            cold, count = folder_load(root, cache=False)
            folder_load(root, cache=True)  # fills the on-disk cache
            warm, _ = folder_load(root, cache=True)
        finally:
            if previous is None:
                os.environ.pop("MODELCYCLE_CACHE_DIR", None)
            else:
                os.environ["MODELCYCLE_CACHE_DIR"] = previous
    registry = PluginRegistry()
    registry.load_framework("pytorch")
    config = _config(train_records)
    through_plugin(registry, config)  # warm-up
    plugin_s, direct_s = alternate(lambda: through_plugin(registry, config), lambda: direct(registry, config), rounds)
    return {
        "rounds": rounds, "png_images": count, "png_cold_load_s": [cold], "png_warm_load_s": [warm],
        "plugin_s": plugin_s, "direct_s": direct_s, "train_records": train_records or 60_000,
    }


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    print(run(*args))
