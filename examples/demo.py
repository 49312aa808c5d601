"""End-to-end demo (`make demo`): compile the bundled tiny CNN with the `layerloom` driver,
run the build on a seeded input, and check the result against onnxruntime.

    python examples/demo.py --out build/demo

Exit code 0 when layerloom and onnxruntime agree (rtol 1e-4, atol 1e-5), 1 otherwise.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

MODEL = Path(__file__).with_name("tiny_cnn.onnx")
RTOL, ATOL = 1e-4, 1e-5


def layerloom_command() -> list[str]:
    """The `layerloom` script of this interpreter's environment (else the module itself)."""
    script = Path(sys.executable).parent / "layerloom"
    if script.is_file():
        return [str(script)]
    found = shutil.which("layerloom")
    return [found] if found else [sys.executable, "-m", "compiler.cli"]


def layerloom(*args: str) -> None:
    print(f"$ layerloom {shlex.join(args)}", flush=True)
    result = subprocess.run([*layerloom_command(), *args])
    if result.returncode:
        sys.exit(result.returncode)


def onnxruntime_outputs(model_path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def seeded_inputs(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    inputs = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        shape = [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
        inputs[value.name] = rng.standard_normal(shape).astype(np.float32)
    return inputs


def main() -> int:
    parser = argparse.ArgumentParser(description="compile, run and check the bundled tiny CNN")
    parser.add_argument("--out", default="build/demo", help="folder for the build and the input / output files")
    parser.add_argument("--model", default=str(MODEL), help="ONNX model (float inputs) to use instead")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random input")
    args = parser.parse_args()

    out, model_path = Path(args.out), Path(args.model)
    out.mkdir(parents=True, exist_ok=True)
    build, input_file, output_file = out / "build", out / "input.npz", out / "output.npz"

    layerloom("compile", str(model_path), "--target", "reference", "-o", str(build))
    inputs = seeded_inputs(onnx.load(str(model_path)), args.seed)
    np.savez(input_file, **inputs)
    layerloom("run", str(build), "--input", str(input_file), "--output", str(output_file))

    with np.load(output_file) as data:
        got = {k: data[k] for k in data.files}
    want = onnxruntime_outputs(model_path, inputs)
    ok = set(got) == set(want)
    if not ok:
        print(f"output names differ: layerloom {sorted(got)}, onnxruntime {sorted(want)}")
    for name in sorted(set(got) & set(want)):
        if got[name].shape != want[name].shape:
            ok = False
            print(f"output '{name}': shape {got[name].shape}, onnxruntime gives {want[name].shape}")
            continue
        error = float(np.max(np.abs(got[name].astype(np.float64) - want[name]), initial=0.0))
        ok &= bool(np.allclose(got[name], want[name], rtol=RTOL, atol=ATOL))
        print(f"output '{name}' {'x'.join(map(str, want[name].shape))}: max |layerloom - onnxruntime| = {error:.3g}")
    print("OK" if ok else f"MISMATCH (rtol {RTOL}, atol {ATOL})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
