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
mostly zero padding) and bias records load, then per spatial tile LOAD (its window inside
the map), compute, SAVE, double-buffered. A transfer takes latency + bytes at the core's
share of the DDR (compiler/cost.py's memory time). The layer takes max(compute + a,
memory + b) cycles, with what the queues cannot overlap (`overheads`):
    a = INIT + fill · tiles + prologue + epilogue + stalls + pace + lag - latency: the
        LOADs before the first compute (first weights, bias records, first input tile),
        the last SAVE, what the next output-channel tile's weights, bias and first input
        take beyond the last two tiles' compute (the load queue is at most two tiles
        ahead), the pace two banks per operand allow (tile k+2's LOAD waits for tile k's
        compute, its compute for tile k's SAVE), the SAVE before the last still moving
        when the last compute ends (`tail`); the layer before's last SAVE overlaps the
        first LOAD by its latency;
    b = latency · prologue LOADs (at least every LOAD's latency no SAVE hides) + the
        last tile's compute after the last LOAD.
In a program (`program_cycles`, what lower-to-dpu records) each boundary then moves what
the next layer's first LOADs, issued during this layer's tail, do to its last SAVE from
the next layer to this one (`boundary`): the simulator counts a layer's cycles from the
end of the layers before to the end of its own last instruction.

Limits are Vitis AI's (UG1414, "Currently Supported
Operators", DPUCZDX8G_ISA1_B4096): conv kernel 1..16, stride 1..8, group 1,
R·S·ceil(C/ICP) <= bank_depth (2048), C and M <= 256·ICP; depthwise kernel 1..256,
stride 1..8; pooling kernel 1..8 (PG338). Multiple cores (`count 3;`) run different
frames, in lockstep, each with its share (1/cores) of the DDR, which the simulator's
round-robin DDR gives them: a layer's cycles are one core's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
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
    from xdsl.ir import Operation, SSAValue

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


def window_span(outs: int, tile: int, stride: int, extent: Callable[[int], int], pad: int, size: int) -> int:
    """Input rows (or columns) the LOADs of tiles of `tile` outputs along one axis read:
    each tile's window inside the map, padding not fetched."""
    total = 0
    for first in range(0, outs, tile):
        start = first * stride - pad
        total += max(0, min(size, start + extent(min(tile, outs - first))) - max(0, start))
    return total


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
        _, _, outputs = super().traffic(layer, engine, whole_inputs)
        assert tile.m and tile.e and tile.f
        # Each spatial tile LOADs its window's rows and columns inside the map (a stride
        # larger than the kernel skips the rows between windows).
        rows = window_span(layer.out_h, tile.e, layer.stride_h, layer.window_rows, layer.pad_h // 2, layer.in_h)
        cols = window_span(layer.out_w, tile.f, layer.stride_w, layer.window_cols, layer.pad_w // 2, layer.in_w)
        dense = layer.has_macs and layer.op != "depthwise"
        chans = layer.in_channels * ceil_div(layer.out_channels, tile.m) if dense else layer.out_channels
        inputs = rows * cols * chans * layer.batch * layer.inputs * layer.elem_bytes
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
        step = self.compute_cycles(layer, engine, self.fixed_pes(engine), tile) / tiles + timing.compute_latency
        inputs, _, outputs = self.traffic(layer, engine, tile)
        if layer.has_macs and slices > 1 and rows * cols > 1:
            # The load queue runs at most two tiles ahead of compute (each input bank is
            # reused two tiles later), so the next output-channel tile's weights, bias and
            # first input load only while the last two tiles of this one compute.
            last_input = transfer(inputs // tiles)
            for chans in [tile.m] * (slices - 2) + [last_chans]:
                reload = last_input + sum(transfer(b) for b in self.prologue_loads(layer, engine, (tile.e, tile.f, chans)))
                fixed += max(0, int(reload - 2 * step))
        if tiles > 2:
            # Two banks per operand: tile k+2's LOAD waits for tile k's compute to free its
            # input bank and its compute for tile k's SAVE to free its output bank, so the
            # two transfers and a DDR latency fall between computes two tiles apart.
            period = (step + timing.ddr_latency + memory_cycles(inputs + outputs, target, engine) / tiles) / 2
            fixed += int((tiles - 2) * max(0.0, period - step))
        end = self.tail(layer, engine, target, tile)
        if end.save is not None:
            # The SAVE before the last may still move when the last compute ends: the last
            # one waits for it (one save queue).
            fixed += int(max(0.0, timing.ddr_latency + end.save - end.gap))
        # One load queue: each LOAD waits its latency before its bytes move, and the core's
        # share of the DDR idles meanwhile unless a SAVE moves (every SAVE but the last
        # comes before a later tile's LOAD).
        records = 2 * slices if layer.has_macs else int(layer.op in ("avgpool", "global_avgpool"))
        hidden = (tiles - 1) * min(timing.ddr_latency, memory_cycles(outputs, target, engine) / tiles)
        memory = max(timing.ddr_latency * len(loads), int(timing.ddr_latency * (tiles * layer.inputs + records) - hidden))
        # After its last LOAD the last tile computes, the SAVE before the last moving meanwhile.
        memory += int(max(0.0, end.last_step - (end.save or 0.0)))
        # The layer before ends with a SAVE whose DDR latency the first LOAD overlaps.
        return Overheads(fixed + prologue + epilogue - timing.ddr_latency, memory)

    def tail(self, layer: Workload, engine: Engine, target: Target, tile: Tile) -> Tail:
        """The end of the layer's instruction stream (see `Tail`), from its last three
        tiles: the last one (the last output-channel tile's last rows and columns), the one
        before (a whole tile of that output-channel tile, or the output-channel tile before's
        when it has one spatial tile) and the steady pace of that output-channel tile."""
        from backends.dpu.simulator import Timing
        from compiler.cost import memory_cycles

        timing = Timing.from_target(target, engine.name)
        latency = timing.ddr_latency
        assert tile.m and tile.e and tile.f
        (rows, last_rows), (cols, last_cols) = spans(layer.out_h, tile.e), spans(layer.out_w, tile.f)
        slices, last_chans = spans(layer.out_channels, tile.m)
        per_slice = rows * cols * layer.batch
        tiles = per_slice * slices
        dense = layer.has_macs and layer.op != "depthwise"

        def times(chans: int, out_rows: int, out_cols: int) -> tuple[float, float, float]:
            """(compute with its fill, input LOADs, SAVE) cycles of one tile."""
            part = replace(layer, out_h=out_rows, out_w=out_cols, batch=1, out_channels=chans) if dense else replace(
                layer, out_h=out_rows, out_w=out_cols, batch=1, in_channels=chans, out_channels=chans,
                groups=chans if layer.groups > 1 else 1)
            compute = self.compute_cycles(part, engine, self.fixed_pes(engine), Tile(m=chans, e=out_rows, f=out_cols))
            window = min(layer.in_h, layer.window_rows(out_rows)) * min(layer.in_w, layer.window_cols(out_cols))
            loads = window * (layer.in_channels if dense else chans) * layer.elem_bytes * layer.inputs
            return (compute + timing.compute_latency, float(memory_cycles(loads, target, engine)),
                    float(memory_cycles(out_rows * out_cols * chans * layer.elem_bytes, target, engine)))

        step, load, save = times(last_chans, tile.e, tile.f)
        period = max(step, load + save, (step + latency + load + save) / 2) if per_slice > 2 else step
        step_last, load_last, save_last = times(last_chans, last_rows, last_cols)
        if per_slice > 1:
            before = step, save, period
        else:
            before_step, _, before_save = times(tile.m, last_rows, last_cols)
            before = before_step, before_save, before_step
        step_before, save_before, pace = before
        if tiles > 1:
            # Tile n's LOAD waits for tile n-2's compute (its bank) and moves after that
            # tile's SAVE; tile n computes once its LOAD is done and tile n-1 is.
            wait = save_before if tiles > 2 else 0.0
            gap = max(step_last, latency + wait + load_last + step_last - pace)
            loads_done = min(-step_last, -gap - pace + latency + wait + load_last)
        else:
            gap, loads_done = step_last, -step_last

        def freed(slots: int) -> float:
            """When the computes stop reading slot 0 of a double-buffered weights / bias bank."""
            if (slices - 1) % slots == 0:
                return 0.0  # the last output-channel tile's computes read it
            return -gap - (per_slice - 1) * period

        depth = engine.params["bank_depth"]
        weights_free = bias_free = -math.inf
        if layer.has_macs:
            words = self.weight_words(layer, engine, tile.m)
            weights_free, bias_free = freed(2 if words <= depth // 2 else 1), freed(2 if tile.m <= depth // 2 else 1)
        elif layer.op in ("avgpool", "global_avgpool"):
            bias_free = 0.0  # every POOL reads the divisor records
        # Input bank 0 (and the second operand's first bank): read by the last tile's
        # compute when there is an odd number of tiles.
        input_free = (0.0 if (tiles - 1) % 2 == 0 else -gap,) * (layer.inputs if layer.op != "concat" else 1)
        if layer.inputs == 1:
            input_free += (-math.inf,)  # a second operand's bank it never reads
        return Tail(period, gap, step_last, save_before if tiles > 1 else None, save_last, loads_done, weights_free, bias_free,
                    input_free, tile.e, cols, per_slice, tile.m, slices, latency + save)

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


@dataclass(frozen=True)
class Tail:
    """The end of a layer's instruction stream, in cycles from its last compute
    instruction's end: the cycles between its last computes (`period`), the DDR cycles of
    the SAVE before the last (None for one tile) and of the last, when its load queue
    has issued its last LOAD, and when its computes stop reading word 0 of the weights
    and of the bias bank (-inf: they never do). The next layer's first LOADs write there."""

    period: float
    gap: float
    last_step: float
    save: float | None
    last_save: float
    loads_done: float
    weights_free: float
    bias_free: float
    input_free: tuple[float, ...]  # when its computes stop reading input bank 0 (per operand's banks)
    tile_rows: int  # its output tiles: rows, column tiles, spatial tiles per channel tile,
    col_tiles: int  # channels per tile and channel tiles
    per_slice: int
    chans: int
    slices: int
    save_end: float  # a tile's SAVE ends this long after its compute

    def written(self, rows: int, chans: int) -> float | None:
        """When the SAVEs of the first `rows` rows and `chans` channels of the layer's
        output have moved; None when that takes the last SAVE."""
        slice_ = min(self.slices, ceil_div(chans, self.chans)) - 1
        index = slice_ * self.per_slice + min(self.per_slice, ceil_div(rows, self.tile_rows) * self.col_tiles) - 1
        after = self.slices * self.per_slice - 1 - index
        return None if after <= 0 else -after * self.period + self.save_end


def boundary(before: tuple[Workload, Tile], after: tuple[Workload, Tile], target: Target, engine: Engine,
             reads_before: Sequence[bool] | None = None) -> tuple[int, int]:
    """(cycles the layer `before` gains, cycles the layer `after` saves) when `after`'s
    first LOADs run during `before`'s last tiles. The load queue issues them as soon as
    `before`'s LOADs are done and the bank words they write are no longer read: the
    weights and bias records at once (they read no map), an input tile once the SAVEs of
    `before` that wrote it are done (`reads_before`: per operand, whether it is
    `before`'s output; else at once). On the core's share of the DDR, first come first
    served, they may go ahead of `before`'s last SAVE, which ends that layer, and `after` starts with them
    done. A few transfers replayed as the simulator orders them (ready time, then
    program order); with none of them early this is the per-layer model's convention
    (the first LOAD's latency overlaps the last SAVE)."""
    from backends.dpu.simulator import Timing
    from compiler.cost import memory_cycles

    plugin = engine.kind_plugin
    assert isinstance(plugin, DpuEngine)
    layer, tile = after
    assert tile.m and tile.e and tile.f
    loads = plugin.prologue_loads(layer, engine, (tile.e, tile.f, tile.m))
    latency = Timing.from_target(target, engine.name).ddr_latency
    tail = plugin.tail(before[0], engine, target, before[1])
    independent = len(loads) - layer.inputs
    reads = list(reads_before) if reads_before is not None else [True] * layer.inputs
    # The first input tile: its window's rows of the map `before` writes, all channels
    # for a dense convolution, else the first output-channel tile's.
    rows = min(layer.in_h, layer.window_rows(tile.e) - layer.pad_h // 2)
    chans = layer.in_channels if layer.has_macs and layer.op != "depthwise" else tile.m
    written = tail.written(rows, chans)
    full = target.clock_of(engine) / target.dram.bandwidth
    cores = engine.count

    def replay(with_loads: bool) -> tuple[float, float]:
        """(end of `before`'s last SAVE, end of `after`'s first LOADs)."""
        # (DDR cycles, earliest start, transfers it waits for): the SAVE before the last
        # (a period earlier), the last SAVE (one save queue), then `after`'s LOADs (one
        # load queue; each also waits for its bank words, an input for its SAVEs).
        transfers: list[tuple[float, float, tuple[int, ...]]] = []
        if tail.save is not None:
            transfers.append((tail.save, -tail.gap, ()))
        transfers.append((tail.last_save, 0.0, (len(transfers) - 1,) if transfers else ()))
        last_save = len(transfers) - 1
        previous: tuple[int, ...] = ()
        for k, b in enumerate(loads if with_loads else []):
            if k < independent:
                start, gates = tail.weights_free if k == 0 and layer.has_macs else tail.bias_free, previous
            else:
                operand = k - independent
                start = tail.input_free[min(operand, len(tail.input_free) - 1)]
                gates = previous
                if reads[min(operand, len(reads) - 1)]:
                    if written is None:
                        gates += (last_save,)
                    else:
                        start = max(start, written)
            # At the core's share of the DDR (the cores run the same program in lockstep).
            transfers.append((math.ceil(b * full) * cores, max(tail.loads_done, start), gates))
            previous = (len(transfers) - 1,)
        ends: dict[int, float] = {}
        ddr = tail.loads_done  # the last LOAD of `before` moved its bytes
        while len(ends) < len(transfers):
            # Of the transfers whose queue is free, the one ready first (then program order).
            ready, k = min((max([start, *(ends[g] for g in gates)]), k)
                           for k, (_, start, gates) in enumerate(transfers)
                           if k not in ends and all(g in ends for g in gates))
            ddr = ends[k] = max(ready + latency, ddr) + transfers[k][0]
        return ends[last_save], max(ends.values())

    alone, _ = replay(False)
    end, loaded = replay(True)
    # `after`'s own model starts its prologue at `before`'s end with every LOAD's latency
    # but the first one's (overlapped by that SAVE) and its bytes.
    modelled = sum(latency + int(memory_cycles(b, target, engine)) for b in loads) - latency
    return int(end - alone), int(modelled - max(0.0, loaded - end))


def program_cycles(layers: Sequence[tuple[Operation, tuple[int, int, int] | None, int]], target: Target) -> list[int | None]:
    """The cost model's cycles of each layer of a DPU program, in program order: (op,
    tile (rows, columns, channels) of its largest output tile, None when it has no
    instructions; concatenation channels ELEW copies). None for a layer without a model
    (no instructions, ALU layers); see `sequence_cycles`."""
    from compiler.engines.base import Tile as CostTile

    items: list[DpuLayer | None] = []
    where: list[int | None] = []
    before: Operation | None = None
    for op, tile, copied in layers:
        if tile is None:
            where.append(None)  # no instructions: not between two layers
            continue
        workload = lowered_workload(op, copied)
        where.append(len(items))
        reads = tuple(produced_by(v, before) for v in op.operands[: workload.inputs]) if workload else ()
        items.append(None if workload is None else (workload, CostTile(m=tile[2], e=tile[0], f=tile[1]), reads))
        before = op
    cycles = sequence_cycles(items, target)
    return [None if k is None else cycles[k] for k in where]


def produced_by(value: SSAValue, op: Operation | None) -> bool:
    """Whether `value` is `op`'s result, looking through views (a reshape moves no byte)."""
    from dialects.qnn import LAYOUT_OPS

    owner = value.owner
    while isinstance(owner, LAYOUT_OPS) and owner is not op:
        owner = owner.operands[0].owner
    return op is not None and owner is op


# A layer of a DPU program: its workload, its tile and, per feature-map operand, whether
# the layer before it in the program writes it.
DpuLayer = tuple[Workload, Tile, tuple[bool, ...]]


def sequence_cycles(layers: Sequence[DpuLayer | None], target: Target) -> list[int | None]:
    """Cycles of consecutive layers of a DPU program (None for a layer the model does not
    cover): each `compiler.cost.layer_cost` for its tile, with what a layer's first LOADs
    take during the tail of the layer before moved from it to that layer (`boundary`),
    as the simulator counts a layer's cycles: from the end of the layers before to the
    end of its own last instruction."""
    from compiler.cost import layer_cost
    from compiler.errors import LayerloomError

    engine = next(e for e in target.engines if e.kind == "dpu")
    cycles: list[int | None] = []
    previous: tuple[Workload, Tile] | None = None
    for item in layers:
        cost = None
        if item is not None:
            try:
                cost = layer_cost(item[0], target, engine, tile=item[1])
            except LayerloomError:
                cost = None
        if item is None or cost is None:
            cycles.append(None)
            previous = None
            continue
        current = (item[0], item[1].resolved(item[0]))
        cycles.append(cost.cycles)
        if previous is not None and cycles[-2] is not None:
            gained, saved = boundary(previous, current, target, engine, item[2])
            cycles[-2] = int(cycles[-2] or 0) + gained
            cycles[-1] = max(1, cost.cycles - saved)
        previous = current
    return cycles
