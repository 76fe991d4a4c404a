"""Shared helpers for the benchmark scripts: MNIST IDX reading, the seed ConvNet, server processes
and interleaved measurement (the order alternating A B, B A, …).

Deliberately independent of the project's own dataset code, which is written elsewhere.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
NETS_FILE = SRC / "modelcycle" / "lib" / "torch" / "nets.py"
MEAN, STD = 0.1307, 0.3081


def load_convnet_class() -> type:
    """Return the seed ``ConvNet`` class, importing the package or, failing that, the file itself."""
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    try:
        from modelcycle.lib.torch.nets import ConvNet  # type: ignore[import-not-found]
    except Exception:  # package incomplete while being written: load nets.py directly
        spec = importlib.util.spec_from_file_location("_bench_nets", NETS_FILE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        ConvNet = module.ConvNet
    return ConvNet


def mnist_dir() -> Path:
    """``$MODELCYCLE_DATA_DIR/mnist`` if that variable is set, else ``<repo>/../shared/data/mnist``."""
    base = os.environ.get("MODELCYCLE_DATA_DIR")
    return Path(base) / "mnist" if base else REPO.parent / "shared" / "data" / "mnist"


def read_idx(path: Path | str) -> np.ndarray:
    """Read a gzipped IDX file (images: 16-byte header, labels: 8-byte header) as a writable uint8 array."""
    with gzip.open(path, "rb") as f:
        data = bytearray(f.read())
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise ValueError(f"{path}: not a uint8 IDX file (magic {magic:#x})")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(split: str = "train", root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images (N,28,28) uint8, labels (N,) uint8)`` for ``split`` "train" or "test"."""
    root = root or mnist_dir()
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
    return images, labels


def start_process(cmd: Sequence[str], timeout: float = 60.0, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    """Start ``cmd`` and wait for it to print ``READY <port>`` on stdout; return ``(proc, port)``.

    The process is stopped (and RuntimeError raised) if it exits or stays silent past ``timeout``.
    """
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError(f"process exited with {proc.wait()} before READY: {cmd}")
            if line.startswith("READY "):
                return proc, int(line.split()[1])
    except queue.Empty:
        stop_process(proc)
        raise RuntimeError(f"no READY line within {timeout} s: {cmd}") from None
    except BaseException:
        stop_process(proc)
        raise


def stop_process(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Terminate ``proc`` by pid (SIGTERM), then SIGKILL it if it is still alive after ``grace`` s."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


def interleave(a_fn: Callable[[], float], b_fn: Callable[[], float], rounds: int = 5) -> tuple[float, float, list[tuple[float, float]]]:
    """Run ``a_fn`` and ``b_fn`` ``rounds`` times each, the order alternating round by round
    (A B, B A, …; see ``compare.alternating_order``).

    Returns ``(median_a, median_b, [(a, b), ...])`` in round order, so two things are compared
    under the same machine drift.
    """
    from compare import alternate

    a, b = alternate(lambda: float(a_fn()), lambda: float(b_fn()), rounds)
    return statistics.median(a), statistics.median(b), list(zip(a, b))


def quiet_context(registry: Any, config: Any) -> tuple[Any, Any]:
    """A silent ``TrainingContext`` and the dataset for ``config`` — what the framework benches
    hand to a plugin's ``build_model`` and ``fit``."""
    from modelcycle.core.training import TrainingContext, TrainingReporter, dataset_input_shape, load_training_data

    dataset, preprocessing = load_training_data(config)
    context = TrainingContext(
        config=config, model_config=registry.pm.hook.model_config_class()(), registry=registry,
        reporter=TrainingReporter(registry.hook, quiet=True), run_id="bench", output_dir=Path("/tmp"),
        preprocessing=preprocessing, input_shape=dataset_input_shape(dataset),
    )
    return context, dataset
