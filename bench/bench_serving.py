"""Endpoint throughput and latency: a modelcycle endpoint vs a bare FastAPI handler.

Both serve the same trained ConvNet weights, one 28×28 image per JSON request, measured by
``loadgen`` at concurrency 1, 8 and 32 in interleaved rounds (the order alternates round by
round). The modelcycle endpoint logs its payload as ``deploy`` sets it up (journal per request,
drainer process storing into SQLite). The raw model forward time for one image is measured
beside them.

    python bench/bench_serving.py [--requests N] [--rounds R] [-c 1 8 32]
"""

from __future__ import annotations

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
from loadgen import run_load  # noqa: E402

from modelcycle.core.lifecycle import UseCase  # noqa: E402
from modelcycle.platforms.local.endpoints import start_endpoint, stop_endpoint  # noqa: E402
from modelcycle.platforms.local.payload import endpoint_payload_settings  # noqa: E402

BASELINE = Path(__file__).resolve().parent / "baselines" / "bare_fastapi.py"


def train_model(work: Path) -> Path:
    """Train the example use case for one epoch; return its model directory."""
    from importlib.resources import files

    directory = work / "uc"
    directory.mkdir()
    template = files("modelcycle") / "examples" / "mnist-pytorch" / "modelcycle.yaml"
    (directory / "modelcycle.yaml").write_text(template.read_text())
    outputs = UseCase(directory, overrides={"hyperparameters.epochs": 1}).train()
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


def run(requests: int = 3000, rounds: int = 2, concurrencies: tuple[int, ...] = (1, 8, 32),
        model_dir: Path | None = None) -> dict[str, Any]:
    """Measure both servers; ``model_dir`` serves an already trained model (else one is trained)."""
    from modelcycle.core.datasets import load_dataset

    image = load_dataset("mnist").test.images[0]
    body = orjson.dumps({"input_data": [{"values": image.reshape(1, 28, 28)}]}, option=orjson.OPT_SERIALIZE_NUMPY)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = model_dir or train_model(work)
        forward = forward_time_us(model_dir, image)
        payload = endpoint_payload_settings(work, "bench")  # the defaults deploy uses
        endpoint = start_endpoint("bench", model_dir, work / "endpoints", payload=payload)
        baseline, baseline_port = start_process([sys.executable, str(BASELINE), "--weights", str(model_dir / "model.pth")])
        try:
            results: dict[str, Any] = {"forward_us": forward, "requests": requests, "rounds": rounds,
                                       "payload_logging": endpoint.get("payload_logging", False), "by_concurrency": {}}
            ports = {"modelcycle": endpoint["port"], "bare_fastapi": baseline_port}
            for c in concurrencies:
                runs: dict[str, list[Any]] = {"modelcycle": [], "bare_fastapi": []}
                for round_ in range(rounds):
                    for name in (list(ports) if round_ % 2 == 0 else list(ports)[::-1]):
                        runs[name].append(run_load("127.0.0.1", ports[name], "/invocations", body, concurrency=c,
                                                   requests=requests))
                row = {}
                for name, items in runs.items():
                    assert all(r.errors == 0 for r in items), [str(r) for r in items]
                    row[name] = {
                        "throughput": statistics.median(r.throughput for r in items),
                        "p50_ms": statistics.median(r.p50_ms for r in items),
                        "p99_ms": statistics.median(r.p99_ms for r in items),
                    }
                row["ratio"] = row["modelcycle"]["throughput"] / row["bare_fastapi"]["throughput"]
                row["p99_ratio"] = row["modelcycle"]["p99_ms"] / row["bare_fastapi"]["p99_ms"]
                results["by_concurrency"][c] = row
        finally:
            stop_endpoint(endpoint)
            stop_process(baseline)
    return results


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--model-dir", type=Path, help="serve this trained model instead of training one")
    args = parser.parse_args()
    results = run(args.requests, args.rounds, tuple(args.concurrency), args.model_dir)
    print(f"forward {results['forward_us']:.0f} us; payload logging {results['payload_logging']}")
    for c, row in results["by_concurrency"].items():
        mc, bare = row["modelcycle"], row["bare_fastapi"]
        print(f"c={c:>3}  modelcycle {mc['throughput']:7.0f} req/s p50 {mc['p50_ms']:6.1f} p99 {mc['p99_ms']:6.1f}  |  "
              f"bare {bare['throughput']:7.0f} req/s p50 {bare['p50_ms']:6.1f} p99 {bare['p99_ms']:6.1f}  |  "
              f"throughput x{row['ratio']:.2f}  p99 x{row['p99_ratio']:.2f}")


if __name__ == "__main__":
    main()
