"""The facade exports every type a plugin author touches, lazily (nothing heavy on import)."""

from __future__ import annotations

import json
import subprocess
import sys

import modelcycle


def test_every_exported_name_resolves() -> None:
    for name in modelcycle.__all__:
        assert getattr(modelcycle, name) is not None, name


def test_adapter_types_are_the_cores_own() -> None:
    from modelcycle.core.datasets import Dataset, Split
    from modelcycle.core.plugin_types import FrameworkInfo
    from modelcycle.core.training import TrainingContext, TrainingReporter, TrainingResult

    assert (modelcycle.TrainingResult, modelcycle.TrainingContext, modelcycle.TrainingReporter) == (
        TrainingResult, TrainingContext, TrainingReporter)
    assert (modelcycle.Dataset, modelcycle.Split, modelcycle.FrameworkInfo) == (Dataset, Split, FrameworkInfo)


def test_importing_the_facade_loads_no_framework() -> None:
    probe = ("import modelcycle, sys, json; "
             "print(json.dumps([m for m in ('torch', 'tensorflow', 'mlflow', 'numpy') if m in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
