"""Runs every lit/filecheck test in tests/filecheck/ as one pytest case, so `make test`
covers them (`lit -v tests/filecheck` runs them directly)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).parent / "filecheck"
CASES = sorted(SUITE.glob("*.mlir"))


def run_lit(test: Path, scratch: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"LAYERLOOM_LIT_OUT": str(scratch)}
    return subprocess.run(
        [sys.executable, "-c", "import lit.main; lit.main.main()", "-v", str(test)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_suite_is_not_empty() -> None:
    assert len(CASES) >= 4


@pytest.mark.parametrize("test", CASES, ids=[c.name for c in CASES])
def test_filecheck(test: Path, tmp_path: Path) -> None:
    result = run_lit(test, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Passed: 1" in result.stdout, result.stdout


def test_wrong_check_line_fails(tmp_path: Path) -> None:
    """The harness catches a CHECK line that does not match (it is not vacuous)."""
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(SUITE / "lit.cfg.py", suite)
    original = (SUITE / "fuse_activation.mlir").read_text()
    text = original.replace('{{.*}}activation = "relu"}', '{{.*}}activation = "clip"}')
    assert text != original
    (suite / "broken.mlir").write_text(text)
    result = run_lit(suite / "broken.mlir", tmp_path / "out")
    assert result.returncode != 0
    assert "Failed: 1" in result.stdout, result.stdout
