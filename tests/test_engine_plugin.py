"""The external engine example (examples/winograd_engine), as CI checks it: the package is
installed into the environment (by `make install`, as a user would: pip, no layerloom
edits), its own tests pass, the commands of its README print what the README
shows, and every code block of docs/tutorial-new-engine.md is taken verbatim from it."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "examples" / "winograd_engine"
DIST = "layerloom-winograd-engine"
TUTORIAL = ROOT / "docs" / "tutorial-new-engine.md"
FENCE = re.compile(r"^```[\w-]*\n(.*?)^```$", re.S | re.M)


def installed_from_this_checkout() -> bool:
    try:
        url = json.loads(distribution(DIST).read_text("direct_url.json") or "{}").get("url", "")
    except PackageNotFoundError:
        return False
    return bool(url == PLUGIN.as_uri())


@pytest.fixture(scope="module")
def plugin() -> None:
    # `make install` (and so `make test`) installs it before any test starts: installing it
    # here, while other pytest workers already run, would show them the new entry points
    # without the package on their sys.path.
    assert installed_from_this_checkout(), f"install the example first: pip install --no-deps -e {PLUGIN}"


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def test_the_plugins_own_tests_pass(plugin: None) -> None:
    done = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], PLUGIN)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"\b\d+ passed\b", done.stdout) and "skipped" not in done.stdout


def console_sessions(markdown: str) -> list[tuple[str, str]]:
    """(command, expected output) of every `$ ` line in the ```console blocks."""
    sessions = []
    for block in re.findall(r"^```console\n(.*?)^```$", markdown, re.S | re.M):
        for part in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = part.partition("\n")
            sessions.append((command, output))
    return sessions


def test_readme_commands_print_what_it_shows(plugin: None, tmp_path: Path) -> None:
    """Run as from the repository root, but in a scratch folder that sees its examples/:
    what the commands write (build/) stays out of the checkout."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    sessions = console_sessions((PLUGIN / "README.md").read_text())
    assert [shlex.split(command)[:3] for command, _ in sessions] == [
        ["python", "-c", "from compiler.engines import engine_kinds; print(sorted(engine_kinds()))"],
        ["python", "-m", "examples.models"],
        ["python", "-m", "winograd_engine"],
        ["layerloom-opt", "examples/winograd_engine/example.mlir", "-p"],
    ]
    for command, expected in sessions:
        program, *args = shlex.split(command)
        argv = [sys.executable, *args] if program == "python" else [str(Path(sys.executable).with_name(program)), *args]
        done = run(argv, tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout == expected, command


def test_tutorial_code_blocks_come_from_the_example_files() -> None:
    sources = [p.read_text() for p in sorted(PLUGIN.rglob("*")) if p.suffix in {".py", ".toml", ".hw", ".mlir", ".md"}]
    blocks = FENCE.findall(TUTORIAL.read_text())
    assert len(blocks) >= 10
    for block in blocks:
        assert any(block in source for source in sources), f"not in examples/winograd_engine:\n{block}"
