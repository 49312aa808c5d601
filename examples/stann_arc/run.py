"""STANN's arc-detection MLP as HLS accelerators: float and half, 1 and 4 PEs per layer.

    .venv/bin/python examples/stann_arc/run.py [--out build/stann_arc]

For each data type and PE count: `lower-to-hls{arch=sesl pes=P dtype=D}` (one kernel per
layer; a dense layer's PEs are its unrolled output lanes), the HLS project, its C simulation
on synthesised current windows against the reference executor (within the probabilistic
error bound of backends/hls/error_bound.py), and the latency estimate of report.json. The
speed-up of 4 PEs over 1 is printed beside the ratio STANN published for its own templates
(about 3.2x in float, 1.7x in half).

Where our ratio comes from: the report counts loop trip counts. A dense layer reads its K
inputs, then computes its N outputs in blocks of PE; each block is a reduction over K whose
accumulator add (float: 4 cycles, half: 3, as assumed in backends/hls/report.py) must finish
before the next iteration adds to it. Our template keeps one accumulator per PE and does not
interleave partial sums, so that loop runs at II = the adder's latency, and a layer costs
K + (N / PE) * K * II + N cycles: the reduction dominates, and 4 PEs cut it by 4.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: examples/stann_arc/ is sys.path[0], not the repository
    sys.path.insert(0, str(ROOT))

from backends.hls.emit import emit_project  # noqa: E402
from backends.hls.error_bound import error_bound  # noqa: E402
from backends.hls.project import HlsProject  # noqa: E402
from backends.hls.target import FLOAT_PIPELINE  # noqa: E402
from backends.reference import execute  # noqa: E402
from compiler.hw import load_target  # noqa: E402
from compiler.onnx_import import import_onnx  # noqa: E402
from compiler.pipeline import run_pipeline  # noqa: E402
from compiler.program import Program  # noqa: E402
from examples.stann_arc.model import INPUT_NAME, OUTPUT_NAME, build_model, synthesize_inputs  # noqa: E402

DTYPES = ("float", "half")
PES = (1, 4)
STANN_SPEEDUP = {"float": 3.2, "half": 1.7}  # 4 PEs over 1, STANN's published table
HW = "zcu102"


@dataclass
class Variant:
    dtype: str
    pes: int
    latency_cycles: int
    period_cycles: int
    dsp: int
    lut: int
    max_error: float
    tolerance: float  # the largest per-value bound the C simulation was checked against


def float_program(seed: int = 0) -> Program:
    """The MLP imported from ONNX, activations fused (what `--target hls --dtype float` compiles)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "stann_arc.onnx"
        onnx.save(build_model(seed), path)
        program = import_onnx(str(path))
    run_pipeline(program, FLOAT_PIPELINE)
    return program


def reference(program: Program, x: np.ndarray) -> np.ndarray:
    return np.concatenate([execute(program, {INPUT_NAME: x[i:i + 1]})[OUTPUT_NAME] for i in range(len(x))])


def build_variant(program: Program, x: np.ndarray, y: np.ndarray, dtype: str, pes: int, out: Path) -> Variant:
    """Lower, emit, C-simulate and estimate one accelerator."""
    lowered = program.clone()
    run_pipeline(lowered, f"lower-to-hls{{arch=sesl pes={pes} dtype={dtype}}}")
    tolerance = error_bound(program, x, dtype, probabilistic=True)
    folder = out / f"{dtype}_pe{pes}"
    emit_project(lowered.module, lowered.weights, folder, test_inputs=x, test_outputs=y, test_tolerance=tolerance,
                 target=load_target(HW), source="stann_arc.onnx")
    error = np.abs(HlsProject(folder).predict(x) - y)
    if not (error <= tolerance).all():
        raise AssertionError(f"{dtype} with {pes} PE(s): C simulation off by {error.max():.3g}, bound {tolerance.max():.3g}")
    report = json.loads((folder / "report.json").read_text())
    return Variant(dtype, pes, report["latency_cycles"], report["period_cycles"], report["total"]["dsp"],
                   report["total"]["lut"], float(error.max()), float(tolerance.max()))


def run(out: Path) -> list[Variant]:
    program = float_program()
    x, _ = synthesize_inputs()
    y = reference(program, x)
    return [build_variant(program, x, y, dtype, pes, out) for dtype in DTYPES for pes in PES]


def speedup(variants: list[Variant], dtype: str) -> float:
    """Latency with 1 PE over latency with 4."""
    by_pes = {v.pes: v.latency_cycles for v in variants if v.dtype == dtype}
    return by_pes[1] / by_pes[4]


def table(variants: list[Variant]) -> str:
    rows = ["| type | PEs per layer | latency (cycles) | period (cycles) | DSP | LUT | max abs error | bound checked "
            "| speed-up 4 PEs / 1 (ours) | STANN's |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for v in variants:
        ratio = f"{speedup(variants, v.dtype):.2f}x" if v.pes == 4 else ""
        stann = f"{STANN_SPEEDUP[v.dtype]:.1f}x" if v.pes == 4 else ""
        rows.append(f"| {v.dtype} | {v.pes} | {v.latency_cycles:,} | {v.period_cycles:,} | {v.dsp} | {v.lut:,} "
                    f"| {v.max_error:.2e} | {v.tolerance:.2e} | {ratio} | {stann} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "stann_arc", help="folder for the HLS projects")
    args = parser.parse_args(argv)
    variants = run(args.out)
    print(f"STANN arc-detection MLP (320-64-32-16-1) on {HW}, SESL, latency estimates from report.json")
    print(table(variants))
    return 0


if __name__ == "__main__":
    sys.exit(main())
