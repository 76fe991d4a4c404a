"""The lifecycle's stages: what each needs, the state-table flag it sets, and the order ``run``
goes through them. A leaf module (no imports), so the CLI reads it without loading the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Stage", "STAGES", "PIPELINE", "DEFAULT_UNTIL"]


@dataclass(frozen=True)
class Stage:
    """A lifecycle stage: its name, the stages it needs, and its state-table flag."""

    name: str
    requires: tuple[str, ...]
    flag: str


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage("train", (), "trained"),
        Stage("deploy", ("train",), "deployed"),
        Stage("govern", ("deploy",), "governed"),
        Stage("monitor", ("deploy",), "monitored"),
    )
}
#: The stages ``run`` goes through, in order (every stage of :data:`STAGES`).
PIPELINE: tuple[str, ...] = ("train", "deploy", "govern", "monitor")
#: Where ``run`` stops unless told otherwise, in the API and the CLI alike.
DEFAULT_UNTIL = "deploy"
