"""Test suites shipped to adapter authors: ``from modelcycle.testing import FrameworkConformance``."""

from modelcycle.testing.conformance import FrameworkConformance

__all__ = ["FrameworkConformance"]
