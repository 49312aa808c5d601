"""The driver's `hls` target and runner (registered in compiler/cli.py's registries).

    layerloom compile model.onnx --target hls --hw zcu102 --arch sesl --calib data.npz -o OUT/
    layerloom run OUT/ --input x.npz --output y.npz                  # C simulation (g++, cached in OUT/csim/)
    layerloom run OUT/ --input x.npz --output y.npz --with reference  # the quantized IR in OUT/model.mlir

`compile` runs the target's pipeline (ending in `quantize`, calibrated on --calib), keeps the
quantized program as OUT/model.mlir, maps it with `assign-engines{arch hw}`, lowers it with
`lower-to-hls`, and writes the HLS project into OUT/ (backends/hls/emit.py): the top
function, weights, schedule and DDR image, a testbench checking the first calibration
samples against the reference executor, run_hls.tcl, report.json, and the lowered IR as
dataflow.mlir. Heavy modules are imported inside the functions, so `layerloom --help` stays quick.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.cli import Target, register_runner, register_target
from compiler.errors import LayerloomError

if TYPE_CHECKING:
    import numpy as np

    from compiler.program import Program

ARCHS = ("sesl", "seml", "hybrid")
DEFAULT_HW = "zcu102"
PIPELINE = "canonicalize,fold-batchnorm,fuse-activation,quantize"
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


def testbench_data(program: Program, calib: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The testbench's images (the first calibration samples, else seeded random ones) and
    the reference executor's outputs for them."""
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

    if not any(isinstance(op, qnn.QNNOp) for op in program.module.walk()):
        raise LayerloomError("the hls target builds int8 accelerators: quantize the model (give --calib FILE)", "--target hls")
    hw_name = getattr(args, "hw", None) or DEFAULT_HW
    hw = load_target(hw_name)
    arch = getattr(args, "arch", None) or "sesl"
    x, y = testbench_data(program, getattr(args, "calib", None))
    lowered = program.clone()
    run_pipeline(lowered, f'assign-engines{{arch={arch} hw="{hw_name}"}},lower-to-hls')
    (folder / DATAFLOW_FILE).write_text(print_module(lowered.module))
    emit_project(lowered.module, lowered.weights, folder, test_inputs=x, test_outputs=y, target=hw,
                 source=Path(getattr(args, "model", "")).name)
    import json

    report = json.loads((folder / "report.json").read_text())
    print(f"hls: {arch} accelerator for {hw.name}: {report['total']['dsp']} DSP, {report['total']['bram']} BRAM, "
          f"{report['total']['lut']} LUT (estimates), {report['throughput_fps']:.1f} images/s at {hw.clock / 1e6:g} MHz")
    return {"hls": {"arch": arch, "hw": hw.name, "report": "report.json", "dataflow": DATAFLOW_FILE,
                    "throughput_fps": report["throughput_fps"]}}


def run_csim(folder: Path, program: Program, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The C simulation of the project in `folder` on the inputs (built with g++, cached)."""
    from backends.hls.project import HlsProject

    project = HlsProject(folder)
    (name,) = program.input_names
    return {program.output_names[0]: project.predict(inputs[name])}


register_target(Target("hls", "a dataflow accelerator in HLS C++ (int8; needs --calib), run in C simulation",
                       PIPELINE, "hls", configure, build))
register_runner("hls", run_csim)
