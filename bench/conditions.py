"""The conditions a benchmark ran under, recorded beside its raw results in ``results.json``.

:func:`machine` describes the machine and software (no heavy import: versions come from the
installed distributions' metadata); :func:`load_average` is the 1-, 5- and 15-minute load
average, taken at the start and at the end of each benchmark, which shows how busy the shared
machine was while it ran.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any


def utc_now() -> str:
    """The current UTC time as ``YYYY-MM-DD HH:MM UTC``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else ``platform.processor()``, else "unknown")."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def load_average() -> list[float]:
    """``[1 min, 5 min, 15 min]`` load average, rounded to 2 decimals."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """Cores, CPU model, Python, torch and TensorFlow versions (None when not installed)."""
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "torch": version("torch"),
        "tensorflow": version("tensorflow") or version("tensorflow-cpu"),
    }
