"""CLI subcommands of the SageMaker platform (argparse only at import time)."""

from __future__ import annotations

from typing import Any, Callable


def add_commands(commands: Any, use_case: Callable[[Any], Any], print_json: Callable[[Any], None]) -> None:
    """Add ``pipeline export`` and ``import-signature`` to the ``modelcycle`` parser."""
