"""The ``modelcycle`` command line: thin commands over :class:`~modelcycle.core.lifecycle.UseCase`.

Every command acts on the use case in the current directory or ``-C DIR`` (global options go
before or after the subcommand). This module holds the lifecycle commands; ``monitoring`` and
``governance`` beside it hold theirs; plugins add more through the ``add_commands`` hook.
Imports are lazy so ``modelcycle --help`` answers without loading torch, pydantic or the web
stack.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]

#: The core's own command modules beside this one (``add_commands(subparsers, use_case,
#: print_json)``); plugins add theirs through the ``add_commands`` hook. None may import anything
#: heavy at module level (``modelcycle --help`` builds every parser).
COMMAND_MODULES = ("modelcycle.cli.monitoring", "modelcycle.cli.governance", "modelcycle.cli.transform", "modelcycle.cli.ui")


def _use_case(args: argparse.Namespace) -> Any:
    from modelcycle.core.config import parse_overrides
    from modelcycle.core.lifecycle import UseCase

    return UseCase(args.directory, overrides=parse_overrides(args.set or []), lock_timeout=args.lock_timeout)


# -- global options, accepted before and after the subcommand ----------------------------------
def _add_global_options(parser: argparse.ArgumentParser, after: bool) -> None:
    """``-C``, ``--set`` and ``--lock-timeout``. On a subcommand (``after``) they land in
    ``after_*`` destinations with no default, so what was given before the subcommand survives
    and :func:`_merge_global_options` can combine both places."""
    prefix, default = ("after_", argparse.SUPPRESS) if after else ("", None)
    parser.add_argument("-C", dest=f"{prefix}directory", default=default if after else ".", metavar="DIR",
                        help="use case directory (default: .)")
    parser.add_argument("--set", dest=f"{prefix}set", action="append", default=default, metavar="KEY=VALUE",
                        help="override a config key, e.g. hyperparameters.epochs=1 (repeatable)")
    parser.add_argument("--lock-timeout", dest=f"{prefix}lock_timeout", type=float, default=default, metavar="S",
                        help="seconds to wait for another process working on this use case (default: wait)")


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every subcommand parser below ``parser`` (nested ones such as ``facts set`` included)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                found += [sub, *_subparsers(sub)]
    return found


def _merge_global_options(args: argparse.Namespace) -> argparse.Namespace:
    """Fold the global options given after the subcommand into the usual names: ``-C`` and
    ``--lock-timeout`` given after win, ``--set`` pairs add up (after ones last)."""
    after = {key: getattr(args, key) for key in list(vars(args)) if key.startswith("after_")}
    for key, value in after.items():
        delattr(args, key)
        name = key[len("after_"):]
        if name == "set":
            args.set = [*(args.set or []), *value]
        else:
            setattr(args, name, value)
    return args


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_init(args: argparse.Namespace) -> int:
    import re

    from modelcycle.core.errors import ConfigError
    from modelcycle.core.examples import example_config, example_files

    target = Path(args.target)
    config = target / "modelcycle.yaml"
    name = re.sub(r"[^A-Za-z0-9._-]", "-", target.resolve().name).strip("-._")[:63] or "use-case"
    text = example_config(args.framework, args.example, name)  # fails before anything is written
    extra = example_files(args.framework, args.example)
    existing = [p for p in [config, *(target / f for f in extra)] if p.exists()]
    if existing and not args.force:
        one = len(existing) == 1
        raise ConfigError(f"{', '.join(map(str, existing))} already exist{'s' if one else ''}; "
                          f"pass --force to overwrite {'it' if one else 'them'}")
    target.mkdir(parents=True, exist_ok=True)
    config.write_text(text)
    for relative, content in extra.items():
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (target / relative).write_bytes(content)
        else:
            (target / relative).write_text(content)
    print(f"wrote {config}{f' and {len(extra)} more file(s): ' + ', '.join(extra) if extra else ''} "
          f"(framework {args.framework}, example {args.example or 'default'})")
    print(f"next: modelcycle -C {target} run --until deploy")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from modelcycle.core.registry import installed_plugins

    plugins = installed_plugins()
    if args.json:
        _print_json([p.__dict__ | {"kind": p.kind} for p in plugins])
        return 0
    from modelcycle.cli.tables import print_table

    print_table("installed modelcycle plugins", ("kind", "name", "distribution", "version"),
                [(p.kind, p.name, p.distribution, p.version) for p in plugins],
                caption="modules: modelcycle plugins --json")
    return 0


def _print_training(outputs: dict[str, Any]) -> None:
    metrics = outputs.get("metrics", {})
    print(f"Current RunID {outputs['run_id']}")
    if "test_accuracy" in metrics:
        print(f"test accuracy {metrics['test_accuracy'] * 100:.2f}%  test loss {metrics['test_loss']:.4f}")
    print(f"Model artifact {outputs.get('archive')}")


def cmd_train(args: argparse.Namespace) -> int:
    use_case = _use_case(args)
    before = use_case.state().stages.get("train")
    outputs = use_case.train(force=args.force, restart=args.restart)
    if outputs.get("resumed_from_epoch"):
        print(f"resumed run {outputs['run_id']} after epoch {outputs['resumed_from_epoch']} (attempt {outputs['attempt']})")
    if before and before.status == "done" and not args.force and before.outputs.get("run_id") == outputs.get("run_id"):
        print(f"already trained (run {outputs['run_id']}); pass --force to train again")
    _print_training(outputs)
    return 0


def _print_endpoint(endpoint: dict[str, Any]) -> None:
    print(f"Endpoint name saved: {endpoint['name']}")
    print(f"url {endpoint.get('url')}  status {endpoint.get('status')}  pid {endpoint.get('pid')}")


def cmd_deploy(args: argparse.Namespace) -> int:
    use_case = _use_case(args)
    endpoint = use_case.deploy(force=args.force, run_id=args.run, best=args.best)
    _print_endpoint(endpoint)
    print(f"serving run {endpoint.get('run_id')}")
    return 0


def varying_params(runs: list[dict[str, Any]]) -> list[str]:
    """The parameters worth a column: those whose value differs among the runs that have them
    (a failed run that never logged ``preprocessing.mean`` makes no column of it)."""
    keys = sorted({k for r in runs for k in r["params"]})
    return [k for k in keys if len({r["params"][k] for r in runs if k in r["params"]}) > 1]


def _print_runs(runs: list[dict[str, Any]], title: str) -> None:
    from modelcycle.cli.tables import Column, print_table

    varying = varying_params(runs)
    numbers = [Column(name, justify="right") for name in ("test_accuracy", "test_loss", "duration_s")]
    rows = []
    for run in runs:
        metrics = run["metrics"]
        rows.append((
            run["run_id"][:8],
            run["status"],
            *[run["params"].get(k, "") for k in varying],
            f"{metrics['test_accuracy']:.4f}" if "test_accuracy" in metrics else "",
            f"{metrics['test_loss']:.4f}" if "test_loss" in metrics else "",
            f"{run['duration_s']:.1f}" if run.get("duration_s") else "",
        ))
    caption = None if varying else "no parameter differs between these runs"
    print_table(title, ("run", "status", *varying, *numbers), rows, caption=caption)


def cmd_runs(args: argparse.Namespace) -> int:
    use_case = _use_case(args)
    runs = use_case.runs(sort=args.sort, ascending=True if args.ascending else None)
    if args.json:
        _print_json(runs)
    elif not runs:
        print("no tracked runs yet: run 'modelcycle train'")
    else:
        _print_runs(runs, f"runs of {use_case.config.name}" + (f" by {args.sort}" if args.sort else ""))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    name, _, values = args.param.partition("=")
    use_case = _use_case(args)
    results = use_case.sweep(name.strip(), [v.strip() for v in values.split(",") if v.strip()])
    swept = {r["run_id"] for r in results}
    runs = [r for r in use_case.runs(sort=args.sort) if r["run_id"] in swept]
    if args.json:
        _print_json(runs)
    else:
        _print_runs(runs, f"sweep of {name.strip()} by {args.sort}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    use_case = _use_case(args)
    result = use_case.score(samples=args.samples)
    if args.json:
        _print_json(result.response)
        return 0
    endpoint = use_case.endpoint() or {}
    print(f"EndpointName used for inference: {endpoint.get('name')}")
    print(f"response_time {result.response_time_ms:.0f}ms")
    rows = [f"\t\t[{p}, [{', '.join(f'{x:.9f}' for x in probs[:3])}, ...]]" for p, probs in zip(result.predictions, result.probabilities)]
    print("{\n\t'fields': ['prediction', 'probability'],\n\t'values': [\n" + ",\n".join(rows) + "\n\t]\n}")
    print(f"scoring_id {result.scoring_id}")
    names = _predicted_names(result.response)
    digits = names is None or all(str(name).isdigit() for name in names)
    print(f"Predicted {'digits: ' if digits else 'classes:'} {result.predictions}")
    if not digits:
        print(f"Predicted labels:  {names}")
    if result.labels:
        correct = sum(p == y for p, y in zip(result.predictions, result.labels))
        print(f"True labels:       {result.labels}  ({correct}/{len(result.labels)} correct)")
    return 0


def _predicted_names(response: dict[str, Any]) -> list[str] | None:
    """The ``prediction_label`` column of a scoring response (class names), or None without one."""
    names: list[str] = []
    for block in response.get("predictions") or []:
        if not isinstance(block, dict):  # a script-mode endpoint's own answer: no label column
            return None
        fields = block.get("fields") or []
        if "prediction_label" not in fields:
            return None
        column = fields.index("prediction_label")
        names += [row[column] for row in block.get("values") or []]
    return names or None


def _print_repair(result: dict[str, Any]) -> None:
    if result["repaired"]:
        print(f"repaired: {result['problem']}")
        if result["backup"]:
            print(f"damaged file kept as {result['backup']}")
        print(f"recovered trained run {result['train'] or '(none)'}, endpoint {result['deploy'] or '(none)'}")
    for note in result["notes"]:
        print(f"note: {note}")
    print()


def _accuracy_text(metrics: dict[str, Any]) -> str:
    accuracy = metrics.get("test_accuracy")
    return f"test accuracy {accuracy * 100:.2f}%" if accuracy is not None else "no test accuracy recorded"


def _print_run_metrics(status: dict[str, Any]) -> None:
    """The served run's metrics first (that is the model users get), labelled with its run; the
    latest trained run's too when it is another run (e.g. after a sweep)."""
    served = status.get("served")
    if served:
        print(f"served run      {served['run_id']}  {_accuracy_text(served['metrics'])}")
    if status["run_id"] and (not served or served["run_id"] != status["run_id"]):
        note = "  (not deployed: 'modelcycle deploy' serves it)" if served else ""
        print(f"latest run      {status['run_id']}  {_accuracy_text(status['metrics'])}{note}")


def cmd_status(args: argparse.Namespace) -> int:
    use_case = _use_case(args)
    repair = use_case.repair() if args.repair else None
    status = use_case.status()
    if args.json:
        _print_json({**status, "repair": repair} if repair else status)
        return 0
    if repair:
        _print_repair(repair)
    print(f"use case {status['use_case']} ({status['framework']}) in {status['directory']}\n")
    for flag in ("trained", "deployed", "governed", "monitored"):
        print(f"              - {flag + ':':<10} [{status[flag]}]")
    print()
    for stage, stage_status in status["stages"].items():
        if stage_status == "interrupted":
            print(f"{stage + ':':<15} interrupted (its process died): 'modelcycle {stage}' resumes it")
    if status.get("training"):
        t = status["training"]
        print(f"training run    {t['run_id']} {t['status']} after epoch {t['last_complete_epoch']} of {t['epochs']}"
              " ('modelcycle train' resumes it, '--restart' starts over)")
    _print_run_metrics(status)
    endpoint = status["endpoint"]
    if endpoint:
        print(f"endpoint        {endpoint.get('name')}  {endpoint.get('url')}  {endpoint.get('status')}")
        if endpoint.get("status_reason"):
            print(f"                {endpoint['status_reason']}")
    if status.get("recovery"):
        print(f"\nnote: {status['recovery']}")
    return 0


def cmd_endpoints(args: argparse.Namespace) -> int:
    endpoint = _use_case(args).endpoint()
    endpoints = [endpoint] if endpoint else []
    if args.json:
        _print_json(endpoints)
        return 0
    if not endpoints:
        print("no endpoint deployed")
    for e in endpoints:
        print(f"{e['name']}\t{e.get('platform')}\t{e.get('url')}\t{e.get('status')}\tpid {e.get('pid')}")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    print(_use_case(args).cleanup(records=args.records, governance=args.governance))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    results = _use_case(args).run(until=args.until, force=args.force)
    if "train" in results:
        _print_training(results["train"])
    if "deploy" in results:
        _print_endpoint(results["deploy"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``modelcycle`` parser: the core's commands, then every plugin's (``add_commands``)."""
    from modelcycle.core.stages import DEFAULT_UNTIL, PIPELINE

    parser = argparse.ArgumentParser(
        prog="modelcycle",
        description="One lifecycle for every model: train → deploy → score → govern → monitor → evaluate → cleanup.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _add_global_options(parser, after=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="write a ready use case into DIR")
    init.add_argument("target", metavar="DIR")
    init.add_argument("--framework", default="pytorch", help="any installed framework (modelcycle plugins)")
    init.add_argument("--example", default=None,
                      help="one of the framework's examples (default: its first; 'generic': a template to fill in)")
    init.add_argument("--force", action="store_true", help="overwrite an existing modelcycle.yaml")
    init.set_defaults(func=cmd_init)

    plugins = commands.add_parser("plugins", help="list the installed plugins of every kind")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)

    train = commands.add_parser("train", help="train and package the model")
    train.add_argument("--force", action="store_true", help="train again even if already trained")
    train.add_argument("--restart", action="store_true",
                       help="start a new run from epoch 1 instead of resuming an interrupted one")
    train.set_defaults(func=cmd_train)

    deploy = commands.add_parser("deploy", help="serve the trained model on an endpoint")
    deploy.add_argument("--force", action="store_true", help="redeploy even if the endpoint is in service")
    choice = deploy.add_mutually_exclusive_group()
    choice.add_argument("--run", metavar="ID", help="deploy this tracked run's model (a prefix is enough)")
    choice.add_argument("--best", metavar="METRIC", help="deploy the finished run with the best METRIC, e.g. test_accuracy")
    deploy.set_defaults(func=cmd_deploy)

    runs = commands.add_parser("runs", help="list tracked training runs (the ExperimentAnalytics table)")
    runs.add_argument("--sort", metavar="METRIC", help="sort by a metric, e.g. test_accuracy (best first)")
    runs.add_argument("--ascending", action="store_true", help="smallest first")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=cmd_runs)

    sweep = commands.add_parser("sweep", help="train one run per value of a parameter and compare them")
    sweep.add_argument("--param", required=True, metavar="NAME=V1,V2,...", help="e.g. hidden_channels=2,5,10,20,32")
    sweep.add_argument("--sort", default="test_accuracy", metavar="METRIC")
    sweep.add_argument("--json", action="store_true")
    sweep.set_defaults(func=cmd_sweep)

    score = commands.add_parser("score", help="score test images (or table records) on the endpoint")
    score.add_argument("--samples", type=int, default=10)
    score.add_argument("--json", action="store_true", help="print the raw response")
    score.set_defaults(func=cmd_score)

    status = commands.add_parser("status", help="show the lifecycle state")
    status.add_argument("--json", action="store_true")
    status.add_argument("--repair", action="store_true",
                        help="rebuild a damaged or missing state.json from the runs and live endpoint on disk "
                             "(the damaged file is kept as a backup)")
    status.set_defaults(func=cmd_status)

    endpoints = commands.add_parser("endpoints", help="list the use case's endpoints")
    endpoints.add_argument("--json", action="store_true")
    endpoints.set_defaults(func=cmd_endpoints)

    cleanup = commands.add_parser("cleanup", help="stop the endpoint, delete the monitoring subscription; report what was removed")
    cleanup.add_argument("--records", action="store_true", help="also delete the payload and feedback records")
    cleanup.add_argument("--governance", action="store_true",
                         help="also delete the governance records (and what the governance backend created)")
    cleanup.set_defaults(func=cmd_cleanup)

    run = commands.add_parser("run", help="run the pipeline's stages in order, skipping those done")
    run.add_argument("--until", default=DEFAULT_UNTIL, choices=PIPELINE,
                     help=f"last stage to run: {' → '.join(PIPELINE)} (default: {DEFAULT_UNTIL})")
    run.add_argument("--force", action="store_true")
    run.set_defaults(func=cmd_run)

    import importlib

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(commands, _use_case, _print_json)
    from modelcycle.core.registry import PluginRegistry

    registry = PluginRegistry()
    registry.load_command_plugins()
    registry.hook.add_commands(subparsers=commands, use_case=_use_case, print_json=_print_json)
    for sub in _subparsers(parser):
        _add_global_options(sub, after=True)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("modelcycle")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


#: What every command exits with (shown by ``modelcycle --help``; README "Exit codes").
EXIT_OK, EXIT_VIOLATION, EXIT_USER_ERROR, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES_HELP = """exit codes (every command):
  0    success
  1    a monitor violated its thresholds (evaluate --fail-on-violation)
  2    user error: bad arguments, configuration, state or input; the message says how to fix it
  3    internal error: one line names it and the file holding the full traceback
       (.modelcycle/logs/; MODELCYCLE_DEBUG=1 also prints it)
  130  interrupted (Ctrl-C)"""


def _crash_log(directory: str, text: str) -> Path | None:
    """Write ``text`` (a traceback) under the use case's ``.modelcycle/logs/`` (the temp
    directory when ``directory`` holds no use case); returns the file, or None if unwritable."""
    import os
    import tempfile
    import time

    base = Path(directory)
    logs = base / ".modelcycle" / "logs"
    if not ((base / "modelcycle.yaml").is_file() or (base / ".modelcycle").is_dir()):
        logs = Path(tempfile.gettempdir()) / f"modelcycle-{os.getuid()}" / "logs"
    path = logs / f"internal-error-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError:
        return None
    return path


def _internal_error(exc: BaseException, directory: str) -> int:
    """Report an unexpected exception in one line (the traceback goes to a file) and return 3."""
    import os
    import traceback

    text = "".join(traceback.format_exception(exc))
    where = _crash_log(directory, text)
    if os.environ.get("MODELCYCLE_DEBUG") == "1" or where is None:
        print(text, end="", file=sys.stderr)
    hint = f"full traceback in {where}" if where else "the traceback is above"
    print(f"internal error: {type(exc).__name__}: {exc} ({hint}; please report it)", file=sys.stderr)
    return EXIT_INTERNAL_ERROR


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (see :data:`EXIT_CODES_HELP`)."""
    from modelcycle.core.errors import ModelcycleError

    directory = "."
    try:
        args = _merge_global_options(build_parser().parse_args(argv))
        directory = args.directory
        return int(args.func(args))
    except ModelcycleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", EXIT_USER_ERROR))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:  # a bug: one line here, the traceback in a file
        return _internal_error(exc, directory)
