"""How fast the command line answers: ``modelcycle --help`` (builds every parser, imports every
platform, governance and monitoring plugin for its ``add_commands``) against a bare
``python -c pass`` in the same interpreter, over several rounds whose order alternates (forward,
then reversed, …). Goal: help under 0.5 s. ``run`` returns the raw seconds per round:
``{"rounds", "python_pass_s", "modelcycle_help_s", "modelcycle_plugins_s"}``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import alternating_order  # noqa: E402

_BIN = Path(sys.executable).parent


def _seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def run(rounds: int = 15) -> dict[str, Any]:
    commands = {
        "python_pass": [sys.executable, "-c", "pass"],
        "modelcycle_help": [str(_BIN / "modelcycle"), "--help"],
        "modelcycle_plugins": [str(_BIN / "modelcycle"), "plugins", "--json"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for order in alternating_order(rounds, tuple(commands)):  # A B C, C B A, ...
        for name in order:
            times[name].append(_seconds(commands[name]))
    return {"rounds": rounds, **{f"{name}_s": values for name, values in times.items()}}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
