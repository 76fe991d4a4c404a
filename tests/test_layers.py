"""The layer contracts in pyproject.toml hold (import-linter, the same check `lint-imports` runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", *args], capture_output=True, text=True, timeout=300, cwd=REPO)


def test_every_layer_contract_is_kept() -> None:
    result = _lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and "BROKEN" not in result.stdout, result.stdout


def test_a_broken_contract_is_reported(tmp_path: Path) -> None:
    """The checker really reads our imports: a contract the code breaks on purpose fails."""
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "modelcycle"\n\n'
        '[[tool.importlinter.contracts]]\nname = "the facade may not use the registry"\ntype = "forbidden"\n'
        'source_modules = ["modelcycle.core.lifecycle"]\nforbidden_modules = ["modelcycle.core.registry"]\n'
    )
    result = _lint("--config", str(config))
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "modelcycle.core.lifecycle -> modelcycle.core.registry" in result.stdout
