"""Run every benchmark and write ``bench/RESULTS.md`` (``make bench``)."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serving  # noqa: E402
import bench_training  # noqa: E402

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
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
