"""CLI subcommands of monitoring (argparse only at import time).

``monitor``, ``log-payload``, ``log-feedback``, ``evaluate`` (``--fail-on-violation`` exits 1
when a threshold is violated; ``--every 1h [--times N]`` evaluates on a schedule) and
``evaluations``. Each is one call of a ``UseCase`` method; the command only prints.
"""

from __future__ import annotations

import argparse
import re
from typing import Any, Callable

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}

#: Why an endpoint logs no payload, for either platform.
_PAYLOAD_OFF = "monitoring.payload.enabled: false locally, serving.data_capture.enabled: false on SageMaker"


def parse_duration(text: str) -> float:
    """``30s``, ``5m``, ``1h``, ``1.5h``, ``2d`` or plain seconds → seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a duration like 30s, 5m, 1h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _console() -> Any:
    from modelcycle.cli.tables import console

    return console()


def type_text(kind: Any) -> str:
    """A schema field's type as one readable word: ``double``, ``array<double>``,
    ``struct<a: double, b: string>`` (Spark-style JSON types, as the payload schema holds)."""
    if isinstance(kind, str):
        return kind
    if isinstance(kind, dict):
        if kind.get("type") == "array":
            return f"array<{type_text(kind.get('elementType', '?'))}>"
        if kind.get("type") == "map":
            return f"map<{type_text(kind.get('keyType', '?'))}, {type_text(kind.get('valueType', '?'))}>"
        if kind.get("type") == "struct":
            fields = ", ".join(f"{f.get('name')}: {type_text(f.get('type'))}" for f in kind.get("fields", []))
            return f"struct<{fields}>"
        if isinstance(kind.get("type"), str):
            return kind["type"]
    return str(kind)


def _print_schema(console: Any, schema: list[dict[str, Any]], title: str) -> None:
    from modelcycle.cli.tables import print_table

    roles = any(field.get("modeling_role") for field in schema)
    columns = ("name", "type", "nullable", *(("role",) if roles else ()))
    rows = [
        (field["name"], type_text(field["type"]), "yes" if field.get("nullable") else "no",
         *((field.get("modeling_role") or "",) if roles else ()))
        for field in schema
    ]
    print_table(title, columns, rows, out=console)


#: drift metrics measured only on images, and only on tabular records
_IMAGE_ONLY, _TABULAR_ONLY = ("mean_intensity_drift", "ink_fraction_drift"), ("feature_drift",)


def _thresholds(monitor: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    return ", ".join(f"{t['metric_id']} {t['type']} {t['value']:g}" for t in monitor.get("thresholds", [])
                     if t["metric_id"] not in skip) or "none"


def cmd_monitor(args: argparse.Namespace, use_case: Any, print_json: Callable[[Any], None]) -> int:
    uc = use_case(args)
    outputs = uc.monitor(force=args.force)
    if args.json:
        print_json(outputs)
        return 0
    console = _console()
    console.print(f"\n Successfully finished adding subscription {outputs['subscription_id']}\n")
    console.print(f"deployment  {outputs['deployment_id']}  (asset revision {outputs['asset_revision']})")
    console.print(f"store       {outputs['store']}")
    console.print(f"payload     {'logged by the endpoint' if outputs.get('payload_logging') else 'NOT logged (' + _PAYLOAD_OFF + ')'}")
    baseline = outputs.get("baseline", {})
    accuracy = baseline.get("accuracy")
    tabular = any(field.get("modeling_role") == "feature" for field in outputs["payload_schema"])
    console.print(
        f"baseline    {baseline.get('records')} held-out {baseline.get('source', {}).get('dataset')} test "
        f"{'records' if tabular else 'images'}"
        + (f", accuracy {accuracy * 100:.2f}%" if accuracy is not None else "")
    )
    console.print()
    _print_schema(console, outputs["payload_schema"], f"schema of the payload data set of {outputs['deployment_id']}")
    monitors = outputs["monitors"]
    quality, drift = monitors["quality"], monitors["drift"]
    console.print(
        f"quality  {'enabled' if quality['enabled'] else 'disabled'}: min_feedback_data_size "
        f"{quality['min_feedback_data_size']}; thresholds {_thresholds(quality)}"
    )
    console.print(
        f"drift    {'enabled' if drift['enabled'] else 'disabled'}: min_samples {drift['min_samples']}, window "
        f"{drift.get('window', 'last_n')} (at most {drift['max_samples']}); thresholds "
        f"{_thresholds(drift, _IMAGE_ONLY if tabular else _TABULAR_ONLY)}"
    )
    remote = outputs.get(outputs.get("backend", ""))
    if remote:
        title = outputs.get("backend_title", outputs["backend"])
        console.print(f"{title} subscription: " + ", ".join(f"{key} {value}" for key, value in remote.items() if value))
    return 0


def _backend_sent(result: dict[str, Any]) -> None:
    sent = result.get(result.get("backend", ""))
    if sent is not None:
        print(f"sent to {result.get('backend_title', result['backend'])}: {sent['payload']} payload and "
              f"{sent['feedback']} feedback records")


def cmd_log_payload(args: argparse.Namespace, use_case: Any, print_json: Callable[[Any], None]) -> int:
    result = use_case(args).log_payload(samples=args.samples, dataset=args.dataset, offset=args.offset)
    if args.json:
        print_json({k: v for k, v in result.items() if k != "scoring_ids"})
        return 0
    print(f"scored {result['records']} {result['dataset']} test {result.get('unit', 'images')} on {result['deployment_id']} "
          f"in {result['seconds']:.2f} s")
    if not result["payload_logging"]:
        print(f"payload logging is off for this endpoint ({_PAYLOAD_OFF}): nothing stored")
        return 0
    print("\n---------------------------------------\n Successfully finished storing records\n"
          "---------------------------------------")
    print(f"{result['stored']} of {result['records']} payload records in the store")
    _backend_sent(result)
    return 0


def cmd_log_feedback(args: argparse.Namespace, use_case: Any, print_json: Callable[[Any], None]) -> int:
    result = use_case(args).log_feedback(samples=args.samples)
    if args.json:
        print_json(result)
        return 0
    print("\n---------------------------------------\n Successfully finished storing records\n"
          "---------------------------------------")
    how = f"{result['matched_payload']} matched to logged payload"
    if result["scored"]:
        how += f", {result['scored']} scored with their labels"
    print(f"{result['feedback_records']} feedback records ({how}); {result['total_feedback']} in total for {result['deployment_id']}")
    _backend_sent(result)
    return 0


def _limit_text(threshold: dict[str, Any] | None) -> str:
    if not threshold:
        return ""
    return f"{'≥' if threshold['type'] == 'lower_limit' else '≤'} {threshold['value']:g}"


def _records_text(m: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in (m.get("records") or {}).items())


def drifted_features_text(m: dict[str, Any]) -> str | None:
    """``feature_drift beyond 0.25: mean radius (kolmogorov_smirnov 0.79), ...`` for a
    measurement whose ``feature_drift`` violation names features; None otherwise."""
    for violation in m.get("violations") or []:
        names = violation.get("features")
        if violation.get("metric_id") != "feature_drift" or not names:
            continue
        measured = {f["name"]: f for f in (m.get("details") or {}).get("features") or []}
        parts = [f"{name} ({measured[name]['algorithm']} {measured[name]['statistic']:.3f})" if name in measured else name
                 for name in names]
        return f"feature_drift beyond {violation.get('limit', 0):g}: " + ", ".join(parts)
    return None


def print_measurements(measurements: list[dict[str, Any]], title: str, show_time: bool = False) -> None:
    from modelcycle.cli.tables import Column, print_table

    columns = [*(("time (UTC)",) if show_time else ()), "monitor", "metric", Column("value", justify="right"), "limit", "status"]
    rows = []
    for m in measurements:
        when = [m["time"].replace("T", " ")[:19]] if show_time else []
        if m["status"] != "finished":
            rows.append((*when, m["monitor"], "—", "—", "", f"[yellow]{m['status']}[/]"))
            continue
        violated = {v["metric_id"] for v in m.get("violations", [])}
        limits = {t["metric_id"]: t for t in m.get("thresholds", [])}
        for metric, value in m["metrics"].items():
            status = "[red]VIOLATION[/]" if metric in violated else ("[green]ok[/]" if metric in limits else "")
            rows.append((*when, m["monitor"], metric, f"{value:.4f}", _limit_text(limits.get(metric)), status))
            when = [""] if show_time else []
    console = _console()
    print_table(title, columns, rows, out=console)
    if not show_time:
        for m in measurements:
            console.print(f"{m['monitor']}: {_records_text(m)}" + (f" — {m['message']}" if m.get("message") else ""))
            drifted = drifted_features_text(m)
            if drifted:
                console.print(f"{m['monitor']}: {drifted}", highlight=False, markup=False)


def _print_evaluation(results: list[dict[str, Any]]) -> None:
    print_measurements(results, f"evaluation {results[0]['run_id']} at {results[0]['time']}")
    for result in results:
        for remote in (result.get("details") or {}).values():
            if not (isinstance(remote, dict) and "backend_title" in remote and "run_id" in remote):
                continue  # a backend's own run of this monitor carries its title
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in (remote.get("metrics") or {}).items())
            print(f"{remote['backend_title']} {result['monitor']} run {remote['run_id']}: {remote.get('state')}"
                  + (f"; {metrics}; {remote.get('issue_count', 0)} issue(s)" if metrics else f" — {remote.get('message', '')}"))
    plots = results[0].get("plots") or []
    if plots:
        print("plots: " + ", ".join(plots))


def cmd_evaluate(args: argparse.Namespace, use_case: Any, print_json: Callable[[Any], None]) -> int:
    from modelcycle.core.monitoring.errors import ThresholdViolationError

    try:
        use_case(args).evaluate(fail_on_violation=args.fail_on_violation, plots=not args.no_plots, every=args.every,
                                times=args.times, on_result=print_json if args.json else _print_evaluation)
    except ThresholdViolationError:
        if not args.json:
            print("threshold violated", flush=True)
        return 1
    return 0


def cmd_evaluations(args: argparse.Namespace, use_case: Any, print_json: Callable[[Any], None]) -> int:
    measurements = use_case(args).evaluations(limit=args.limit)
    if args.json:
        print_json(measurements)
        return 0
    if not measurements:
        print("no evaluations yet: run 'modelcycle evaluate'")
        return 0
    print_measurements(measurements, "evaluations", show_time=True)
    return 0


def add_commands(commands: Any, use_case: Callable[[Any], Any], print_json: Callable[[Any], None]) -> None:
    """Add the monitoring subcommands to the ``modelcycle`` parser."""

    def bind(handler: Callable[..., int]) -> Callable[[argparse.Namespace], int]:
        return lambda args: handler(args, use_case, print_json)

    monitor = commands.add_parser("monitor", help="subscribe the endpoint to monitoring (payload schema, monitors, baseline)")
    monitor.add_argument("--force", action="store_true", help="create a new subscription even if one is active")
    monitor.add_argument("--json", action="store_true")
    monitor.set_defaults(func=bind(cmd_monitor))

    payload = commands.add_parser("log-payload", help="score test images (or table records) on the endpoint and wait until they are logged")
    payload.add_argument("--samples", type=int, default=100)
    payload.add_argument("--dataset", default=None, help="another dataset's test images (e.g. fashion-mnist: a drift)")
    payload.add_argument("--offset", type=int, default=0, help="first test image (or record) to send")
    payload.add_argument("--json", action="store_true")
    payload.set_defaults(func=bind(cmd_log_payload))

    feedback = commands.add_parser("log-feedback", help="attach true labels to logged payload records")
    feedback.add_argument("--samples", type=int, default=100)
    feedback.add_argument("--json", action="store_true")
    feedback.set_defaults(func=bind(cmd_log_feedback))

    evaluate = commands.add_parser("evaluate", help="run the quality and drift monitors and store the measurements")
    evaluate.add_argument("--fail-on-violation", action="store_true", help="exit 1 when a threshold is violated (CI)")
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--no-plots", action="store_true", help="do not write PNGs under .modelcycle/plots/")
    evaluate.add_argument("--every", type=parse_duration, default=None, metavar="DURATION",
                          help="evaluate on a schedule (30s, 5m, 1h, ...) while the endpoint serves")
    evaluate.add_argument("--times", type=int, default=None, metavar="N", help="stop after N evaluations (without --every: N in a row)")
    evaluate.set_defaults(func=bind(cmd_evaluate))

    history = commands.add_parser("evaluations", help="list the stored evaluations")
    history.add_argument("--json", action="store_true")
    history.add_argument("--limit", type=int, default=None, help="only the last N measurements")
    history.set_defaults(func=bind(cmd_evaluations))
