"""HLS benchmark (issue 6): the accelerators' data types, STANN's MLP, MobileNetV1's C simulation.

- The digits CNN and MLP (examples/train_digits.py) as int8, float and half accelerators
  (SESL, 4 PEs per layer), run in C simulation on the 400 test images: top-1, agreement with
  the float reference's top-1, and the largest logit error against the float reference
  executor. int8 is quantized on the first 1200 training images (the quantize pass's defaults:
  mse calibration, bias correction, fixed-point) and is
  also compared bit for bit with the reference executor on its quantized program.
- STANN's arc-detection MLP (examples/stann_arc/run.py): latency estimates, float and half,
  1 and 4 PEs.
- MobileNetV1 (width 0.25, 128 x 128) through the driver in each architecture: compile, the
  first `run` (g++ build of the C simulation and the run), bit-exact against `--with reference`.

    .venv/bin/python benchmarks/hls_dtypes.py               # print the tables
    .venv/bin/python benchmarks/hls_dtypes.py --write-docs  # and replace '## HLS' in docs/performance.md
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: benchmarks/ is sys.path[0], not the repository
    sys.path.insert(0, str(ROOT))
if str(ROOT / "examples") not in sys.path:
    sys.path.insert(0, str(ROOT / "examples"))

from backends.hls.emit import emit_project  # noqa: E402
from backends.hls.error_bound import error_bound  # noqa: E402
from backends.hls.project import HlsProject  # noqa: E402
from backends.hls.target import FLOAT_PIPELINE  # noqa: E402
from backends.reference import execute  # noqa: E402
from benchmarks.common import (  # noqa: E402
    machine_info,
    markdown_table,
    section_main,  # noqa: E402
)
from compiler import import_onnx, quantize  # noqa: E402
from compiler.hw import load_target  # noqa: E402
from compiler.pipeline import run_pipeline  # noqa: E402
from compiler.program import Program  # noqa: E402

SECTION = "## HLS"
MODELS = ("cnn", "mlp")
DTYPES = ("int8", "float", "half")
CALIBRATION_IMAGES = 1200
PES = 4
OUT = ROOT / "build" / "bench_hls"


@dataclass
class Accuracy:
    model: str
    dtype: str
    top1: float
    float_top1: float
    agreement: float  # same top-1 as the float reference
    max_error: float  # largest |logit - float reference logit|
    bound: float | None  # float / half: the largest probabilistic bound (error_bound) over the test images
    bit_exact: bool | None  # int8: equal to the reference executor on the quantized program
    csim_seconds: float  # g++ build and the run of 400 images


def per_image(program: Program, x: np.ndarray) -> np.ndarray:
    """The reference executor on a batch-1 program, image by image."""
    (name,), (out,) = program.input_names, program.output_names
    return np.concatenate([execute(program, {name: x[i:i + 1]})[out] for i in range(len(x))])


def digits_accuracy(kind: str) -> list[Accuracy]:
    import train_digits

    x_train, _, x_test, y_test = train_digits.digits_split(flat=kind == "mlp")
    program = run_pipeline(import_onnx(ROOT / "examples" / train_digits.MODELS[kind]), FLOAT_PIPELINE)
    reference = per_image(program, x_test)
    float_top1 = float(np.mean(reference.argmax(axis=1) == y_test))
    rows = []
    for dtype in DTYPES:
        source = program
        if dtype == "int8":
            source = quantize(program.clone(), [{"input": x_train[:CALIBRATION_IMAGES]}])
        lowered = source.clone()
        run_pipeline(lowered, f"lower-to-hls{{arch=sesl pes={PES} dtype={dtype}}}")
        folder = OUT / f"digits_{kind}_{dtype}"
        emit_project(lowered.module, lowered.weights, folder, target=load_target("zcu102"), source=kind)
        start = time.perf_counter()
        logits = HlsProject(folder).predict(x_test)
        seconds = time.perf_counter() - start
        bound = None if dtype == "int8" else float(error_bound(program, x_test, dtype, probabilistic=True).max())
        rows.append(Accuracy(
            kind, dtype, float(np.mean(logits.argmax(axis=1) == y_test)), float_top1,
            float(np.mean(logits.argmax(axis=1) == reference.argmax(axis=1))), float(np.abs(logits - reference).max()),
            bound, bool(np.array_equal(logits, per_image(source, x_test))) if dtype == "int8" else None, seconds))
    return rows


def accuracy_table(rows: list[Accuracy]) -> str:
    return markdown_table(
        ["model", "type", "top-1", "float reference", "same top-1 as float", "max abs logit error",
         "bound (probabilistic)", "C simulation (build + 400 images)"],
        [[f"digits {r.model}", r.dtype, f"{r.top1:.4f}", f"{r.float_top1:.4f}", f"{r.agreement:.4f}",
          f"{r.max_error:.2e}", "bit-exact vs qnn reference" if r.bit_exact else ("NOT bit-exact" if r.bit_exact is False
                                                                                  else f"{r.bound:.2e}"),
          f"{r.csim_seconds:.1f} s"] for r in rows])


def stann_table() -> str:
    from examples.stann_arc import run

    return run.table(run.run(OUT / "stann_arc"))


def mobilenet_table() -> str:
    """Compile, first run (g++ + run) and bit-exactness of MobileNetV1-0.25 at 128 x 128 per architecture."""
    import json

    import onnx

    from compiler import cli
    from examples.models import build

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        onnx.save(build("mobilenet_v1", 0.25, 128), folder / "mbv1.onnx")
        rng = np.random.default_rng(0)
        np.savez(folder / "calib.npz", input=rng.normal(size=(4, 3, 128, 128)).astype(np.float32))
        np.savez(folder / "x.npz", input=rng.normal(size=(1, 3, 128, 128)).astype(np.float32))
        for arch in ("sesl", "seml", "hybrid"):
            out = folder / arch
            timings = []
            for argv in (["compile", str(folder / "mbv1.onnx"), "--target", "hls", "--arch", arch, "--calib",
                          str(folder / "calib.npz"), "-o", str(out)],
                         ["run", str(out), "--input", str(folder / "x.npz"), "--output", str(folder / "csim.npz")],
                         ["run", str(out), "--input", str(folder / "x.npz"), "--output", str(folder / "ref.npz"),
                          "--with", "reference"]):
                start = time.perf_counter()
                if cli.main(argv) != 0:
                    raise RuntimeError(f"layerloom {' '.join(argv)} failed")
                timings.append(time.perf_counter() - start)
            exact = np.array_equal(np.load(folder / "csim.npz")["output"], np.load(folder / "ref.npz")["output"])
            report = json.loads((out / "report.json").read_text())
            rows.append([arch, f"{timings[0]:.1f} s", f"{timings[1]:.1f} s", f"{timings[2]:.1f} s",
                         "yes" if exact else "NO", f"{report['throughput_fps']:,.0f}"])
    return markdown_table(["arch", "compile", "first run (g++ build + C simulation)", "run --with reference",
                           "bit-exact", "estimated images/s"], rows)


def section() -> str:
    info = machine_info()
    accuracy = accuracy_table([row for kind in MODELS for row in digits_accuracy(kind)])
    return "\n".join([
        SECTION,
        "",
        "Generated by `benchmarks/hls_dtypes.py` (`--write-docs`) on "
        f"{info['date']} on {info['cpu']} ({info['cores']} cores); C simulations built by g++ -O2 (docs/hls.md).",
        "",
        "### Data types on the digits models (SESL, 4 PEs per layer, 400 test images)",
        "",
        "The float reference is the reference executor on the float program (batch norms folded,",
        "activations fused). int8 is quantized on the first 1200 training images (the `quantize`",
        "pass's defaults: mse calibration, bias correction, fixed-point multipliers, per-channel",
        "weights); float and half compile the float program",
        "(half: weights rounded with NumPy's float16, every operation rounded to half). The bound is",
        "the largest per-value probabilistic bound of `backends/hls/error_bound.py` over the test",
        "images: what the generated testbenches check (the worst-case bound is far looser).",
        "",
        accuracy,
        "",
        "### STANN's arc-detection MLP (examples/stann_arc, latency estimates)",
        "",
        "320 inputs (160 samples, 128 + 32 FFT magnitudes), hidden 64-32-16 (a stated choice), one",
        "output; SESL, a dense layer's PEs are its unrolled output lanes. Our speed-up is the",
        "report's loop-trip-count model: each reduction loop runs at II = the adder's latency",
        "(float 4, half 3: the templates keep one accumulator per PE and do not interleave partial",
        "sums), so a layer costs K + (N / PE) K II + N cycles and 4 PEs divide the dominant term by",
        "4. STANN's ratios come from synthesized designs, whose limits a trip-count model does not",
        "see; we cannot tell from their table which ones set their half ratio.",
        "",
        stann_table(),
        "",
        "### MobileNetV1 (width 0.25, 128 x 128) in C simulation",
        "",
        "84 layers, 0.48 M parameters, 14 M MACs, random weights; quantized on four random images;",
        "`layerloom compile --target hls --arch ARCH`, then `layerloom run` (its first call builds",
        "the C simulation with g++) and `run --with reference`, one image. Times in seconds.",
        "",
        mobilenet_table(),
        "",
    ])  # fmt: skip


def main() -> int:
    return section_main(__doc__.splitlines()[0], section, SECTION)


if __name__ == "__main__":
    sys.exit(main())
