"""``modelcycle transform``: batch scoring into a JSON Lines file (see :mod:`modelcycle.core.transform`).

The progress bar (rich, on stderr) is drawn on a terminal and never under ``--json``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["add_commands"]


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` callback drawing a rich bar on stderr, or ``None``."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(file=sys.stderr), transient=True)
    task = bar.add_task("transform", total=None)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)


def cmd_transform(args: argparse.Namespace, use_case: Callable[[Any], Any], print_json: Callable[[Any], None]) -> int:
    with _progress_bar(not args.json and sys.stderr.isatty()) as progress:
        result = use_case(args).transform(
            args.output, input=args.input, split=args.split, batch_size=args.batch_size, log_payload=args.log_payload,
            force=args.force, skip_invalid=args.skip_invalid, progress=progress, platform=args.platform,
        )
    if args.json:
        print_json(result)
        return 0
    rate = result["records_per_second"]
    print(f"scored {result['records']} records from {len(result['sources'])} source(s) in {result['seconds']:.2f}s "
          f"({rate:.0f} records/s) with run {result['run_id']}")
    if result.get("job"):
        print(f"{result['platform']} transform job {result['job']['job_name']}: {result['job']['input_uri']} -> "
              f"{result['job']['output_uri']}")
    print(f"wrote {result['output']}")
    for problem in result["invalid"]:
        print(f"skipped {problem}")
    if result["deployment_id"]:
        print(f"{result['logged']} payload records stored for endpoint {result['deployment_id']}")
    return 0


def add_commands(commands: Any, use_case: Callable[[Any], Any], print_json: Callable[[Any], None]) -> None:
    """Add ``transform`` to the ``modelcycle`` parser."""
    parser = commands.add_parser(
        "transform", help="score a data set split or a folder of .npy/.jsonl files (local or s3://) in-process or as a "
                         "SageMaker batch job into a JSON Lines file")
    parser.add_argument("--input", metavar="PATH",
                        help="a folder of .npy files (an array of records, or one record) and .jsonl files (one "
                             "request document per line), one such file, or an s3://bucket/prefix/ of them")
    parser.add_argument("--split", choices=("test", "train"), help="score this split of the use case's data set")
    parser.add_argument("--output", required=True, metavar="PATH",
                        help="the JSON Lines file to write (or an s3://bucket/key object)")
    parser.add_argument("--platform", metavar="NAME",
                        help="where to score: 'local' in this process, 'sagemaker' as a SageMaker batch transform "
                             "job (default: serving.platform)")
    parser.add_argument("--batch-size", type=int, default=1024, metavar="N", help="records per forward pass (default 1024)")
    parser.add_argument("--log-payload", action="store_true",
                        help="store the records as payload of the deployed endpoint (evaluate sees them)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="score the valid records and skip malformed ones (default: write nothing)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=lambda args: cmd_transform(args, use_case, print_json))
