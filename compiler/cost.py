"""The one cost model. Passes (tile, plan-memory, assign-engines, prune) and reports ask it
the same question -- what does this layer cost on this engine of this target, with these
PEs, this tile and these tensors on chip? -- and get one `LayerCost`:

- compute cycles: the engine kind's own count (compiler/engines/*.py);
- DRAM bytes: each tensor's size times how often the loop order re-reads it (below);
- memory cycles: DRAM bytes / bandwidth x clock (instances of an engine share the DRAM);
- cycles: max(compute, memory) with double buffering (transfers hide behind compute),
  compute + memory without; an engine kind may add what double buffering does not hide
  (`EngineKind.overheads`: max(compute + a, memory + b); a DPU's first loads and last save
  of a layer, its per-instruction latencies) and move other bytes than the loop order
  says (`EngineKind.traffic`: a DPU's weights in bank layout, concatenation by placement);
- on-chip bytes: the tile's input, weight and output buffers, x2 when double-buffered;
- energy: MACs x mac_energy + DRAM bytes x DRAM pJ/B + on-chip bytes accessed x the
  buffer memory's pJ/B (accesses: every DRAM byte passes through a buffer once, and the
  PE array reads the engine kind's operand bytes per compute cycle);
- roofline: intensity = ops / DRAM byte against the ridge point = peak ops/s / DRAM B/s
  of the engine's PEs (the target's ridge point when the engine has the whole budget):
  below it the layer is memory-bound, above compute-bound.

DRAM re-reads of a tile with n_m output-channel tiles, n_n input-channel tiles and n_s
spatial tiles, by loop order (the tensor named stays on chip over the inner loops):
    output:  inputs x n_m,  weights x (n_s if n_n > 1 else 1),  outputs x 1
    weight:  inputs x n_m,  weights x 1,  outputs x (2·n_n - 1)   (partial sums spill)
    input:   inputs x 1,  weights x (n_s if n_m·n_n > 1 else 1),
             outputs x (2·n_n - 1 if n_m > 1 else 1)
    stream:  inputs x 1,  weights x ceil(E/e),  outputs x 1   (a streaming engine: rows
             from a line buffer; weights it does not keep on chip are fetched once per
             tile of e output rows -- once per frame when e = E)
Inputs are counted with the halo that overlapping windows of neighbouring spatial tiles
share (read twice), and without padding (never fetched). With no tile (the default) each
tensor crosses the DRAM interface exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from compiler.engines.base import WHOLE, Tile, ceil_div
from compiler.engines.workload import VIEW_KINDS, Workload
from compiler.errors import LayerloomError, UnsupportedError
from compiler.hw.model import Engine, Target


@dataclass(frozen=True)
class Placement:
    """Which of a layer's tensors need no DRAM traffic because they stay on chip (chosen
    by plan-memory: a feature map handed to the next layer, resident weights)."""

    input_on_chip: bool = False
    weights_on_chip: bool = False
    output_on_chip: bool = False


OFF_CHIP = Placement()

# Layers without MACs whose windows tile like a depthwise convolution's; the other ones
# (elementwise, activations, data movement) stream: inputs read once, output written once.
WINDOWED_KINDS = frozenset({"maxpool", "avgpool"})


@dataclass(frozen=True)
class Traffic:
    """Bytes moved per tensor."""

    input: int = 0
    weights: int = 0
    output: int = 0

    @property
    def total(self) -> int:
        return self.input + self.weights + self.output


@dataclass(frozen=True)
class Energy:
    """Joules by where they are spent."""

    compute: float = 0.0
    dram: float = 0.0
    onchip: float = 0.0

    @property
    def total(self) -> float:
        return self.compute + self.dram + self.onchip


@dataclass(frozen=True)
class LayerCost:
    name: str
    op: str
    engine: str
    pes: int
    macs: int
    ops: int
    compute_cycles: int
    memory_cycles: int
    cycles: int
    double_buffered: bool
    traffic: Traffic
    onchip_bytes: int
    energy: Energy
    intensity: float  # ops per DRAM byte (inf when nothing moves)
    ridge: float  # ops per byte where the engine's roofline turns
    clock: float  # Hz

    @property
    def dram_bytes(self) -> int:
        return self.traffic.total

    @property
    def bound(self) -> str:
        """'compute' or 'memory': the layer's side of the roofline's ridge point."""
        return "compute" if self.intensity >= self.ridge else "memory"

    @property
    def seconds(self) -> float:
        return self.cycles / self.clock

    @property
    def energy_j(self) -> float:
        return self.energy.total

    def as_dict(self) -> dict[str, object]:
        """The per-layer record reports print (`layerloom estimate --json` keys included)."""
        d = asdict(self)
        d.update(dram_bytes=self.dram_bytes, bound=self.bound, seconds=self.seconds, energy_j=self.energy_j)
        if math.isinf(self.intensity):
            d["intensity"] = None
        return d


# ---------------------------------------------------------------------------------------
# Per layer
# ---------------------------------------------------------------------------------------


def resolve_engine(target: Target, engine: Engine | str | None) -> Engine:
    if isinstance(engine, Engine):
        return engine
    if engine is not None:
        return target.engine(engine)
    if len(target.engines) != 1:
        names = ", ".join(e.name for e in target.engines) or "none"
        raise LayerloomError(f"target '{target.name}' has engines {names}: say which one", target.source)
    return target.engines[0]


def resolve_pes(engine: Engine, pes: int | None) -> int:
    """The PE count to cost with: the hardware's when fixed, else `pes` or the engine's own."""
    fixed = engine.fixed_pes
    if fixed is not None:
        if pes is not None and pes != fixed:
            raise LayerloomError(f"engine '{engine.name}' ({engine.kind}) has a fixed {fixed} PEs, not {pes}", engine.where)
        return fixed
    chosen = pes if pes is not None else engine.params.get("pes")
    if chosen is None:
        raise LayerloomError(
            f"engine '{engine.name}' ({engine.kind}) has no PE count: give one (pes=N, or `pes N;` in the target)",
            engine.where,
        )
    if chosen < 1:
        raise LayerloomError(f"engine '{engine.name}': PE count must be positive, got {chosen}", engine.where)
    return int(chosen)


def layer_cost(
    layer: Workload,
    target: Target,
    engine: Engine | str | None = None,
    *,
    pes: int | None = None,
    tile: Tile = WHOLE,
    placement: Placement = OFF_CHIP,
    double_buffered: bool = True,
) -> LayerCost:
    """The cost of `layer` on `engine` (a name, or the target's only engine) of `target`.
    Raises UnsupportedError (with the engine's reason) for a layer the engine cannot run."""
    eng = resolve_engine(target, engine)
    plugin = eng.kind_plugin
    support = plugin.supports(layer, eng)
    if not support:
        raise UnsupportedError(f"engine '{eng.name}' ({eng.kind}) cannot run it: {support.reason}", layer.name)
    p = resolve_pes(eng, pes)
    t = tile.resolved(layer)
    clock = target.clock_of(eng)

    compute = int(plugin.compute_cycles(layer, eng, p, t))
    traffic = placed(plugin.traffic(layer, eng, t), placement)
    memory = int(memory_cycles(traffic.total, target, eng))
    extra = plugin.overheads(layer, eng, target, t)
    overlapped = max(compute + extra.compute, memory + extra.memory)
    # Without double buffering nothing overlaps (and that is never faster).
    cycles = overlapped if double_buffered else max(overlapped, compute + memory)
    onchip = buffer_bytes(layer, t, double_buffered, placement.weights_on_chip)

    buffer = target.buffer_of(eng)
    onchip_accesses = traffic.total + compute * plugin.operand_bytes_per_cycle(layer, eng, p)
    arithmetic = layer.macs if layer.has_macs else layer.ops
    energy = Energy(
        compute=arithmetic * target.mac_energy,
        dram=traffic.total * target.dram.energy_per_byte,
        onchip=onchip_accesses * (buffer.energy_per_byte if buffer else 0.0),
    )
    ops = layer.ops
    return LayerCost(
        name=layer.name,
        op=layer.op,
        engine=eng.name,
        pes=p,
        macs=layer.macs,
        ops=ops,
        compute_cycles=compute,
        memory_cycles=memory,
        cycles=cycles,
        double_buffered=double_buffered,
        traffic=traffic,
        onchip_bytes=onchip,
        energy=energy,
        intensity=ops / traffic.total if traffic.total else math.inf,
        ridge=2.0 * p * eng.count * clock / target.dram.bandwidth,
        clock=clock,
    )


def memory_cycles(dram_bytes: Any, target: Target, engine: Engine) -> Any:
    """Cycles to move `dram_bytes` (an int or an integer array) at the DRAM bandwidth,
    divided among the engine's instances (they run at once)."""
    bandwidth = target.dram.bandwidth / engine.count
    return ceil_div(dram_bytes * int(target.clock_of(engine)), int(bandwidth))


# The traffic and buffer formulas take tile sizes as ints or as NumPy arrays (the tile
# search evaluates thousands of candidate tiles at once), so they exist exactly once.


def _input_channels_of_m_tile(layer: Workload, tm: Any) -> Any:
    """Input channels one output-channel tile reads (all of them for a dense conv; the
    tile's groups' for a grouped one -- one per channel for depthwise)."""
    if layer.groups == 1:
        return layer.in_channels
    return np.minimum(layer.in_channels, ceil_div(tm, layer.out_channels_per_group) * layer.in_channels_per_group)


def input_sweep_bytes(layer: Workload, t: Tile) -> int:
    """Bytes of one pass over the input with spatial tiles of t.e x t.f (halos included)."""
    assert t.e and t.f
    return int(_sweep_bytes(layer, t.e, t.f))


def _sweep_bytes(layer: Workload, e: Any, f: Any) -> Any:
    rows = _axis_read(layer.out_h, e, layer.window_rows(e), layer.window_rows(layer.out_h % e), layer.in_h, layer.pad_h)
    cols = _axis_read(layer.out_w, f, layer.window_cols(f), layer.window_cols(layer.out_w % f), layer.in_w, layer.pad_w)
    return layer.inputs * layer.batch * layer.in_channels * rows * cols * layer.elem_bytes


def _axis_read(outs: int, tile: Any, tile_extent: Any, rest_extent: Any, real: int, pad: int) -> Any:
    """Input rows (or columns) fetched along one axis: each tile fetches its windows'
    extent; neighbouring tiles share halos (fetched twice); the padding at the two ends is
    never fetched."""
    full, rest = np.divmod(outs, tile)
    fetched = full * tile_extent + np.where(rest > 0, rest_extent, 0) - pad
    return np.where(full + (rest > 0) == 1, real, np.maximum(real, fetched))


def traffic_terms(layer: Workload, m: Any, n: Any, e: Any, f: Any, order: str) -> tuple[Any, Any, Any]:
    """DRAM bytes of (inputs, weights, outputs) for tiles m x n x e x f (ints or arrays of
    resolved sizes) in `order`, with every tensor off chip (see the module docstring)."""
    if layer.op in VIEW_KINDS:
        return 0, 0, 0
    if order == "stream":
        # A streaming engine reads the inputs once and writes the output once (a line
        # buffer keeps the window's rows); weights not kept on chip pass once per tile of
        # e output rows.
        return layer.input_bytes, layer.weight_bytes * ceil_div(layer.out_h, e), layer.output_bytes
    if not layer.has_macs and layer.op not in WINDOWED_KINDS:
        return layer.input_bytes, layer.weight_bytes, layer.output_bytes
    n_m = ceil_div(layer.out_channels, m)
    n_n = ceil_div(layer.in_channels_per_group, n)
    n_s = ceil_div(layer.out_h, e) * ceil_div(layer.out_w, f)
    sweep = _sweep_bytes(layer, e, f)
    in_share = _input_channels_of_m_tile(layer, m) / layer.in_channels
    w, o = layer.weight_bytes, layer.output_bytes
    if order == "output":
        return np.rint(sweep * n_m * in_share), w * np.where(n_n > 1, n_s, 1), o
    if order == "weight":
        return np.rint(sweep * n_m * in_share), w, o * (2 * n_n - 1)
    # input-stationary
    return sweep, w * np.where(n_m * n_n > 1, n_s, 1), o * np.where(n_m > 1, 2 * n_n - 1, 1)


def dram_traffic(layer: Workload, t: Tile, placement: Placement = OFF_CHIP) -> Traffic:
    """DRAM bytes per tensor for a resolved tile (see the module docstring)."""
    assert t.m and t.n and t.e and t.f
    return placed(traffic_terms(layer, t.m, t.n, t.e, t.f, t.order), placement)


def placed(terms: Sequence[Any], placement: Placement = OFF_CHIP) -> Traffic:
    """Traffic of (inputs, weights, outputs) bytes less the tensors `placement` keeps on chip."""
    inputs, weights, outputs = terms
    return Traffic(
        input=0 if placement.input_on_chip else int(inputs),
        weights=0 if placement.weights_on_chip else int(weights),
        output=0 if placement.output_on_chip else int(outputs),
    )


def buffer_bytes(layer: Workload, t: Tile, double_buffered: bool = True, weights_on_chip: bool = True) -> int:
    """On-chip bytes of one tile's input, weight and output (accumulator) buffers.

    A streaming tile (order `stream`) that keeps its weights on chip is a line buffer (the
    window's input rows), all weights and one output row, not doubled: its buffers are
    FIFOs. One that streams its weights from DRAM (`weights_on_chip` False) holds the
    input rows and the accumulators of a tile of e output rows -- doubled: the next rows
    arrive while the weights pass over these -- and a double-buffered weight FIFO of one
    filter."""
    assert t.m and t.n and t.e and t.f
    if t.order == "stream":
        if weights_on_chip or not layer.weight_bytes:
            return int(tile_buffer_bytes(layer, layer.out_channels, layer.in_channels_per_group, 1, layer.out_w))
        return int(streamed_weights_buffer_bytes(layer, t.e))
    return int(tile_buffer_bytes(layer, t.m, t.n, t.e, t.f)) * (2 if double_buffered else 1)


def streamed_weights_buffer_bytes(layer: Workload, rows: Any) -> Any:
    """On-chip bytes of a streaming engine whose weights pass from DRAM once per tile of
    `rows` output rows (an int or an array): the tile's input rows and output accumulators
    of all channels, doubled, and a double-buffered FIFO of one filter's weights."""
    m, n = layer.out_channels, layer.in_channels_per_group
    weights = m * n * layer.window * layer.weight_elem_bytes if layer.has_macs else 0
    rows_bytes = tile_buffer_bytes(layer, m, n, rows, layer.out_w) - weights
    return 2 * rows_bytes + 2 * n * layer.window * layer.weight_elem_bytes


def tile_buffer_bytes(layer: Workload, m: Any, n: Any, e: Any, f: Any) -> Any:
    """Single-buffered bytes of tiles m x n x e x f (ints or arrays of resolved sizes)."""
    if layer.op in VIEW_KINDS:
        return 0
    rows = np.minimum(layer.window_rows(e), layer.in_h)
    cols = np.minimum(layer.window_cols(f), layer.in_w)
    if layer.has_macs:
        channels = n if layer.groups == 1 else np.minimum(_input_channels_of_m_tile(layer, m), n * ceil_div(m, layer.out_channels_per_group))
        weights = m * n * layer.window * layer.weight_elem_bytes
        acc_bytes = max(layer.elem_bytes, 4)  # int8 layers accumulate in int32
    else:
        channels = np.minimum(m, layer.in_channels)
        weights = 0
        acc_bytes = layer.elem_bytes
    inputs = layer.inputs * channels * rows * cols * layer.elem_bytes
    outputs = m * e * f * acc_bytes
    return inputs + weights + outputs


# ---------------------------------------------------------------------------------------
# A whole network on one engine, layer after layer
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkCost:
    """Layers run one after another on one engine (SEML-style); instances of the engine
    (DPU cores) work on different frames, so throughput scales with their count."""

    layers: Sequence[LayerCost]
    instances: int = 1
    totals: dict[str, float] = field(default_factory=dict)

    @property
    def cycles(self) -> int:
        return sum(c.cycles for c in self.layers)

    @property
    def latency_s(self) -> float:
        return sum(c.seconds for c in self.layers)

    @property
    def throughput_fps(self) -> float:
        return self.instances / self.latency_s if self.latency_s else math.inf

    @property
    def energy_j(self) -> float:
        return sum(c.energy_j for c in self.layers)

    @property
    def dram_bytes(self) -> int:
        return sum(c.dram_bytes for c in self.layers)

    @property
    def peak_onchip_bytes(self) -> int:
        return max((c.onchip_bytes for c in self.layers), default=0)


def network_cost(
    layers: Iterable[Workload],
    target: Target,
    engine: Engine | str | None = None,
    *,
    pes: int | None = None,
    double_buffered: bool = True,
) -> NetworkCost:
    eng = resolve_engine(target, engine)
    costs = [layer_cost(layer, target, eng, pes=pes, double_buffered=double_buffered) for layer in layers]
    return NetworkCost(costs, eng.count)


# ---------------------------------------------------------------------------------------
# Adaptive resources: a per-layer voltage / frequency policy (the ARADA idea)
# ---------------------------------------------------------------------------------------

# The V-f model: the engine's voltage scales in proportion to its clock down to
# V_FLOOR x nominal, below which the clock may still drop but the voltage may not. Dynamic
# energy per operation goes with V^2 (E = C·V^2): arithmetic and on-chip accesses scale,
# DRAM energy does not (the DRAM is not in the engine's voltage domain); static power is
# not modelled.
V_FLOOR = 0.7


@dataclass(frozen=True)
class Dvfs:
    """A layer's clock and voltage under the policy and what it saves."""

    clock_scale: float  # f' / f
    voltage_scale: float  # V' / V
    energy_j: float  # the layer's energy at f', V'
    saved_j: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def dvfs(cost: LayerCost, time_s: float | None = None) -> Dvfs:
    """Slow a layer's engine down until its compute time fills `time_s` (default: its
    memory time: a memory-bound layer waits for DRAM anyway), never faster than nominal:
    f' = f · compute time / time_s, V' = V · max(f'/f, V_FLOOR); arithmetic and on-chip
    energy scale by (V'/V)^2. The layer takes no longer than before."""
    compute_s = cost.compute_cycles / cost.clock
    available = cost.memory_cycles / cost.clock if time_s is None else time_s
    e = cost.energy
    if compute_s <= 0 or available <= compute_s:
        return Dvfs(1.0, 1.0, e.total, 0.0)
    scale = compute_s / available
    volt = max(scale, V_FLOOR)
    saved = (e.compute + e.onchip) * (1.0 - volt**2)
    return Dvfs(scale, volt, e.total - saved, saved)
