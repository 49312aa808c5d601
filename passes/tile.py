"""`tile{hw=NAME}`: tile sizes and loop order for every mapped layer.

On the reused engine, the tile (m output channels x n input channels x e rows x f
columns, and the loop order that keeps outputs, weights or inputs on chip) whose
double-buffered buffers fit the engine's share of its buffer memory and that minimises
the layer's DRAM traffic (from the cost model) without idling the engine: among tiles
about as fast (max of compute with the lanes the tile leaves and memory time), the least
traffic (compiler/mapping.py `best_tile`; chosen for the module's PE budget, as
assign-engines did). On a pipeline engine, the
streaming tile: one output row from a line buffer (order `stream`; plan-memory raises the
rows of a layer whose weights it leaves in DRAM). Needs assign-engines
first; `hw` defaults to the target assign-engines recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from compiler.mapping import read_mapping, target_of, tile_for
from dialects.accel import LayerOp


@dataclass(frozen=True)
class TilePass(ModulePass):
    name = "tile"

    hw: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        target, _ = target_of(op, self.hw, self.name)
        mapped = read_mapping(op, target, self.name)
        for e in mapped.engines:
            for i in e.layers:
                wrapper = mapped.wrappers[i]
                assert isinstance(wrapper, LayerOp)
                t = tile_for(mapped.graph.layers[i], target, e.engine, e.role, mapped.assignment.budget)
                assert t.m and t.n and t.e and t.f
                wrapper.set_tile((t.m, t.n, t.e, t.f), t.order)
