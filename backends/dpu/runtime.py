"""Running a `dpu.program` the way a host runtime would: set up the DDR image from the
program's interface (its weights region, its inputs written as HWC maps), run the
instruction-set simulator, read the outputs back into the quantized IR's layout.

    outputs, result = run_program(program_op, [x_int8], weights_blob)
    result.fps, result.layers           # the simulator's timing (backends/dpu/simulator.py)

`dpu.run` ops get a reference-executor kernel here, so a lowered module (host ops around
a `dpu.run`) executes with `backends.reference.execute` like any other; `recording()`
collects the simulator results of the runs inside it (for traces and reports), and can
give the binary to run instead of the program's own instructions (`model.bin`).

The functional simulation multiplies a layer's CONV tiles together (the simulator's
`run_batched`): GEMMs of about a thousand rows, which BLAS runs on as many threads as
the process gives it, as the reference executor's; `blas_threads` limits them for a run
(threadpoolctl, when installed; without it set OPENBLAS_NUM_THREADS in the environment).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from backends.dpu.memory import DdrImage, FeatureMap
from backends.dpu.simulator import SimResult, Timing, simulate
from compiler.errors import LayerloomError

if TYPE_CHECKING:
    from dialects.dpu import ProgramOp, RunOp


def feature_map(fields: dict[str, Any]) -> FeatureMap:
    """The FeatureMap of one of a program's interface entries (`ProgramOp.input_maps()`)."""
    h, w, c = fields["shape"]
    row_stride, col_stride = fields["strides"]
    return FeatureMap(fields["reg"], fields["offset"], h, w, c, row_stride, col_stride)


def region_sizes(program: ProgramOp) -> dict[str, int]:
    """Bytes of the work, input and output regions (at least 1 each)."""
    sizes = {"work": int(program.work.value.data), "input": 0, "output": 0}
    for fields in (*program.input_maps(), *program.output_maps()):
        m = feature_map(fields)
        sizes[m.reg] = max(sizes.get(m.reg, 0), m.offset + m.nbytes)
    return {reg: max(1, size) for reg, size in sizes.items()}


def ddr_image(program: ProgramOp, weights: bytes | np.ndarray, inputs: Sequence[np.ndarray]) -> DdrImage:
    """The DDR image before a run: weights in place, inputs written (NCHW or (1, n) int8)."""
    maps = [feature_map(f) for f in program.input_maps()]
    if len(inputs) != len(maps):
        raise LayerloomError(f"the program takes {len(maps)} inputs, got {len(inputs)}", f"@{program.sym_name.data}")
    blob = np.asarray(weights, np.uint8).reshape(-1)
    if blob.size != int(program.weights.value.data):
        raise LayerloomError(f"the weights region has {blob.size} bytes, the program expects "
                             f"{program.weights.value.data}", f"@{program.sym_name.data}")
    ddr = DdrImage.allocate(blob, **region_sizes(program))  # the weights region is the blob itself
    for m, array in zip(maps, inputs, strict=True):
        ddr.write(m, np.asarray(array).reshape(1, m.c, m.h, m.w))
    return ddr


def read_output(ddr: DdrImage, fields: dict[str, Any], shape: Sequence[int]) -> np.ndarray:
    """An output map as the IR's tensor: HWC in DDR -> C, H, W order, reshaped to `shape`."""
    return ddr.read(feature_map(fields)).transpose(2, 0, 1).reshape(shape)


@contextlib.contextmanager
def blas_threads_limited(threads: int | None) -> Iterator[None]:
    """BLAS limited to `threads` threads inside the block (None: as it is)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover -- see the module docstring
        yield
        return
    if threads is None:
        yield
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield


def binary_digest(binary: bytes) -> str:
    """The SHA-256 of a program binary: a build's manifest names the model.bin whose
    dependency tokens the compiler checked (its own run), so running that binary again
    may skip the hazard check."""
    return hashlib.sha256(binary).hexdigest()


def timing_of(program: ProgramOp) -> Timing:
    from compiler.hw import load_target

    return Timing.from_target(load_target(program.hw.data))


def run_program(program: ProgramOp, inputs: Sequence[np.ndarray], weights: bytes | np.ndarray,
                output_shapes: Sequence[Sequence[int]] | None = None, binary: bytes | None = None,
                hazards: bool = True, timed: bool = True, blas_threads: int | None = None, batched: bool = True
                ) -> tuple[list[np.ndarray], SimResult]:
    """Simulate `program` (or `binary`, its encoding from model.bin) on int8 inputs;
    the outputs (int8, in `output_shapes`, default (1, c, h, w)) and the SimResult.
    `hazards`, `timed` and `batched` as `simulate` takes them; `blas_threads` for its
    GEMMs (None: the process's)."""
    instructions, layers = program.instructions()
    if binary is not None:
        from backends.dpu.encoding import decode

        decoded = decode(binary)
        if len(decoded) != len(instructions):
            raise LayerloomError(f"the binary has {len(decoded)} instructions, the program {len(instructions)}",
                                 f"@{program.sym_name.data}")
        instructions = decoded
    ddr = ddr_image(program, weights, inputs)
    with blas_threads_limited(blas_threads):
        result = simulate(instructions, ddr, program.config(), timing=timing_of(program), layers=layers,
                          hazards=hazards, timed=timed, batched=batched)
    maps = program.output_maps()
    shapes = output_shapes or [(1, m["shape"][2], m["shape"][0], m["shape"][1]) for m in maps]
    return [read_output(result.ddr, m, s) for m, s in zip(maps, shapes, strict=True)], result


# ---------------------------------------------------------------------------------------
# The reference executor's kernel for dpu.run
# ---------------------------------------------------------------------------------------


@dataclass
class Recording:
    """What `recording()` collects: every run's SimResult, in order; `binaries` maps a
    program's symbol to the binary to run instead of its instructions; `hazards` and
    `timed` are the simulator's options for the runs inside."""

    results: list[SimResult] = field(default_factory=list)
    binaries: dict[str, bytes] = field(default_factory=dict)
    hazards: bool = True
    timed: bool = True


_RECORDING: ContextVar[Recording | None] = ContextVar("dpu_recording", default=None)


@contextlib.contextmanager
def recording(binaries: dict[str, bytes] | None = None, hazards: bool = True, timed: bool = True) -> Iterator[Recording]:
    """Collect the SimResults of the dpu.run ops executed inside the block (simulated
    with the hazard check and the cycle schedule unless turned off)."""
    rec = Recording(binaries=dict(binaries or {}), hazards=hazards, timed=timed)
    token = _RECORDING.set(rec)
    try:
        yield rec
    finally:
        _RECORDING.reset(token)


def run_kernel(op: RunOp, args: list[np.ndarray]) -> list[np.ndarray]:
    from dialects.nn import shape_of

    program = op.program_op()
    rec = _RECORDING.get()
    binary = rec.binaries.get(program.sym_name.data) if rec is not None else None
    options = {"hazards": rec.hazards, "timed": rec.timed} if rec is not None else {}
    outputs, result = run_program(program, args[:-1], args[-1], [shape_of(r) for r in op.results_], binary, **options)
    if rec is not None:
        rec.results.append(result)
    return outputs
