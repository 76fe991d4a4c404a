"""Lifecycle stages of a model asset: develop → test → validate → operate.

The names are AI Factsheets' (``ModelEntryContainerType``): a trained model starts in *develop*,
its first deployment moves it to *test*, a reviewer moves it to *validate*, then *operate*. A move
goes one stage forward; skipping ahead or going back needs ``force`` and a reason.
"""

from __future__ import annotations

from modelcycle.core.governance.errors import TransitionError

__all__ = ["STAGES", "check_transition", "allowed_next"]

STAGES: tuple[str, ...] = ("develop", "test", "validate", "operate")


def allowed_next(current: str) -> list[str]:
    """The stages ``current`` may move to without ``force``."""
    index = STAGES.index(current)
    return list(STAGES[index + 1 : index + 2])


def check_transition(current: str, target: str, force: bool = False, reason: str | None = None) -> None:
    """Refuse an invalid move with a message naming the allowed next stages.

    Raises:
        TransitionError: ``target`` is not a stage, skips ahead or goes back without ``force``,
            or a forced move has no reason.
    """
    if target not in STAGES:
        raise TransitionError(f"unknown stage '{target}'; stages are: {' → '.join(STAGES)}")
    if target == current:
        return
    following = allowed_next(current)
    if target in following:
        return
    direction = "back" if STAGES.index(target) < STAGES.index(current) else "ahead, skipping a stage"
    allowed = ", ".join(following) if following else f"none ({current} is the last stage)"
    if not force:
        raise TransitionError(
            f"cannot move from {current} to {target} ({direction}); allowed next stage: {allowed}. "
            f"Pass --force with --reason to move anyway"
        )
    if not (reason and reason.strip()):
        raise TransitionError(f"a forced move from {current} to {target} needs a reason: pass --reason TEXT")
