"""Mapping a network onto a target: which engine runs each layer with how many PEs
(assign-engines), the tile of each layer (tile), where its tensors live (plan-memory),
and what it all costs. The three passes and the `estimate` / `explore` commands call
these functions, so they agree by construction; every number comes from the one cost
model (compiler/cost.py).

Architectures (FiBHA's vocabulary), for a PE budget B:
- `seml`: one reused engine with all B PEs runs the layers one after another; a frame
  takes the sum of the layers' cycles (instances of a fixed engine, e.g. DPU cores, work
  on different frames).
- `sesl`: one engine per layer, a streaming pipeline; stage i gets p_i PEs, sum <= B,
  chosen so that the slowest stage is as fast as possible (stage time = its cycles:
  max(compute, memory)); a frame leaves the pipeline every period = the slowest stage.
- `hybrid`: the first k layers on a balanced pipeline with B_s PEs, the rest on a reused
  engine with B - B_s; the two parts overlap through an on-chip double buffer, so the
  period is the slower part's. k and B_s are searched (k = 0 is SEML, k = all is SESL:
  hybrid is never worse than either).
Every architecture also has a DRAM floor: the engines share the DRAM, so a period is at
least (all DRAM bytes of a frame) / bandwidth.

Engines (`pipeline` / `reused`) come from the target: its `sesl` engine for the pipeline,
its `seml` engine (else its first other engine: a DPU core, a systolic array) for reuse.
Layers an architecture's engines cannot run stay on the host ("host": no accelerator
cycles, their tensors in DRAM).

Memory plans (plan-memory), all on the target's on-chip memory (all memories together):
- always on chip: the reused engine's ping-pong tile buffers (its tiles may use at most
  TILE_SHARE of its buffer memory), each pipeline engine's buffers, and a double buffer
  for every feature map that crosses between the pipeline and the reused engine. A
  pipeline engine keeps its weights where they fit; one that does not streams them from
  DRAM once per tile of e output rows, buffering those rows (a `StageLadder` of options
  from e = 1 to resident; the rungs are climbed by DRAM bytes saved per on-chip byte in
  the room the rest leaves: `_pipeline_options`). Its stage is charged that traffic, and
  the DRAM floor counts it;
- `ping-pong`: nothing else -- the reused engine's feature maps and weights in DRAM;
- `weights-resident`: the reused engine's layers keep their weights on chip where they
  fit, first layers first (loaded once, not per frame);
- `fmaps-on-chip`: feature maps between the reused engine's layers stay on chip where
  they fit, first layers first, in buffers allocated by liveness (first fit over the
  layers each feature map is live for);
- `weights+fmaps`: both, weights first.
The search evaluates every plan for every split and keeps the best (shortest period,
then fewest DRAM bytes, then fewest PEs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from xdsl.ir import BlockArgument, Operation, OpResult, SSAValue

from compiler.cost import (
    WINDOWED_KINDS,
    LayerCost,
    Placement,
    buffer_bytes,
    layer_cost,
    memory_cycles,
    streamed_weights_buffer_bytes,
    tile_buffer_bytes,
    traffic_terms,
)
from compiler.engines.base import UNREACHABLE, Tile, ceil_div
from compiler.engines.workload import VIEW_KINDS, Workload, workload_of
from compiler.errors import LayerloomError
from compiler.hw.model import Engine, Target

ARCHS = ("seml", "sesl", "hybrid")
PLANS = ("ping-pong", "weights-resident", "fmaps-on-chip", "weights+fmaps")
SEML, SESL, HOST = "seml", "sesl", "host"
GRAPH_INPUT = -1
TILE_SHARE = 0.5  # of the reused engine's buffer memory its ping-pong tiles may take
SEARCH_ORDERS = ("output", "weight", "input")
TRAFFIC_SLACK = 0.02  # tiles within 2 % of the least DRAM traffic count as equally good

# ---------------------------------------------------------------------------------------
# The network: layers and the feature maps between them
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerGraph:
    """The layers of a module in program order (names and kinds as compiler.analysis),
    which layers each one reads (GRAPH_INPUT for a function argument) and which layers'
    results the function returns."""

    layers: tuple[Workload, ...]
    producers: tuple[tuple[int, ...], ...]
    outputs: frozenset[int]

    def __len__(self) -> int:
        return len(self.layers)

    @cached_property
    def consumers(self) -> tuple[tuple[int, ...], ...]:
        users: list[list[int]] = [[] for _ in self.layers]
        for j, producers in enumerate(self.producers):
            for i in producers:
                if i != GRAPH_INPUT and j not in users[i]:
                    users[i].append(j)
        return tuple(tuple(u) for u in users)

    @cached_property
    def readers(self) -> tuple[tuple[int, ...], ...]:
        """The layers that read each layer's data, looking through views (a reshape's
        readers read its producer's bytes)."""
        out: list[tuple[int, ...]] = []
        for users in self.consumers:
            found: list[int] = []
            todo = list(users)
            while todo:
                j = todo.pop(0)
                if self.layers[j].op in VIEW_KINDS:
                    todo.extend(self.consumers[j])
                elif j not in found:
                    found.append(j)
            out.append(tuple(found))
        return tuple(out)

    @cached_property
    def escapes(self) -> frozenset[int]:
        """Layers whose data the function returns (directly or through views)."""
        out = set(self.outputs)
        for i in reversed(range(len(self.layers))):
            if any(j in out and self.layers[j].op in VIEW_KINDS for j in self.consumers[i]):
                out.add(i)
        return frozenset(out)

    @staticmethod
    def of_module(module: Operation) -> tuple[LayerGraph, list[Operation]]:
        """The graph of `module` (before or after assign-engines) and its layer ops."""
        from compiler.analysis import is_layer
        from dialects.nn import WeightOp

        ops: list[Operation] = []
        layers: list[Workload] = []
        index: dict[Operation, int] = {}
        for op in module.walk():
            if not is_layer(op):
                continue
            w = workload_of(op, name=f"{op.name.partition('.')[2]}_{len(layers)}")
            if w is None:
                continue
            index[op] = len(layers)
            ops.append(op)
            layers.append(w)

        def source(v: SSAValue) -> int:
            v = _through_wrappers(v)
            owner = v.owner
            return index.get(owner, GRAPH_INPUT) if isinstance(owner, Operation) else GRAPH_INPUT

        producers = []
        for op in ops:
            reads = [source(v) for v in op.operands if not isinstance(_through_wrappers(v).owner, WeightOp)]
            producers.append(tuple(dict.fromkeys(reads)))
        returned = [op for op in module.walk() if op.name == "func.return"]
        outputs = frozenset(source(v) for r in returned for v in r.operands) - {GRAPH_INPUT}
        return LayerGraph(tuple(layers), tuple(producers), outputs), ops


def _through_wrappers(v: SSAValue) -> SSAValue:
    """Follow values across accel.layer boundaries: a body argument is the layer's operand,
    a layer's result is what its body yields."""
    from dialects.accel import LayerOp, YieldOp

    while True:
        if isinstance(v, BlockArgument) and isinstance(v.block.parent_op(), LayerOp):
            wrapper = v.block.parent_op()
            assert wrapper is not None
            v = wrapper.operands[v.index]
        elif isinstance(v.owner, LayerOp):
            last = v.owner.body.block.last_op
            assert isinstance(last, YieldOp) and isinstance(v, OpResult)
            v = last.values[v.index]
        else:
            return v


# ---------------------------------------------------------------------------------------
# Engines of the target
# ---------------------------------------------------------------------------------------


def pipeline_engine(target: Target) -> Engine | None:
    return next((e for e in target.engines if e.kind == SESL), None)


def reused_engine(target: Target) -> Engine | None:
    return next((e for e in target.engines if e.kind == SEML), None) or next(
        (e for e in target.engines if e.kind != SESL), None
    )


def check_request(target: Target, arch: str, budget: int | None, where: str = "assign-engines") -> int:
    """The PE budget to map with (the target's when None); errors (located at `where`)
    for an unknown arch, a bad budget or a target without the engines the arch needs."""
    if arch not in ARCHS:
        raise LayerloomError(f"unknown architecture '{arch}' (one of {', '.join(ARCHS)})", where)
    if arch in (SESL, "hybrid") and pipeline_engine(target) is None:
        raise LayerloomError(
            f"target '{target.name}' has no sesl engine for arch {arch} (engines: {_engine_list(target)})", target.source
        )
    if arch in (SEML, "hybrid") and reused_engine(target) is None:
        raise LayerloomError(f"target '{target.name}' has no engine to reuse for arch {arch}", target.source)
    total = target.pe_budget if budget is None else budget
    if total < 1:
        raise LayerloomError(f"PE budget must be a positive integer, got {total}", where)
    if total > target.pe_budget:
        raise LayerloomError(f"budget {total} exceeds the pe_budget {target.pe_budget} of target '{target.name}'", where)
    reused = reused_engine(target)
    if arch != SESL and reused is not None and reused.fixed_pes is not None:
        need = reused.fixed_pes * reused.count
        if total < need:
            raise LayerloomError(f"budget {total} is less than the {need} PEs engine '{reused.name}' has", where)
    return total


def _engine_list(target: Target) -> str:
    return ", ".join(f"{e.name} ({e.kind})" for e in target.engines) or "none"


# ---------------------------------------------------------------------------------------
# Tiles
# ---------------------------------------------------------------------------------------


def tile_capacity(target: Target, engine: Engine) -> int:
    """Bytes the reused engine's double-buffered tiles may take (per instance)."""
    memory = target.buffer_of(engine)
    size = memory.size if memory is not None else target.onchip_bytes
    return int(size * TILE_SHARE) // engine.count


def stream_tile(layer: Workload) -> Tile:
    """A pipeline engine's tile: one output row at a time from a line buffer."""
    return Tile(e=1, order="stream").resolved(layer)


def tile_for(layer: Workload, target: Target, engine: Engine, role: str, pes: int) -> Tile:
    """The tile pass's choice: a line buffer on a pipeline engine, else `best_tile` for
    `pes` PEs (the budget: what the reused engine gets at most; the hardware's if fixed)."""
    if role == SESL:
        return stream_tile(layer)
    bytes_per_cycle = target.dram.bandwidth / engine.count / target.clock_of(engine)
    return best_tile(layer, tile_capacity(target, engine), engine.fixed_pes or pes, bytes_per_cycle)


def best_tile(layer: Workload, capacity: int, pes: int = 0, bytes_per_cycle: float = 0.0) -> Tile:
    """The tile (sizes and loop order) whose double-buffered buffers fit in `capacity`
    bytes and that keeps the layer fastest, then moves the fewest DRAM bytes. A layer's
    cycles are about max(compute, memory): memory = DRAM bytes / `bytes_per_cycle`;
    compute = MACs / the PEs the tile can keep busy -- `pes`, at most m·n lanes (m·window
    for depthwise) -- so a tile of 8 output channels that saves a few halo bytes does not
    idle most of a 2048-PE array. Without `pes` the least traffic wins. Candidates within
    TRAFFIC_SLACK of the best count as equal; then: least traffic, most lanes, fewest
    tiles, the order listed first in SEARCH_ORDERS, smallest buffers. Candidate sizes are
    the powers of two below each dimension and the dimension itself, evaluated at once."""
    whole = Tile().resolved(layer)
    if layer.op in VIEW_KINDS:
        return whole
    # Only conv-like and pooling layers re-read anything when tiled; the others stream,
    # so for them a tile only has to fit (fewest tiles then wins).
    reuse = layer.has_macs or layer.op in WINDOWED_KINDS
    grid = np.meshgrid(
        _sizes(layer.out_channels),
        _sizes(layer.in_channels_per_group) if reuse else [layer.in_channels_per_group],
        _sizes(layer.out_h),
        _sizes(layer.out_w) if reuse else [layer.out_w],
        indexing="ij",
    )
    m, n, e, f = (a.ravel() for a in grid)
    buffers = 2 * np.asarray(tile_buffer_bytes(layer, m, n, e, f)) + np.zeros(m.shape, dtype=np.int64)
    fits = buffers <= capacity
    if not fits.any():
        raise LayerloomError(f"no tile fits the engine's tile buffers of {capacity} bytes", layer.name)
    m, n, e, f, buffers = m[fits], n[fits], e[fits], f[fits], buffers[fits]
    tiles = ceil_div(layer.out_channels, m) * ceil_div(layer.in_channels_per_group, n) * ceil_div(layer.out_h, e) * ceil_div(layer.out_w, f)
    traffic = np.stack([sum(np.broadcast_to(t, m.shape) for t in traffic_terms(layer, m, n, e, f, o)) for o in SEARCH_ORDERS])
    lanes = np.minimum(m, layer.out_channels_per_group) * (layer.window if layer.op == "depthwise" else n)
    if pes and bytes_per_cycle and layer.has_macs:
        compute = layer.macs / np.minimum(lanes, pes)
        cycles = np.maximum(compute, traffic / bytes_per_cycle)
    else:
        cycles = traffic

    def near(values: np.ndarray) -> np.ndarray:
        return values <= values.min() * (1 + TRAFFIC_SLACK)

    # Narrow the candidates key by key (cheaper than sorting them all).
    o, i = np.divmod(np.flatnonzero(near(cycles)), len(m))
    for keep in (
        lambda o, i: near(traffic[o, i]),
        lambda o, i: lanes[i] == lanes[i].max(),
        lambda o, i: tiles[i] == tiles[i].min(),
        lambda o, i: o == o.min(),
        lambda o, i: buffers[i] == buffers[i].min(),
    ):
        mask = keep(o, i)
        o, i = o[mask], i[mask]
    k, j = int(o[0]), int(i[0])
    return Tile(int(m[j]), int(n[j]), int(e[j]), int(f[j]), SEARCH_ORDERS[k])


def _sizes(dim: int) -> np.ndarray:
    powers = [1 << k for k in range(max(1, dim).bit_length()) if 1 << k < dim]
    return np.asarray([*powers, dim], dtype=np.int64)


# ---------------------------------------------------------------------------------------
# What each layer costs in each role, as arrays over the layers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleCosts:
    """The layers on one engine (the pipeline's or the reused one): tiles, compute cycles
    for 1..max_pes PEs, off-chip traffic per tensor, own on-chip buffer bytes."""

    engine: Engine
    role: str
    tiles: tuple[Tile | None, ...]
    curves: np.ndarray  # layers x max_pes compute cycles (UNREACHABLE: cannot run with so few)
    traffic: np.ndarray  # layers x 3: input, weight, output bytes with everything off chip
    buffers: np.ndarray  # on-chip bytes of the layer's own buffers (tiles / line buffer)
    supported: np.ndarray  # bool per layer
    ladders: tuple[StageLadder | None, ...] = ()  # pipeline layers' memory options (SESL)
    overheads: np.ndarray | None = None  # layers x 2: the engine's Overheads (compute, memory); None: none

    @property
    def zero_work(self) -> np.ndarray:
        """Layers with no arithmetic (views, data movement): they need no PEs."""
        return self.curves[:, -1] == 0


@dataclass(frozen=True)
class StageLadder:
    """A pipeline layer's memory options (the plan chooses one): its weights streamed from
    DRAM once per tile of `rows` output rows (the rows' buffers on chip) or resident (rows
    0: a line buffer and all weights on chip). Only the lower convex hull of (on-chip
    bytes, DRAM bytes) is kept, cheapest on chip first: each step up saves DRAM bytes, at
    a falling rate per on-chip byte, so the plan can take steps by benefit."""

    rows: np.ndarray
    onchip: np.ndarray  # bytes on chip
    dram: np.ndarray  # weight bytes fetched per frame

    @staticmethod
    def of(layer: Workload) -> StageLadder:
        resident = buffer_bytes(layer, stream_tile(layer))
        if not layer.weight_bytes:
            return StageLadder(np.zeros(1, np.int64), np.array([resident], np.int64), np.zeros(1, np.int64))
        # For each number of passes, the fewest rows that take that many.
        streamed = np.unique(ceil_div(layer.out_h, np.arange(1, layer.out_h + 1)))
        rows = np.append(streamed, 0)
        onchip = np.append(streamed_weights_buffer_bytes(layer, streamed), resident).astype(np.int64)
        dram = np.append(layer.weight_bytes * ceil_div(layer.out_h, streamed), 0).astype(np.int64)
        hull: list[int] = []
        for j in np.lexsort((dram, onchip)):  # by bytes on chip, then DRAM bytes
            if hull and dram[j] >= dram[hull[-1]]:
                continue  # no fewer DRAM bytes for more on-chip ones
            # Drop the last point while it lies on or above the segment to this one.
            while len(hull) >= 2 and _turn(onchip, dram, hull[-2], hull[-1], int(j)) <= 0:
                hull.pop()
            hull.append(int(j))
        return StageLadder(rows[hull], onchip[hull], dram[hull])


def _turn(x: np.ndarray, y: np.ndarray, a: int, b: int, c: int) -> float:
    """Cross product of (b - a) and (c - a): positive when a -> b -> c turns left (convex
    from below)."""
    return float(x[b] - x[a]) * float(y[c] - y[a]) - float(y[b] - y[a]) * float(x[c] - x[a])


def role_costs(graph: LayerGraph, target: Target, role: str, max_pes: int,
               tiles: Sequence[Tile | None] | None = None) -> RoleCosts:  # fmt: skip
    """Per-layer costs of `role` (SEML: tiles from `best_tile` unless given; SESL: the
    stream tile and the memory options, whatever tiles are given: the plan picks the rows
    of a stage that streams its weights)."""
    engine = reused_engine(target) if role == SEML else pipeline_engine(target)
    assert engine is not None
    plugin = engine.kind_plugin
    n = len(graph)
    curves = np.full((n, max_pes), UNREACHABLE, dtype=np.int64)
    traffic = np.zeros((n, 3), dtype=np.int64)
    overheads = np.zeros((n, 2), dtype=np.int64)
    buffers = np.zeros(n, dtype=np.int64)
    supported = np.zeros(n, dtype=bool)
    chosen: list[Tile | None] = []
    fixed = engine.fixed_pes
    for i, layer in enumerate(graph.layers):
        if not plugin.supports(layer, engine):
            chosen.append(None)
            continue
        supported[i] = True
        given = tiles[i] if tiles is not None and role == SEML else None
        tile = given if given is not None else tile_for(layer, target, engine, role, max_pes)
        chosen.append(tile)
        if fixed is None:
            curves[i] = plugin.cycles_curve(layer, engine, max_pes, tile)
        elif fixed * engine.count <= max_pes:
            curves[i, fixed * engine.count - 1 :] = plugin.compute_cycles(layer, engine, fixed, tile)
        assert tile.m and tile.n and tile.e and tile.f
        # A pipeline layer's weights: one pass (the plan says how many a frame takes).
        rows = layer.out_h if role == SESL else tile.e
        traffic[i] = plugin.traffic(layer, engine, replace(tile, e=rows))
        overheads[i] = plugin.overheads(layer, engine, target, tile)
        buffers[i] = buffer_bytes(layer, tile) * (engine.count if role == SEML else 1)
    ladders = tuple(StageLadder.of(w) if ok else None for w, ok in zip(graph.layers, supported, strict=True)) if role == SESL else ()
    return RoleCosts(engine, role, tuple(chosen), curves, traffic, buffers, supported, ladders, overheads)


# ---------------------------------------------------------------------------------------
# Assignments
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """Which engine runs each layer: roles (seml / sesl / host per layer), the PEs each
    pipeline layer adds (0 for layers that share the previous pipeline engine: no
    arithmetic) and the reused engine's PEs (all instances; 0 when there is none)."""

    arch: str
    budget: int
    roles: tuple[str, ...]
    stage_pes: tuple[int, ...]
    reused_pes: int

    @property
    def pes_used(self) -> int:
        return sum(self.stage_pes) + self.reused_pes

    @property
    def split(self) -> int:
        """Layers on the pipeline (the first ones)."""
        return sum(r == SESL for r in self.roles)


def roles_for_split(graph: LayerGraph, k: int, costs_m: RoleCosts | None, costs_s: RoleCosts | None) -> tuple[str, ...]:
    """Layers [0, k) on the pipeline, the rest reused; unsupported layers on the host."""
    roles = []
    for i in range(len(graph)):
        want = costs_s if i < k else costs_m
        roles.append((SESL if i < k else SEML) if want is not None and want.supported[i] else HOST)
    return tuple(roles)


# ---------------------------------------------------------------------------------------
# Memory plans
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Allocation:
    """A region of on-chip memory: what it holds, where, and for which layers it is live
    (`first`..`last`; the whole frame for buffers, weights and double buffers)."""

    name: str
    kind: str  # tiles | line-buffer | weights | fmap | double-buffer
    offset: int
    size: int
    first: int
    last: int
    layer: int = -1  # the layer it belongs to (-1: an engine's)

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class MemoryPlan:
    name: str
    placements: tuple[Placement, ...]
    allocations: tuple[Allocation, ...]
    capacity: int
    feasible: bool
    weights_on_chip: frozenset[int] = frozenset()  # layers whose weights are allocated
    fmaps_on_chip: frozenset[int] = frozenset()  # layers whose output is allocated
    stream_rows: tuple[int, ...] = ()  # a pipeline layer's tile rows (0: not a pipeline layer)
    weight_passes: tuple[int, ...] = ()  # times a layer's off-chip weights are read per frame

    def stream_tile(self, i: int, layer: Workload) -> Tile:
        """Pipeline layer i's tile: one output row from a line buffer, or the rows it
        buffers per pass of its streamed weights."""
        return Tile(e=max(1, self.stream_rows[i]), order="stream").resolved(layer)

    @property
    def peak(self) -> int:
        return max((a.end for a in self.allocations), default=0)

    def of_layer(self, i: int, kinds: Sequence[str]) -> Allocation | None:
        return next((a for a in self.allocations if a.layer == i and a.kind in kinds), None)


@dataclass(frozen=True)
class _Held:
    """What every plan of one assignment keeps on chip (allocated from offset 0): the
    reused engine's tiles, each pipeline layer's buffers (and its weights where they fit),
    the double buffers between the two parts; and the pipeline layers' rows."""

    allocations: tuple[Allocation, ...]
    top: int
    weights_on: frozenset[int]
    fmaps_on: frozenset[int]
    rows: tuple[int, ...]
    passes: tuple[int, ...]


def plan_memory(graph: LayerGraph, target: Target, roles: Sequence[str], plan: str,
                costs_m: RoleCosts | None, costs_s: RoleCosts | None, held: _Held | None = None) -> MemoryPlan:  # fmt: skip
    """Placements and on-chip allocations of `plan` for layers in `roles` (see the module
    docstring); infeasible when the always-on-chip part does not fit. `held` is that part
    when already worked out for these roles (the search tries every plan per split)."""
    if plan not in PLANS:
        raise LayerloomError(f"unknown memory plan '{plan}' (one of {', '.join(PLANS)}, or auto)", "plan")
    n, capacity = len(graph), target.onchip_bytes
    last = n - 1
    if held is None:
        held = _held_on_chip(graph, target, roles, costs_m, costs_s)
    allocs = list(held.allocations)
    top = held.top
    weights_on, fmaps_on = set(held.weights_on), set(held.fmaps_on)
    seml_layers = [i for i in range(n) if roles[i] == SEML]
    readers, escapes = graph.readers, graph.escapes

    def put(name: str, kind: str, size: int, layer: int = -1) -> None:
        nonlocal top
        if size > 0:
            allocs.append(Allocation(name, kind, top, int(size), 0, last, layer))
            top += int(size)

    feasible = top <= capacity

    # The plan's choices for the reused engine's layers.
    if feasible and plan in ("weights-resident", "weights+fmaps"):
        for i in seml_layers:
            w = graph.layers[i].weight_bytes
            if w and top + w <= capacity:
                put(f"{graph.layers[i].name} weights", "weights", w, i)
                weights_on.add(i)
    if feasible and plan in ("fmaps-on-chip", "weights+fmaps"):
        floor, placed = top, list[Allocation]()
        for i in seml_layers:
            users = readers[i]
            size = graph.layers[i].output_bytes
            if not users or i in escapes or i in fmaps_on or size == 0 or any(roles[j] != SEML for j in users):
                continue
            offset = _first_fit(placed, floor, size, i, max(users))
            if offset + size <= capacity:
                a = Allocation(f"{graph.layers[i].name} output", "fmap", offset, size, i, max(users), i)
                placed.append(a)
                allocs.append(a)
                fmaps_on.add(i)

    # Where each layer's data is: a view's is where its producers' is.
    stays: list[bool] = []
    for i in range(n):
        producers = graph.producers[i]
        if graph.layers[i].op in VIEW_KINDS:
            stays.append(bool(producers) and all(p != GRAPH_INPUT and stays[p] for p in producers))
        elif i in fmaps_on:
            stays.append(True)
        else:  # streamed between pipeline engines
            users = readers[i]
            stays.append(roles[i] == SESL and bool(users) and i not in escapes and all(roles[j] == SESL for j in users))
    placements = []
    for i in range(n):
        producers = graph.producers[i]
        inputs_on = bool(producers) and all(p != GRAPH_INPUT and stays[p] for p in producers)
        on_chip = roles[i] != HOST
        placements.append(Placement(on_chip and inputs_on, on_chip and i in weights_on, on_chip and stays[i]))
    return MemoryPlan(plan, tuple(placements), tuple(allocs), capacity, feasible, frozenset(weights_on), frozenset(fmaps_on),
                      held.rows, held.passes)  # fmt: skip


def _held_on_chip(graph: LayerGraph, target: Target, roles: Sequence[str],
                  costs_m: RoleCosts | None, costs_s: RoleCosts | None) -> _Held:  # fmt: skip
    """The part of every plan that is on chip whatever the plan (see `_Held`): pipeline
    layers climb their ladders in the room the tiles and double buffers leave."""
    n, capacity = len(graph), target.onchip_bytes
    last = n - 1
    allocs: list[Allocation] = []
    top = 0

    def put(name: str, kind: str, size: int, layer: int = -1) -> None:
        nonlocal top
        if size > 0:
            allocs.append(Allocation(name, kind, top, int(size), 0, last, layer))
            top += int(size)

    seml_layers = [i for i in range(n) if roles[i] == SEML]
    piped = [i for i in range(n) if roles[i] == SESL and costs_s is not None]
    tiles = int(costs_m.buffers[seml_layers].max()) if seml_layers and costs_m is not None else 0
    readers, escapes = graph.readers, graph.escapes
    crossing = [i for i in range(n) if roles[i] in (SEML, SESL) and i not in escapes
                and any(roles[j] not in (roles[i], HOST) for j in readers[i]) and all(roles[j] != HOST for j in readers[i])]  # fmt: skip
    doubles = sum(2 * graph.layers[i].output_bytes for i in crossing)
    option = _pipeline_options(costs_s, piped, capacity - tiles - doubles) if costs_s is not None else {}
    if seml_layers and costs_m is not None:
        put(f"{costs_m.engine.name} tiles", "tiles", tiles)
    weights_on: set[int] = set()
    rows = [0] * n
    passes = [1] * n
    for i in piped:
        assert costs_s is not None
        ladder, layer = costs_s.ladders[i], graph.layers[i]
        assert ladder is not None
        j = option[i]
        rows[i] = int(ladder.rows[j])
        w = layer.weight_bytes
        if rows[i] == 0 and w:  # resident: a line buffer and the weights
            put(f"{layer.name} line buffer", "line-buffer", int(ladder.onchip[j]) - w, i)
            put(f"{layer.name} weights", "weights", w, i)
            weights_on.add(i)
        else:  # streamed weights (or none): the rows' buffers
            put(f"{layer.name} line buffer", "line-buffer", int(ladder.onchip[j]), i)
            passes[i] = ceil_div(layer.out_h, rows[i]) if rows[i] else 1
        rows[i] = max(rows[i], 1)
    for i in crossing:
        put(f"{graph.layers[i].name} double buffer", "double-buffer", 2 * graph.layers[i].output_bytes, i)
    return _Held(tuple(allocs), top, frozenset(weights_on), frozenset(crossing), tuple(rows), tuple(passes))


def _pipeline_options(costs: RoleCosts, piped: Sequence[int], room: int) -> dict[int, int]:
    """Each pipeline layer's option on its ladder: the cheapest on chip for all, then steps
    up by benefit -- most DRAM bytes saved per on-chip byte first -- while they fit in
    `room` bytes (a step that does not fit ends its layer's climb). Everything fits: all
    weights resident."""
    ladders: dict[int, StageLadder] = {}
    for i in piped:
        ladder = costs.ladders[i]
        assert ladder is not None
        ladders[i] = ladder
    option = dict.fromkeys(piped, 0)
    left = room - sum(int(ladder.onchip[0]) for ladder in ladders.values())
    steps = [(i, j) for i, ladder in ladders.items() for j in range(1, len(ladder.rows))]
    if not steps or left < 0:
        return option
    layer, to = np.array(steps).T
    grow = np.array([ladders[i].onchip[j] - ladders[i].onchip[j - 1] for i, j in steps])
    save = np.array([ladders[i].dram[j - 1] - ladders[i].dram[j] for i, j in steps])
    if grow.sum() <= left:
        return {i: len(ladder.rows) - 1 for i, ladder in ladders.items()}
    stuck: set[int] = set()
    for s in np.lexsort((layer, -save / np.maximum(grow, 1))):
        i, j = int(layer[s]), int(to[s])
        if i in stuck or option[i] != j - 1:
            continue
        if grow[s] <= left:
            option[i], left = j, left - int(grow[s])
        else:
            stuck.add(i)
    return option


def _first_fit(placed: list[Allocation], floor: int, size: int, first: int, last: int) -> int:
    """Lowest offset >= floor where `size` bytes do not overlap any allocation live at the
    same time."""
    busy = sorted((a.offset, a.end) for a in placed if a.first <= last and first <= a.last)
    offset = floor
    for start, end in busy:
        if offset + size <= start:
            break
        offset = max(offset, end)
    return offset


# ---------------------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------------------

INFEASIBLE = 1 << 50  # PEs a stage would need when no PE count makes it fast enough


def placed_traffic(costs: RoleCosts, plan: MemoryPlan, layers: Sequence[int]) -> np.ndarray:
    """DRAM bytes of `layers` under `plan` (tensors on chip move nothing; weights in DRAM
    pass as often as the plan says)."""
    if not layers:
        return np.zeros(0, dtype=np.int64)
    off = np.array([[not p.input_on_chip, not p.weights_on_chip, not p.output_on_chip] for p in (plan.placements[i] for i in layers)],
                   dtype=np.int64)  # fmt: skip
    off[:, 1] *= np.asarray([plan.weight_passes[i] for i in layers], dtype=np.int64)
    return (costs.traffic[list(layers)] * off).sum(axis=1)


@dataclass
class _PipelineTable:
    """For every split k and every candidate compute time T: the fewest PEs that make each
    of the first k layers compute in at most T cycles (prefix sums over the layers). A
    stage's time is max(compute, memory), and its memory time does not depend on its PEs:
    a split's pipeline under a plan runs in max(T, the slowest stage's memory time)."""

    times: np.ndarray  # candidate compute times (cycles), ascending
    prefix: np.ndarray  # (layers + 1) x len(times): PEs the first k layers need

    @staticmethod
    def build(costs: RoleCosts, first: int) -> _PipelineTable:
        stages = costs.curves
        rows = np.flatnonzero(costs.supported)
        times = np.unique(np.concatenate([stages[rows].ravel(), [0]]))
        times = times[times < UNREACHABLE]
        need = np.zeros((len(costs.supported), len(times)), dtype=np.int64)
        zero = costs.zero_work
        for i in rows:
            if zero[i] and i != first:
                need[i] = np.where(stages[i, 0] <= times, 0, INFEASIBLE)
                continue
            ascending = stages[i, ::-1]
            pes = stages.shape[1] - np.searchsorted(ascending, times, side="right") + 1
            need[i] = np.where(pes > stages.shape[1], INFEASIBLE, pes)
        prefix = np.zeros((len(need) + 1, len(times)), dtype=np.int64)
        np.cumsum(need, axis=0, out=prefix[1:])
        return _PipelineTable(times, prefix)

    def pes_at(self, costs: RoleCosts, first: int, k: int, u: int) -> list[int]:
        """PEs of each of the first k layers for compute time times[u]."""
        t = self.times[u]
        stages = costs.curves
        out = []
        for i in range(k):
            if not costs.supported[i]:
                out.append(0)
            elif costs.zero_work[i] and i != first:
                out.append(0)
            else:
                out.append(int(stages.shape[1] - np.searchsorted(stages[i, ::-1], t, side="right") + 1))
        return out


@dataclass(frozen=True)
class _Candidate:
    key: tuple[float, int, int, int, int]  # period, DRAM bytes, PEs used, plan, split
    assignment: Assignment
    plan: MemoryPlan


def assign(graph: LayerGraph, target: Target, arch: str, budget: int | None = None) -> NetworkMapping:
    """The best mapping of `graph` on `target` in `arch` within `budget` PEs (the
    target's budget when None): engines, PEs, tiles, memory plan and costs."""
    total = check_request(target, arch, budget)
    if not len(graph):
        raise LayerloomError("the model has no layers to map")
    costs_m = role_costs(graph, target, SEML, total) if arch != SESL else None
    costs_s = role_costs(graph, target, SESL, total) if arch != SEML else None
    n = len(graph)
    splits = {SEML: [0], SESL: [n], "hybrid": list(range(n + 1))}[arch]
    table = first = None
    if costs_s is not None:
        first = int(np.flatnonzero(costs_s.supported)[0]) if costs_s.supported.any() else -1
        table = _PipelineTable.build(costs_s, first)
        # Each pipeline layer keeps at least its cheapest option on chip: splits past the
        # first that cannot hold those cannot hold them either.
        least = np.cumsum([ladder.onchip[0] if ladder is not None else 0 for ladder in costs_s.ladders])
        splits = [k for k in splits if k == 0 or least[k - 1] <= target.onchip_bytes]
    best: _Candidate | None = None
    for k in splits:
        roles = roles_for_split(graph, k, costs_m, costs_s)
        held = _held_on_chip(graph, target, roles, costs_m, costs_s)
        if held.top > target.onchip_bytes:
            continue  # no plan fits
        # Plans differ only for the reused engine's layers.
        plans = PLANS if SEML in roles else PLANS[:1]
        for plan_index, plan in enumerate(plans):
            candidate = _best_for_split(graph, target, arch, total, k, roles, plan, plan_index,
                                        costs_m, costs_s, table, first, held)  # fmt: skip
            if candidate is not None and (best is None or candidate.key < best.key):
                best = candidate
    if best is None:
        raise LayerloomError(
            f"arch {arch} does not fit target '{target.name}': the pipeline's line buffers exceed its "
            f"{target.onchip_bytes} bytes of on-chip memory, even with its weights streamed from DRAM",
            target.source,
        )
    tiles = [_tile_of(role, i, costs_m, costs_s) for i, role in enumerate(best.assignment.roles)]
    mapping = realise(graph, target, best.assignment, tiles, best.plan)
    # The search's arrays and the cost model per layer are one model: they must agree.
    assert math.isclose(mapping.period_s, best.key[0], rel_tol=1e-9), (mapping.period_s, best.key)
    return mapping


def _tile_of(role: str, i: int, costs_m: RoleCosts | None, costs_s: RoleCosts | None) -> Tile | None:
    costs = costs_m if role == SEML else costs_s if role == SESL else None
    return costs.tiles[i] if costs is not None else None


def _best_for_split(
    graph: LayerGraph, target: Target, arch: str, total: int, k: int, roles: tuple[str, ...], plan: str,
    plan_index: int, costs_m: RoleCosts | None, costs_s: RoleCosts | None, table: _PipelineTable | None,
    first: int | None, held: _Held,
) -> _Candidate | None:  # fmt: skip
    memory = plan_memory(graph, target, roles, plan, costs_m, costs_s, held)
    if not memory.feasible:
        return None
    reused = [i for i, r in enumerate(roles) if r == SEML]
    piped = [i for i, r in enumerate(roles) if r == SESL]
    dram = 0
    reused_time: Callable[[int], float] = lambda pes: 0.0  # noqa: E731
    need_m = 0
    if reused:
        assert costs_m is not None
        bytes_m = placed_traffic(costs_m, memory, reused)
        dram += int(bytes_m.sum())
        mem_m = np.asarray(memory_cycles(bytes_m, target, costs_m.engine), dtype=np.int64)
        curves = costs_m.curves[reused]
        extra = costs_m.overheads[reused] if costs_m.overheads is not None else np.zeros((len(reused), 2), np.int64)
        engine = costs_m.engine
        scale = 1.0 / (engine.count * target.clock_of(engine))
        need_m = engine.fixed_pes * engine.count if engine.fixed_pes is not None else 1

        def reused_time(pes: int) -> float:
            return float(np.maximum(curves[:, pes - 1] + extra[:, 0], mem_m + extra[:, 1]).astype(np.float64).sum()) * scale

    memory_s = 0  # the slowest pipeline stage's memory cycles
    if piped:
        assert costs_s is not None
        bytes_s = placed_traffic(costs_s, memory, piped)
        dram += int(bytes_s.sum())
        memory_s = int(np.max(memory_cycles(bytes_s, target, costs_s.engine)))
    floor = dram / target.dram.bandwidth

    if not piped:
        pes = total if need_m == 1 else need_m
        period = max(reused_time(pes), floor)
        assignment = Assignment(arch, total, roles, (0,) * len(roles), pes)
        return _Candidate((period, dram, pes, plan_index, k), assignment, memory)

    assert table is not None and costs_s is not None and first is not None
    clock_s = target.clock_of(costs_s.engine)
    prefix = table.prefix[k]
    room = total - need_m  # PEs the pipeline may take
    u_min = int(np.searchsorted(-prefix, -room, side="left"))
    if u_min >= len(table.times):
        return None
    # Computing faster than the slowest stage's memory time gains nothing: at least the
    # largest compute time within it (times[0] = 0 is).
    u_min = max(u_min, int(np.searchsorted(table.times, memory_s, side="right")) - 1)

    def pipeline_at(u: int) -> float:
        return max(float(table.times[u]), memory_s) / clock_s

    def period_at(u: int) -> float:
        return max(pipeline_at(u), reused_time(total - int(prefix[u])) if reused else 0.0, floor)

    if reused:
        # Stage time grows with u while the reused engine (getting the PEs the pipeline
        # leaves) gets no slower: the best u is where the two cross.
        lo, hi = u_min, len(table.times) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if pipeline_at(mid) >= reused_time(total - int(prefix[mid])):
                hi = mid
            else:
                lo = mid + 1
        u = min((x for x in (lo - 1, lo) if x >= u_min), key=lambda x: (period_at(x), x))
    else:
        u = u_min
    stage = table.pes_at(costs_s, first, k, u) + [0] * (len(roles) - k)
    used = sum(stage)
    reused_pes = (total - used if need_m == 1 else need_m) if reused else 0
    assignment = Assignment(arch, total, roles, tuple(stage), reused_pes)
    return _Candidate((period_at(u), dram, used + reused_pes, plan_index, k), assignment, memory)


# ---------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineInstance:
    """An engine of the mapping: an instance of one of the target's engines."""

    name: str
    engine: Engine
    role: str
    pes: int  # per instance
    stage: int
    layers: tuple[int, ...]


@dataclass(frozen=True)
class MappedLayer:
    index: int
    layer: Workload
    role: str
    engine: str  # the engine instance's name ("host" for host layers)
    pes: int
    slot: int
    tile: Tile | None
    placement: Placement
    cost: LayerCost | None  # None on the host


@dataclass(frozen=True)
class NetworkMapping:
    target: Target
    assignment: Assignment
    plan: MemoryPlan
    engines: tuple[EngineInstance, ...]
    layers: tuple[MappedLayer, ...]
    reused_s: float  # one frame on the reused engine (all instances: per frame)
    pipeline_s: float  # the slowest pipeline stage
    floor_s: float  # all DRAM bytes of a frame at the DRAM bandwidth
    latency_s: float

    @property
    def period_s(self) -> float:
        return max(self.reused_s, self.pipeline_s, self.floor_s)

    @property
    def throughput_fps(self) -> float:
        return 1.0 / self.period_s if self.period_s > 0 else math.inf

    @property
    def energy_j(self) -> float:
        return sum(m.cost.energy_j for m in self.layers if m.cost is not None)

    @property
    def dram_bytes(self) -> int:
        return sum(m.cost.dram_bytes for m in self.layers if m.cost is not None)

    @property
    def onchip_bytes(self) -> int:
        return self.plan.peak

    @property
    def pes_used(self) -> int:
        return self.assignment.pes_used

    @property
    def bottleneck(self) -> str:
        """What sets the period: the reused engine, the pipeline, or the DRAM."""
        parts = {"dram": self.floor_s, "pipeline": self.pipeline_s, "reused engine": self.reused_s}
        return max(parts, key=lambda k: parts[k])

    def summary(self) -> dict[str, object]:
        a = self.assignment
        return {
            "arch": a.arch, "budget": a.budget, "pes": self.pes_used, "split": a.split, "plan": self.plan.name,
            "throughput_fps": self.throughput_fps, "latency_s": self.latency_s, "energy_j": self.energy_j,
            "dram_bytes": self.dram_bytes, "onchip_bytes": self.onchip_bytes, "bottleneck": self.bottleneck,
        }  # fmt: skip


def engines_of(graph: LayerGraph, target: Target, a: Assignment) -> tuple[tuple[EngineInstance, ...], list[tuple[str, int]]]:
    """Engine instances of an assignment and each layer's (engine, slot): a pipeline engine
    per layer with PEs of its own (layers without arithmetic join the engine before them,
    or the next one), then the reused engine; host layers get ("host", 0)."""
    n = len(graph)
    owner: list[int | None] = [None] * n
    pipeline: list[list[int]] = []
    for i in range(n):
        if a.roles[i] == SESL and a.stage_pes[i] > 0:
            owner[i] = len(pipeline)
            pipeline.append([i])
    joiners = [i for i in range(n) if a.roles[i] == SESL and a.stage_pes[i] == 0]
    if joiners and not pipeline:
        raise LayerloomError("a pipeline without an engine: give one of its layers PEs")
    for i in joiners:
        before = [owner[j] for j in range(i) if owner[j] is not None and a.stage_pes[j] > 0]
        after = [owner[j] for j in range(i + 1, n) if owner[j] is not None and a.stage_pes[j] > 0]
        stage = before[-1] if before else after[0]
        assert stage is not None
        owner[i] = stage
        pipeline[stage].append(i)
    sesl, reused = pipeline_engine(target), reused_engine(target)
    engines: list[EngineInstance] = []
    for s, members in enumerate(pipeline):
        assert sesl is not None
        engines.append(EngineInstance(f"{sesl.name}_{s}", sesl, SESL, a.stage_pes[members[0]], s, tuple(sorted(members))))
    reused_layers = tuple(i for i in range(n) if a.roles[i] == SEML)
    if reused_layers:
        assert reused is not None
        engines.append(EngineInstance(reused.name, reused, SEML, a.reused_pes // reused.count, len(pipeline), reused_layers))
    where: list[tuple[str, int]] = [("host", 0)] * n
    for instance in engines:
        for slot, i in enumerate(instance.layers):
            where[i] = (instance.name, slot)
    return tuple(engines), where


def realise(graph: LayerGraph, target: Target, a: Assignment, tiles: Sequence[Tile | None], plan: MemoryPlan,
            engines: Sequence[EngineInstance] | None = None) -> NetworkMapping:  # fmt: skip
    """Cost every layer with the one cost model and put the mapping together (with the
    engines `engines_of` names, or with `engines` as read from IR)."""
    if engines is None:
        engines, _ = engines_of(graph, target, a)
    where: list[tuple[EngineInstance | None, int]] = [(None, 0)] * len(graph)
    for instance in engines:
        for slot, i in enumerate(instance.layers):
            where[i] = (instance, slot)
    layers: list[MappedLayer] = []
    for i, layer in enumerate(graph.layers):
        e, slot = where[i]
        if e is None:
            layers.append(MappedLayer(i, layer, HOST, HOST, 0, 0, None, plan.placements[i], None))
            continue
        tile = plan.stream_tile(i, layer) if e.role == SESL else tiles[i]
        assert tile is not None
        cost = layer_cost(layer, target, e.engine, pes=e.pes, tile=tile, placement=plan.placements[i])
        layers.append(MappedLayer(i, layer, e.role, e.name, e.pes, slot, tile, plan.placements[i], cost))
    reused = [m.cost for m in layers if m.role == SEML and m.cost is not None]
    piped = [m.cost for m in layers if m.role == SESL and m.cost is not None]
    count = next((e.engine.count for e in engines if e.role == SEML), 1)
    one_frame = sum(c.seconds for c in reused)
    dram = sum(m.cost.dram_bytes for m in layers if m.cost is not None)
    return NetworkMapping(
        target, a, plan, tuple(engines), tuple(layers),
        reused_s=one_frame / count,
        pipeline_s=max((c.seconds for c in piped), default=0.0),
        floor_s=dram / target.dram.bandwidth,
        latency_s=one_frame + sum(c.seconds for c in piped),
    )  # fmt: skip


def plan_options(graph: LayerGraph, target: Target, a: Assignment, tiles: Sequence[Tile | None],
                 plans: Sequence[str] = PLANS, engines: Sequence[EngineInstance] | None = None,
                 ) -> list[tuple[str, NetworkMapping | None]]:  # fmt: skip
    """Every plan's mapping for a fixed assignment and tiles (None where it does not fit)."""
    budget = max(a.budget, a.pes_used, 1)
    costs_m = role_costs(graph, target, SEML, budget, tiles) if SEML in a.roles else None
    costs_s = role_costs(graph, target, SESL, budget, tiles) if SESL in a.roles else None
    options: list[tuple[str, NetworkMapping | None]] = []
    for name in plans:
        memory = plan_memory(graph, target, a.roles, name, costs_m, costs_s)
        options.append((name, realise(graph, target, a, tiles, memory, engines) if memory.feasible else None))
    return options


def best_plan(options: Sequence[tuple[str, NetworkMapping | None]], target: Target) -> NetworkMapping:
    """What plan-memory keeps: the shortest period, then the fewest DRAM bytes, then the
    plan listed first (the order `assign` breaks ties in)."""
    fitting = [(m.period_s, m.dram_bytes, i, m) for i, (_, m) in enumerate(options) if m is not None]
    if not fitting:
        raise LayerloomError(
            f"no memory plan fits the {target.onchip_bytes} bytes of on-chip memory of target '{target.name}'", target.source
        )
    return min(fitting, key=lambda x: x[:3])[3]


# ---------------------------------------------------------------------------------------
# Reading a mapping back from accel IR
# ---------------------------------------------------------------------------------------

TARGET_ATTR, ARCH_ATTR, BUDGET_ATTR, PLAN_ATTR = "accel.target", "accel.arch", "accel.budget", "accel.plan"


@dataclass(frozen=True)
class MappedModule:
    """What the IR of a mapped module says: the graph, its layer ops and their wrappers,
    the assignment, the engines and the tiles (None where tile has not run)."""

    graph: LayerGraph
    ops: list[Operation]
    wrappers: list[Operation | None]
    assignment: Assignment
    engines: tuple[EngineInstance, ...]
    tiles: list[Tile | None]


def target_of(module: Operation, hw: str = "", where: str = "pipeline") -> tuple[Target, str]:
    """The target named by a pass's `hw` option, else the one assign-engines recorded."""
    from xdsl.dialects.builtin import StringAttr

    from compiler.hw import load_target

    ref = hw or (lambda a: a.data if isinstance(a, StringAttr) else "")(module.attributes.get(TARGET_ATTR))
    if not ref:
        raise LayerloomError("no hardware target: give hw=NAME (or run assign-engines{hw=NAME} first)", where)
    return load_target(ref), ref


def read_mapping(module: Operation, target: Target, where: str = "pipeline") -> MappedModule:
    from xdsl.dialects.builtin import IntegerAttr, StringAttr

    from dialects.accel import LayerOp, engine_ops

    graph, ops = LayerGraph.of_module(module)
    engine_by_name = engine_ops(module)
    if not engine_by_name:
        raise LayerloomError("the module is not mapped: run assign-engines first", where)
    wrappers: list[Operation | None] = [op.parent_op() if isinstance(op.parent_op(), LayerOp) else None for op in ops]
    members: dict[str, list[int]] = {name: [] for name in engine_by_name}
    roles: list[str] = []
    tiles: list[Tile | None] = []
    for i, w in enumerate(wrappers):
        if not isinstance(w, LayerOp):
            roles.append(HOST)
            tiles.append(None)
            continue
        roles.append(engine_by_name[w.engine_name].role.data)
        members[w.engine_name].append(i)
        sizes = w.tile_sizes
        if sizes is not None and w.order is not None:
            m, n, e, f = sizes
            tiles.append(Tile(m, n, e, f, w.order.data))
        else:
            tiles.append(None)
    engines: list[EngineInstance] = []
    stage_pes = [0] * len(ops)
    reused_pes = 0
    for name, op in sorted(engine_by_name.items(), key=lambda kv: int(kv[1].stage.value.data)):
        template = target.engine(op.target_engine.data) if op.target_engine is not None else _engine_of_kind(target, op.kind.data)
        layers = sorted(members[name], key=lambda i: int(wrappers[i].slot.value.data))  # type: ignore[union-attr]
        engines.append(EngineInstance(name, template, op.role.data, op.pe_count, int(op.stage.value.data), tuple(layers)))
        if op.role.data == SESL and layers:
            stage_pes[layers[0]] = op.pe_count
        elif op.role.data == SEML:
            reused_pes += op.pe_count * op.instances
    arch = module.attributes.get(ARCH_ATTR)
    budget = module.attributes.get(BUDGET_ATTR)
    assignment = Assignment(
        arch.data if isinstance(arch, StringAttr) else "hybrid",
        int(budget.value.data) if isinstance(budget, IntegerAttr) else sum(stage_pes) + reused_pes,
        tuple(roles), tuple(stage_pes), reused_pes,
    )  # fmt: skip
    return MappedModule(graph, ops, wrappers, assignment, tuple(engines), tiles)


def _engine_of_kind(target: Target, kind: str) -> Engine:
    for e in target.engines:
        if e.kind == kind:
            return e
    raise LayerloomError(f"target '{target.name}' has no engine of kind '{kind}' (engines: {_engine_list(target)})", target.source)


def mapping_of_module(module: Operation, target: Target) -> NetworkMapping:
    """The mapping a fully mapped module (assign-engines, tile, plan-memory) describes,
    costed layer by layer."""
    from xdsl.dialects.builtin import StringAttr

    mm = read_mapping(module, target)
    missing = [mm.graph.layers[i].name for i, t in enumerate(mm.tiles) if t is None and mm.assignment.roles[i] != HOST]
    if missing:
        raise LayerloomError(f"layer '{missing[0]}' has no tile: run tile before", "pipeline")
    plan = module.attributes.get(PLAN_ATTR)
    name = plan.data if isinstance(plan, StringAttr) else PLANS[0]
    ((_, mapping),) = plan_options(mm.graph, target, mm.assignment, mm.tiles, (name,), mm.engines)
    if mapping is None:
        raise LayerloomError(f"memory plan '{name}' does not fit target '{target.name}'", "pipeline")
    return mapping


__all__ = [
    "ARCHS", "PLANS", "Allocation", "Assignment", "EngineInstance", "LayerGraph", "MappedLayer", "MemoryPlan",
    "NetworkMapping", "RoleCosts", "assign", "best_plan", "best_tile", "check_request", "engines_of", "plan_options",
    "mapping_of_module", "pipeline_engine", "plan_memory", "read_mapping", "realise", "reused_engine", "role_costs",
    "stream_tile", "target_of", "tile_for",
]  # fmt: skip
