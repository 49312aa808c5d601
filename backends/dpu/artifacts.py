"""The files of a DPU build folder and how to run them.

`write_artifacts` writes, beside the quantized IR (`model.mlir` + `weights.npz`, which
`layerloom run --with reference` executes):

| file | what |
|---|---|
| `model.bin` | the instruction stream, encoded (docs/isa.md section 7; no header) |
| `model.s` | its disassembly, one `; layer` comment before each layer's instructions |
| `weights.bin` | the DDR `weights` region image: weights in bank layout, bias records, tables |
| `dpu.mlir` | the lowered IR: the `dpu.program` and the host ops around its `dpu.run` |
| `manifest.json` | DDR layout (regions and base registers), the program's inputs and outputs (where, layout, shape, scale), the host's part before and after the DPU, the layers |
| `report.json` | the simulator's timing: `throughput_fps`, `latency_s`, per-layer cycles (and the cost model's for the same tile), plus the bit-exactness check of the compile-time run |

`run_build(folder, inputs, trace=...)` runs them: the host ops of `dpu.mlir` with the
reference executor and the DPU program from `model.bin` and `weights.bin` on the
instruction-set simulator. Every file is a function of the program alone (no times, no
paths), so the same model and options give byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from backends.dpu.assembler import format_instruction
from backends.dpu.encoding import encode
from backends.dpu.isa import REGISTERS
from backends.dpu.memory import REGION_ALIGN, DdrImage
from backends.dpu.runtime import binary_digest, recording, region_sizes
from compiler.errors import LayerloomError
from compiler.program import Program, atomic_write_with, print_module, read_json
from dialects.dpu import ProgramOp, RunOp, feature_map_fields
from dialects.nn import WeightOp, shape_of

BINARY, ASSEMBLY, WEIGHTS, LOWERED, MANIFEST, REPORT = (
    "model.bin", "model.s", "weights.bin", "dpu.mlir", "manifest.json", "report.json")
FORMAT = "layerloom-dpu-1"


def program_of(lowered: Program) -> tuple[ProgramOp, RunOp]:
    """The (single) dpu.program of a lowered module and the dpu.run that calls it."""
    programs = [o for o in lowered.module.ops if isinstance(o, ProgramOp)]
    runs = [o for o in lowered.main.body.block.ops if isinstance(o, RunOp)]
    if len(programs) != 1 or len(runs) != 1:
        raise LayerloomError(f"expected one dpu.program and one dpu.run, found {len(programs)} and {len(runs)}",
                             lowered.source or "lower-to-dpu")
    return programs[0], runs[0]


def assembly(program: ProgramOp) -> str:
    """model.s: the canonical disassembly, each layer after a `; layer` comment line."""
    lines = [f"; {program.arch.data} program for {program.hw.data} (docs/isa.md)"]
    for layer in program.layer_ops():
        kind = layer.attributes.get("kind")
        lines.append(f"; layer {layer.layer_name.data}" + (f" ({kind.data})" if kind is not None else ""))  # type: ignore[attr-defined]
        lines += [format_instruction(op.instruction()) for op in layer.instruction_ops()]
    lines.append("END")
    return "\n".join(lines) + "\n"


def _write(path: Path, data: bytes | str) -> None:
    atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(data if isinstance(data, bytes) else data.encode()))


def write_json(path: Path, data: object) -> None:
    from compiler.cli import write_json as write

    write(path, data)


def write_artifacts(folder: Path, quantized: Program, lowered: Program,
                    check_inputs: Mapping[str, np.ndarray], check_source: str) -> dict[str, Any]:
    """Write the DPU files into `folder` (the quantized IR is already there); run the
    program once on `check_inputs` on the simulator (timing for report.json) and compare
    its outputs with the reference executor on the quantized IR. Returns the report."""
    from backends.reference import execute

    program, run = program_of(lowered)
    instructions, _ = program.instructions()
    blob = weights_blob(lowered, run)
    binary = encode(instructions)
    _write(folder / BINARY, binary)
    _write(folder / ASSEMBLY, assembly(program))
    _write(folder / WEIGHTS, blob.tobytes())
    _write(folder / LOWERED, print_module(lowered.module))
    with recording() as rec:
        got = execute(lowered, check_inputs)
    expected = execute(quantized, check_inputs)
    mismatched = [k for k in expected if not np.array_equal(expected[k], got[k])]
    report = make_report(program, rec.results[0], check_source, mismatched)
    manifest = make_manifest(lowered, program, run)
    manifest["hazard_checked"] = {"file": BINARY, "sha256": binary_digest(binary)}  # by the run above
    write_json(folder / MANIFEST, manifest)
    write_json(folder / REPORT, report)
    return report


def weights_blob(lowered: Program, run: RunOp) -> np.ndarray:
    owner = run.operands_[-1].owner
    assert isinstance(owner, WeightOp)
    return np.asarray(lowered.weights[owner.handle.data], np.uint8)


# ---------------------------------------------------------------------------------------
# manifest.json and report.json
# ---------------------------------------------------------------------------------------


def ddr_regions(program: ProgramOp) -> list[dict[str, Any]]:
    """The regions in the order the runtime lays them out (each on its own 4 KiB page)."""
    sizes = region_sizes(program)
    image = DdrImage.allocate(int(program.weights.value.data), **sizes)
    what = {"weights": f"read only: {WEIGHTS}", "work": "intermediate feature maps",
            "input": "the program's inputs (written by the host)", "output": "the program's outputs (read by the host)"}
    return [{"reg": reg, "register": REGISTERS.index(reg), "base": base, "size": size, "holds": what[reg]}
            for reg, (base, size) in image.regions.items()]


def _host_op(op: Any) -> dict[str, str]:
    name = getattr(op, "layer_name", "") or ""
    return {"op": op.name, "name": name} if name else {"op": op.name}


def make_manifest(lowered: Program, program: ProgramOp, run: RunOp) -> dict[str, Any]:
    block = lowered.main.body.block
    ops = [o for o in block.ops if not isinstance(o, WeightOp) and o.name != "func.return"]
    position = ops.index(run)
    inputs = []
    for value, fields in zip(run.operands_[:-1], program.input_maps(), strict=True):
        source = value.owner
        entry = {"shape": list(shape_of(value)), "dtype": "int8", "from": _host_op(source)}
        inputs.append(entry | _placement(fields))
    outputs = []
    for value, fields in zip(run.results_, program.output_maps(), strict=True):
        users = sorted({u.operation.name for u in value.uses})
        outputs.append({"shape": list(shape_of(value)), "dtype": "int8", "to": users} | _placement(fields))
    config = program.config()
    host_from = program.attributes.get("host_from")
    return {
        "format": FORMAT,
        "hw": program.hw.data,
        "configuration": {"arch": config.name, "pp": config.pp, "icp": config.icp, "ocp": config.ocp,
                          "bank_num": config.bank_num, "bank_depth": config.bank_depth, "cores": config.cores},
        "files": {"instructions": BINARY, "assembly": ASSEMBLY, "weights": WEIGHTS, "lowered_ir": LOWERED,
                  "quantized_ir": "model.mlir"},
        "instructions": len(program.instructions()[0]),
        "ddr": {"region_align": REGION_ALIGN, "regions": ddr_regions(program)},
        "inputs": inputs,
        "outputs": outputs,
        "host": {
            "before": [_host_op(o) for o in ops[:position]],
            "after": [_host_op(o) for o in ops[position + 1:]],
            "why": host_from.data if host_from is not None else None,  # type: ignore[attr-defined]
        },
        "layers": [_layer_entry(layer) for layer in program.layer_ops()],
    }


def _layer_entry(layer: Any) -> dict[str, Any]:
    """A layer of the manifest: its kind, instructions and where its output tensor lives."""
    return {"name": layer.layer_name.data, "kind": layer.attributes["kind"].data,
            "instructions": len(list(layer.instruction_ops())),
            "output": _placement(feature_map_fields(layer.attributes["output"]))}


def _placement(fields: dict[str, Any]) -> dict[str, Any]:
    h, w, c = fields["shape"]
    return {"reg": fields["reg"], "offset": fields["offset"], "layout": "HWC int8", "hwc": [h, w, c],
            "row_stride": fields["strides"][0], "col_stride": fields["strides"][1],
            "quantization": {"scheme": "pow2", "scale": fields["scale"], "zero_point": 0,
                             "real": "value = int8 * scale"}}


def make_report(program: ProgramOp, result: Any, check_source: str, mismatched: list[str]) -> dict[str, Any]:
    """The simulator's numbers (SimResult.report) with, per layer, its kind and tile and
    the cost model's cycles for that tile."""
    sim = result.report()
    layers = {layer.layer_name.data: layer for layer in program.layer_ops()}
    for entry in sim["layers"]:
        attrs = layers[entry["name"]].attributes
        entry["kind"] = attrs["kind"].data  # type: ignore[attr-defined]
        if "tile" in attrs:
            entry["tile"] = list(attrs["tile"].get_values())  # type: ignore[attr-defined]
        if "model_cycles" in attrs:
            model = int(attrs["model_cycles"].value.data)  # type: ignore[attr-defined]
            entry["model_cycles"] = model
            entry["sim_over_model"] = round(entry["cycles"] / model, 4) if model else None
    return {
        "hw": program.hw.data,
        "arch": program.arch.data,
        "clock_hz": result.timing.clock_hz,
        **{k: sim[k] for k in ("throughput_fps", "latency_s", "latency_cycles", "cores", "macs", "utilisation",
                               "ddr_bytes")},
        "instructions": len(result.steps),
        "check": {"input": check_source, "bit_exact": not mismatched, "mismatched_outputs": mismatched},
        "layers": sim["layers"],
    }


# ---------------------------------------------------------------------------------------
# Running a build folder
# ---------------------------------------------------------------------------------------


def load_lowered(folder: Path) -> Program:
    """dpu.mlir with its weights: the quantized IR's weights.npz for the host ops and
    weights.bin for the DPU program's weights region."""
    from compiler.program import WEIGHTS_FILE

    for name in (LOWERED, BINARY, WEIGHTS):
        if not (folder / name).is_file():
            raise LayerloomError(f"{name} is missing: not a DPU build folder (layerloom compile --target dpu)",
                                 str(folder))
    lowered = Program.load(folder / LOWERED, folder / WEIGHTS_FILE)
    _, run = program_of(lowered)
    owner = run.operands_[-1].owner
    assert isinstance(owner, WeightOp)
    lowered.weights.set(owner.handle.data, np.fromfile(folder / WEIGHTS, np.uint8))
    return lowered


def run_build(folder: Path, inputs: Mapping[str, np.ndarray], trace: Path | None = None,
              check_hazards: bool = False) -> dict[str, np.ndarray]:
    """Run a DPU build folder: the host ops of dpu.mlir on the reference executor, the
    program of model.bin / weights.bin on the simulator; `trace` writes its Perfetto trace
    (else the run is functional only). The hazard check runs unless the manifest records
    this very model.bin as checked by the compiler (or `check_hazards` asks for it)."""
    from backends.reference import execute

    lowered = load_lowered(folder)
    program, _ = program_of(lowered)
    binary = (folder / BINARY).read_bytes()
    try:
        checked = json.loads((folder / MANIFEST).read_text()).get("hazard_checked", {}).get("sha256")
    except (OSError, ValueError, AttributeError):
        checked = None
    hazards = check_hazards or checked != binary_digest(binary)
    with recording({program.sym_name.data: binary}, hazards=hazards, timed=trace is not None) as rec:
        outputs = execute(lowered, inputs)
    if trace is not None:
        rec.results[0].write_trace(trace)
    return outputs


def read_report(folder: Path) -> dict[str, Any]:
    return read_json(folder / REPORT)
