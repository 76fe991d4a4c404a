"""CLI subcommands of governance: govern, inventory, facts, factsheet (argparse only at import).

Each command is a thin call of a :class:`~modelcycle.core.lifecycle.UseCase` method (``govern``,
``inventory``, ``facts``, ``set_fact``, ``factsheet``) plus printing; ``cleanup --governance`` is
the CLI's own ``cleanup`` command mapping to ``UseCase.cleanup(governance=True)``.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from modelcycle.core.governance.stages import STAGES


def _parse_value(text: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, int, float, bool)) or value is None else text


def add_commands(commands: Any, use_case: Callable[[Any], Any], print_json: Callable[[Any], None]) -> None:
    """Add the governance subcommands to the ``modelcycle`` parser."""

    def cmd_govern(args: argparse.Namespace) -> int:
        case = use_case(args)
        before = case.state().stages.get("govern")
        result = case.govern(stage=args.stage, force=args.force, reason=args.reason)
        if args.json:
            print_json(result)
            return 0
        if before and before.status == "done" and before.outputs == result and args.stage is None:
            print("already governed (the deployed endpoint is recorded); pass --force to record it again")
        print(f"Model asset {result['asset_id']} (run {result['run_id']}) for deployment [{result['endpoint']}]")
        print(f"stage: {result['stage']}   backend: {result['backend']}")
        remote = result.get("remote") or {}
        if remote.get("asset_id"):
            print(f"External model asset saved successfully under asset_id {remote['asset_id']} and catalog {remote.get('catalog_id')}")
            if remote.get("model_entry_id"):
                version = f" (version {remote['version']})" if remote.get("version") else ""
                if remote.get("linked"):
                    print(f"Successfully finished linking Model {remote['asset_id']} to Model Entry {remote['model_entry_id']}{version}")
                else:
                    print(f"tracked in Model Entry {remote['model_entry_id']}{version}; environment {remote.get('environment')}")
            if remote.get("facts_skipped"):
                print(f"custom facts without a definition in the catalog (not sent): {', '.join(remote['facts_skipped'])}")
        return 0

    def cmd_inventory(args: argparse.Namespace) -> int:
        listing = use_case(args).inventory()
        if args.json:
            print_json(listing)
            return 0
        from modelcycle.cli.tables import Column, print_table

        if not listing:
            print("the inventory is empty: run 'modelcycle train'")
        for entry in listing:
            rows = []
            for asset in entry["assets"]:
                metrics = asset["metrics"]
                active = [d["name"] for d in asset["deployments"] if not d["removed_at"]]
                gone = [d["name"] for d in asset["deployments"] if d["removed_at"]]
                rows.append((
                    asset["run_id"][:8], asset["stage"], (asset["created_at"] or "")[5:16].replace("T", " "),
                    f"{metrics['test_accuracy']:.4f}" if "test_accuracy" in metrics else "",
                    f"{metrics['test_loss']:.4f}" if "test_loss" in metrics else "",
                    ", ".join(active + [f"{n} (removed)" for n in gone]) or "—",
                ))
            title = f"use case {entry['name']}" + (f" — {entry['description']}" if entry.get("description") else "")
            print_table(title, ("run", "stage", "trained", Column("accuracy", justify="right"),
                                Column("loss", justify="right"), "endpoints"), rows)
        return 0

    def cmd_facts(args: argparse.Namespace) -> int:
        case = use_case(args)
        if args.facts_command == "set":
            record = case.set_fact(args.key, _parse_value(args.value), run=args.run)
            if args.json:
                print_json(record)
            else:
                print(f"fact {record['key']} = {record['value']!r} set on run {record['run_id']} by {record['who']} at {record['at']}")
                remote = record.get("remote") or {}
                if record["key"] in (remote.get("facts_set") or []):
                    print(f"sent to the remote model asset {remote.get('asset_id')}")
                if record["key"] in (remote.get("facts_skipped") or []):
                    print(f"note: the catalog defines no custom fact '{record['key']}': kept locally, not sent to the remote asset")
            return 0
        listing = case.facts(run=args.run)
        if args.json:
            print_json(listing)
        elif not listing["facts"]:
            print(f"no custom facts on run {listing['run_id']}: modelcycle facts set KEY VALUE")
        else:
            for key, fact in listing["facts"].items():
                print(f"{key} = {fact['value']!r}   ({fact['who']}, {fact['at']})")
        return 0

    def cmd_factsheet(args: argparse.Namespace) -> int:
        result = use_case(args).factsheet(format=args.format, output=args.output, run=args.run)
        if "text" in result:
            print(result["text"], end="")
            return 0
        print(f"wrote {result['path']} (run {result['run_id']}, {result['format']})")
        for path in result["images"].values():
            print(f"wrote {path}")
        error = result.get("evaluation", {}).get("error")
        if error:
            print(f"note: no confusion matrix: {error}")
        return 0

    govern = commands.add_parser("govern", help="record the deployment on its model asset and move its lifecycle stage")
    govern.add_argument("--stage", choices=STAGES, help="move the deployed asset to this stage")
    govern.add_argument("--reason", metavar="TEXT", help="why (kept in the audit trail; required with --force)")
    govern.add_argument("--force", action="store_true", help="allow skipping a stage or going back; record again")
    govern.add_argument("--json", action="store_true")
    govern.set_defaults(func=cmd_govern)

    inventory = commands.add_parser("inventory", help="list use cases → model assets with stage, metrics, deployments")
    inventory.add_argument("--json", action="store_true", help="every asset with lineage, stage history and facts")
    inventory.set_defaults(func=cmd_inventory)

    facts = commands.add_parser("facts", help="custom facts of a model asset")
    facts_commands = facts.add_subparsers(dest="facts_command", required=True, metavar="ACTION")
    facts_set = facts_commands.add_parser("set", help="set KEY to VALUE (numbers and true/false are typed)")
    facts_set.add_argument("key", metavar="KEY")
    facts_set.add_argument("value", metavar="VALUE")
    facts_list = facts_commands.add_parser("list", help="show the current custom facts")
    for sub in (facts_set, facts_list):
        sub.add_argument("--run", metavar="ID", help="the run's asset (a prefix is enough); default: deployed or latest")
        sub.add_argument("--json", action="store_true")
    facts.set_defaults(func=cmd_facts)

    factsheet = commands.add_parser("factsheet", help="render a model asset's factsheet (HTML, Markdown or JSON)")
    factsheet.add_argument("--run", metavar="ID", help="the run's asset (a prefix is enough); default: deployed or latest")
    factsheet.add_argument("--format", choices=("html", "md", "json"), default="html")
    factsheet.add_argument("-o", "--output", metavar="FILE", help="default: factsheet-<run>.<format> in the use case; '-' prints JSON")
    factsheet.set_defaults(func=cmd_factsheet)
