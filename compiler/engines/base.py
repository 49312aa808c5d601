"""What an engine kind is: the interface every engine plugin implements -- the built-in
SEML, SESL, DPU and systolic kinds exactly as a user's own.

An engine kind says
- which parameters its `engine NAME { kind K; ... }` block takes (`parameters`, checked and
  normalised by the hardware-description parser, then `check` for combinations),
- whether the hardware fixes its PE count (`fixed_pes`) or PEs are chosen in a budget,
- which layers it runs, and why not when not (`supports` -> `Support`),
- how many cycles a layer's arithmetic takes given PEs and a tile (`compute_cycles`),
- how many operand bytes its PE array reads from on-chip buffers per cycle (for energy),
- optionally, the DRAM bytes a tile moves when the engine moves other bytes than the loop
  order says (`traffic`) and what does not overlap when it double-buffers (`overheads`),
- and its lowerings to target-level dialects (`lowerings`, the hook the lowering issues fill).

Memory traffic, overlap, energy and the roofline are otherwise not the engine's business:
the one cost model (compiler/cost.py) derives them for every kind alike.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

from compiler.engines.workload import Workload
from compiler.errors import LayerloomError, UnsupportedError
from compiler.hw.schema import Param

if TYPE_CHECKING:
    from compiler.hw.model import Engine, Target

LOOP_ORDERS = ("output", "weight", "input", "stream")


@dataclass(frozen=True)
class Support:
    """Whether an engine runs a layer; `reason` says why not."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


SUPPORTED = Support(True)


def unsupported(reason: str) -> Support:
    return Support(False, reason)


@dataclass(frozen=True)
class Tile:
    """Loop tiling of a layer: sizes of the tile that lives on chip at a time, and the loop
    order, named by the tensor that stays on chip across the inner loops:
    `output` (outputs accumulate on chip; inputs and weights stream), `weight` (a weight
    tile is loaded once; partial sums go back to DRAM), `input` (an input tile is loaded
    once; weights stream, partial sums go back to DRAM), `stream` (a streaming engine of a
    layer pipeline: a line buffer of the window's input rows, all weights and one output
    row of e = 1, every tensor crossing DRAM once; or, with its weights left in DRAM by
    the memory plan, e rows buffered per pass of the weights).

    m: output channels (of all groups), n: input channels of one group, e/f: output rows /
    columns. None means the whole dimension."""

    m: int | None = None
    n: int | None = None
    e: int | None = None
    f: int | None = None
    order: str = "output"

    def __post_init__(self) -> None:
        if self.order not in LOOP_ORDERS:
            raise LayerloomError(f"unknown loop order '{self.order}' (one of {', '.join(LOOP_ORDERS)})")
        for name in ("m", "n", "e", "f"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise LayerloomError(f"tile size {name}={v} must be positive")

    def resolved(self, layer: Workload) -> Tile:
        """Every size given, clamped to the layer's dimensions."""
        return replace(
            self,
            m=min(self.m or layer.out_channels, layer.out_channels),
            n=min(self.n or layer.in_channels_per_group, layer.in_channels_per_group),
            e=min(self.e or layer.out_h, layer.out_h),
            f=min(self.f or layer.out_w, layer.out_w),
        )


WHOLE = Tile()


class Overheads(NamedTuple):
    """Cycles a double-buffered layer adds to its compute and to its DRAM transfers before
    the two overlap: cycles = max(compute + overheads.compute, memory + overheads.memory)."""

    compute: int = 0
    memory: int = 0


NO_OVERHEADS = Overheads()


class EngineKind(ABC):
    """An engine plugin. Register a subclass (or an instance) under the entry-point group
    `layerloom.engines`; the entry point's name is the `kind` used in target files."""

    name: ClassVar[str]
    summary: ClassVar[str]
    parameters: ClassVar[Mapping[str, Param]] = {}
    op_kinds: ClassVar[frozenset[str]] = frozenset()

    # Lowering hook. Maps a target-level name ("dpu", "hls", ...) to the "module:function"
    # that lowers a layer mapped on this engine kind. The built-in kinds have none yet:
    # the lowering issues add them; `lowering_for` says so instead of pretending.
    lowerings: ClassVar[Mapping[str, str]] = {}

    def check(self, params: dict[str, Any]) -> Mapping[str, Any]:
        """Check combinations of parameters and fill derived ones; raise
        `compiler.hw.schema.ParamError(message, param)` on a bad one."""
        return params

    def fixed_pes(self, engine: Engine) -> int | None:
        """MAC units of one instance when the hardware fixes them; None when configurable."""
        return None

    def supports(self, layer: Workload, engine: Engine) -> Support:
        if layer.op not in self.op_kinds:
            return unsupported(self.unsupported_kind_reason(layer))
        return self.check_layer(layer, engine)

    def unsupported_kind_reason(self, layer: Workload) -> str:
        return f"{self.name} engines do not run '{layer.op}' layers"

    def check_layer(self, layer: Workload, engine: Engine) -> Support:
        """Limits beyond the op kind (kernel sizes, strides, channel counts)."""
        return SUPPORTED

    @abstractmethod
    def compute_cycles(self, layer: Workload, engine: Engine, pes: int, tile: Tile) -> int:
        """Cycles of arithmetic for `layer` on one instance with `pes` MAC units and the
        (resolved) `tile`, assuming operands are on chip when needed."""

    def cycles_curve(self, layer: Workload, engine: Engine, max_pes: int, tile: Tile) -> np.ndarray:
        """Compute cycles with 1, 2, ..., max_pes PEs (entry p - 1), never increasing: an
        engine given more PEs than it can use leaves them idle. assign-engines searches PE
        splits over these curves. The default asks `compute_cycles` once per PE count (and
        once for kinds with fixed PEs, which cannot run with fewer: those entries are
        `UNREACHABLE`); kinds with a closed form override it."""
        fixed = self.fixed_pes(engine)
        if fixed is not None:
            curve = np.full(max_pes, UNREACHABLE, dtype=np.int64)
            curve[fixed - 1 :] = self.compute_cycles(layer, engine, fixed, tile)
            return curve
        cycles = [self.compute_cycles(layer, engine, p, tile) for p in range(1, max_pes + 1)]
        return np.minimum.accumulate(np.asarray(cycles, dtype=np.int64))

    def channel_multiple(self, layer: Workload, engine: Engine, pes: int) -> int:
        """The output channels one instance with `pes` PEs computes side by side on
        `layer` (a PE array's output-channel unroll, a DPU's OCP, a systolic array's
        columns): with a multiple of it, no lane idles on the last channel fold. The
        co-design loop of `prune` rounds kept channels to it. Default 1: no such width."""
        return 1

    def operand_bytes_per_cycle(self, layer: Workload, engine: Engine, pes: int) -> float:
        """Bytes the PE array reads from on-chip buffers per compute cycle. Default: an
        edge-fed square array (rows + columns operands per cycle)."""
        side = float(np.ceil(np.sqrt(pes)))
        return 2.0 * side * layer.elem_bytes

    def traffic(self, layer: Workload, engine: Engine, tile: Tile) -> tuple[int, int, int]:
        """DRAM bytes (inputs, weights, outputs) of the layer with the (resolved) `tile` and
        every tensor off chip. Default: the cost model's loop-order formulas
        (compiler/cost.py); an engine whose transfers differ (a DPU's weights in its bank
        layout, a concatenation it never copies) says so."""
        from compiler.cost import traffic_terms

        assert tile.m and tile.n and tile.e and tile.f
        inputs, weights, outputs = traffic_terms(layer, tile.m, tile.n, tile.e, tile.f, tile.order)
        return int(inputs), int(weights), int(outputs)

    def overheads(self, layer: Workload, engine: Engine, target: Target, tile: Tile) -> Overheads:
        """What double buffering does not hide (see `Overheads`), for the (resolved) `tile`
        with every tensor off chip. Default: nothing -- transfers overlap compute completely
        and the layer takes max(compute, memory) cycles."""
        return NO_OVERHEADS

    def lowering_for(self, target: str) -> Callable[..., Any]:
        ref = self.lowerings.get(target)
        if ref is None:
            raise UnsupportedError(f"engine kind '{self.name}' has no lowering to '{target}'")
        module, _, attr = ref.partition(":")
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------
# Shared arithmetic of parallel loops
# ---------------------------------------------------------------------------------------


def ceil_div(a: Any, b: Any) -> Any:
    """Ceiling division for ints or integer NumPy arrays."""
    return -(-a // b)


def tiled_steps(total: int, tile: int, par: Any) -> Any:
    """Steps to cover `total` iterations cut into tiles of `tile`, each tile run `par` at a
    time: full tiles cost ceil(tile/par), the remainder tile ceil(rest/par). `par` may be a
    NumPy array (vectorised search over unrollings)."""
    full, rest = divmod(total, tile)
    return full * ceil_div(tile, par) + ceil_div(rest, par)


UNREACHABLE = np.iinfo(np.int64).max // 4  # cycles of a PE count an engine cannot run with


def unroll_curve(a: int, b: int, max_pes: int, tile_a: int | None = None, tile_b: int | None = None) -> np.ndarray:
    """`best_unroll(a, b, p, tile_a, tile_b)[0]` for every p = 1..max_pes at once (entry
    p - 1). Steps along one loop only drop at a few unrollings (the smallest pa giving each
    value of tiled_steps(a, tile_a, pa)); the best split for p is the cheapest pair of such
    unrollings with pa·pb <= p: a sort and a running minimum over O(sqrt(a)·sqrt(b)) pairs."""
    tile_a = tile_a or a
    tile_b = tile_b or b
    pa, sa = _step_drops(a, tile_a, max_pes)
    pb, sb = _step_drops(b, tile_b, max_pes)
    pes = np.outer(pa, pb).ravel()
    steps = np.outer(sa, sb).ravel()
    usable = pes <= max_pes
    pes, steps = pes[usable], steps[usable]
    order = np.argsort(pes, kind="stable")
    pes, best = pes[order], np.minimum.accumulate(steps[order])
    # For each p the last pair that fits (pa = pb = 1 always does).
    last = np.searchsorted(pes, np.arange(1, max_pes + 1), side="right") - 1
    return best[last]


def _step_drops(total: int, tile: int, max_par: int) -> tuple[np.ndarray, np.ndarray]:
    """The unrollings at which tiled_steps(total, tile, par) drops, and the steps there."""
    par = np.arange(1, max(1, min(max_par, tile)) + 1, dtype=np.int64)
    steps = tiled_steps(total, tile, par)
    drops = np.ones(len(par), dtype=bool)
    drops[1:] = steps[1:] < steps[:-1]
    return par[drops], steps[drops]


def best_unroll(a: int, b: int, pes: int, tile_a: int | None = None, tile_b: int | None = None) -> tuple[int, int, int]:
    """Best split of `pes` MAC units into pa x pb (pa·pb <= pes) unrolling two loops of
    trip counts a and b (tiled by tile_a / tile_b): returns (steps, pa, pb) with the fewest
    steps = tiled_steps(a, tile_a, pa) · tiled_steps(b, tile_b, pb); ties go to the smaller
    pa. Vectorised over pa, so it costs microseconds even for thousands of PEs."""
    tile_a = tile_a or a
    tile_b = tile_b or b
    pa = np.arange(1, max(1, min(pes, tile_a)) + 1, dtype=np.int64)
    pb = np.minimum(pes // pa, tile_b)
    steps = tiled_steps(a, tile_a, pa) * tiled_steps(b, tile_b, pb)
    i = int(np.argmin(steps))
    return int(steps[i]), int(pa[i]), int(pb[i])
