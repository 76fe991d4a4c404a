"""``bench/RESULTS.md`` is produced by the bench code alone, and its figures are computed right.

(a) the checked-in file is exactly ``render(results.json + other_runs.json)``, so every row comes
from a recorded run (a hand edit fails here); (b) ``render`` on a small synthetic input reports
medians and per-round ratio ranges exactly; (c) comparisons alternate their order round by round.
No timings are asserted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from compare import alternate, alternating_order, ratio_summary  # noqa: E402
from render import load_inputs, render  # noqa: E402


def _entry(result: dict[str, Any], date: str = "2026-12-02 01:00 UTC") -> dict[str, Any]:
    return {"date": date, "duration_s": 90.0, "result": result,
            "conditions": {"cores": 2, "cpu": "Test CPU", "python": "3.11.7", "torch": "2.5.1", "tensorflow": None,
                           "load_start": [1.5, 1.0, 0.5], "load_end": [2.25, 1.25, 0.75]}}


def _lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


# (a) ---------------------------------------------------------------------------------------

def test_results_md_is_rendered_from_results_json_alone() -> None:
    assert (BENCH / "results.json").is_file(), "bench/results.json is missing: run `make bench`"
    inputs = json.loads((BENCH / "results.json").read_text())
    inputs["other_runs"] = json.loads((BENCH / "other_runs.json").read_text())
    expected = render(inputs)
    assert (BENCH / "RESULTS.md").read_text() == expected, (
        "bench/RESULTS.md differs from render(results.json + other_runs.json): regenerate it with "
        "`python bench/run_all.py NAME…` (or `python bench/render.py > bench/RESULTS.md`), never edit it by hand")
    assert load_inputs() == inputs


def test_every_table_row_of_results_md_names_its_run_or_other_run() -> None:
    """Each generated table row carries the date of the run that measured it."""
    inputs = load_inputs()
    dates = {e["date"] for e in inputs["benchmarks"].values()} | {e["date"] for e in inputs["other_runs"]}
    text = (BENCH / "RESULTS.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| benchmark")
            and not line.startswith("| concurrency")]
    serving = [line for line in rows if line.split("|")[1].strip().isdigit()]
    assert rows, "RESULTS.md has no table rows"
    for row in rows:
        if row not in serving:  # the serving table's rows share the date in its header line
            assert any(date in row for date in dates), f"row without the date of its run: {row}"


# (b) ---------------------------------------------------------------------------------------

def test_comparison_reports_medians_and_the_range_of_per_round_ratios() -> None:
    # medians 3 and 2 (ratio of medians 1.5); per-round ratios 0.5, 2.0, 0.75 -> median 0.75
    training = {"rounds": 3, "seed": 7, "modelcycle_s": [1.0, 4.0, 3.0], "raw_s": [2.0, 2.0, 4.0],
                "modelcycle_accuracy": [0.9, 0.95, 0.97], "raw_accuracy": [0.96, 0.9, 0.91]}
    text = render({"benchmarks": {"training": _entry(training)}})
    [row] = _lines_with(text, "Training epoch")
    assert "| 3.00 s | 2.00 s | **0.750** (0.500–2.000) | ≤ 1.05 | 3 |" in row
    assert "same seed (7)" in row and "test accuracy 0.9500 vs 0.9100" in row
    assert "2026-12-02 01:00 UTC, load 1.50→2.25" in row
    [conditions] = _lines_with(text, "`bench_training.py`")
    assert "| 1.5 min | 2 | Test CPU | Python 3.11.7 · torch 2.5.1 | 1.50 / 1.00 / 0.50 → 2.25 / 1.25 / 0.75 |" in conditions
    assert "took 2 min in all" in text


def test_optional_rows_render_only_from_their_keys() -> None:
    tracking = {"rounds": 2, "on_s": [13.0, 12.0], "off_s": [12.0, 12.5], "seed": 1, "epochs": 1}
    ui = {"overview_ms": [120.0, 80.0, 100.0], "runs_ms": [310.0, 290.0]}
    text = render({"benchmarks": {"tracking": _entry(tracking), "ui": _entry(ui),
                                  "script_mode": _entry({"rounds": 1, "script_mode_s": [5.0], "direct_s": [4.0]})}})
    [row] = _lines_with(text, "MLflow tracking on vs off")
    assert "| 12.50 s | 12.25 s | **1.022** (0.960–1.083) |" in row
    assert "on − off per round 0.25 (-0.50–1.00) s" in row
    [overview] = _lines_with(text, "overview page")
    assert "| 100 (80–120) ms | ≤ 300 ms | 3 |" in overview
    [script] = _lines_with(text, "script mode vs")
    assert "**1.250** (1.250–1.250)" in script
    # the tracking benchmark recorded before its rewrite (other keys) and absent benchmarks: no rows
    old = render({"benchmarks": {"tracking": _entry({"with_tracking_s": 7.0, "without_tracking_s": 7.0})}})
    assert "MLflow tracking" not in old and "overview page" not in old and "script mode" not in old


def test_serving_table_and_measurements() -> None:
    serving = {"rounds": 2, "requests": 100, "payload_logging": True, "forward_us": [300.0, 400.0, 350.0],
               "concurrency": {"8": {"modelcycle": {"throughput": [900.0, 1100.0], "p50_ms": [5.0, 7.0], "p99_ms": [9.0, 11.0]},
                                     "bare_fastapi": {"throughput": [1000.0, 1000.0], "p50_ms": [6.0, 6.0], "p99_ms": [8.0, 8.0]}}}}
    cli = {"rounds": 3, "modelcycle_help_s": [0.3, 0.2, 0.5]}
    text = render({"benchmarks": {"serving": _entry(serving), "cli": _entry(cli)}})
    assert "| 8 | 1000 | 6.00 | 10.00 | 1000 | 6.00 | 8.00 | **1.00** (0.90–1.10) | 2 |" in text
    assert "350 (300–400) µs" in text
    [help_row] = _lines_with(text, "`modelcycle --help`")
    assert "| 0.30 (0.20–0.50) s | < 0.5 s | 3 |" in help_row


def test_other_runs_are_a_separate_section_and_need_date_and_conditions() -> None:
    other = {"benchmark": "Old thing", "result": "1 s", "goal": "—", "date": "2026-11-01", "conditions": "quiet"}
    text = render({"benchmarks": {}, "other_runs": [other]})
    assert "## Figures from other runs (not regenerated)" in text
    assert "| Old thing | 1 s | — | 2026-11-01 | quiet |" in text
    with pytest.raises(ValueError, match="entry 0 \\('Old thing'\\) lacks date"):
        render({"benchmarks": {}, "other_runs": [{**other, "date": ""}]})


def test_ratio_summary_rejects_unequal_rounds() -> None:
    assert ratio_summary([2.0], [4.0]) == {"a": 2.0, "b": 4.0, "ratio": 0.5, "min": 0.5, "max": 0.5}
    with pytest.raises(ValueError, match="equal length"):
        ratio_summary([1.0, 2.0], [1.0])


# (c) ---------------------------------------------------------------------------------------

def test_alternating_order_swaps_sides_each_round() -> None:
    assert alternating_order(4) == [("A", "B"), ("B", "A"), ("A", "B"), ("B", "A")]
    assert alternating_order(2, ("x", "y", "z")) == [("x", "y", "z"), ("z", "y", "x")]
    with pytest.raises(ValueError, match="at least 1"):
        alternating_order(0)


def test_alternate_runs_sides_in_that_order_and_keeps_rounds_aligned() -> None:
    calls: list[str] = []
    counter = {"A": 0, "B": 0}

    def side(name: str):
        def measure() -> str:
            calls.append(name)
            counter[name] += 1
            return f"{name}{counter[name]}"
        return measure

    a, b = alternate(side("A"), side("B"), 3)
    assert calls == ["A", "B", "B", "A", "A", "B"]
    assert a == ["A1", "A2", "A3"] and b == ["B1", "B2", "B3"]


def test_a_partial_run_keeps_the_other_benchmarks_entries(tmp_path: Path) -> None:
    from run_all import write

    results_json, results_md, other_runs = tmp_path / "results.json", tmp_path / "RESULTS.md", tmp_path / "other.json"
    old = _entry({"rounds": 1, "modelcycle_help_s": [0.25]}, date="2026-11-30 10:00 UTC")
    results_json.write_text(json.dumps({"benchmarks": {"cli": old}}))
    other_runs.write_text("[]")
    new = _entry({"rounds": 1, "modelcycle_s": [2.0], "raw_s": [4.0]})
    write({"training": new}, results_json, results_md, other_runs)
    assert json.loads(results_json.read_text())["benchmarks"] == {"cli": old, "training": new}
    text = results_md.read_text()
    assert text == render(load_inputs(results_json, other_runs))
    assert "2026-11-30 10:00 UTC" in _lines_with(text, "`modelcycle --help`")[0]
    assert "**0.500**" in _lines_with(text, "Training epoch")[0]
