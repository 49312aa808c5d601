"""lit configuration for the filecheck tests: `// RUN: layerloom-opt %s -p PASS | filecheck %s`.

Run with `lit -v tests/filecheck` (or through pytest: tests/test_filecheck.py). The tools
are looked up on PATH with the running Python's bin folder (the venv's) first.
"""

import os
import shutil
import sys
import tempfile

import lit.formats

config.name = "layerloom"  # noqa: F821 (lit injects `config`)
config.test_format = lit.formats.ShTest(execute_external=False)  # noqa: F821
config.suffixes = [".mlir"]  # noqa: F821
config.test_source_root = os.path.dirname(__file__)  # noqa: F821
config.excludes = ["lit.cfg.py"]  # noqa: F821
# lit's scratch files (Output/, .lit_test_times.txt) go outside the source tree; pytest
# gives each run its own folder so parallel runs do not share them.
config.test_exec_root = os.environ.get("LAYERLOOM_LIT_OUT") or os.path.join(tempfile.gettempdir(), "layerloom-lit")  # noqa: F821

path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
config.environment["PATH"] = path  # noqa: F821
for tool in ("layerloom-opt", "filecheck"):
    if shutil.which(tool, path=path) is None:
        lit_config.fatal(f"'{tool}' not found on PATH; install layerloom with its dev extras (make install)")  # noqa: F821
