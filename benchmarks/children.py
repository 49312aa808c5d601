"""Measurements in child processes: each benchmark runs its timed work in a fresh Python
whose BLAS thread count is fixed by the environment before NumPy loads (NumPy not imported here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def run_child(script: str, arguments: list[str], threads: int | None = None) -> dict:
    """Run `script --child ARGUMENTS` with `threads` BLAS threads; its last stdout line is its JSON result."""
    env = dict(os.environ)
    if threads is not None:
        env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    done = subprocess.run([sys.executable, script, "--child", *arguments], env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"benchmark child {arguments[:2]} ({threads} threads) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def blas_threads() -> int | None:
    """The BLAS thread count NumPy really uses (threadpoolctl if installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [int(pool["num_threads"]) for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return max(counts) if counts else None
