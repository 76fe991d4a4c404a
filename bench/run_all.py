"""Run the benchmarks, record their raw results in ``bench/results.json`` and render
``bench/RESULTS.md`` from that file alone (``make bench``).

    python bench/run_all.py [NAME ...] [--rounds N]

``NAME`` is a benchmark module ``bench/bench_NAME.py`` (default: every one). Each module exposes
``run(rounds=...) -> dict`` of raw per-round measurements; ``--rounds`` is passed on (default:
each module's own, at least 5 for comparisons). Each benchmark runs in a fresh interpreter, so
none inherits another's imports, threads or caches. Every entry of ``results.json`` holds the
benchmark's raw result with its date and conditions (machine, versions, load average at its
start and end); running some benchmarks keeps the others' previous entries. ``RESULTS.md`` is
``render.render(results.json + other_runs.json)`` — a test checks that it is exactly that.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from conditions import load_average, machine, utc_now  # noqa: E402
from render import OTHER_RUNS, RESULTS_JSON, RESULTS_MD, load_inputs, render  # noqa: E402


def available() -> list[str]:
    """The benchmark names: ``bench/bench_<name>.py`` files, sorted."""
    return sorted(path.stem.removeprefix("bench_") for path in BENCH.glob("bench_*.py"))


def run_one(name: str, rounds: int | None) -> dict[str, Any]:
    """Import ``bench_<name>``, run it and return its entry: date, conditions, duration, result."""
    module = importlib.import_module(f"bench_{name}")
    kwargs = {} if rounds is None else {"rounds": rounds}
    entry: dict[str, Any] = {"date": utc_now(), "conditions": {**machine(), "load_start": load_average()}}
    started = time.perf_counter()
    result = module.run(**kwargs)
    entry["duration_s"] = round(time.perf_counter() - started, 1)
    entry["conditions"]["load_end"] = load_average()
    entry["result"] = result
    return entry


def run_isolated(name: str, rounds: int | None) -> dict[str, Any] | None:
    """:func:`run_one` in a fresh interpreter (its output passes through); None if it failed."""
    with tempfile.TemporaryDirectory(prefix="bench-entry-") as tmp:
        out = Path(tmp) / "entry.json"
        command = [sys.executable, __file__, name, "--entry-to", str(out)]
        if rounds is not None:
            command += ["--rounds", str(rounds)]
        if subprocess.run(command).returncode != 0 or not out.is_file():
            return None
        return json.loads(out.read_text())


def read_results(path: Path = RESULTS_JSON) -> dict[str, Any]:
    """The recorded results (``{"benchmarks": {}}`` when there are none yet)."""
    if not path.is_file():
        return {"benchmarks": {}}
    results = json.loads(path.read_text())
    if not isinstance(results.get("benchmarks"), dict):
        raise SystemExit(f"{path}: expected an object with a 'benchmarks' object; delete the file to start afresh")
    return results


def write(entries: dict[str, Any], results_json: Path = RESULTS_JSON, results_md: Path = RESULTS_MD,
          other_runs: Path = OTHER_RUNS) -> None:
    """Merge ``entries`` into ``results_json`` as it is now on disk (the other benchmarks' entries,
    also those another run wrote meanwhile, stay), write it, then ``results_md`` rendered from the
    files just written."""
    results = read_results(results_json)
    results["benchmarks"].update(entries)
    results_json.write_text(json.dumps(results, indent=1, sort_keys=True, default=str) + "\n")
    results_md.write_text(render(load_inputs(results_json, other_runs)))


def main(argv: list[str] | None = None) -> int:
    names = available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(names)}")
    parser.add_argument("--rounds", type=int, help="rounds per benchmark (default: each benchmark's own)")
    parser.add_argument("--entry-to", type=Path, help=argparse.SUPPRESS)  # the child of run_isolated
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in names]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(names)}")
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.entry_to is not None:
        if len(args.names) != 1:
            parser.error("--entry-to takes exactly one benchmark name")
        args.entry_to.write_text(json.dumps(run_one(args.names[0], args.rounds), default=str))
        return 0
    read_results()  # a broken file stops the run before any benchmark
    ran: dict[str, Any] = {}
    failed = []
    for name in args.names or names:
        print(f"== {name}", flush=True)
        entry = run_isolated(name, args.rounds)
        if entry is None:  # one broken benchmark keeps its previous entry; the others still run
            failed.append(name)
            continue
        ran[name] = entry
        write(ran)  # after each benchmark, so a long run keeps what it measured
        print(f"   {entry['duration_s']} s", flush=True)
    write(ran)
    print(f"wrote {RESULTS_JSON.name} and {RESULTS_MD.name} (other runs from {OTHER_RUNS.name})")
    if failed:
        print(f"FAILED: {', '.join(failed)} (previous entries kept)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
