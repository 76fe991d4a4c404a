"""Render ``bench/RESULTS.md`` from recorded results alone: :func:`render` is a pure function of
``results.json`` (plus the checked-in ``other_runs.json`` under the key ``"other_runs"``).

Every figure in the file comes from that input; a test renders the checked-in inputs and
compares byte for byte, so a hand edit of ``RESULTS.md`` fails it. A benchmark missing from the
input (or recorded without the keys its row needs) renders nothing.

Input shape: ``{"benchmarks": {name: {"date", "duration_s", "conditions": {...}, "result": {...}}},
"other_runs": [{"benchmark", "result", "goal", "date", "conditions"}, ...]}`` — see
``run_all.py`` for the entries and each ``bench_<name>.py`` for its result's keys.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import ratio_summary  # noqa: E402

BENCH = Path(__file__).resolve().parent
RESULTS_JSON = BENCH / "results.json"
RESULTS_MD = BENCH / "RESULTS.md"
OTHER_RUNS = BENCH / "other_runs.json"

OTHER_RUN_KEYS = ("benchmark", "result", "goal", "date", "conditions")


def load_inputs(results: Path = RESULTS_JSON, other_runs: Path = OTHER_RUNS) -> dict[str, Any]:
    """``results.json`` with ``other_runs.json``'s list under ``"other_runs"`` (what :func:`render` takes)."""
    data = json.loads(results.read_text()) if results.is_file() else {"benchmarks": {}}
    data["other_runs"] = json.loads(other_runs.read_text()) if other_runs.is_file() else []
    return data


# -- numbers -------------------------------------------------------------------------------

def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def spread(values: Sequence[float], digits: int) -> str:
    """``median (min–max)`` of ``values``."""
    return f"{fmt(median(values), digits)} ({fmt(min(values), digits)}–{fmt(max(values), digits)})"


def has(result: dict[str, Any], *keys: str) -> bool:
    return all(key in result for key in keys)


# -- rows ------------------------------------------------------------------------------------

def run_cell(entry: dict[str, Any]) -> str:
    """Date and load average (1 min) at the start and end of the benchmark that made a row."""
    c = entry.get("conditions", {})
    load = f", load {c['load_start'][0]:.2f}→{c['load_end'][0]:.2f}" if "load_start" in c and "load_end" in c else ""
    return f"{entry['date']}{load}"


def rounds_of(result: dict[str, Any], values: Sequence[Any]) -> int:
    return int(result.get("rounds", len(values)))


def comparison_row(entry: dict[str, Any], title: str, a_name: str, b_name: str, a: Sequence[float],
                   b: Sequence[float], unit: str, goal: str, note: str = "", digits: int = 2) -> str:
    """``| title | A | B | median A | median B | median A/B (min–max) | goal | rounds | notes | run |``."""
    s = ratio_summary(a, b)
    return (f"| {title} | {a_name} | {b_name} | {fmt(s['a'], digits)} {unit} | {fmt(s['b'], digits)} {unit} | "
            f"**{s['ratio']:.3f}** ({s['min']:.3f}–{s['max']:.3f}) | {goal} | {rounds_of(entry['result'], a)} | "
            f"{note} | {run_cell(entry)} |")


def accuracy_note(result: dict[str, Any], a_key: str, b_key: str) -> str:
    if not has(result, a_key, b_key):
        return ""
    return f"test accuracy {median(result[a_key]):.4f} vs {median(result[b_key]):.4f}"


def _training(e: dict[str, Any]) -> list[str]:
    r = e["result"]
    if not has(r, "modelcycle_s", "raw_s"):
        return []
    return [comparison_row(e, "Training epoch, seed ConvNet, full MNIST (batch 64, Adam 1e-3), incl. test evaluation",
                           "modelcycle `fit` (pytorch plugin)", "hand-written loop (`baselines/raw_torch_loop.py`)",
                           r["modelcycle_s"], r["raw_s"], "s", "≤ 1.05",
                           f"same seed ({r.get('seed', '?')}) and data order; "
                           + accuracy_note(r, "modelcycle_accuracy", "raw_accuracy"))]


def _distributed(e: dict[str, Any]) -> list[str]:
    r = e["result"]
    if not has(r, "two_processes_s", "one_process_s"):
        return []
    return [comparison_row(e, "Full-MNIST epoch, 2 vs 1 local processes (gloo, DDP; rank 0's `fit`)",
                           "2 processes (container runner)", "1 process (the training row's modelcycle side)",
                           r["two_processes_s"], r["one_process_s"], "s", "—",
                           "1 process: `bench_training.modelcycle_epoch` run identically in this benchmark; speed-up "
                           f"×{1 / ratio_summary(r['two_processes_s'], r['one_process_s'])['ratio']:.2f}; "
                           + accuracy_note(r, "two_processes_accuracy", "one_process_accuracy"))]


def _framework(title: str, plain: str, goal: str) -> Callable[[dict[str, Any]], list[str]]:
    def rows(e: dict[str, Any]) -> list[str]:
        r = e["result"]
        if not has(r, "modelcycle_s", "plain_s"):
            return []
        note = accuracy_note(r, "modelcycle_accuracy", "plain_accuracy")
        if has(r, "modelcycle_cpu_s", "plain_cpu_s"):
            s = ratio_summary(r["modelcycle_cpu_s"], r["plain_cpu_s"])
            note += f"; CPU-time ratio {s['ratio']:.3f} ({s['min']:.3f}–{s['max']:.3f})"
        return [comparison_row(e, title, "modelcycle `fit`", plain,
                               r["modelcycle_s"], r["plain_s"], "s", goal, f"same seed; {note}")]
    return rows


def _resume(e: dict[str, Any]) -> list[str]:
    r = e["result"]
    if not has(r, "with_checkpoint_s", "without_checkpoint_s"):
        return []
    note = f"checkpoint commit {spread(r['commit_s'], 3)} s" if "commit_s" in r else ""
    return [comparison_row(e, "PyTorch epoch with vs without a per-epoch checkpoint", "with checkpoint",
                           "without", r["with_checkpoint_s"], r["without_checkpoint_s"], "s", "≤ 1.02", note)]


def _datasets(e: dict[str, Any]) -> list[str]:
    r = e["result"]
    if not has(r, "plugin_s", "direct_s"):
        return []
    return [comparison_row(e, f"MNIST read + 1 epoch ({r.get('train_records', 60000):,} records)",
                           "`mnist` dataset plugin", "direct IDX read", r["plugin_s"], r["direct_s"], "s", "≤ 1.02")]


def _tracking(e: dict[str, Any]) -> list[str]:
    r = e["result"]
    if not has(r, "on_s", "off_s"):
        return []
    extra = spread([a - b for a, b in zip(r["on_s"], r["off_s"])], 2)
    epochs = r.get("epochs", "?")
    return [comparison_row(e, f"`modelcycle train` CLI, {epochs} epoch(s), MLflow tracking on vs off",
                           "tracking on", "tracking off", r["on_s"], r["off_s"], "s", "on − off ≤ 1 s",
                           f"on − off per round {extra} s; seed {r.get('seed', '?')}")]


def _script_mode(e: dict[str, Any]) -> list[str]:
    r = e["result"]
    if not has(r, "script_mode_s", "direct_s"):
        return []
    overhead = r.get("overhead") or {}
    note = "; ".join(f"{key.removesuffix('_s').replace('_', ' ')} {value:.1f} s" for key, value in overhead.items())
    if "writer_after_s" in r:
        note += f"; the MLflow writer then works {r['writer_after_s']:.1f} s more in the background (not timed)"
    return [comparison_row(e, "`modelcycle train` in script mode vs the same script run directly (whole process)",
                           "script mode", "direct", r["script_mode_s"], r["direct_s"], "s", "≤ 1.10",
                           f"overhead (medians): {note}" if note else "")]


def _transform(e: dict[str, Any]) -> list[str]:
    r = e["result"]
    if not has(r, "transform_rps", "endpoint_rps_c8"):
        return []
    return [comparison_row(e, "10,000 MNIST test images: `modelcycle transform` vs the endpoint at concurrency 8",
                           "transform", "endpoint c=8", r["transform_rps"], r["endpoint_rps_c8"], "records/s",
                           "≥ 10", digits=0)]


def _monitoring(e: dict[str, Any]) -> list[str]:
    t = e["result"].get("throughput", {})
    if not has(t, "on", "off"):
        return []
    on, off = t["on"], t["off"]
    note = f"p99 {median(on['p99_ms']):.1f} vs {median(off['p99_ms']):.1f} ms"
    if has(t, "stored", "answered_200"):
        note += f"; {t['stored']:,} of {t['answered_200']:,} answered requests stored"
    return [comparison_row(e, f"Endpoint throughput, payload logging on vs off, concurrency {t.get('concurrency', '?')}",
                           "logging on", "logging off", on["throughput"], off["throughput"], "req/s",
                           "≥ 0.90", note, digits=0)]


COMPARISONS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "training": _training,
    "distributed": _distributed,
    "lightning": _framework("Lightning epoch, seed ConvNet, full MNIST (batch 64), incl. test evaluation",
                            "plain `Trainer.fit`", "≤ 1.05"),
    "keras": _framework("Keras epoch, seed CNN, full MNIST (batch 128), incl. test evaluation",
                        "plain `model.fit`", "≤ 1.05"),
    "resume": _resume,
    "datasets": _datasets,
    "tracking": _tracking,
    "script_mode": _script_mode,
    "transform": _transform,
    "monitoring": _monitoring,
}


def measurement_row(entry: dict[str, Any], title: str, values: Sequence[float], unit: str, goal: str,
                    digits: int = 2) -> str:
    """``| title | median (min–max) unit | goal | rounds | run |``."""
    return f"| {title} | {spread(values, digits)} {unit} | {goal} | {len(values)} | {run_cell(entry)} |"


def _m_cli(e: dict[str, Any]) -> list[str]:
    r = e["result"]
    names = {"modelcycle_help_s": ("`modelcycle --help`", "< 0.5 s"), "modelcycle_plugins_s": ("`modelcycle plugins --json`", "—"),
             "python_pass_s": ("`python -c pass` (the interpreter alone)", "—")}
    return [measurement_row(e, title, r[key], "s", goal) for key, (title, goal) in names.items() if key in r]


def _m_datasets(e: dict[str, Any]) -> list[str]:
    r = e["result"]
    images = r.get("png_images", 0)
    rows = []
    if "png_cold_load_s" in r:
        rows.append(measurement_row(e, f"`imagefolder` load of {images:,} PNGs, cold (every file decoded)", r["png_cold_load_s"], "s", "—"))
    if "png_warm_load_s" in r:
        rows.append(measurement_row(e, f"`imagefolder` load of {images:,} PNGs, warm (on-disk array cache)", r["png_warm_load_s"], "s", "—"))
    return rows


def _m_monitoring(e: dict[str, Any]) -> list[str]:
    r, rows = e["result"], []
    for backend, ingest in r.get("ingest", {}).items():
        rows.append(measurement_row(e, f"Payload ingest (journal → {backend} store), {ingest['records']:,} records",
                                    ingest["records_per_s"], "records/s", "—", 0))
    for backend, ev in r.get("evaluation", {}).items():
        rows.append(measurement_row(e, f"Quality + drift arithmetic over {ev['records']:,} records", ev["compute_s"], "s", "—", 3))
        rows.append(measurement_row(e, f"Full evaluation ({backend}: SQL reads, quality, drift, stored) over {ev['records']:,} records",
                                    ev["evaluate_s"], "s", "≤ 1 s", 3))
    return rows


def _m_distributed(e: dict[str, Any]) -> list[str]:
    f = e["result"].get("fixed_cost", {})
    if not has(f, "container_s", "in_process_s"):
        return []
    extra = [a - b for a, b in zip(f["container_s"], f["in_process_s"])]
    return [measurement_row(e, f"Container-contract runner's fixed cost per job (container − in-process, "
                               f"{f.get('train_records', 256)}-image job, per round)", extra, "s", "—")]


def _m_ui(e: dict[str, Any]) -> list[str]:
    r = e["result"]
    names = {"overview_ms": "`modelcycle ui` overview page render", "runs_ms": "`modelcycle ui` runs page render"}
    return [measurement_row(e, title, r[key], "ms", "≤ 300 ms", 0) for key, title in names.items() if key in r]


MEASUREMENTS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "cli": _m_cli, "datasets": _m_datasets, "monitoring": _m_monitoring, "distributed": _m_distributed, "ui": _m_ui,
}


def _serving(e: dict[str, Any]) -> list[str]:
    r = e["result"]
    by = r.get("concurrency")
    if not by:
        return []
    lines = ["## Serving: one 28×28 image per JSON request, 1 server worker, load client on the same cores", ""]
    if "forward_us" in r:
        lines += [f"Raw model forward, batch 1, 1 thread: {spread(r['forward_us'], 0)} µs (median (min–max)). "
                  f"{r.get('requests', '?')} requests per run; payload logging "
                  f"{'on' if r.get('payload_logging') else 'off'} on the modelcycle endpoint. Run: {run_cell(e)}.", ""]
    lines += ["| concurrency | modelcycle req/s | p50 ms | p99 ms | bare FastAPI req/s | p50 ms | p99 ms | "
              "req/s ratio per round: median (min–max) | rounds |", "|---|---|---|---|---|---|---|---|---|"]
    for c in sorted(by, key=int):
        m, b = by[c]["modelcycle"], by[c]["bare_fastapi"]
        s = ratio_summary(m["throughput"], b["throughput"])
        lines.append(f"| {c} | {median(m['throughput']):.0f} | {median(m['p50_ms']):.2f} | {median(m['p99_ms']):.2f} | "
                     f"{median(b['throughput']):.0f} | {median(b['p50_ms']):.2f} | {median(b['p99_ms']):.2f} | "
                     f"**{s['ratio']:.2f}** ({s['min']:.2f}–{s['max']:.2f}) | {len(m['throughput'])} |")
    return lines + ["", "Goal at concurrency 8: ratio ≥ 0.8 and p99 ≤ 15 ms.", ""]


# -- the document ----------------------------------------------------------------------------

def _rows(benchmarks: dict[str, Any], table: dict[str, Callable[[dict[str, Any]], list[str]]]) -> list[str]:
    return [row for name, rows in table.items() if name in benchmarks for row in rows(benchmarks[name])]


def _versions(c: dict[str, Any]) -> str:
    return " · ".join(f"{label} {c[key]}" for key, label in (("python", "Python"), ("torch", "torch"),
                                                             ("tensorflow", "TensorFlow")) if c.get(key))


def _load(values: Sequence[float] | None) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "?"


def _conditions(benchmarks: dict[str, Any]) -> list[str]:
    lines = ["## Conditions per benchmark", "",
             "| benchmark | date | took | cores | CPU | versions | load average 1 / 5 / 15 min, start → end |",
             "|---|---|---|---|---|---|---|"]
    for name in sorted(benchmarks):
        e, c = benchmarks[name], benchmarks[name].get("conditions", {})
        lines.append(f"| `bench_{name}.py` | {e['date']} | {e.get('duration_s', 0) / 60:.1f} min | {c.get('cores', '?')} | "
                     f"{c.get('cpu', '?')} | {_versions(c)} | {_load(c.get('load_start'))} → {_load(c.get('load_end'))} |")
    return lines + [""]


def _other_runs(entries: list[dict[str, Any]]) -> list[str]:
    if not entries:
        return []
    for i, entry in enumerate(entries):
        missing = [key for key in OTHER_RUN_KEYS if not entry.get(key)]
        if missing:
            raise ValueError(f"other_runs.json entry {i} ({entry.get('benchmark', '?')!r}) lacks {', '.join(missing)}; "
                             f"every entry needs {', '.join(OTHER_RUN_KEYS)}")
    lines = ["## Figures from other runs (not regenerated)", "",
             "Measured by hand while developing, on other days and under other conditions (listed per row); "
             "`make bench` does not reproduce them. They are kept in `bench/other_runs.json`.", "",
             "| benchmark | result | goal | date | conditions |", "|---|---|---|---|---|"]
    lines += [f"| {e['benchmark']} | {e['result']} | {e['goal']} | {e['date']} | {e['conditions']} |" for e in entries]
    return lines + [""]


def render(results: dict[str, Any]) -> str:
    """The whole ``RESULTS.md`` for ``results`` (``results.json`` + ``"other_runs"``), deterministically."""
    benchmarks = results.get("benchmarks", {})
    total_min = sum(e.get("duration_s", 0) for e in benchmarks.values()) / 60
    lines = [
        "# Benchmark results", "",
        "Generated by `make bench` (`bench/run_all.py [NAME …] [--rounds N]`): the raw per-round measurements and "
        "their conditions are in `bench/results.json`, and this file is rendered from it alone by "
        "`bench/render.py` (`tests/test_bench_results.py` checks that; do not edit by hand). "
        f"The benchmarks below took {total_min:.0f} min in all (the sum of their run times); each row names "
        "the date of its run and the 1-minute load average at the start → end of its benchmark "
        "(the machine is shared: load above the core count means other work competed).", "",
        "Comparisons run the two sides in alternating order round by round (A B, B A, …) with the same seed and "
        "data order on both sides; they report the median of each side and the median and min–max of the "
        "per-round ratios A/B.", "",
    ]
    comparisons = _rows(benchmarks, COMPARISONS)
    if comparisons:
        lines += ["## Comparisons", "",
                  "| benchmark | A | B | A median | B median | A/B per round: median (min–max) | goal | rounds | notes | run |",
                  "|---|---|---|---|---|---|---|---|---|---|", *comparisons, ""]
    if "serving" in benchmarks:
        lines += _serving(benchmarks["serving"])
    measurements = _rows(benchmarks, MEASUREMENTS)
    if measurements:
        lines += ["## Measurements", "", "| benchmark | median (min–max) | goal | rounds | run |",
                  "|---|---|---|---|---|", *measurements, ""]
    if benchmarks:
        lines += _conditions(benchmarks)
    lines += _other_runs(results.get("other_runs", []))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render(load_inputs()))
