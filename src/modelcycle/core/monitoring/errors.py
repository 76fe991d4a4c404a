"""Errors of the monitoring subsystem (all are :class:`ModelcycleError`, so the CLI reports them)."""

from __future__ import annotations

from typing import Any

from modelcycle.core.errors import ModelcycleError

__all__ = ["MonitoringError", "InsufficientDataError", "UnknownScoringIdError", "ThresholdViolationError"]


class MonitoringError(ModelcycleError):
    """A monitoring operation cannot run: no subscription, store unreachable, bad feedback, ..."""


class InsufficientDataError(MonitoringError):
    """A monitor has fewer records than its minimum (``min_feedback_data_size``, ``min_samples``)."""

    def __init__(self, monitor: str, have: int, need: int, message: str) -> None:
        super().__init__(message)
        self.monitor, self.have, self.need = monitor, have, need


class UnknownScoringIdError(MonitoringError):
    """Feedback names scoring ids that are not in the payload log."""

    def __init__(self, unknown: list[str], deployment_id: str) -> None:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        super().__init__(
            f"{len(unknown)} unknown scoring_id(s): {shown} — not in the payload log of deployment "
            f"'{deployment_id}' (never scored there, or not sampled)"
        )
        self.unknown = unknown


class ThresholdViolationError(MonitoringError):
    """``evaluate(fail_on_violation=True)`` found a metric beyond its threshold."""

    def __init__(self, measurements: list[dict[str, Any]]) -> None:
        violations = [
            f"{m['monitor']}.{v['metric_id']} = {v['value']:.4g} ({v['type']} {v['limit']:g})"
            for m in measurements for v in m.get("violations", [])
        ]
        super().__init__("threshold violated: " + "; ".join(violations))
        self.measurements = measurements
