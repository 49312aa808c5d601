"""SEML: a single engine for multiple layers. One PE array of Tm x Tn MAC units --
Tm output channels by Tn input channels, as in Zhang et al.'s FPGA'15 accelerator -- that
every layer reuses one after another; pixels and window taps are sequential loops.

Compute cycles of a conv layer with G groups (M/G output and C/G input channels each):
    G · steps(M/G over Tm) · steps(C/G over Tn) · N·E·F · R·S
where steps(x over T) = ceil(x/T), or per tile when tiled (partial tiles waste lanes).
Depthwise convolution and pooling map channels to Tm and window taps to Tn; elementwise
ops and activations map channels to Tm and pixels to Tn. Data movement takes no cycles.

With `unroll Tm x Tn;` the array shape is fixed (a real SEML engine has one shape for all
layers); without it each layer gets the best shape within its PEs -- a lower bound.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.engines.base import UNREACHABLE, EngineKind, Tile, best_unroll, tiled_steps, unroll_curve
from compiler.engines.workload import (
    ACTIVATION_KINDS,
    DATA_KINDS,
    ELTWISE_KINDS,
    MAC_KINDS,
    POOL_KINDS,
    VIEW_KINDS,
    Workload,
)
from compiler.hw.schema import ParamError, count, dims

if TYPE_CHECKING:
    from compiler.hw.model import Engine


class ChannelArrayEngine(EngineKind):
    """Shared by SEML and SESL: configurable PEs, an optional fixed unrolling."""

    parameters = {
        "pes": count("MAC units (default: chosen within the target's pe_budget by assign-engines)"),
        "unroll": dims("fixed unrolling A x B of the PE array (default: best per layer)", rank=2),
    }
    op_kinds = MAC_KINDS | POOL_KINDS | ELTWISE_KINDS | ACTIVATION_KINDS | DATA_KINDS | VIEW_KINDS

    def check(self, params: dict[str, Any]) -> Mapping[str, Any]:
        unroll = params.get("unroll")
        if unroll is not None:
            size = unroll[0] * unroll[1]
            if params.get("pes") is None:
                params["pes"] = size
            elif size > params["pes"]:
                raise ParamError(f"unroll {unroll[0]} x {unroll[1]} needs {size} PEs, more than pes {params['pes']}", "unroll")
        return params

    def compute_cycles(self, layer: Workload, engine: Engine, pes: int, tile: Tile) -> int:
        return int(self.cycles(layer, engine, np.array([pes], dtype=np.int64), tile)[0])

    def cycles_curve(self, layer: Workload, engine: Engine, max_pes: int, tile: Tile) -> np.ndarray:
        return self.cycles(layer, engine, np.arange(1, max_pes + 1, dtype=np.int64), tile)

    def cycles(self, layer: Workload, engine: Engine, pes: np.ndarray, tile: Tile) -> np.ndarray:
        """`cycles_for`, where a fixed `unroll A x B` array cannot run with fewer than A·B
        PEs (UNREACHABLE: assign-engines gives each such engine its whole array)."""
        cycles = self.cycles_for(layer, engine, pes, tile)
        unroll = engine.params.get("unroll")
        if unroll is None:
            return cycles
        return np.where((pes < unroll[0] * unroll[1]) & (cycles > 0), UNREACHABLE, cycles)

    def channel_multiple(self, layer: Workload, engine: Engine, pes: int) -> int:
        """The fixed unrolling's output channels. Without one the array takes the best
        shape for each layer, so no width is fixed: the side of a square array of `pes`
        (the largest power of two at most sqrt(pes)) keeps counts that fold evenly."""
        unroll = engine.params.get("unroll")
        if unroll is not None:
            return int(unroll[0])
        return 1 << (math.isqrt(max(1, pes)).bit_length() - 1)

    @abstractmethod
    def channel_loops(self, layer: Workload) -> tuple[int, int] | None:
        """Trip counts of the two loops the array unrolls for a layer with arithmetic
        (output channels first, as `unroll` is given); None for data movement and views."""

    @abstractmethod
    def cycles_for(self, layer: Workload, engine: Engine, pes: np.ndarray, tile: Tile) -> np.ndarray:
        """Compute cycles for each PE count in `pes` (one formula for a single count and for
        the whole curve that assign-engines searches)."""

    def unrolled(
        self, a: int, b: int, pes: np.ndarray, engine: Engine, tile_a: int | None = None, tile_b: int | None = None
    ) -> np.ndarray:
        """Steps of two parallel loops for each PE count in `pes`: with the engine's fixed
        unrolling, else the best split of each count (`unroll_curve`)."""
        unroll = engine.params.get("unroll")
        if unroll is None and pes.size == 1:  # one count: the direct search is cheaper than a curve
            return np.array([best_unroll(a, b, int(pes[0]), tile_a, tile_b)[0]], dtype=np.int64)
        if unroll is None:
            return unroll_curve(a, b, int(pes.max()), tile_a, tile_b)[pes - 1]
        steps = tiled_steps(a, tile_a or a, unroll[0]) * tiled_steps(b, tile_b or b, unroll[1])
        return np.full(pes.shape, steps, dtype=np.int64)


class SemlEngine(ChannelArrayEngine):
    name = "seml"
    summary = "one Tm x Tn PE array (output x input channels) reused by every layer in turn"

    def channel_loops(self, layer: Workload) -> tuple[int, int] | None:
        op = layer.op
        if op in DATA_KINDS or op in VIEW_KINDS:
            return None
        if op in MAC_KINDS and op != "depthwise":
            return layer.out_channels_per_group, layer.in_channels_per_group
        if op == "depthwise" or op in POOL_KINDS:
            return layer.out_channels, layer.window
        # Elementwise ops and activations: channels x pixels, one operation each.
        return layer.out_channels, layer.out_h * layer.out_w

    def cycles_for(self, layer: Workload, engine: Engine, pes: np.ndarray, tile: Tile) -> np.ndarray:
        loops = self.channel_loops(layer)
        if loops is None:
            return np.zeros(pes.shape, dtype=np.int64)
        a, b = loops
        op = layer.op
        if op in MAC_KINDS and op != "depthwise":
            steps = self.unrolled(a, b, pes, engine, min(tile.m or a, a), tile.n)
            return layer.groups * steps * layer.pixels * layer.window
        if op == "depthwise" or op in POOL_KINDS:
            return self.unrolled(a, b, pes, engine, tile.m) * layer.pixels
        return layer.batch * self.unrolled(a, b, pes, engine, tile.m)

    def operand_bytes_per_cycle(self, layer: Workload, engine: Engine, pes: int) -> float:
        # Tn inputs broadcast to Tm rows, Tm·Tn weights: about sqrt(pes) + pes operands.
        return (pes**0.5 * layer.elem_bytes) + pes * layer.weight_elem_bytes
