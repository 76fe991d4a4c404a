"""Local batch transform vs the endpoint: the 10,000 MNIST test images scored in-process by
``UseCase.transform(split="test")`` against single-image JSON requests to the deployed local
endpoint at concurrency 8 (``loadgen``), in rounds whose order alternates. The goal is ≥ 10×.

``transform_rps`` counts the whole call (model load, scoring, writing the JSON Lines file);
``endpoint_rps_c8`` is loadgen's successful requests per second (one record each), with the
payload logging ``deploy`` sets up by default. Both sides are warmed up before the rounds the same
way: loadgen sends 200 untimed requests before each timed run, and before the first round the
endpoint answers 200 untimed requests (its payload drainer's start-up) and one untimed transform
runs (first-call costs: the data set's first read, the first oneDNN kernels).
Neither side starts while background work of the other is still running: the training run's
MLflow writer has finished before the rounds, and each endpoint round's payload is drained
(untimed) before the next measurement.
Also recorded per round: ``transform_scoring_rps``, the transform's own rate over scoring and
writing alone (without model and data set load, which the endpoint side does not count either:
its model loads at deploy), and ``transform_threads``, the intra-op threads it chose.

    python bench/bench_transform.py [--rounds R] [--requests N]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import run_load  # noqa: E402

from modelcycle.core.lifecycle import UseCase  # noqa: E402
from modelcycle.core.monitoring.service import flush_payload  # noqa: E402
from modelcycle.core.tracking import wait_for_pending_writes  # noqa: E402
from modelcycle.platforms.local.endpoints import stop_endpoint  # noqa: E402


def _use_case(work: Path) -> UseCase:
    """The packaged mnist-pytorch example, trained for one epoch on 2,000 images (speed, not accuracy,
    is measured) and deployed on the local platform."""
    from importlib.resources import files

    directory = work / "uc"
    directory.mkdir()
    config = yaml.safe_load((files("modelcycle") / "examples" / "mnist-pytorch" / "modelcycle.yaml").read_text())
    config["name"] = "bench-transform"
    config.setdefault("data", {})["train_limit"] = 2000
    config.setdefault("hyperparameters", {})["epochs"] = 1
    config.setdefault("tracking", {})["log_model"] = False  # no MLflow model logging running into the rounds
    (directory / "modelcycle.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    use_case = UseCase(directory)
    use_case.train()
    use_case.deploy()
    wait_for_pending_writes(use_case.work_dir)  # the run's MLflow writer is done before anything is timed
    return use_case


def run(rounds: int = 5, requests: int = 2000) -> dict[str, Any]:
    """``{"rounds", "transform_rps": [...], "endpoint_rps_c8": [...]}`` plus medians and their ratio."""
    from modelcycle.core.datasets import load_dataset

    results: dict[str, Any] = {"rounds": rounds, "transform_rps": [], "endpoint_rps_c8": [],
                               "transform_scoring_rps": [], "transform_threads": []}
    image = load_dataset("mnist").test.images[0]
    body = orjson.dumps({"input_data": [{"values": image.reshape(1, 28, 28)}]}, option=orjson.OPT_SERIALIZE_NUMPY)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        use_case = _use_case(work)
        endpoint = use_case.store.read().stage("deploy").outputs
        try:
            def transform() -> None:
                started = time.perf_counter()
                result = use_case.transform(work / "scores.jsonl", split="test", force=True)
                assert result["records"] == 10_000, result
                results["transform_rps"].append(result["records"] / (time.perf_counter() - started))
                results["transform_scoring_rps"].append(result["records_per_second"])
                results["transform_threads"].append(result["threads"])

            def endpoint_load() -> None:
                load = run_load("127.0.0.1", endpoint["port"], "/invocations", body, concurrency=8, requests=requests)
                assert load.errors == 0 and not load.timed_out, str(load)
                results["endpoint_rps_c8"].append(load.throughput)
                flush_payload(use_case)  # untimed: the round's payload drained, so it does not run into the next side

            # warm-ups, untimed: the endpoint's payload drainer finishes starting up on its first records
            run_load("127.0.0.1", endpoint["port"], "/invocations", body, concurrency=8, requests=200)
            flush_payload(use_case)
            use_case.transform(work / "scores.jsonl", split="test", force=True)
            for round_ in range(rounds):
                for measure in ((transform, endpoint_load) if round_ % 2 == 0 else (endpoint_load, transform)):
                    measure()
        finally:
            stop_endpoint(endpoint)
    results["transform_rps_median"] = statistics.median(results["transform_rps"])
    results["endpoint_rps_c8_median"] = statistics.median(results["endpoint_rps_c8"])
    results["ratio"] = results["transform_rps_median"] / results["endpoint_rps_c8_median"]
    return results


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000, help="timed endpoint requests per round")
    args = parser.parse_args()
    results = run(args.rounds, args.requests)
    print(f"transform {results['transform_rps_median']:.0f} records/s  |  endpoint c=8 "
          f"{results['endpoint_rps_c8_median']:.0f} req/s  |  x{results['ratio']:.1f} (goal >= 10)")
    ratios = [t / e for t, e in zip(results["transform_rps"], results["endpoint_rps_c8"])]
    print("per-round ratios: " + " ".join(f"{r:.1f}" for r in ratios))
    print(orjson.dumps({k: results[k] for k in ("rounds", "transform_rps", "endpoint_rps_c8", "transform_scoring_rps",
                                                 "transform_threads")}).decode())


if __name__ == "__main__":
    main()
