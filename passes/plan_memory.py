"""`plan-memory{hw=NAME plan=auto report=FILE plot=FILE}`: where every tensor lives.

Per layer the memory requirement (weights, input and output feature maps, the engine's
double-buffered tiles or line buffer) and, for the whole module, one plan among
`ping-pong` (the reused engine's tensors all in DRAM, tiles ping-pong), `weights-resident`
(weights on chip where they fit, first layers first), `fmaps-on-chip` (feature maps
between the reused engine's layers on chip where they fit) and `weights+fmaps` -- chosen
by the cost model (shortest period, then fewest DRAM bytes) unless `plan` names one.
Pipeline layers stream feature maps to each other and keep a line buffer on chip, and
their weights where they fit: a layer whose weights stay in DRAM streams them once per
tile of e output rows, buffering those rows (from one row up to the whole frame: once
per frame); which layers keep them, and how many rows the others buffer, is chosen by
benefit (DRAM bytes saved per on-chip byte) in the room the rest leaves, and written as
the layer's tile rows. Maps crossing between the pipeline and the reused engine get a
double buffer.
On-chip buffers are allocated by liveness (first fit): offsets and peak.

Each accel.layer gets `input` / `weights` / `output` placements ("dram", "onchip" with an
offset, "stream") and a pipeline layer its line buffer's `buffer_offset`; the reused
engine its tile buffers (`buffer_offset`, `buffer_bytes`); the module `accel.plan` and
`accel.onchip_peak`. `report=FILE` writes a text report (`-`: stderr), `plot=FILE` a PNG
of the per-layer requirement and the on-chip allocation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from compiler.engines.workload import VIEW_KINDS
from compiler.errors import LayerloomError
from compiler.mapping import PLAN_ATTR, PLANS, SESL, NetworkMapping, best_plan, plan_options, read_mapping, target_of
from compiler.mapping_report import plan_report, plot_memory
from dialects.accel import LayerOp, engine_ops
from dialects.nn import i64attr
from passes.utils import write_report

PEAK_ATTR = "accel.onchip_peak"


@dataclass(frozen=True)
class PlanMemoryPass(ModulePass):
    name = "plan-memory"

    hw: str = ""
    plan: str = "auto"
    report: str = ""
    plot: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.plan != "auto" and self.plan not in PLANS:
            raise LayerloomError(f"unknown memory plan '{self.plan}' (one of auto, {', '.join(PLANS)})", "plan-memory")
        target, _ = target_of(op, self.hw, self.name)
        mapped = read_mapping(op, target, self.name)
        untiled = [mapped.graph.layers[i].name for i, w in enumerate(mapped.wrappers) if w is not None and mapped.tiles[i] is None]
        if untiled:
            raise LayerloomError(f"layer '{untiled[0]}' has no tile: run tile before plan-memory", "plan-memory")
        plans = PLANS if self.plan == "auto" else (self.plan,)
        options = plan_options(mapped.graph, target, mapped.assignment, mapped.tiles, plans, mapped.engines)
        mapping = best_plan(options, target)
        write_plan(op, mapping, mapped.graph.producers, mapped.wrappers)
        if self.report:
            write_report(plan_report(mapping, options), self.report)
        if self.plot:
            plot_memory(mapping, Path(self.plot))


def write_plan(module: ModuleOp, mapping: NetworkMapping, producers_of: Sequence[Sequence[int]],
               wrappers: Sequence[Operation | None]) -> None:  # fmt: skip
    plan = mapping.plan
    output_at: dict[int, tuple[str, int | None]] = {}
    for m, wrapper in zip(mapping.layers, wrappers, strict=True):
        if not isinstance(wrapper, LayerOp):
            continue
        i, p = m.index, m.placement
        if m.role == SESL and m.tile is not None:  # the rows per pass of streamed weights
            assert m.tile.m and m.tile.n and m.tile.e and m.tile.f
            wrapper.set_tile((m.tile.m, m.tile.n, m.tile.e, m.tile.f), m.tile.order)
        wrapper.set_placement("input", ("stream" if m.role == SESL else "onchip") if p.input_on_chip else "dram")
        if m.layer.weight_bytes:
            weights = plan.of_layer(i, ("weights",))
            wrapper.set_placement("weights", "onchip" if weights else "dram", weights.offset if weights else None)
        else:
            wrapper.properties.pop("weights", None)
            wrapper.properties.pop("weights_offset", None)
        kept = plan.of_layer(i, ("fmap", "double-buffer"))
        producers = [j for j in producers_of[i] if j in output_at]
        if kept is not None:
            output_at[i] = ("onchip", kept.offset)
        elif m.layer.op in VIEW_KINDS and producers:  # a view's data is where its producer's is
            output_at[i] = output_at[producers[0]]
        else:
            output_at[i] = ("stream" if p.output_on_chip else "dram", None)
        wrapper.set_placement("output", *output_at[i])
        line = plan.of_layer(i, ("line-buffer",))
        if line is None:
            wrapper.properties.pop("buffer_offset", None)
        else:
            wrapper.properties["buffer_offset"] = i64attr(line.offset)
    tiles = next((a for a in plan.allocations if a.kind == "tiles"), None)
    for engine in engine_ops(module).values():
        if engine.role.data != SESL and tiles is not None:
            engine.properties["buffer_offset"] = i64attr(tiles.offset)
            engine.properties["buffer_bytes"] = i64attr(tiles.size)
    module.attributes[PLAN_ATTR] = StringAttr(plan.name)
    module.attributes[PEAK_ATTR] = i64attr(plan.peak)
