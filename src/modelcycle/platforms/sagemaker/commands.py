"""CLI subcommands of the SageMaker platform (argparse only at import time).

``pipeline export [--format asl|json] [-o FILE] [--graph PNG] [--upload]`` writes the use case's
train → model → endpoint config → endpoint Step Functions state machine;
``pipeline create [--workflow-role ARN] [--upload]`` creates (or updates) it on AWS Step Functions,
``pipeline execute [--name NAME] [--wait [--timeout S]]`` starts an execution (prints its ARN),
``pipeline status [--limit N]`` lists the newest executions, ``pipeline delete`` removes it;
``import-signature model_signature.json [-o DIR]`` converts an mlmonitor use case.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable


def cmd_pipeline_export(args: argparse.Namespace, use_case: Callable[[Any], Any]) -> int:
    result = use_case(args).pipeline(format=args.format, graph=args.graph, workflow_role=args.workflow_role,
                                     upload=args.upload)
    text = json.dumps(result["document"], indent=2) + "\n"
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(f"wrote {args.output} ({'ASL definition' if args.format == 'asl' else 'create-state-machine input'}, "
              f"{result['states']} states)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if result["graph"]:
        print(f"wrote {result['graph']}", file=sys.stderr)
    for channel, uri in result["uploaded"].items():
        print(f"uploaded {channel}: {uri}", file=sys.stderr)
    return 0


def cmd_pipeline_run(args: argparse.Namespace, use_case: Callable[[Any], Any], print_json: Callable[[Any], None]) -> int:
    """``pipeline create | execute | status | delete`` on AWS Step Functions."""
    from modelcycle.platforms.sagemaker import workflow

    config = use_case(args).config
    action = args.pipeline_command
    if action == "create":
        result = workflow.create(config, workflow_role=args.workflow_role, upload=args.upload)
        for channel, uri in result["uploaded"].items():
            print(f"uploaded {channel}: {uri}", file=sys.stderr)
        print(f"{result['action']} state machine {result['name']} ({result['states']} states)", file=sys.stderr)
        print(result["arn"])
    elif action == "execute":
        result = workflow.execute(config, name=args.name, wait=args.wait, timeout_s=args.timeout)
        print(result["arn"])
        if args.wait:
            print(f"execution {result['name']}: {result['status']}", file=sys.stderr)
    elif action == "status":
        print_json(workflow.status(config, limit=args.limit))
    else:
        result = workflow.delete(config)
        print(f"deleted state machine {result['name']}" if result["deleted"]
              else f"no state machine {result['name']}: nothing to delete", file=sys.stderr)
    return 0


def cmd_import_signature(args: argparse.Namespace) -> int:
    from modelcycle.core.config import load_config
    from modelcycle.core.errors import ConfigError
    from modelcycle.platforms.sagemaker.signature import import_signature

    target, result = import_signature(Path(args.signature), Path(args.output) if args.output else None,
                                      force=args.force, platform=args.platform)
    print(f"wrote {target} (use case '{result.config['name']}', framework {result.config['framework']})")
    if result.kept:
        print("kept (script mode):")
        for line in result.kept:
            print(f"  - {line}")
    if result.dropped:
        print("dropped:")
        for line in result.dropped:
            print(f"  - {line}")
    if result.notes:
        print("notes:")
        for line in result.notes:
            print(f"  - {line}")
    try:
        load_config(target.parent)
    except ConfigError as exc:
        print(f"warning: the written config does not validate yet:\n{exc}", file=sys.stderr)
        return 1
    print("the config validates; set training.role (or MODELCYCLE_SAGEMAKER_ROLE) before training on SageMaker")
    return 0


def _add_run_commands(actions: Any, run: Callable[[argparse.Namespace], int]) -> None:
    """``pipeline create | execute | status | delete`` (AWS Step Functions calls)."""
    create = actions.add_parser(
        "create", help="create (or update) the state machine on AWS Step Functions",
        description="Create the exported state machine on AWS Step Functions, or update it when it exists.",
    )
    create.add_argument("--workflow-role", metavar="ARN", default=None,
                        help="the role Step Functions assumes (default: training.workflow_role or "
                             "MODELCYCLE_SAGEMAKER_WORKFLOW_ROLE)")
    create.add_argument("--upload", action="store_true", help="also upload the dataset channels and source dir it reads")
    execute = actions.add_parser("execute", help="start an execution of the state machine; prints its ARN")
    execute.add_argument("--name", default=None,
                         help="the execution's name, which names the training job, model and endpoint "
                              "(default: <use case>-<UTC timestamp>)")
    execute.add_argument("--wait", action="store_true",
                         help="wait until the execution ends; exit 2 with its error and cause unless it SUCCEEDED")
    execute.add_argument("--timeout", type=float, default=None, metavar="S", help="with --wait: give up after S seconds")
    status = actions.add_parser("status", help="show the state machine's newest executions (JSON)")
    status.add_argument("--limit", type=int, default=5, metavar="N", help="how many executions (default 5)")
    delete = actions.add_parser("delete", help="delete the state machine")
    for parser in (create, execute, status, delete):
        parser.set_defaults(func=run)


def add_commands(commands: Any, use_case: Callable[[Any], Any], print_json: Callable[[Any], None]) -> None:
    """Add ``pipeline export | create | execute | status | delete`` and ``import-signature`` to the parser."""
    pipeline = commands.add_parser("pipeline", help="export, create and run the SageMaker training pipeline (Step Functions)")
    actions = pipeline.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export", help="write the train → model → endpoint config → endpoint state machine",
        description="Write the use case's SageMaker workflow as an AWS Step Functions state machine.",
    )
    export.add_argument("--format", choices=("asl", "json"), default="asl",
                        help="asl: the Amazon States Language definition (default); json: the input of "
                             "'aws stepfunctions create-state-machine --cli-input-json'")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    export.add_argument("--graph", metavar="PNG", help="also draw the state machine to PNG")
    export.add_argument("--workflow-role", metavar="ARN", default=None,
                        help="the Step Functions execution role (--format json; default: a placeholder)")
    export.add_argument("--upload", action="store_true",
                        help="upload the dataset channels and the source dir the definition reads (AWS calls)")
    export.set_defaults(func=lambda args: cmd_pipeline_export(args, use_case))
    _add_run_commands(actions, lambda args: cmd_pipeline_run(args, use_case, print_json))

    signature = commands.add_parser("import-signature", help="convert an mlmonitor model_signature.json to modelcycle.yaml")
    signature.add_argument("signature", metavar="PATH", help="the model_signature.json")
    signature.add_argument("-o", "--output", metavar="DIR", help="directory for modelcycle.yaml (default: beside PATH)")
    signature.add_argument("--force", action="store_true", help="overwrite an existing modelcycle.yaml")
    signature.add_argument("--platform", choices=("sagemaker", "local"), default="sagemaker",
                           help="where the use case trains and serves (default: sagemaker, mlmonitor's runtime)")
    signature.set_defaults(func=cmd_import_signature)
