"""Monitoring: what payload logging costs the endpoint, how fast records reach the store, and how
long quality + drift evaluations take over 100,000 records.

1. Endpoint throughput with payload logging off, on (journal + drainer process into SQLite, what
   ``deploy`` runs) and on with the drain as a thread, one 28×28 image per JSON request at
   concurrency 8, by ``loadgen``, in many short rounds whose order alternates (forward, reversed, …); the server's CPU per
   request (drainer included) beside it; afterwards every 200-answered request must be stored.
2. Payload ingest: 100,000 single-image requests journaled by ``JournalWriter``, then drained by
   ``JournalDrainer`` into the store (parse, per-record statistics, bulk insert with
   ``ON CONFLICT DO NOTHING``): records/s, into SQLite and, when ``MODELCYCLE_BENCH_POSTGRES_URL``
   (or ``MODELCYCLE_TEST_POSTGRES_URL``) names a database, PostgreSQL.
3. Evaluation over 100,000 records (100k payload, 100k feedback): the numpy arithmetic alone,
   and the whole ``run_evaluation`` (SQL reads + quality + drift + storing two measurements).
   Goal ≤ 1 s.

``run`` returns the raw per-round figures: ``{"rounds", "throughput": {"concurrency", "requests",
"off" | "on" | "on_thread": {"throughput", "p50_ms", "p99_ms", "cpu_us_per_request"} (lists in
round order), "stored", "answered_200"}, "ingest": {backend: {"records", "records_per_s": [...]}},
"evaluation": {backend: {"records", "compute_s": [...], "evaluate_s": [...]}}}``.

    python bench/bench_monitoring.py [rounds]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import alternating_order  # noqa: E402
from loadgen import run_load  # noqa: E402

from modelcycle.core.lifecycle import UseCase  # noqa: E402
from modelcycle.platforms.local.endpoints import request, start_endpoint, stop_endpoint  # noqa: E402

RECORDS = 100_000


def train_model(work: Path) -> Path:
    """One epoch on 10,000 images: the serving cost is the architecture's, not the accuracy's."""
    from importlib.resources import files

    directory = work / "uc"
    directory.mkdir()
    template = files("modelcycle") / "examples" / "mnist-pytorch" / "modelcycle.yaml"
    (directory / "modelcycle.yaml").write_text(template.read_text())
    overrides = {"hyperparameters.epochs": 1, "data.train_limit": 10_000, "tracking.enabled": False}
    outputs = UseCase(directory, overrides=overrides).train()
    return Path(outputs["model_dir"])


def _cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (all its threads) from /proc; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in children.read_text().split()]
    return found


VARIANTS = {
    "off": None,
    "on": {"drain": "process"},  # what deploy runs: the journal drained by a child process
    "on_thread": {"drain": "thread"},  # the same drain as a thread of the endpoint process
}


def throughput(model_dir: Path, work: Path, requests: int, rounds: int, concurrency: int = 8) -> dict[str, Any]:
    """Payload logging off / on / on with a drain thread over many short rounds, the order
    alternating (forward, reversed, …); per round the server's CPU per request (its drainer child included) beside the
    throughput (raw lists in round order). Compare them by per-round ratios to the ``off`` run of
    the same round, which cancels most of the drift of a shared 2-core machine."""
    from modelcycle.core.datasets import load_dataset
    from modelcycle.core.monitoring.store import MonitoringStore

    image = load_dataset("mnist").test.images[0]
    body = orjson.dumps({"input_data": [{"values": image.reshape(1, 28, 28)}]}, option=orjson.OPT_SERIALIZE_NUMPY)
    url = f"sqlite:///{work / 'throughput.db'}"
    warmup = 50
    endpoints: dict[str, dict[str, Any]] = {}
    try:
        for name, options in VARIANTS.items():
            payload = None if options is None else {"journal": str(work / f"{name}.journal"), "database_url": url, **options}
            endpoints[name] = start_endpoint(name, model_dir, work / "endpoints", payload=payload)
        time.sleep(2)  # the drainers' start-up
        pids = {name: [record["pid"], *_children(record["pid"])] for name, record in endpoints.items()}
        runs: dict[str, list[Any]] = {name: [] for name in VARIANTS}
        cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for order in alternating_order(rounds, tuple(VARIANTS)):  # off on thread, thread on off, ...
            for name in order:
                before = sum(_cpu_seconds(pid) for pid in pids[name])
                runs[name].append(run_load("127.0.0.1", endpoints[name]["port"], "/invocations", body,
                                           concurrency=concurrency, requests=requests, warmup=warmup))
                time.sleep(1.1)  # the drain of this run's records (every second) lands in it
                cpu[name].append((sum(_cpu_seconds(pid) for pid in pids[name]) - before) / (requests + warmup) * 1e6)
        stored, answered = {}, {}
        for name in ("on", "on_thread"):
            status, answer, _ = request("127.0.0.1", endpoints[name]["port"], "POST", "/payload/flush", b"{}",
                                        {"Content-Type": "application/json"})
            assert status == 200, answer
            stored[name] = MonitoringStore(url).payload_count(name)
            answered[name] = sum(r.statuses.get(200, 0) for r in runs[name]) + rounds * warmup
    finally:
        for record in endpoints.values():
            stop_endpoint(record)
    result: dict[str, Any] = {"concurrency": concurrency, "requests": requests, "rounds": rounds,
                              "answered_200": answered["on"], "stored": stored["on"],
                              "on_thread_answered_200": answered["on_thread"], "on_thread_stored": stored["on_thread"]}
    for name, items in runs.items():
        assert all(r.errors == 0 for r in items), [str(r) for r in items]
        result[name] = {key: [getattr(r, key) for r in items] for key in ("throughput", "p50_ms", "p99_ms")}
        result[name]["cpu_us_per_request"] = cpu[name]
    return result


def ingest_rounds(url: str, work: Path, rounds: int, records: int = RECORDS) -> dict[str, Any]:
    """:func:`ingest` ``rounds`` times: ``{"records", "records_per_s": [...], "journal_us_per_request": [...]}``."""
    runs = [ingest(url, work, records) for _ in range(rounds)]
    return {"records": records, "records_per_s": [r["records_per_s"] for r in runs],
            "journal_us_per_request": [r["journal_us_per_request"] for r in runs]}


def ingest(url: str, work: Path, records: int = RECORDS) -> dict[str, Any]:
    """Journal ``records`` single-image requests, then drain them into the store at ``url``."""
    from modelcycle.core.datasets import load_dataset
    from modelcycle.platforms.local.journal import JournalDrainer, JournalWriter, encode_frame
    from modelcycle.core.monitoring.store import MonitoringStore

    images = load_dataset("mnist").test.images
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(10), size=len(images)).astype(np.float32)
    deployment = f"bench-{uuid.uuid4().hex[:8]}"
    directory = work / f"{deployment}.journal"
    directory.mkdir()
    writer = JournalWriter(directory, deployment, "bench")
    writer.open()
    ids = [uuid.uuid4().hex for _ in range(records)]
    started = time.perf_counter()
    for i in range(records):  # what the endpoint does per request: encode one frame, one os.write
        j = i % len(images)
        writer.append(encode_frame(ids[i], time.time(), 1.0, images[j].reshape(1, 1, 28, 28), probabilities[j:j + 1]))
    journal_s = time.perf_counter() - started
    writer.close()
    store = MonitoringStore(url)
    drainer = JournalDrainer(directory, store)
    started, cpu = time.perf_counter(), time.process_time()
    inserted = drainer.drain()
    drain_s, cpu = time.perf_counter() - started, time.process_time() - cpu
    drainer.close()
    assert inserted == records and store.payload_count(deployment) == records
    store.delete_records(deployment)
    return {"records": records, "journal_us_per_request": journal_s / records * 1e6, "drain_s": drain_s,
            "records_per_s": records / drain_s, "drain_cpu_us_per_record": cpu / records * 1e6}


def evaluation(url: str, records: int = RECORDS) -> dict[str, Any]:
    """Quality + drift over ``records`` payload and feedback records."""
    from modelcycle.core.config import MonitoringConfig
    from modelcycle.core.datasets import load_dataset
    from modelcycle.core.monitoring.drift import drift_metrics, input_statistics, make_baseline
    from modelcycle.core.monitoring.evaluation import run_evaluation
    from modelcycle.platforms.local.journal import encode_frame, frames_to_rows, parse_frames
    from modelcycle.core.monitoring.quality import quality_metrics
    from modelcycle.core.monitoring.store import MonitoringStore

    test = load_dataset("mnist").test
    rng = np.random.default_rng(1)
    index = rng.integers(0, len(test), records)
    labels = test.labels[index]
    logits = rng.normal(size=(records, 10)) + 4 * np.eye(10)[np.where(rng.random(records) < 0.9, labels, rng.integers(0, 10, records))]
    probabilities = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    images = test.images[index]
    baseline = make_baseline(probabilities[:2000], images[:2000])

    deployment = f"bench-eval-{uuid.uuid4().hex[:8]}"
    store = MonitoringStore(url)
    now = time.time()
    for start in range(0, records, 20_000):
        journal = b"".join(
            encode_frame(f"r{i:06d}", now + i * 1e-4, 1.0, images[i].reshape(1, 1, 28, 28), probabilities[i:i + 1])
            for i in range(start, min(records, start + 20_000))
        )
        store.ingest(frames_to_rows(parse_frames(journal)[0], deployment, "bench"))
    store.add_feedback({f"r{i:06d}": int(labels[i]) for i in range(records)}, deployment)
    subscription = store.create_subscription(f"bench-{deployment}", deployment, "bench", None, [], {}, baseline)

    mean, ink = input_statistics(images)
    window = {"prediction": probabilities.argmax(1), "confidence": probabilities.max(1).astype(np.float64),
              "mean_intensity": mean, "ink_fraction": ink}
    predictions = probabilities.argmax(1)
    compute = []
    for _ in range(5):
        started = time.perf_counter()
        quality_metrics(labels, predictions, probabilities)
        drift_metrics(baseline, window)
        compute.append(time.perf_counter() - started)

    config = MonitoringConfig.model_validate({"drift": {"max_samples": records, "window": "last_n", "last_n": records},
                                          "quality": {"max_records": records}})
    full = []
    for _ in range(3):
        started = time.perf_counter()
        results = run_evaluation(store, subscription, config)
        full.append(time.perf_counter() - started)
    assert [r["records"].get("feedback", r["records"].get("payload")) for r in results] == [records, records]
    store.delete_records(deployment, subscription["id"])
    return {"records": records, "compute_s": compute, "evaluate_s": full}


def run(requests: int = 800, rounds: int = 15, ingest_rounds_: int = 3) -> dict[str, Any]:
    """``rounds`` throughput rounds (each variant once per round, the order alternating) and
    ``ingest_rounds_`` ingest runs per store; evaluation: 5 arithmetic and 3 full runs."""
    postgres = os.environ.get("MODELCYCLE_BENCH_POSTGRES_URL") or os.environ.get("MODELCYCLE_TEST_POSTGRES_URL")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = train_model(work)
        results: dict[str, Any] = {"rounds": rounds, "throughput": throughput(model_dir, work, requests, rounds)}
        sqlite_url = f"sqlite:///{work / 'bench.db'}"
        results["ingest"] = {"sqlite": ingest_rounds(sqlite_url, work, ingest_rounds_)}
        results["evaluation"] = {"sqlite": evaluation(sqlite_url)}
        if postgres:
            results["ingest"]["postgresql"] = ingest_rounds(postgres, work, ingest_rounds_)
            results["evaluation"]["postgresql"] = evaluation(postgres)
    return results


if __name__ == "__main__":
    import json

    print(json.dumps(run(rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 15), indent=2))
