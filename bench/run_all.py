"""Run every benchmark and write ``bench/RESULTS.md`` (``make bench``)."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import json  # noqa: E402

import bench_cli  # noqa: E402
import bench_datasets  # noqa: E402
import bench_distributed  # noqa: E402
import bench_keras  # noqa: E402
import bench_lightning  # noqa: E402
import bench_monitoring  # noqa: E402
import bench_resume  # noqa: E402
import bench_serving  # noqa: E402
import bench_tracking  # noqa: E402
import bench_training  # noqa: E402

#: the other benchmarks, recorded as their JSON results (name, module, title)
MORE = (
    ("cli", bench_cli, "Command-line start-up: modelcycle --help vs python -c pass (goal help < 0.5 s)"),
    ("lightning", bench_lightning, "One Lightning epoch: modelcycle fit vs plain Trainer.fit (goal ratio ≤ 1.05)"),
    ("keras", bench_keras, "One Keras epoch: modelcycle fit vs plain model.fit (goal ratio ≤ 1.05)"),
    ("tracking", bench_tracking, "Train stage with MLflow tracking on vs off (goal ≤ 3%)"),
    ("monitoring", bench_monitoring, "Payload logging on vs off at concurrency 8 (goal ≤ 10% drop), ingest, evaluation over 100k records (goal ≤ 1 s)"),
    ("resume", bench_resume, "One full-MNIST epoch with vs without a per-epoch checkpoint (goal ≤ 2%)"),
    ("datasets", bench_datasets, "Loading a 60,000-image PNG folder (cold, warm cache); MNIST through the dataset plugin + 1 epoch vs a direct IDX read + the same epoch (goal ratio ≤ 1.02)"),
    ("distributed", bench_distributed, "1 vs 2 local processes per epoch; container-contract runner vs in-process (goal ≤ 5%)"),
)


def _compact(value: object) -> object:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items() if k != "model"}
    if isinstance(value, (list, tuple)):
        return [_compact(v) for v in value]
    return value

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def main() -> int:
    training = bench_training.run(rounds=3)
    serving = bench_serving.run()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Recorded {stamp} on {os.cpu_count()} cores, Python {platform.python_version()}, by `make bench`",
        "(`bench/run_all.py`). Every comparison is interleaved (A B A B …) in one run; medians.",
        "",
        "## Training: one epoch, seed ConvNet, full MNIST (batch 64, Adam 1e-3), incl. test evaluation",
        "",
        "| | seconds | test accuracy |",
        "|---|---|---|",
        f"| modelcycle `fit` (pytorch plugin, hooks + reporter) | {training['modelcycle_s']:.2f} | {training['modelcycle_accuracy']:.4f} |",
        f"| best hand-written loop (`bench/baselines/raw_torch_loop.py`) | {training['raw_s']:.2f} | {training['raw_accuracy']:.4f} |",
        f"| **ratio** (goal ≤ 1.05) | **{training['ratio']:.3f}** | |",
        "",
        "## Serving: one 28×28 image per JSON request, 1 server worker, load client on the same cores",
        "",
        f"Raw model forward, batch 1, 1 thread: {serving['forward_us']:.0f} µs. "
        f"{serving['requests']} requests per run, {serving['rounds']} rounds each.",
        "",
        "| concurrency | modelcycle req/s | p50 ms | p99 ms | bare FastAPI req/s | p50 ms | p99 ms | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c, row in serving["by_concurrency"].items():
        m, b = row["modelcycle"], row["bare_fastapi"]
        lines.append(
            f"| {c} | {m['throughput']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
            f"{b['throughput']:.0f} | {b['p50_ms']:.2f} | {b['p99_ms']:.2f} | {row['ratio']:.2f} |"
        )
    lines += ["", "Goal at concurrency 8: ratio ≥ 0.8 and p99 ≤ 15 ms.", ""]
    for name, module, title in MORE:
        result = module.run()
        lines += [f"## {title}", "", f"`bench/bench_{name}.py`:", "", "```json",
                  json.dumps(_compact(result), indent=1, default=str), "```", ""]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
