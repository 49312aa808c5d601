"""A DPU core: Xilinx's DPUCZDX8G for Zynq UltraScale+ (product guide PG338, "Architecture
of the DPUCZDX8G"). Its convolution array has pixel parallelism PP, input-channel
parallelism ICP and output-channel parallelism OCP: PP·ICP·OCP MACs, 2·PP·ICP·OCP ops
per cycle. The eight configurations (PG338 table "Parallelism for Different Convolution
Architectures"):

    B512 4x8x8   B800 4x10x10   B1024 8x8x8   B1152 4x12x12
    B1600 8x10x10   B2304 8x12x12   B3136 8x14x14   B4096 8x16x16

Cycles, with ceil-division per parallel dimension (PP runs along the output row):
    conv / fully connected:  N · E · ceil(F/PP) · ceil(C/ICP) · ceil(M/OCP) · R·S
    depthwise, pooling:      N · E · ceil(F/(PP/2)) · ceil(C/ICP) · R·S
                             (PG338: "the parallelism of depthwise convolution is half
                             that of the pixel parallelism"; pooling shares that ALU)
    elementwise:             N · E · ceil(F/PP) · ceil(C/ICP)
Activations are fused into the layer before them and cost nothing by themselves, as are
concat (placement: its producers SAVE into its channels, docs/isa.md section 4; it moves
no byte) and views.

A layer's time is that of its instruction stream as lower-to-dpu emits it
(backends/dpu/builder.py) and the simulator times it (docs/isa.md sections 12-13), with
the simulator's own parameters (`backends.dpu.simulator.Timing.from_target`: DDR latency
per LOAD / SAVE, pipeline fill per compute instruction, INIT cycles). Per output-channel
tile its weights (bank layout: words of ICP·OCP bytes, so a depthwise kernel's words are
mostly zero padding) and bias records load, then per spatial tile LOAD, compute, SAVE,
double-buffered. A transfer takes latency + bytes at the core's share of the DDR
(compiler/cost.py's memory time). The layer takes max(compute + a, memory + b) cycles,
with what the queues cannot overlap (`overheads`):
    a = INIT + fill · tiles + prologue + epilogue + stalls - latency, where the prologue
        is the LOADs before the first compute instruction (first weights, bias records,
        first input tile), the epilogue the last SAVE, a stall what the next
        output-channel tile's weights, bias and first input (after the last input LOAD
        before them) take beyond the last two tiles' compute (the load queue is at most
        two tiles ahead: an input bank is reused two tiles later), and the layer
        before's last SAVE overlaps the first LOAD by its latency;
    b = latency · prologue LOADs: they wait their latency one after another before the
        DDR streams, and the last SAVE its own, less the one overlapped.

Limits are Vitis AI's (UG1414, "Currently Supported
Operators", DPUCZDX8G_ISA1_B4096): conv kernel 1..16, stride 1..8, group 1,
R·S·ceil(C/ICP) <= bank_depth (2048), C and M <= 256·ICP; depthwise kernel 1..256,
stride 1..8; pooling kernel 1..8 (PG338). Multiple cores (`count 3;`) run different
frames: a layer's cycles are one core's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from compiler.engines.base import (
    NO_OVERHEADS,
    SUPPORTED,
    EngineKind,
    Overheads,
    Support,
    Tile,
    ceil_div,
    tiled_steps,
    unsupported,
)
from compiler.engines.workload import (
    ELTWISE_KINDS,
    MAC_KINDS,
    POOL_KINDS,
    VIEW_KINDS,
    Workload,
)
from compiler.hw.schema import ParamError, count, word

if TYPE_CHECKING:
    from xdsl.ir import Operation

    from compiler.hw.model import Engine, Target

# (PP, ICP, OCP) per configuration, PG338 v3.4/v4.1 "Parallelism for Different
# Convolution Architectures"; the number in the name is the peak ops per cycle.
ARCHITECTURES: dict[str, tuple[int, int, int]] = {
    "B512": (4, 8, 8),
    "B800": (4, 10, 10),
    "B1024": (8, 8, 8),
    "B1152": (4, 12, 12),
    "B1600": (8, 10, 10),
    "B2304": (8, 12, 12),
    "B3136": (8, 14, 14),
    "B4096": (8, 16, 16),
}
DPU_ACTIVATIONS = frozenset({"relu", "clip", "leaky_relu", "hardswish", "hard_sigmoid"})
DPU_ELTWISE = frozenset({"add", "mul"})


def spans(total: int, size: int) -> tuple[int, int]:
    """How many tiles of `size` cover `total`, and the last one's size."""
    count = ceil_div(total, size)
    return count, total - (count - 1) * size


def lowered_workload(op: Operation, copied: int = 0) -> Workload | None:
    """The workload of a layer as lower-to-dpu runs it: an elementwise layer over its
    H x W map (`workload_of` flattens the pixels into rows, which tiles differently), and a
    concatenation as the ELEW copy (`inputs=1`) of the `copied` channels whose producers do
    not SAVE them in place (none: it costs nothing)."""
    from compiler.engines.workload import workload_of
    from dialects.nn import shape_of

    layer = workload_of(op)
    if layer is None or layer.op not in ELTWISE_KINDS | {"concat"}:
        return layer
    shape = shape_of(op.results[0])
    if len(shape) == 4:
        layer = replace(layer, out_h=shape[2], out_w=shape[3], in_h=shape[2], in_w=shape[3])
    if layer.op == "concat" and copied:
        layer = replace(layer, op="add", inputs=1, in_channels=copied, out_channels=copied)
    return layer


class DpuEngine(EngineKind):
    name = "dpu"
    summary = "a DPUCZDX8G core: PP x ICP x OCP convolution array (B512 ... B4096)"
    parameters = {
        "arch": word("DPUCZDX8G configuration", choices=tuple(ARCHITECTURES)),
        "pp": count("pixel parallelism (instead of arch)"),
        "icp": count("input-channel parallelism (instead of arch)"),
        "ocp": count("output-channel parallelism (instead of arch)"),
        "bank_depth": count("depth of an on-chip feature-map bank, in ICP-wide words", default=2048),
    }
    op_kinds = MAC_KINDS | POOL_KINDS | DPU_ELTWISE | DPU_ACTIVATIONS | frozenset({"concat"}) | VIEW_KINDS

    def check(self, params: dict[str, Any]) -> Mapping[str, Any]:
        explicit = [k for k in ("pp", "icp", "ocp") if params.get(k) is not None]
        arch = params.get("arch")
        if arch is not None and explicit:
            raise ParamError(f"give either arch or pp/icp/ocp, not both (arch {arch} fixes them)", explicit[0])
        if arch is not None:
            params["pp"], params["icp"], params["ocp"] = ARCHITECTURES[arch]
        elif len(explicit) != 3:
            missing = [k for k in ("pp", "icp", "ocp") if k not in explicit]
            raise ParamError(f"needs `arch B4096;` (or another B...) or all of pp, icp, ocp; missing {', '.join(missing)}")
        return params

    def fixed_pes(self, engine: Engine) -> int:
        p = engine.params
        return int(p["pp"] * p["icp"] * p["ocp"])

    def unsupported_kind_reason(self, layer: Workload) -> str:
        return f"the DPU has no '{layer.op}' unit (Vitis AI runs it on the CPU)"

    def check_layer(self, layer: Workload, engine: Engine) -> Support:
        p = engine.params
        icp, ocp, depth = p["icp"], p["ocp"], p["bank_depth"]
        kernel, stride = max(layer.kernel_h, layer.kernel_w), max(layer.stride_h, layer.stride_w)
        if layer.op == "conv2d":
            if layer.groups != 1:
                return unsupported(f"grouped convolution (group {layer.groups}) is not on the DPU; only group 1 and depthwise")
            if kernel > 16:
                return unsupported(f"kernel {layer.kernel_h}x{layer.kernel_w} exceeds the DPU's 16x16")
            if stride > 8:
                return unsupported(f"stride {stride} exceeds the DPU's 8")
            if layer.window * ceil_div(layer.in_channels, icp) > depth:
                return unsupported(
                    f"kernel x input channels too large: {layer.kernel_h}*{layer.kernel_w}*ceil({layer.in_channels}/{icp}) > bank depth {depth}"
                )
            if max(layer.dilation_h, layer.dilation_w) * layer.in_channels > 256 * icp:
                return unsupported(f"dilation x input channels exceeds 256*{icp}")
        if layer.op in MAC_KINDS and layer.op != "depthwise":
            if layer.in_channels > 256 * icp or layer.out_channels > 256 * ocp:
                return unsupported(f"channels {layer.in_channels}->{layer.out_channels} exceed the DPU's 256*{icp}")
        if layer.op == "depthwise" and (kernel > 256 or stride > 8):
            return unsupported(f"depthwise kernel {layer.kernel_h}x{layer.kernel_w} / stride {stride} beyond 256 / 8")
        if layer.op in ("maxpool", "avgpool") and kernel > 8:
            return unsupported(f"pooling kernel {layer.kernel_h}x{layer.kernel_w} exceeds the DPU's 8x8")
        return SUPPORTED

    def compute_cycles(self, layer: Workload, engine: Engine, pes: int, tile: Tile) -> int:
        p = engine.params
        pp, icp, ocp = p["pp"], p["icp"], p["ocp"]
        rows = layer.batch * layer.out_h
        op = layer.op
        if op in MAC_KINDS and op != "depthwise":
            return int(
                rows
                * tiled_steps(layer.out_w, tile.f or layer.out_w, pp)
                * tiled_steps(layer.in_channels, tile.n or layer.in_channels, icp)
                * tiled_steps(layer.out_channels, tile.m or layer.out_channels, ocp)
                * layer.window
            )
        if op == "depthwise" or op in POOL_KINDS:
            alu_pp = max(1, pp // 2)
            return int(
                rows
                * tiled_steps(layer.out_w, tile.f or layer.out_w, alu_pp)
                * tiled_steps(layer.out_channels, tile.m or layer.out_channels, icp)
                * layer.window
            )
        if op in ELTWISE_KINDS:
            return int(
                rows
                * tiled_steps(layer.out_w, tile.f or layer.out_w, pp)
                * tiled_steps(layer.out_channels, tile.m or layer.out_channels, icp)
            )
        return 0  # fused activations, concat, views

    def channel_multiple(self, layer: Workload, engine: Engine, pes: int) -> int:
        """OCP for convolutions and fully connected layers; the other units run channels
        ICP at a time (the compute_cycles formulas above)."""
        dense = layer.op in MAC_KINDS and layer.op != "depthwise"
        return int(engine.params["ocp"] if dense else engine.params["icp"])

    def operand_bytes_per_cycle(self, layer: Workload, engine: Engine, pes: int) -> float:
        p = engine.params
        return p["pp"] * p["icp"] * layer.elem_bytes + p["icp"] * p["ocp"] * layer.weight_elem_bytes

    # -- transfers and what double buffering does not hide ------------------------------

    def traffic(self, layer: Workload, engine: Engine, tile: Tile) -> tuple[int, int, int]:
        """The builder's loops: all input channels at once, output channels outermost (the
        input read once per output-channel tile, each weight once); weights in bank layout.
        A concatenation moves nothing (placement)."""
        if layer.op == "concat":
            return 0, 0, 0
        whole_inputs = replace(tile, n=layer.in_channels_per_group, order="output")
        inputs, _, outputs = super().traffic(layer, engine, whole_inputs)
        assert tile.m
        return inputs, self.weight_bytes(layer, engine, tile.m), outputs

    def weight_bytes(self, layer: Workload, engine: Engine, chans: int) -> int:
        """DRAM bytes of a layer's weights and bias records in bank layout (docs/isa.md
        section 3) with `chans` output channels per tile; an average pool's divisor records."""
        from backends.dpu.isa import BIAS_RECORD_BYTES

        if layer.op == "avgpool":
            return BIAS_RECORD_BYTES * layer.window * layer.weight_elem_bytes  # one divisor per window count
        if layer.op == "global_avgpool":
            return BIAS_RECORD_BYTES * layer.weight_elem_bytes  # padding counts: one divisor
        if not layer.has_macs:
            return 0
        p = engine.params
        full, rest = divmod(layer.out_channels, chans)
        words = full * self.weight_words(layer, engine, chans) + (self.weight_words(layer, engine, rest) if rest else 0)
        return (words * p["icp"] * p["ocp"] + BIAS_RECORD_BYTES * layer.out_channels) * layer.weight_elem_bytes

    def weight_words(self, layer: Workload, engine: Engine, chans: int) -> int:
        """Weights-bank words of `chans` output channels."""
        p = engine.params
        if layer.op == "depthwise":
            return layer.window * ceil_div(chans, p["icp"])
        return ceil_div(chans, p["ocp"]) * layer.window * ceil_div(layer.in_channels_per_group, p["icp"])

    def overheads(self, layer: Workload, engine: Engine, target: Target, tile: Tile) -> Overheads:
        from backends.dpu.simulator import Timing
        from compiler.cost import memory_cycles

        if layer.op == "concat" or layer.op in VIEW_KINDS or layer.op in DPU_ACTIVATIONS:
            return NO_OVERHEADS  # no instructions of its own
        timing = Timing.from_target(target, engine.name)

        def transfer(nbytes: int) -> int:
            return timing.ddr_latency + int(memory_cycles(nbytes, target, engine))

        assert tile.m and tile.e and tile.f
        (rows, last_rows), (cols, last_cols) = spans(layer.out_h, tile.e), spans(layer.out_w, tile.f)
        slices, last_chans = spans(layer.out_channels, tile.m)
        tiles = rows * cols * slices * layer.batch
        loads = self.prologue_loads(layer, engine, (tile.e, tile.f, tile.m))
        prologue = sum(transfer(b) for b in loads)
        epilogue = transfer(last_rows * last_cols * last_chans * layer.elem_bytes)
        fixed = timing.init_cycles + timing.compute_latency * tiles
        if layer.has_macs and slices > 1 and rows * cols > 1:
            # The load queue runs at most two tiles ahead of compute (each input bank is
            # reused two tiles later), so the next output-channel tile's weights, bias and
            # first input load only while the last two tiles of this one compute.
            step = self.compute_cycles(layer, engine, self.fixed_pes(engine), tile) / tiles + timing.compute_latency
            last_input = transfer(self.traffic(layer, engine, tile)[0] // tiles)
            for chans in [tile.m] * (slices - 2) + [last_chans]:
                reload = last_input + sum(transfer(b) for b in self.prologue_loads(layer, engine, (tile.e, tile.f, chans)))
                fixed += max(0, int(reload - 2 * step))
        # The layer before ends with a SAVE whose DDR latency the first LOAD overlaps.
        return Overheads(fixed + prologue + epilogue - timing.ddr_latency, timing.ddr_latency * len(loads))

    def prologue_loads(self, layer: Workload, engine: Engine, tile: tuple[int, int, int]) -> list[int]:
        """Bytes of each LOAD before a layer's first compute instruction can start, for its
        first output tile of (rows, cols, chans): the first weights and bias records, the
        divisor records of an average pool, and the input tile (each operand's)."""
        rows, cols, chans = tile
        loads = []
        if layer.has_macs:
            from backends.dpu.isa import BIAS_RECORD_BYTES

            p = engine.params
            loads += [self.weight_words(layer, engine, chans) * p["icp"] * p["ocp"] * layer.weight_elem_bytes,
                      BIAS_RECORD_BYTES * chans * layer.weight_elem_bytes]  # fmt: skip
        elif layer.op in ("avgpool", "global_avgpool"):
            loads.append(self.weight_bytes(layer, engine, chans))
        # The first tile's window, less the padding above and left of it (LOAD writes that).
        in_rows = min(layer.in_h, layer.window_rows(rows) - layer.pad_h // 2)
        in_cols = min(layer.in_w, layer.window_cols(cols) - layer.pad_w // 2)
        in_chans = layer.in_channels if layer.has_macs and layer.op != "depthwise" else chans
        loads += [in_rows * in_cols * in_chans * layer.elem_bytes] * layer.inputs
        return loads
