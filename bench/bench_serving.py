"""Endpoint throughput and latency: a modelcycle endpoint vs a bare FastAPI handler.

Both serve the same trained ConvNet weights, one 28×28 image per JSON request, measured by
``loadgen`` at concurrency 1, 8 and 32 in rounds whose order alternates (A B, B A, …).
``run`` returns the raw per-round figures: ``{"rounds", "requests", "payload_logging",
"forward_us": [three medians], "concurrency": {"<c>": {"modelcycle" | "bare_fastapi":
{"throughput", "p50_ms", "p99_ms"} (lists in round order)}}}``. The modelcycle endpoint logs its payload as ``deploy`` sets it up (journal per request,
drainer process storing into SQLite). The raw model forward time for one image is measured
beside them.

    python bench/bench_serving.py [--requests N] [--rounds R] [-c 1 8 32]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import start_process, stop_process  # noqa: E402
from compare import alternating_order  # noqa: E402
from loadgen import run_load  # noqa: E402

from modelcycle.core.lifecycle import UseCase  # noqa: E402
from modelcycle.platforms.local.endpoints import start_endpoint, stop_endpoint  # noqa: E402
from modelcycle.platforms.local.payload import endpoint_payload_settings  # noqa: E402

BASELINE = Path(__file__).resolve().parent / "baselines" / "bare_fastapi.py"


def train_model(work: Path) -> Path:
    """Train the example use case for one epoch on 10,000 images (the serving cost is the
    architecture's, not the accuracy's), tracking off; return its model directory."""
    from importlib.resources import files

    directory = work / "uc"
    directory.mkdir()
    template = files("modelcycle") / "examples" / "mnist-pytorch" / "modelcycle.yaml"
    (directory / "modelcycle.yaml").write_text(template.read_text())
    overrides = {"hyperparameters.epochs": 1, "data.train_limit": 10_000, "tracking.enabled": False}
    outputs = UseCase(directory, overrides=overrides).train()
    return Path(outputs["model_dir"])


def forward_time_us(model_dir: Path, image: np.ndarray, repeats: int = 2000) -> float:
    """Median microseconds of one eager forward pass for one image (1 thread)."""
    import torch

    from modelcycle.core.serving.pipeline import InferencePipeline

    torch.set_num_threads(1)
    pipeline = InferencePipeline(model_dir)
    data = image.reshape(1, 1, 28, 28).astype(np.float32)
    for _ in range(200):
        pipeline.predict(data)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        pipeline.predict(data)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def run(requests: int = 3000, rounds: int = 5, concurrencies: tuple[int, ...] = (1, 8, 32),
        model_dir: Path | None = None) -> dict[str, Any]:
    """Measure both servers; ``model_dir`` serves an already trained model (else one is trained)."""
    from modelcycle.core.datasets import load_dataset

    image = load_dataset("mnist").test.images[0]
    body = orjson.dumps({"input_data": [{"values": image.reshape(1, 28, 28)}]}, option=orjson.OPT_SERIALIZE_NUMPY)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = model_dir or train_model(work)
        forward = [forward_time_us(model_dir, image, repeats=1000) for _ in range(3)]
        payload = endpoint_payload_settings(work, "bench")  # the defaults deploy uses
        endpoint = start_endpoint("bench", model_dir, work / "endpoints", payload=payload)
        baseline, baseline_port = start_process([sys.executable, str(BASELINE), "--weights", str(model_dir / "model.pth")])
        try:
            results: dict[str, Any] = {"forward_us": forward, "requests": requests, "rounds": rounds,
                                       "payload_logging": endpoint.get("payload_logging", False), "concurrency": {}}
            ports = {"modelcycle": endpoint["port"], "bare_fastapi": baseline_port}
            for c in concurrencies:
                runs: dict[str, list[Any]] = {"modelcycle": [], "bare_fastapi": []}
                for order in alternating_order(rounds, tuple(ports)):
                    for name in order:
                        runs[name].append(run_load("127.0.0.1", ports[name], "/invocations", body, concurrency=c,
                                                   requests=requests))
                row = {}
                for name, items in runs.items():
                    assert all(r.errors == 0 for r in items), [str(r) for r in items]
                    row[name] = {key: [getattr(r, key) for r in items] for key in ("throughput", "p50_ms", "p99_ms")}
                results["concurrency"][str(c)] = row
        finally:
            stop_endpoint(endpoint)
            stop_process(baseline)
    return results


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--model-dir", type=Path, help="serve this trained model instead of training one")
    args = parser.parse_args()
    results = run(args.requests, args.rounds, tuple(args.concurrency), args.model_dir)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
