"""The driver's `hls` target and runner (registered in compiler/cli.py's registries).

    layerloom compile model.onnx --target hls --hw zcu102 --arch sesl --calib data.npz -o OUT/
    layerloom compile model.onnx --target hls --dtype half -o OUT/    # float or half: no quantization
    layerloom run OUT/ --input x.npz --output y.npz                  # C simulation (g++, cached in OUT/csim/)
    layerloom run OUT/ --input x.npz --output y.npz --with reference  # the program in OUT/model.mlir

`compile` runs the target's pipeline (int8: ending in `quantize`, calibrated on --calib; float
and half: without it), keeps the program as OUT/model.mlir, maps it with
`assign-engines{arch hw}`, lowers it with `lower-to-hls{dtype}`, and writes the HLS project
into OUT/ (backends/hls/emit.py): the top function, weights, schedule and DDR image, a
testbench checking the first calibration samples (else seeded random ones) against the
reference executor (int8: bit for bit; float and half: within the probabilistic error bound
of backends/hls/error_bound.py), run_hls.tcl, report.json, and the lowered IR as
dataflow.mlir. Heavy modules are imported inside the functions, so `layerloom --help` stays quick.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.cli import Target, register_runner, register_target
from compiler.errors import LayerloomError
from compiler.program import read_json

if TYPE_CHECKING:
    import numpy as np

    from compiler.program import Program

ARCHS = ("sesl", "seml", "hybrid")
DTYPES = ("int8", "float", "half")
DEFAULT_HW = "zcu102"
FLOAT_PIPELINE = "canonicalize,fold-batchnorm,fuse-activation"
PIPELINE = f"{FLOAT_PIPELINE},quantize"
TESTBENCH_IMAGES = 2
DATAFLOW_FILE = "dataflow.mlir"


def add_flag(group: argparse._ArgumentGroup, flag: str, **options: object) -> None:
    """Add a flag unless another target already did (targets may share --hw)."""
    try:
        group.add_argument(flag, **options)  # type: ignore[arg-type]
    except argparse.ArgumentError:
        pass


def configure(group: argparse._ArgumentGroup) -> None:
    add_flag(group, "--hw", metavar="TARGET", help=f"hardware description: a bundled name or a .hw file (default: {DEFAULT_HW})")
    add_flag(group, "--arch", choices=ARCHS, default="sesl",
             help="hls: engine architecture: a pipeline of per-layer engines (sesl), reused engines (seml), or both (hybrid)")
    add_flag(group, "--dtype", choices=DTYPES, default="int8",
             help="hls: data type: int8 (quantized with --calib, bit-exact), float or half (sesl; no quantization)")


def pipeline_for(args: argparse.Namespace) -> str:
    """The default pipeline: quantize for int8, not for float and half."""
    return PIPELINE if (getattr(args, "dtype", None) or "int8") == "int8" else FLOAT_PIPELINE


def testbench_data(program: Program, calib: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The testbench's images (the first calibration samples, else seeded random ones) and
    the reference executor's outputs for them (computed one image at a time: the batch is 1)."""
    import numpy as np

    from backends.reference import execute
    from compiler.quant.calibrate import load_calibration

    name, shape = program.input_names[0], tuple(program.input_types[0].get_shape())
    if calib:
        samples = np.asarray(load_calibration(calib)[0][name], dtype=np.float32)
        samples = samples.reshape(-1, *shape[1:])[:TESTBENCH_IMAGES]
    else:
        samples = np.random.default_rng(0).normal(size=(TESTBENCH_IMAGES, *shape[1:])).astype(np.float32)
    outputs = [execute(program, {name: samples[i:i + 1]})[program.output_names[0]] for i in range(len(samples))]
    return samples, np.concatenate(outputs)


def build(program: Program, folder: Path, args: argparse.Namespace) -> dict[str, object]:
    from backends.hls.emit import emit_project
    from compiler.hw import load_target
    from compiler.pipeline import run_pipeline
    from compiler.program import print_module
    from dialects import qnn

    dtype = getattr(args, "dtype", None) or "int8"
    quantized = any(isinstance(op, qnn.QNNOp) for op in program.module.walk())
    if dtype == "int8" and not quantized:
        raise LayerloomError("the hls target builds int8 accelerators from a quantized model: give --calib FILE "
                             "(or --dtype float / half)", "--target hls")
    if dtype != "int8" and quantized:
        raise LayerloomError(f"--dtype {dtype} builds the float model: leave quantize out of --pipeline", "--target hls")
    hw_name = getattr(args, "hw", None) or DEFAULT_HW
    hw = load_target(hw_name)
    arch = getattr(args, "arch", None) or "sesl"
    x, y = testbench_data(program, getattr(args, "calib", None))
    tolerance = None
    if dtype != "int8":
        from backends.hls.error_bound import error_bound

        tolerance = error_bound(program, x, dtype, probabilistic=True)
    lowered = program.clone()
    run_pipeline(lowered, f'assign-engines{{arch={arch} hw="{hw_name}"}},lower-to-hls{{dtype={dtype}}}')
    (folder / DATAFLOW_FILE).write_text(print_module(lowered.module))
    emit_project(lowered.module, lowered.weights, folder, test_inputs=x, test_outputs=y, test_tolerance=tolerance,
                 target=hw, source=Path(getattr(args, "model", "")).name)

    report = read_json(folder / "report.json")
    print(f"hls: {arch} {dtype} accelerator for {hw.name}: {report['total']['dsp']} DSP, {report['total']['bram']} BRAM, "
          f"{report['total']['lut']} LUT (estimates), {report['throughput_fps']:.1f} images/s at {hw.clock / 1e6:g} MHz")
    return {"hls": {"arch": arch, "dtype": dtype, "hw": hw.name, "report": "report.json", "dataflow": DATAFLOW_FILE,
                    "throughput_fps": report["throughput_fps"]}}


def run_csim(folder: Path, program: Program, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The C simulation of the project in `folder` on the inputs (built with g++, cached)."""
    from backends.hls.project import HlsProject

    project = HlsProject(folder)
    (name,) = program.input_names
    return {program.output_names[0]: project.predict(inputs[name])}


register_target(Target("hls", "a dataflow accelerator in HLS C++ (int8 with --calib, float, half), run in C simulation",
                       PIPELINE, "hls", configure, build, pipeline_for=pipeline_for))
register_runner("hls", run_csim)
