"""The pluggy markers: every plugin writes ``from modelcycle import hookimpl``."""

from __future__ import annotations

import pluggy

PROJECT = "modelcycle"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "hookspec", "hookimpl"]
