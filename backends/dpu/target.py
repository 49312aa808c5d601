"""The driver's `dpu` target and runner (registered in compiler/cli.py's registries).

    layerloom compile model.onnx --target dpu --hw zcu102-dpu --calib data.npz -o OUT/
    layerloom run OUT/ --input x.npz --output y.npz                   # the simulator (model.bin, weights.bin)
    layerloom run OUT/ --input x.npz --output y.npz --trace trace.json
    layerloom run OUT/ --input x.npz --output y.npz --with reference  # the quantized IR in OUT/model.mlir

`compile` runs the target's pipeline (ending in `quantize{scheme=pow2}`, calibrated on
--calib, or on seeded random inputs with a note when it is not given), keeps the
quantized program as OUT/model.mlir, lowers a copy with `lower-to-dpu{hw host-suffix}`
(layers the DPU cannot run, and all after them, stay on the host, as Vitis AI's CPU
subgraphs; the build says which and why) and writes the files of
backends/dpu/artifacts.py. It simulates the program once, on the first calibration
sample, for report.json's timing and checks the outputs against the reference executor.
Heavy modules are imported inside the functions, so `layerloom --help` stays quick.
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

DEFAULT_HW = "zcu102-dpu"
PIPELINE = "canonicalize,fold-batchnorm,fuse-activation,quantize{scheme=pow2}"
CHECK_SEED = 0


def configure(group: argparse._ArgumentGroup) -> None:
    try:  # targets share --hw: the first one to configure adds it
        group.add_argument("--hw", metavar="TARGET", help="hardware description: a bundled name or a .hw file "
                           f"(default: the target's; dpu: {DEFAULT_HW})")
    except argparse.ArgumentError:
        pass


def check_inputs(program: Program, calib: str | None) -> tuple[dict[str, np.ndarray], str]:
    """The compile-time run's inputs: the first calibration sample of every input, else
    seeded random ones; and a description of which."""
    import numpy as np

    from compiler.quant.calibrate import load_calibration

    shapes = {n: tuple(t.get_shape()) for n, t in zip(program.input_names, program.input_types, strict=True)}
    if calib:
        batch = load_calibration(calib)[0]
        return {n: np.asarray(batch[n], np.float32).reshape(-1, *s[1:])[: s[0]] for n, s in shapes.items()}, \
            f"the first sample of {Path(calib).name}"
    rng = np.random.default_rng(CHECK_SEED)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}, \
        f"seeded random (numpy seed {CHECK_SEED}, standard normal)"


def build(program: Program, folder: Path, args: argparse.Namespace) -> dict[str, object]:
    from backends.dpu.artifacts import program_of, write_artifacts
    from compiler.pipeline import run_pipeline
    from dialects import qnn

    if not any(isinstance(op, qnn.QNNOp) for op in program.module.walk()):
        raise LayerloomError("the dpu target runs int8 programs: the pipeline must end in quantize{scheme=pow2}",
                             "--target dpu")
    hw = getattr(args, "hw", None) or DEFAULT_HW
    lowered = program.clone()
    run_pipeline(lowered, f'lower-to-dpu{{hw="{hw}" host-suffix=true}}')
    inputs, source = check_inputs(program, getattr(args, "calib", None))
    report = write_artifacts(folder, program, lowered, inputs, source)
    dpu, _ = program_of(lowered)
    layers = len(dpu.layer_ops())
    print(f"dpu: {layers} layers, {report['instructions']} instructions for {report['cores']} x {report['arch']} "
          f"at {report['clock_hz'] / 1e6:g} MHz ({hw}): {report['throughput_fps']:.1f} frames/s, "
          f"latency {report['latency_s'] * 1e3:.2f} ms (simulated)")
    host_from = dpu.attributes.get("host_from")
    if host_from is not None:
        print(f"dpu: the host runs the rest, from {host_from.data}")  # type: ignore[attr-defined]
    if not report["check"]["bit_exact"]:
        raise LayerloomError(f"the simulated program differs from the reference executor on "
                             f"{', '.join(report['check']['mismatched_outputs'])} (a compiler bug; please report)",
                             "--target dpu")
    return {"dpu": {"hw": hw, "report": "report.json", "manifest": "manifest.json", "layers": layers,
                    "throughput_fps": report["throughput_fps"], "latency_s": report["latency_s"]}}


def run_simulator(folder: Path, program: Program, inputs: dict[str, np.ndarray],
                  trace: Path | None = None, check_hazards: bool = False) -> dict[str, np.ndarray]:
    """The build folder's DPU program on the instruction-set simulator (host ops on the
    reference executor); `trace` writes a Chrome / Perfetto trace of its queues;
    `check_hazards` checks the tokens of a model.bin the compiler already checked."""
    from backends.dpu.artifacts import run_build

    return run_build(folder, inputs, trace, check_hazards)


register_target(Target("dpu", "an instruction stream for the DPU-like engine (int8 pow2), run on its simulator",
                       PIPELINE, "dpu", configure, build, calibrate_randomly=True))
register_runner("dpu", run_simulator, traces=True)
