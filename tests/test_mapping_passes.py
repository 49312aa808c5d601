"""The mapping level: assign-engines, tile and plan-memory (compiler/mapping.py and the
passes). Properties over random networks (more PEs never lower throughput; hybrid is
never worse than SEML or SESL; pipeline stages get no PE they do not need; allocations
live at the same time never overlap), the vectorised cycle curves against the engines'
own counts, the tile search, and the passes on IR (what they write reads back as the same
mapping; reports and plots)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler import import_onnx, run_pipeline
from compiler.cost import Placement, Traffic, buffer_bytes, dram_traffic, dvfs, layer_cost
from compiler.engines import Tile, Workload
from compiler.engines.base import best_unroll, ceil_div, unroll_curve
from compiler.errors import LayerloomError
from compiler.hw import load_target, parse_target
from compiler.mapping import (
    ARCHS,
    GRAPH_INPUT,
    PLANS,
    SEML,
    SESL,
    LayerGraph,
    StageLadder,
    assign,
    best_plan,
    best_tile,
    mapping_of_module,
    plan_options,
)

ROOT = Path(__file__).resolve().parent.parent
ZCU102 = load_target("zcu102")
SMALL = load_target(ROOT / "tests" / "filecheck" / "tile_small.hw")
# 12 KB on chip: pipelines of the random networks below must stream weights from DRAM.
CRAMPED = parse_target(
    "target cramped { clock 100 MHz; pe_budget 64; dram { bandwidth 0.4 GB/s; } memory sram { size 12 KB; }"
    " engine seml { kind seml; buffer sram; } engine sesl { kind sesl; buffer sram; } }"
)


# --- cycles as a function of PEs ----------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(a=st.integers(1, 300), b=st.integers(1, 600), ta=st.integers(1, 300), tb=st.integers(1, 600), top=st.integers(1, 700))
def test_unroll_curve_is_best_unroll_for_every_pe_count(a: int, b: int, ta: int, tb: int, top: int) -> None:
    ta, tb = min(ta, a), min(tb, b)
    curve = unroll_curve(a, b, top, ta, tb)
    assert len(curve) == top
    for p in {1, min(2, top), top // 3 or 1, top // 2 or 1, top}:
        assert curve[p - 1] == best_unroll(a, b, p, ta, tb)[0]
    assert (np.diff(curve) <= 0).all()


conv_layers = st.builds(
    lambda c, m, e, k, g, name: Workload.conv(name, c * g, m * g, e, e, k, k, pad=k // 2, groups=g, elem_bytes=1),
    c=st.integers(1, 48), m=st.integers(1, 48), e=st.integers(1, 20), k=st.sampled_from([1, 3, 5]),
    g=st.sampled_from([1, 1, 2]), name=st.just("L"),
)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(layer=conv_layers, kind=st.sampled_from(["seml", "sesl"]))
def test_cycles_curve_is_compute_cycles(layer: Workload, kind: str) -> None:
    engine = ZCU102.engine(kind)
    tile = Tile(m=max(1, layer.out_channels // 2), e=max(1, layer.out_h // 2)).resolved(layer)
    curve = engine.kind_plugin.cycles_curve(layer, engine, 300, tile)
    for p in (1, 7, 64, 299, 300):
        assert curve[p - 1] == engine.kind_plugin.compute_cycles(layer, engine, p, tile)


# --- tiles ---------------------------------------------------------------------------------

RESNET_3X3 = Workload.conv("res3x3", 128, 128, 28, 28, 3, 3, pad=1, elem_bytes=4)


def test_tile_fits_and_whole_layer_wins_when_it_fits() -> None:
    whole = Tile().resolved(RESNET_3X3)
    assert best_tile(RESNET_3X3, 2 * buffer_bytes(RESNET_3X3, whole)) == whole
    for capacity in (20_000, 100_000, 400_000):
        t = best_tile(RESNET_3X3, capacity)
        assert buffer_bytes(RESNET_3X3, t) <= capacity
        # Least traffic among the candidates (within the 2 % slack): no power-of-two tile
        # of the same layer that fits moves fewer bytes by more than that.
        best = dram_traffic(RESNET_3X3, t).total
        for m in (8, 32, 128):
            for n in (8, 32, 128):
                for e in (1, 7, 28):
                    for order in ("output", "weight", "input"):
                        other = Tile(m, n, e, order=order).resolved(RESNET_3X3)
                        if buffer_bytes(RESNET_3X3, other) <= capacity:
                            assert best <= dram_traffic(RESNET_3X3, other).total * 1.02 + 1


def test_tile_keeps_the_engine_busy() -> None:
    """A tile of few channels may move slightly fewer bytes but idle the PE array: with
    the PE count given, the search keeps as many lanes as the budget can use."""
    first = Workload.conv("conv1", 3, 64, 56, 56, 3, 3, pad=1, elem_bytes=1)
    slow = best_tile(first, 50_000)  # least traffic only: input-stationary, 2 output channels
    fast = best_tile(first, 50_000, pes=2048, bytes_per_cycle=19.2e9 / 300e6)
    assert (slow.m, slow.order, fast.m) == (2, "input", 64)
    seml = ZCU102.engine("seml")
    cycles = [layer_cost(first, ZCU102, seml, pes=2048, tile=t).cycles for t in (fast, slow)]
    assert cycles[0] * 10 < cycles[1]
    assert dram_traffic(first, fast).total <= 2 * dram_traffic(first, slow).total


def test_no_tile_fits_is_an_error_naming_the_layer() -> None:
    with pytest.raises(LayerloomError, match="res3x3: no tile fits the engine's tile buffers of 10 bytes"):
        best_tile(RESNET_3X3, 10)


# --- the search over random networks ----------------------------------------------------


@st.composite
def networks(draw: st.DrawFn) -> LayerGraph:
    """A chain of convolutions (int8), sometimes with a residual add, ending in a gemm."""
    n = draw(st.integers(1, 5))
    channels, size = draw(st.integers(1, 16)), draw(st.sampled_from([8, 16, 32]))
    layers: list[Workload] = []
    producers: list[tuple[int, ...]] = []
    for i in range(n):
        out = draw(st.integers(1, 32))
        k = draw(st.sampled_from([1, 3]))
        depthwise = out == channels and draw(st.booleans())
        layers.append(Workload.conv(f"c{i}", channels, out, size, size, k, k, pad=k // 2,
                                    groups=channels if depthwise else 1, elem_bytes=1))  # fmt: skip
        producers.append((i - 1,) if i else (GRAPH_INPUT,))
        if i >= 2 and out == layers[i - 2].out_channels and draw(st.booleans()):
            layers.append(Workload("add", "add", out, out, size * size, 1, inputs=2, elem_bytes=1))
            producers.append((len(layers) - 2, len(layers) - 3 if i >= 2 else GRAPH_INPUT))
        channels = out
    layers.append(Workload.gemm("fc", 1, channels * size * size, 10, elem_bytes=1))
    producers.append((len(layers) - 2,))
    return LayerGraph(tuple(layers), tuple(producers), frozenset({len(layers) - 1}))


def fps(graph: LayerGraph, target: object, arch: str, budget: int) -> float:
    """Throughput, 0 when the architecture does not fit the target."""
    try:
        return assign(graph, target, arch, budget).throughput_fps  # type: ignore[arg-type]
    except LayerloomError as e:
        assert "does not fit" in str(e)
        return 0.0


@settings(max_examples=25, deadline=None)
@given(graph=networks(), target=st.sampled_from([ZCU102, SMALL, CRAMPED]), budgets=st.lists(st.integers(1, 64), min_size=2, max_size=3))
def test_more_pes_never_lower_throughput_and_hybrid_is_never_worse(graph: LayerGraph, target: object, budgets: list[int]) -> None:
    budgets = sorted(budgets)
    results = {arch: [fps(graph, target, arch, b) for b in budgets] for arch in ARCHS}
    for arch, values in results.items():
        assert all(a <= b * (1 + 1e-12) for a, b in zip(values, values[1:], strict=False)), (arch, budgets, values)
    for i in range(len(budgets)):
        assert results["hybrid"][i] >= max(results["seml"][i], results["sesl"][i]) * (1 - 1e-12)


@settings(max_examples=20, deadline=None)
@given(graph=networks(), budget=st.integers(8, 64))
def test_pipeline_stages_are_balanced(graph: LayerGraph, budget: int) -> None:
    """SESL: no stage is slower than the slowest, and none has a PE it does not need --
    with one PE fewer it would be slower than the slowest stage."""
    try:
        mapping = assign(graph, ZCU102, SESL, budget)
    except LayerloomError:
        return
    assert mapping.pes_used <= budget
    slowest = round(mapping.pipeline_s * ZCU102.clock)
    for e in mapping.engines:
        main = mapping.layers[e.layers[0]]
        assert main.cost is not None and main.cost.cycles <= slowest
        if e.pes > 1:
            fewer = layer_cost(main.layer, ZCU102, e.engine, pes=e.pes - 1, tile=main.tile, placement=main.placement)  # type: ignore[arg-type]
            assert fewer.cycles > slowest, (main.layer.name, e.pes)


@settings(max_examples=20, deadline=None)
@given(graph=networks(), arch=st.sampled_from(ARCHS))
def test_allocations_never_overlap_and_fit(graph: LayerGraph, arch: str) -> None:
    try:
        mapping = assign(graph, SMALL, arch, 64)
    except LayerloomError:
        return
    plan = mapping.plan
    assert plan.peak <= plan.capacity
    allocs = plan.allocations
    for i, a in enumerate(allocs):
        for b in allocs[i + 1 :]:
            live_together = a.first <= b.last and b.first <= a.last
            assert not (live_together and a.offset < b.end and b.offset < a.end), (a, b)


# --- pipeline weights in DRAM ------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(layer=conv_layers)
def test_stage_ladder_climbs_by_falling_benefit(layer: Workload) -> None:
    """A pipeline layer's options: the cheapest on chip first, each step saving DRAM bytes
    at a falling rate per on-chip byte, ending with the weights resident; no option off
    the ladder is below it; and each is what the cost model charges."""
    ladder = StageLadder.of(layer)
    rows = [r for r in range(1, layer.out_h + 1)]
    streamed = [Tile(e=r, order="stream").resolved(layer) for r in rows]
    options = [(buffer_bytes(layer, t, weights_on_chip=False), layer.weight_bytes * ceil_div(layer.out_h, t.e)) for t in streamed]
    options.append((buffer_bytes(layer, Tile(e=1, order="stream").resolved(layer)), 0))
    assert (ladder.rows[-1], ladder.dram[-1]) == (0, 0)
    assert ladder.onchip[0] == min(b for b, _ in options)
    assert (np.diff(ladder.onchip) > 0).all() and (np.diff(ladder.dram) < 0).all()
    rates = -np.diff(ladder.dram) / np.diff(ladder.onchip)
    assert (np.diff(rates) < 0).all()
    for b, d in options:  # on or above the ladder's polyline
        assert d >= np.interp(b, ladder.onchip, ladder.dram) * (1 - 1e-9) or b > ladder.onchip[-1]
    for r, b, d in zip(ladder.rows, ladder.onchip, ladder.dram, strict=True):
        if r:
            tile = Tile(e=int(r), order="stream").resolved(layer)
            assert buffer_bytes(layer, tile, weights_on_chip=False) == b
            assert dram_traffic(layer, tile, Placement(input_on_chip=True, output_on_chip=True)).total == d


def test_streamed_weights_by_hand() -> None:
    """A 1x1 conv of 64 -> 256 channels on 8 x 8 (64 KB of float weights) on a pipeline
    engine: weights resident, a line buffer of one row; streamed once per 2 output rows,
    4 passes a frame and the 2 rows' buffers doubled plus a one-filter FIFO."""
    layer = Workload.conv("pw", 64, 256, 8, 8, 1, 1, elem_bytes=4)
    resident = layer_cost(layer, SMALL, "sesl", pes=16, tile=Tile(e=1, order="stream"), placement=Placement(True, True))
    assert resident.traffic == Traffic(0, 0, 256 * 64 * 4)
    assert resident.onchip_bytes == 8 * 64 * 4 + 256 * 64 * 4 + 8 * 256 * 4
    streamed = layer_cost(layer, SMALL, "sesl", pes=16, tile=Tile(e=2, order="stream"), placement=Placement(True))
    assert streamed.traffic == Traffic(0, 4 * 256 * 64 * 4, 256 * 64 * 4)
    assert streamed.onchip_bytes == 2 * (2 * 8 * 64 * 4 + 2 * 8 * 256 * 4) + 2 * 64 * 4 == 41_472
    assert streamed.memory_cycles == 5 * 65_536 // 4  # 0.4 GB/s at 100 MHz: 4 bytes a cycle


@settings(max_examples=25, deadline=None)
@given(graph=networks(), arch=st.sampled_from(ARCHS), budget=st.integers(4, 64))
def test_pipelines_stream_what_does_not_fit(graph: LayerGraph, arch: str, budget: int) -> None:
    """On a cramped chip: a pipeline layer with weights in DRAM reads them once per tile of
    rows, and is charged for it; every DRAM byte of the frame shares the bandwidth (the
    period is at least their transfer time); and in a pure pipeline a layer streams its
    weights only when making them resident would not fit."""
    try:
        mapping = assign(graph, CRAMPED, arch, budget)
    except LayerloomError as e:
        assert "does not fit" in str(e)
        return
    plan = mapping.plan
    assert plan.peak <= plan.capacity
    assert mapping.floor_s == pytest.approx(mapping.dram_bytes / CRAMPED.dram.bandwidth)
    assert mapping.period_s >= mapping.floor_s
    room = plan.capacity - plan.peak
    for m in mapping.layers:
        if m.role != SESL or not m.layer.weight_bytes or m.placement.weights_on_chip:
            continue
        assert m.cost is not None and m.tile is not None and m.tile.e is not None
        assert m.cost.traffic.weights == m.layer.weight_bytes * ceil_div(m.layer.out_h, m.tile.e)
        if arch == SESL:
            ladder = StageLadder.of(m.layer)
            assert ladder.onchip[-1] - m.cost.onchip_bytes > room, m.layer.name


def test_mobilenet_v1_pipeline_streams_weights_on_zcu102() -> None:
    """MobileNetV1's 17 MB of float weights do not fit the zcu102's 4 MB of BRAM: the
    pipeline keeps the small ones and streams the big pointwise convolutions' and the
    classifier's from DRAM, which then bounds the period; hybrid beats both."""
    from examples.models.builders import build

    program = run_pipeline(import_onnx(build("mobilenet_v1")), "canonicalize,fold-batchnorm,fuse-activation")
    graph, _ = LayerGraph.of_module(program.module)  # type: ignore[attr-defined]
    fps = {arch: assign(graph, ZCU102, arch, 1024) for arch in ARCHS}
    sesl = fps[SESL]
    streamed = {m.layer.name for m in sesl.layers if m.layer.weight_bytes and not m.placement.weights_on_chip}
    assert {"block13_pw", "output"} <= streamed and "conv1" not in streamed
    assert sesl.bottleneck == "dram" and sesl.onchip_bytes <= ZCU102.onchip_bytes
    assert fps["hybrid"].throughput_fps >= max(fps[SEML].throughput_fps, sesl.throughput_fps)


# --- the passes on IR ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_nn() -> object:
    return run_pipeline(import_onnx(str(ROOT / "examples" / "tiny_cnn.onnx")), "canonicalize,fold-batchnorm,fuse-activation")


@pytest.mark.parametrize("arch", ARCHS)
def test_ir_describes_the_searched_mapping(tiny_nn: object, arch: str) -> None:
    """What assign-engines, tile and plan-memory write reads back as the mapping the search
    found: same engines, PEs, tiles, placements, throughput."""
    graph, _ = LayerGraph.of_module(tiny_nn.module)  # type: ignore[attr-defined]
    searched = assign(graph, ZCU102, arch, 200)
    program = run_pipeline(tiny_nn.clone(), f"assign-engines{{arch={arch} budget=200 hw=zcu102}},tile,plan-memory")  # type: ignore[attr-defined]
    read = mapping_of_module(program.module, ZCU102)
    assert read.throughput_fps == pytest.approx(searched.throughput_fps, rel=1e-12)
    assert read.energy_j == pytest.approx(searched.energy_j, rel=1e-12)
    assert [(m.engine, m.pes, m.slot, m.tile, m.placement) for m in read.layers] == [
        (m.engine, m.pes, m.slot, m.tile, m.placement) for m in searched.layers
    ]
    assert read.plan.name == searched.plan.name and read.plan.peak == searched.plan.peak


def test_plan_memory_picks_the_best_plan_and_reports(tiny_nn: object, tmp_path: Path) -> None:
    report, plot = tmp_path / "plan.txt", tmp_path / "plan.png"
    program = run_pipeline(
        tiny_nn.clone(),  # type: ignore[attr-defined]
        f'assign-engines{{arch=seml budget=64 hw=zcu102}},tile,plan-memory{{report="{report}" plot="{plot}"}}',
    )
    from compiler.mapping import read_mapping

    mapped = read_mapping(program.module, ZCU102)
    options = plan_options(mapped.graph, ZCU102, mapped.assignment, mapped.tiles)
    assert [name for name, _ in options] == list(PLANS)
    chosen = best_plan(options, ZCU102)
    assert program.module.attributes["accel.plan"].data == chosen.plan.name  # type: ignore[attr-defined]
    for _, m in options:
        assert m is not None and (chosen.period_s, chosen.dram_bytes) <= (m.period_s, m.dram_bytes)
    # Keeping things on chip never costs DRAM bytes: ping-pong moves the most.
    assert options[0][1].dram_bytes == max(m.dram_bytes for _, m in options if m is not None)  # type: ignore[union-attr]
    text = report.read_text()
    assert text.startswith(f"memory plan: {chosen.plan.name}") and "live (layers)" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tile_and_plan_memory_need_the_passes_before(tiny_nn: object) -> None:
    with pytest.raises(LayerloomError, match="tile: the module is not mapped: run assign-engines first"):
        run_pipeline(tiny_nn.clone(), "tile{hw=zcu102}")  # type: ignore[attr-defined]
    with pytest.raises(LayerloomError, match="plan-memory: layer 'conv1' has no tile: run tile before plan-memory"):
        run_pipeline(tiny_nn.clone(), "assign-engines{hw=zcu102},plan-memory")  # type: ignore[attr-defined]
    with pytest.raises(LayerloomError, match="unknown memory plan 'nope'"):
        run_pipeline(tiny_nn.clone(), "assign-engines{hw=zcu102},tile,plan-memory{plan=nope}")  # type: ignore[attr-defined]


def test_layers_no_engine_runs_stay_on_the_host() -> None:
    from compiler.registry import parse_module

    module = parse_module(
        """
func.func @main(%x: tensor<1x3x8x8xf32>) -> tensor<1x4x8x8xf32> {
  %w = nn.weight "w" : tensor<4x3x1x1xf32>
  %c = nn.conv2d %x, %w {name = "c1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x3x8x8xf32>, tensor<4x3x1x1xf32>) -> tensor<1x4x8x8xf32>
  %s = nn.softmax %c {name = "sm", axis = 1 : i64} : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
  func.return %s : tensor<1x4x8x8xf32>
}
"""
    )
    graph, _ = LayerGraph.of_module(module)
    mapping = assign(graph, load_target("dpu-b512"), SEML)
    conv, softmax = mapping.layers
    assert (conv.engine, softmax.engine, softmax.cost) == ("dpu", "host", None)
    assert conv.placement.output_on_chip is False  # the host reads it from DRAM


def test_dvfs_by_hand() -> None:
    """A memory-bound layer: compute 1/4 of its memory time -> the clock can drop to 1/4,
    the voltage only to the floor 0.7: arithmetic and on-chip energy x 0.49."""
    layer = Workload.conv("m", 64, 64, 56, 56, 1, 1, elem_bytes=1)
    cost = layer_cost(layer, ZCU102, "seml", pes=2048)
    assert cost.memory_cycles > cost.compute_cycles  # memory-bound at 2048 PEs
    policy = dvfs(cost)
    assert policy.clock_scale == pytest.approx(cost.compute_cycles / cost.memory_cycles)
    assert policy.voltage_scale == pytest.approx(max(policy.clock_scale, 0.7))
    saved = (cost.energy.compute + cost.energy.onchip) * (1 - policy.voltage_scale**2)
    assert policy.saved_j == pytest.approx(saved) and policy.energy_j == pytest.approx(cost.energy_j - saved)
    busy = layer_cost(Workload.conv("c", 64, 64, 56, 56, 3, 3, pad=1, elem_bytes=1), ZCU102, "seml", pes=64)
    assert busy.compute_cycles > busy.memory_cycles and dvfs(busy).saved_j == 0.0
