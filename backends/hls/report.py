"""Resource and latency estimates of a `dataflow.top` against a target (report.json).

Simple formulas, no synthesis (docs/hls.md, "The report"):

- **Latency**: the loop trip counts of each template (the cycle column of docs/hls.md; the
  reused engines': engine_seml.h), at II=1 except where an accumulation carries a
  dependency: a float or half accumulator whose add takes L cycles makes its reduction loop
  wait L cycles per iteration (II = L; the templates do not interleave partial sums, see
  NUMERICS). The processes of the DATAFLOW region
  work concurrently on successive images, so the **period** is the slowest process
  (the schedule of the reused engines counts as one process: the sum of its steps) and
  `throughput_fps = clock / period`; `latency_cycles` (one image) is bounded by the sum.
- **DSP**: int8 MACs are packed **two per DSP48E2** (the PE loop multiplies one input by
  PE weights: the shared-operand packing of Xilinx WP486), so a contraction with PE MACs
  takes ceil(PE / 2). Each requantization datapath adds 4 DSPs for the `fixed` scheme (a
  32 x 32-bit multiply on 27 x 18-bit multipliers), 2 for a `pow2` one with multipliers
  (average pooling, add), 0 for a pure shift. A float or half MAC lane takes a multiplier
  and an adder core (NUMERICS), a leaky slope a multiplier, a float add an adder.
- **BRAM**: every on-chip array (line buffers, weights, biases, FIFOs, double buffers,
  slots) is split into its partition banks; a bank of more than 1 Kb takes
  ceil(bits / 36 Kb) BRAM36 blocks, a smaller one goes to LUTs.
- **LUT**: an order of magnitude: 200 per kernel (control), 40 per int8 MAC lane (the int32
  accumulator add; float and half lanes: NUMERICS), 20 per other lane, 150 per `fixed` / 80 per `pow2` output stage, and
  the small arrays as LUTRAM (64 bits per LUT) and FIFOs as shift registers (32 deep per LUT).

The available resources come from the target: DSPs = its PE budget (one PE is one DSP48E2
slice in the bundled descriptions), BRAM blocks = its `bram` memory / 36 Kb, LUTs from the
part's data sheet (PART_LUTS, None for an unknown part).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import SSAValue

from compiler.hw.model import Target
from compiler.tensors import numpy_dtype
from dialects import qnn
from dialects.dataflow import BufferOp, EngineOp, InvokeOp, KernelOp, ScheduleOp, StreamOp, TopOp, element_of

BRAM_BITS = 36 * 1024
LUTRAM_MAX_BITS = 1024
MACS_PER_DSP = 2
REQUANT_DSP = {"fixed": 4, "pow2": 2}
LUT_KERNEL, LUT_MAC_LANE, LUT_LANE = 200, 40, 20  # LUT_MAC_LANE: int8 (the reused engines')
LUT_STAGE = {"fixed": 150, "pow2": 80}
LUTRAM_BITS_PER_LUT, SRL_DEPTH_PER_LUT = 64, 32
# CLB LUTs of the bundled targets' parts (Zynq UltraScale+ and Versal product selection guides).
PART_LUTS = {"xczu9eg": 274080, "xczu7ev": 230400, "xczu3eg": 70560, "xcvc1902": 899840}
CONTRACTIONS = ("conv2d", "conv2d_im2row", "depthwise_conv2d", "pointwise_conv2d", "dense")
ELEMENT_DTYPES = {np.dtype(np.float32): "float", np.dtype(np.float16): "half"}  # others: int8


@dataclass(frozen=True)
class Numerics:
    """What a layer costs in one data type. The float and half figures are assumptions: Vitis
    HLS's floating-point cores on UltraScale+ near 300 MHz (fmul on 3 DSPs, fadd on 2, a
    4-cycle fadd; hmul on 1 DSP, hadd on 2, a 3-cycle hadd); csynth's report has the real
    ones for a given clock."""

    weight_bits: int
    bias_bits: int
    mac_dsp: float  # DSP48E2 per MAC lane (int8: two lanes share one, WP486)
    mac_lut: int  # LUTs per MAC lane
    add_latency: int  # cycles of the accumulator's add: the II a reduction loop reaches
    add_dsp: int  # a float add (FloatAdd) / multiply (a leaky slope) in the output stage
    mul_dsp: int


NUMERICS = {
    "int8": Numerics(weight_bits=8, bias_bits=32, mac_dsp=0.5, mac_lut=40, add_latency=1, add_dsp=0, mul_dsp=0),
    "float": Numerics(weight_bits=32, bias_bits=32, mac_dsp=5, mac_lut=400, add_latency=4, add_dsp=2, mul_dsp=3),
    "half": Numerics(weight_bits=16, bias_bits=16, mac_dsp=3, mac_lut=200, add_latency=3, add_dsp=2, mul_dsp=1),
}
LUT_FLOAT_STAGE, LUT_FLOAT_DIVIDE = 100, 800  # a float activation (compare, select); average pooling's divider


def dtype_of(value: SSAValue) -> str:
    """The data type a kernel computes in, from its input stream: float, half or int8."""
    return ELEMENT_DTYPES.get(numpy_dtype(element_of(value)), "int8")
WINDOWED = ("conv2d", "conv2d_im2row", "depthwise_conv2d", "max_pool2d", "avg_pool2d")


@dataclass
class Estimate:
    name: str
    kind: str
    pes: int
    cycles: int
    dsp: int = 0
    bram: int = 0
    lut: int = LUT_KERNEL
    layers: list[str] = field(default_factory=list)

    def add_array(self, bits: int, banks: int = 1) -> None:
        """An on-chip array of `bits`, in `banks` partitions."""
        per_bank = math.ceil(bits / max(banks, 1))
        if per_bank > LUTRAM_MAX_BITS:
            self.bram += banks * math.ceil(per_bank / BRAM_BITS)
        else:
            self.lut += banks * math.ceil(per_bank / LUTRAM_BITS_PER_LUT)

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "pes": self.pes, "latency_cycles": self.cycles,
                "dsp": self.dsp, "bram": self.bram, "lut": self.lut, "layers": self.layers}


def bits_of(value: SSAValue) -> int:
    return 8 * numpy_dtype(element_of(value)).itemsize


def window_extents(p: dict[str, int]) -> tuple[int, int, int, int]:
    """(OH, OW, HX, WX) of a Window<...> (window.h, with ceil mode)."""
    def out(size: int, k: int, s: int, lo: int, hi: int, d: int) -> int:
        span = size + lo + hi - (d * (k - 1) + 1)
        if not p.get("CEIL", 0):
            return span // s + 1
        o = (span + s - 1) // s + 1
        return o - 1 if (o - 1) * s >= size + lo else o

    oh = out(p["H"], p["KH"], p["SH"], p["PT"], p["PB"], p["DH"])
    ow = out(p["W"], p["KW"], p["SW"], p["PL"], p["PR"], p["DW"])
    hx = max(p["H"] + p["PT"] + p["PB"], (oh - 1) * p["SH"] + p["DH"] * (p["KH"] - 1) + 1)
    wx = max(p["W"] + p["PL"] + p["PR"], (ow - 1) * p["SW"] + p["DW"] * (p["KW"] - 1) + 1)
    return oh, ow, hx, wx


def requantizations(layer: object) -> int:
    """Requantization datapaths of a layer's stage (leaky: a second one for negatives)."""
    if isinstance(layer, qnn.AddOp):
        return 3
    if isinstance(layer, qnn.ConcatOp):
        return len(layer.inputs)
    if isinstance(layer, qnn.ContractionOp | qnn.RequantizeOp) or (
            isinstance(layer, qnn.QuantizedPoolOp) and layer.kind.data == "avg"):
        return 2 if layer.neg_shifts is not None else 1
    return 0


def stage_dsp(layer: object, scheme: str) -> int:
    n = requantizations(layer)
    if n == 0:
        return 0
    if scheme == "pow2":
        multiplied = isinstance(layer, qnn.Requantizes) and layer.multipliers is not None
        multiplied |= isinstance(layer, qnn.AddOp) and layer.operand_multipliers is not None
        return n * REQUANT_DSP["pow2"] if multiplied else 0
    return n * REQUANT_DSP["fixed"]


def kernel_estimate(op: KernelOp, scheme: str) -> Estimate:
    p, pe, template = op.template_params, op.pe_count, op.template.data
    name = op.layer.data if op.layer is not None else template
    dtype = dtype_of(op.inputs[0])
    numerics = NUMERICS[dtype]
    e = Estimate(name, template, pe, kernel_cycles(template, p, pe, numerics.add_latency))
    layer = op.layer_op
    if layer is not None:
        e.layers.append(name)
    if template in WINDOWED:
        _, _, _, wx = window_extents(p)
        rows = p["DH"] * (p["KH"] - 1) + 1
        banks = pe if template in ("depthwise_conv2d", "max_pool2d", "avg_pool2d") else 1
        e.add_array(rows * wx * p["C"] * bits_of(op.inputs[0]), banks)
    if template in CONTRACTIONS:
        m, k = contraction_shape(template, p)
        e.dsp += math.ceil(pe * numerics.mac_dsp)
        e.add_array(m * k * numerics.weight_bits, pe)
        e.add_array(m * numerics.bias_bits, pe)
        e.add_array(k * bits_of(op.inputs[0]))  # gemm_rows' row buffer (and im2row's)
        e.lut += pe * numerics.mac_lut
    elif template in ("max_pool2d", "avg_pool2d"):
        e.lut += pe * LUT_LANE
    elif template in ("global_max_pool", "global_avg_pool"):
        e.add_array(p["C"] * 32)
    if isinstance(layer, qnn.QNNOp) or (layer is not None and dtype == "int8"):
        e.dsp += stage_dsp(layer, scheme)
        e.lut += LUT_STAGE.get(scheme, 0) * requantizations(layer)
    elif layer is not None:
        float_stage_cost(e, op, numerics)
    return e


def float_stage_cost(e: Estimate, op: KernelOp, numerics: Numerics) -> None:
    """The output stage of a float or half kernel: a multiplier for a leaky slope, an adder
    for an add, a divider for average pooling, compare-and-select for the clamp."""
    ops = op.computing_ops
    leaky = any(o.name == "nn.leaky_relu" or o.properties.get("activation") == StringAttr("leaky_relu") for o in ops)
    e.dsp += numerics.mul_dsp if leaky else 0
    if op.template.data == "add":
        e.dsp += numerics.add_dsp
    if op.template.data in ("avg_pool2d", "global_avg_pool"):
        e.lut += LUT_FLOAT_DIVIDE
    e.lut += LUT_FLOAT_STAGE


def contraction_shape(template: str, p: dict[str, int]) -> tuple[int, int]:
    if template == "dense":
        return p["N"], p["K"]
    if template == "pointwise_conv2d":
        return p["M"], p["C"]
    if template == "depthwise_conv2d":
        return p["M"], p["KH"] * p["KW"]
    return p["M"], p["C"] // p.get("G", 1) * p["KH"] * p["KW"]


def kernel_cycles(template: str, p: dict[str, int], pe: int, add_latency: int = 1) -> int:
    """Cycles of one image through a template: loop trip counts, each reduction loop at the
    II its accumulator allows (`add_latency`: 1 for int8, the adder's latency for float and
    half, whose accumulation depends on the previous iteration's sum)."""
    ii = add_latency
    if template in ("conv2d", "conv2d_im2row", "depthwise_conv2d", "max_pool2d", "avg_pool2d"):
        oh, ow, hx, wx = window_extents(p)
        fill = hx * wx * p["C"]
        if template in ("max_pool2d", "avg_pool2d"):
            taps = p["KH"] * p["KW"] * (ii if template == "avg_pool2d" else 1)  # a max compares in one cycle
            return fill + oh * ow * (p["C"] // pe) * (taps + pe)
        m, k = contraction_shape(template, p)
        if template == "conv2d_im2row":  # im2row overlaps the GEMM: the GEMM's rows dominate
            return max(fill + oh * ow * k, oh * ow * (k + k * ii * m // pe + m))
        return fill + oh * ow * (m // pe) * (k * ii + pe)
    if template == "pointwise_conv2d":
        return p["H"] * p["W"] * (p["C"] + p["C"] * ii * p["M"] // pe + p["M"])
    if template == "dense":
        return p["K"] + p["K"] * ii * p["N"] // pe + p["N"]
    if template == "global_max_pool":
        return p["H"] * p["W"] * p["C"] + p["C"]
    if template == "global_avg_pool":  # channel c's sum recurs every C iterations
        return p["H"] * p["W"] * p["C"] * math.ceil(ii / p["C"]) + p["C"]
    if template == "concat_channels":
        return p["PIXELS"] * (p["CA"] + p["CB"])
    return p["N"]  # element-wise kernels and adapters: one value per cycle


def step_cycles(kind: str, s: dict[str, int], pe: int) -> int:
    """Cycles of one layer on a reused engine (engine_seml.h)."""
    if kind == "conv":
        k = s["C"] // s["G"] * s["KH"] * s["KW"]
        return s["M"] * k + s["M"] + s["OH"] * s["OW"] * (math.ceil(s["M"] / pe) * k + s["M"])
    if kind == "pool":
        sets = s["KH"] * s["KW"] - s["first_count"] + 1 if s["avg"] else 0
        return sets + s["OH"] * s["OW"] * (math.ceil(s["C"] / pe) * s["KH"] * s["KW"] + s["C"])
    return math.ceil(s["N"] / pe)


def engine_estimate(engine: EngineOp, invokes: list[InvokeOp], scheme: str) -> Estimate:
    kind, pe, limits = engine.kind.data, engine.pe_count, engine.limit_values
    e = Estimate(engine.sym_name.data, f"{kind} engine (reused)", pe, 0)
    for op in invokes:
        e.cycles += step_cycles(kind, op.step_values, pe)
        e.layers.append(op.layer.data if op.layer is not None else "")
    if kind == "conv":
        e.dsp += math.ceil(pe / MACS_PER_DSP)
        e.add_array(limits["MAX_M"] * limits["MAX_K"] * 8, pe)
        e.add_array(limits["MAX_M"] * (32 + 64 + 64), pe)  # bias, requant, negative requant
        e.lut += pe * LUT_MAC_LANE
    elif kind == "pool":
        e.add_array(limits["MAX_SETS"] * 64)
        e.lut += pe * LUT_LANE
    else:
        e.lut += pe * LUT_LANE
    layers = [op.layer_op for op in invokes]
    e.dsp += max((stage_dsp(layer, scheme) for layer in layers), default=0)
    e.lut += LUT_STAGE.get(scheme, 0) * max((requantizations(layer) for layer in layers), default=0)
    return e


def estimate(top: TopOp, target: Target) -> dict[str, object]:
    """report.json: per engine (pipeline kernel or reused engine) and in total, against the target."""
    scheme = top.scheme.data
    ops = list(top.body.block.ops)
    engines: list[Estimate] = []
    memories = Estimate("memories", "streams and buffers", 1, 0, lut=0)
    period_parts: list[int] = []
    schedule_cycles = 0
    latency = 0
    for op in ops:
        if isinstance(op, KernelOp):
            e = kernel_estimate(op, scheme)
            engines.append(e)
            period_parts.append(e.cycles)
            latency += e.cycles
        elif isinstance(op, StreamOp) and op.port is None:
            bits = int(op.depth.value.data) * bits_of(op.result)
            if bits > LUTRAM_MAX_BITS:
                memories.bram += math.ceil(bits / BRAM_BITS)
            else:
                memories.lut += math.ceil(int(op.depth.value.data) / SRL_DEPTH_PER_LUT) * bits_of(op.result)
        elif isinstance(op, BufferOp):
            memories.add_array(2 * int(op.size.value.data) * bits_of(op.result))  # PIPO: two halves
        elif isinstance(op, ScheduleOp):
            cycles, reused = schedule_estimate(op, {e.sym_name.data: e for e in ops if isinstance(e, EngineOp)}, scheme)
            engines.extend(reused)
            slots = [b for b in op.body.block.ops if isinstance(b, BufferOp)]
            memories.add_array(len(slots) * int(op.slot_size.value.data) * bits_of(slots[0].result))
            period_parts.append(cycles)
            schedule_cycles = cycles
            latency += cycles
    period = max(period_parts, default=1)
    totals = {key: sum(getattr(e, key) for e in [*engines, memories]) for key in ("dsp", "bram", "lut")}
    available = available_resources(target)
    return {
        "arch": top.arch.data,
        "target": target.name,
        "part": target.part,
        "clock_mhz": target.clock / 1e6,
        "formulas": "backends/hls/report.py (docs/hls.md): DSP = ceil(PE / 2) per int8 contraction (2 MACs per "
                    "DSP48E2) + 4 per fixed requantization, PE x 5 (float) or x 3 (half); BRAM = ceil(bits / 36 Kb) "
                    "per bank over 1 Kb; latency = loop trip counts at II=1, reductions of float (half) accumulators "
                    "at II=4 (3), the adder's latency",
        "engines": [e.as_dict() for e in engines],
        "memories": memories.as_dict(),
        "total": totals,
        "available": available,
        "utilization": {k: (round(totals[k] / v, 4) if v else None) for k, v in available.items()},
        "fits": all(v is None or totals[k] <= v for k, v in available.items()),
        "schedule_cycles": schedule_cycles,  # the reused engines' process: its steps and copies
        "period_cycles": period,
        "latency_cycles": latency,
        "throughput_fps": round(target.clock / period, 3),
    }


def schedule_estimate(op: ScheduleOp, engines: dict[str, EngineOp], scheme: str) -> tuple[int, list[Estimate]]:
    """The schedule's cycles (its steps one after another, plus its copies) and its engines."""
    invokes = [i for i in op.body.block.ops if isinstance(i, InvokeOp)]
    by_engine: dict[str, list[InvokeOp]] = {}
    for i in invokes:
        by_engine.setdefault(i.engine.root_reference.data, []).append(i)
    estimates = [engine_estimate(engines[name], ops, scheme) for name, ops in by_engine.items()]
    copies = sum(kernel_cycles(k.template.data, k.template_params, 1) for k in op.body.block.ops
                 if isinstance(k, KernelOp))
    return copies + sum(e.cycles for e in estimates), estimates


def available_resources(target: Target) -> dict[str, int | None]:
    bram = sum(m.size for m in target.memories if m.name.lower() == "bram")
    part = target.part.split("-")[0].lower()
    return {"dsp": target.pe_budget, "bram": bram * 8 // BRAM_BITS if bram else None, "lut": PART_LUTS.get(part)}
