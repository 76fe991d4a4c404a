"""How fast the command line answers: ``modelcycle --help`` (builds every parser, imports every
platform, governance and monitoring plugin for its ``add_commands``) against a bare
``python -c pass`` in the same interpreter, interleaved over several rounds. Goal: help under
0.5 s."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
    for _ in range(rounds):
        for name, command in commands.items():  # interleaved: A B C A B C ...
            times[name].append(_seconds(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "rounds": rounds,
        "median_s": medians,
        "max_s": {name: max(values) for name, values in times.items()},
        "help_goal_s": 0.5,
        "help_met": medians["modelcycle_help"] < 0.5,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
