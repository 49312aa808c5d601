"""SESL: a single engine per layer. Each layer gets its own engine, sized to it, and the
engines form a streaming pipeline (feature maps flow engine to engine; throughput is set
by the slowest stage -- the assign-engines pass balances them). An engine folds its
matrix-vector work as FINN's MVAU does: PE output channels by SIMD inputs of the
unrolled window (C/G · R · S), so

    conv:       G · N·E·F · ceil((M/G) / PE) · ceil((C/G)·R·S / SIMD),   PE·SIMD <= pes
    depthwise:  N·E·F · ceil(C / PE) · ceil(R·S / SIMD)     (FINN's VVAU; pooling alike)
    elementwise / activation: N·E·F · ceil(C / pes)

with the best PE x SIMD split for the layer (or the fixed `unroll PE x SIMD`). A
streaming engine has no tiles: the tile argument is ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from compiler.engines.base import Tile, ceil_div
from compiler.engines.seml import ChannelArrayEngine
from compiler.engines.workload import DATA_KINDS, MAC_KINDS, POOL_KINDS, VIEW_KINDS, Workload

if TYPE_CHECKING:
    from compiler.hw.model import Engine


class SeslEngine(ChannelArrayEngine):
    name = "sesl"
    summary = "one engine per layer (PE x SIMD folding, as FINN's MVAU), layers streaming in a pipeline"

    def channel_loops(self, layer: Workload) -> tuple[int, int] | None:
        op = layer.op
        if op in DATA_KINDS or op in VIEW_KINDS:
            return None
        if op in MAC_KINDS and op != "depthwise":
            return layer.out_channels_per_group, layer.in_channels_per_group * layer.window
        if op == "depthwise" or op in POOL_KINDS:
            return layer.out_channels, layer.window
        return layer.out_channels, 1

    def cycles_for(self, layer: Workload, engine: Engine, pes: np.ndarray, tile: Tile) -> np.ndarray:
        loops = self.channel_loops(layer)
        if loops is None:
            return np.zeros(pes.shape, dtype=np.int64)
        op = layer.op
        if op in MAC_KINDS and op != "depthwise":
            return layer.groups * layer.pixels * self.unrolled(*loops, pes, engine)
        if op == "depthwise" or op in POOL_KINDS:
            return layer.pixels * self.unrolled(*loops, pes, engine)
        return layer.pixels * ceil_div(layer.out_channels, np.minimum(pes, layer.out_channels))

    def operand_bytes_per_cycle(self, layer: Workload, engine: Engine, pes: int) -> float:
        # Weights sit in the engine's own memory next to the PEs (counted there, too):
        # SIMD inputs plus PE·SIMD weights per cycle, bounded by pes + sqrt(pes).
        return (pes**0.5 * layer.elem_bytes) + pes * layer.weight_elem_bytes
