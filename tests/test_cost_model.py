"""The one cost model: hand-computed layers, SCALE-Sim's output-stationary formula and
golden run, DRAM traffic per loop order, overlap, energy, roofline, monotonicity
properties, and the speed of a whole ResNet-50."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.cost import Placement, buffer_bytes, dram_traffic, layer_cost, network_cost
from compiler.engines import Tile, Workload, workloads
from compiler.engines.base import ceil_div
from compiler.engines.systolic import os_cycles
from compiler.errors import LayerloomError, UnsupportedError
from compiler.hw import load_target, parse_target
from compiler.hw.model import Target

SYSTOLIC = load_target("systolic-os32")
DPU = load_target("zcu102-dpu")
ZCU102 = load_target("zcu102")

CONV = Workload.conv("c1", 64, 64, 56, 56, 3, 3, pad=1, elem_bytes=1)  # a ResNet 3x3, int8
IN, WT, OUT = 64 * 56 * 56, 64 * 64 * 9, 64 * 56 * 56  # bytes of input, weights, output
# On the DPU the weights load in bank layout (no padding for 64 x 64 channels of B4096's
# 16 x 16) with one 8-byte bias record per output channel (docs/isa.md section 3).
DPU_WT = WT + 8 * 64


def test_workload_sizes() -> None:
    assert (CONV.in_h, CONV.in_w) == (56, 56)  # padding is not data
    assert CONV.macs == 64 * 64 * 9 * 56 * 56
    assert (CONV.input_bytes, CONV.weight_bytes, CONV.output_bytes) == (IN, WT, OUT)


# --- SCALE-Sim's output-stationary systolic array ------------------------------------


def scalesim_fold_loop(sr: int, sc: int, t: int, rows: int, cols: int) -> int:
    """SCALE-Sim's systolic_compute_os, restated: per fold an ofmap demand matrix of
    (T - 1) prefix rows + `rows` rows, skewed by `cols` - 1 rows."""
    total = 0
    for _fc in range(math.ceil(sc / cols)):
        for _fr in range(math.ceil(sr / rows)):
            demand_rows = (t - 1) + rows
            total += demand_rows + cols - 1
    return total


def test_systolic_conv_by_hand() -> None:
    cost = layer_cost(CONV, SYSTOLIC)
    # Sr = 56·56 = 3136 pixels -> 98 row folds; Sc = 64 filters -> 2 column folds;
    # K = 3·3·64 = 576: each fold takes 576 + 32 + 32 - 2 = 638 cycles.
    assert cost.compute_cycles == 98 * 2 * 638 == 125048
    assert cost.pes == 1024


def test_scalesim_golden_gemm() -> None:
    """SCALE-Sim's own regression run (test/general/golden_trace_user_os: 32x32 OS, the
    GEMM of topologies/GEMM_mnk/test_mnk_input.csv, M=256 N=128 K=256) reports Total
    Cycles 52447 with 42272 stall cycles and 80.503% compute utilisation. It prints the
    last cycle's 0-based index, so its 10175 is our 10176 cycles."""
    gemm = Workload.gemm("test1", rows=256, k=256, cols=128, elem_bytes=1)
    cost = layer_cost(gemm, SYSTOLIC)
    assert cost.compute_cycles == 52447 - 42272 + 1
    utilisation = gemm.macs / (cost.compute_cycles * 1024)
    assert utilisation * 100 == pytest.approx(80.50314465408805)


@given(
    c=st.integers(1, 96),
    m=st.integers(1, 96),
    e=st.integers(1, 20),
    f=st.integers(1, 20),
    k=st.sampled_from([1, 3, 5]),
    rows=st.integers(1, 40),
    cols=st.integers(1, 40),
)
def test_systolic_equals_scalesim_formula(c: int, m: int, e: int, f: int, k: int, rows: int, cols: int) -> None:
    target = parse_target(
        f"target t {{ clock 1 GHz; dram {{ bandwidth 10 GB/s; }} memory s {{ size 192 KB; }}"
        f" engine a {{ kind systolic; array {rows} x {cols}; }} }}"
    )
    conv = Workload.conv("c", c, m, e, f, k, k)
    cycles = layer_cost(conv, target).compute_cycles
    formula = math.ceil(e * f / rows) * math.ceil(m / cols) * (k * k * c + rows + cols - 2)
    assert cycles == formula == scalesim_fold_loop(e * f, m, k * k * c, rows, cols)


def test_systolic_grouped_and_tiled() -> None:
    grouped = Workload.conv("g", 64, 128, 14, 14, 3, 3, pad=1, groups=4)
    # Four independent GEMMs of Sr 196, Sc 32, K 9·16.
    assert layer_cost(grouped, SYSTOLIC).compute_cycles == 4 * os_cycles(196, 32, 144, 32, 32)
    # A tile of 32 output channels and 7 output rows: 2 x 2 sub-GEMMs of 7·14 pixels.
    tiled = layer_cost(CONV, SYSTOLIC, tile=Tile(m=32, e=28)).compute_cycles
    assert tiled == 2 * 2 * os_cycles(28 * 56, 32, 576, 32, 32)


# --- DRAM traffic per loop order ------------------------------------------------------


def test_untiled_layer_moves_each_tensor_once() -> None:
    t = dram_traffic(CONV, Tile().resolved(CONV))
    assert (t.input, t.weights, t.output) == (IN, WT, OUT)


def test_output_stationary_tile_by_hand() -> None:
    tile = Tile(m=16, n=16, e=8, f=56).resolved(CONV)
    t = dram_traffic(CONV, tile)
    # 7 row tiles each fetch 10 input rows (8 outputs + 2 halo), less the 2 padding rows
    # at the ends: 68 rows; re-read for each of the 4 output-channel tiles.
    assert t.input == 64 * 68 * 56 * 4
    # 4 input-channel tiles: weights cannot stay on chip across the 7 spatial tiles.
    assert t.weights == WT * 7
    assert t.output == OUT
    # Buffers: 16 channels x 10 x 56 inputs, 16·16·9 weights, 16·8·56 int32 accumulators.
    assert buffer_bytes(CONV, tile) == 2 * (16 * 10 * 56 + 16 * 16 * 9 + 16 * 8 * 56 * 4)
    assert buffer_bytes(CONV, tile, double_buffered=False) == buffer_bytes(CONV, tile) // 2


def test_weight_and_input_stationary_orders() -> None:
    ws = dram_traffic(CONV, Tile(m=16, n=16, e=8, order="weight").resolved(CONV))
    assert ws.weights == WT and ws.output == OUT * (2 * 4 - 1)  # partial sums spill
    assert ws.input == 64 * 68 * 56 * 4
    is_ = dram_traffic(CONV, Tile(m=16, n=16, e=8, order="input").resolved(CONV))
    assert is_.input == 64 * 68 * 56 and is_.weights == WT * 7 and is_.output == OUT * 7
    # Keeping every input channel in the tile lets the weights of an m tile stay resident.
    os_full_n = dram_traffic(CONV, Tile(m=16, e=8).resolved(CONV))
    assert os_full_n.weights == WT


def test_depthwise_reads_its_input_once_per_sweep() -> None:
    dw = Workload.conv("dw", 32, 32, 56, 56, 3, 3, pad=1, groups=32)
    t = dram_traffic(dw, Tile(m=8).resolved(dw))
    assert t.input == dw.input_bytes  # 4 channel tiles read disjoint channels
    assert t.weights == dw.weight_bytes


def test_placement_removes_traffic() -> None:
    t = dram_traffic(CONV, Tile().resolved(CONV), Placement(input_on_chip=True, weights_on_chip=True))
    assert (t.input, t.weights, t.output) == (0, 0, OUT)


# --- cycles, overlap, energy, roofline ------------------------------------------------


def test_dpu_layer_by_hand() -> None:
    cost = layer_cost(CONV, DPU)
    assert cost.compute_cycles == 56 * 7 * 4 * 4 * 9
    # Three cores share 19.2 GB/s; bytes / (6.4 GB/s) at 281 MHz.
    assert cost.memory_cycles == math.ceil((IN + DPU_WT + OUT) * 281e6 / 6.4e9)

    def transfer(nbytes: int) -> int:  # the simulator's LOAD / SAVE: DDR latency, then the bytes
        return 100 + math.ceil(nbytes * 281e6 / 6.4e9)

    # One tile (the whole map): before its CONV the weights, bias records and input load
    # (the input's padding is not fetched); after it the output saves. CONVINIT takes a
    # cycle, the CONV its pipeline fill of 16. The layer before's last SAVE overlaps the
    # first LOAD by its DDR latency.
    prologue = transfer(WT) + transfer(8 * 64) + transfer(IN) - 100
    compute_path = cost.compute_cycles + 1 + 16 + prologue + transfer(OUT)
    memory_path = cost.memory_cycles + 3 * 100  # the three LOADs' latencies before the DDR streams
    assert cost.cycles == max(compute_path, memory_path) == compute_path
    assert cost.seconds == pytest.approx(cost.cycles / 281e6)
    serial = layer_cost(CONV, DPU, double_buffered=False)
    assert serial.cycles == max(cost.cycles, cost.compute_cycles + cost.memory_cycles)

    # Tiles of 6 rows: ten tiles of 6 rows, the last of 2; the first input tile is 6 + 2
    # rows less the padding row above; the last output tile is 2 rows.
    rows = layer_cost(CONV, DPU, tile=Tile(e=6))
    assert rows.compute_cycles == cost.compute_cycles
    prologue = transfer(WT) + transfer(8 * 64) + transfer(7 * 56 * 64) - 100
    assert rows.cycles == cost.compute_cycles + 1 + 10 * 16 + prologue + transfer(2 * 56 * 64)


def test_dpu_output_channel_tiles_wait_for_their_weights() -> None:
    """The second tile of output channels waits for its weights, bias and first input,
    which load only while the last two row tiles of the first compute (the load queue is
    at most two tiles ahead)."""
    conv = Workload.conv("c", 256, 256, 28, 28, 3, 3, pad=1, elem_bytes=1)
    cost = layer_cost(conv, DPU, tile=Tile(m=128, e=1))  # 2 channel tiles x 28 row tiles

    def transfer(nbytes: int) -> int:
        return 100 + math.ceil(nbytes * 281e6 / 6.4e9)

    step = 4 * 16 * 8 * 9 + 16  # a CONV of one row: ceil(28/8) x 256/16 x 128/16 x 9 taps, its fill
    weights = transfer(8 * 9 * 16 * 256) + transfer(8 * 128)  # 8 OCP groups x 9 taps x 16 words of 256 B; bias
    first_input = transfer(2 * 28 * 256)  # the 3-row window less the padding row above
    stall = transfer(cost.traffic.input // 56) + weights + first_input - 2 * step
    assert cost.traffic.weights == 2 * (8 * 9 * 16 * 256 + 8 * 128) and stall > 0
    prologue = weights + first_input - 100  # overlapped by the layer before's last SAVE's latency
    assert cost.cycles == cost.compute_cycles + 1 + 56 * 16 + prologue + transfer(28 * 128) + stall
    assert cost.cycles > cost.memory_cycles + 3 * 100  # compute-bound


def test_energy_by_hand() -> None:
    cost = layer_cost(CONV, DPU)
    dram = IN + DPU_WT + OUT
    assert cost.energy.compute == pytest.approx(CONV.macs * 0.23e-12)
    assert cost.energy.dram == pytest.approx(dram * 160e-12)
    # Every DRAM byte passes a buffer; the array reads PP·ICP inputs + ICP·OCP weights a cycle.
    operand_bytes = 8 * 16 + 16 * 16
    assert cost.energy.onchip == pytest.approx((dram + cost.compute_cycles * operand_bytes) * 2.5e-12)
    assert cost.energy_j == pytest.approx(cost.energy.compute + cost.energy.dram + cost.energy.onchip)


def test_roofline_classification() -> None:
    assert DPU.ridge_point == pytest.approx(2 * 3 * 2048 * 281e6 / 19.2e9)
    conv = layer_cost(CONV, DPU)
    assert conv.intensity == pytest.approx(2 * CONV.macs / (IN + DPU_WT + OUT))
    assert conv.ridge == pytest.approx(DPU.ridge_point)  # the engine has the whole budget
    assert conv.bound == "compute"
    fc = layer_cost(Workload.gemm("fc", 1, 2048, 1000, elem_bytes=1), DPU)  # 2 ops per weight byte
    assert fc.bound == "memory" and fc.intensity < 2.1
    assert fc.memory_cycles > fc.compute_cycles
    record = fc.as_dict()
    for key in ("name", "op", "engine", "pes", "macs", "cycles", "dram_bytes", "onchip_bytes", "bound"):
        assert key in record
    # An engine with a quarter of the budget has a quarter of the ridge.
    quarter = layer_cost(CONV, ZCU102, "seml", pes=630)
    assert quarter.ridge == pytest.approx(ZCU102.ridge_point / 4)


def test_errors_name_the_layer_and_engine() -> None:
    with pytest.raises(UnsupportedError) as info:
        layer_cost(Workload("r", "relu", 8, 8, 4, 4), SYSTOLIC)
    assert info.value.where == "r" and "engine 'array' (systolic)" in info.value.message
    with pytest.raises(LayerloomError, match="has no PE count"):
        layer_cost(CONV, ZCU102, "seml")
    with pytest.raises(LayerloomError, match="has engines seml, sesl: say which one"):
        layer_cost(CONV, ZCU102, pes=64)
    with pytest.raises(LayerloomError, match="fixed 2048 PEs, not 1024"):
        layer_cost(CONV, DPU, pes=1024)
    with pytest.raises(LayerloomError, match="unknown loop order"):
        Tile(order="diagonal")


# --- properties -----------------------------------------------------------------------

layers = st.builds(
    lambda c, m, e, k, g, kind: (
        Workload.conv("l", c * g, m * g, e, e, k, k, pad=k // 2, groups=g)
        if kind == "conv"
        else Workload.conv("dw", c * g, c * g, e, e, k, k, pad=k // 2, groups=c * g)
        if kind == "depthwise"
        else Workload("p", "maxpool", c, c, e, e, kernel_h=k, kernel_w=k, stride_h=k, stride_w=k, groups=c)
        if kind == "pool"
        else Workload("a", "add", c, c, e, e, inputs=2)
    ),
    c=st.integers(1, 64),
    m=st.integers(1, 64),
    e=st.integers(1, 28),
    k=st.sampled_from([1, 3, 5]),
    g=st.sampled_from([1, 1, 2]),
    kind=st.sampled_from(["conv", "conv", "depthwise", "pool", "add"]),
)


@given(layer=layers, pes=st.integers(1, 2048), more=st.integers(0, 2048))
def test_more_pes_never_more_compute_cycles(layer: Workload, pes: int, more: int) -> None:
    for engine in ("seml", "sesl"):
        fewer = layer_cost(layer, ZCU102, engine, pes=pes).compute_cycles
        assert layer_cost(layer, ZCU102, engine, pes=pes + more).compute_cycles <= fewer
        # And never below the work divided by the PEs.
        assert fewer * pes >= layer.macs


def with_bandwidth(target: Target, bandwidth: float) -> Target:
    return dataclasses.replace(target, dram=dataclasses.replace(target.dram, bandwidth=bandwidth))


@given(layer=layers, gbps=st.floats(0.1, 100), factor=st.floats(1, 10))
def test_more_bandwidth_never_more_memory_cycles(layer: Workload, gbps: float, factor: float) -> None:
    slow, fast = with_bandwidth(DPU, gbps * 1e9), with_bandwidth(DPU, gbps * factor * 1e9)
    if not DPU.engines[0].kind_plugin.supports(layer, DPU.engines[0]):
        return
    a, b = layer_cost(layer, slow), layer_cost(layer, fast)
    assert b.memory_cycles <= a.memory_cycles
    assert b.cycles <= a.cycles
    assert a.dram_bytes == b.dram_bytes


# --- a whole ResNet-50, fast ------------------------------------------------------------


def resnet50_convs() -> list[Workload]:
    """ResNet-50 v1 (stride in the first 1x1 of a stage, as SCALE-Sim's Resnet50.csv): the
    53 convolutions, int8."""
    convs = [Workload.conv("conv1", 3, 64, 112, 112, 7, 7, stride=2, pad=3, elem_bytes=1)]
    c, size = 64, 56
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
        for b in range(blocks):
            stride = 2 if b == 0 and stage > 0 else 1
            out = size // stride
            name = f"res{stage + 2}{chr(ord('a') + b)}"
            convs.append(Workload.conv(f"{name}_1", c, width, out, out, 1, 1, stride=stride, elem_bytes=1))
            convs.append(Workload.conv(f"{name}_2", width, width, out, out, 3, 3, pad=1, elem_bytes=1))
            convs.append(Workload.conv(f"{name}_3", width, 4 * width, out, out, 1, 1, elem_bytes=1))
            if b == 0:
                convs.append(Workload.conv(f"{name}_proj", c, 4 * width, out, out, 1, 1, stride=stride, elem_bytes=1))
            c, size = 4 * width, out
    return convs


def test_resnet50_is_estimated_in_well_under_a_second() -> None:
    convs = resnet50_convs()
    assert len(convs) == 53
    assert 3.8e9 < sum(x.macs for x in convs) < 4.0e9  # ResNet-50 v1: about 3.9 GMACs
    start = time.perf_counter()
    results = {
        "systolic": network_cost(convs, SYSTOLIC),
        "dpu": network_cost(convs, DPU),
        "seml": network_cost(convs, ZCU102, "seml", pes=2048),
        "sesl": network_cost(convs, ZCU102, "sesl", pes=2048),
    }
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"4 x ResNet-50 took {elapsed:.3f} s"
    for name, net in results.items():
        assert len(net.layers) == 53, name
        assert net.cycles > 0 and net.energy_j > 0 and net.dram_bytes >= sum(x.weight_bytes for x in convs)
    # Three DPU cores work on three frames: throughput is 3 / latency.
    dpu = results["dpu"]
    assert dpu.throughput_fps == pytest.approx(3 / dpu.latency_s)
    # Sanity: the DPU (3 x 4096 peak ops/cycle at 281 MHz) is not faster than its peak.
    assert dpu.latency_s >= 2 * sum(x.macs for x in convs) / (4096 * 281e6)


def test_workloads_from_nn_ops() -> None:
    from compiler.registry import parse_module

    module = parse_module(
        """
builtin.module {
  func.func @main(%x: tensor<1x3x8x8xf32>) -> tensor<1x4x2x2xf32> {
    %w = nn.weight "c.w" : tensor<4x3x3x3xf32>
    %b = nn.weight "c.b" : tensor<4xf32>
    %y = nn.conv2d %x, %w, %b {name = "c", strides = array<i64: 2, 2>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>, tensor<4xf32>) -> tensor<1x4x4x4xf32>
    %r = nn.relu %y : (tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32>
    %p = nn.pool %r {name = "p", kind = "max", kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, ceil_mode = 0 : i64, count_include_pad = 0 : i64} : (tensor<1x4x4x4xf32>) -> tensor<1x4x2x2xf32>
    func.return %p : tensor<1x4x2x2xf32>
  }
}
"""
    )
    conv, relu, pool = workloads(module)
    assert (conv.name, conv.op, conv.in_channels, conv.out_channels, conv.out_h, conv.in_h) == ("c", "conv2d", 3, 4, 4, 8)
    assert (conv.stride_h, conv.pad_h, conv.bias, conv.elem_bytes) == (2, 2, True, 4)
    assert conv.macs == 4 * 4 * 4 * 3 * 9 and conv.weight_bytes == (4 * 27 + 4) * 4
    assert (relu.name, relu.op, relu.input_bytes) == ("relu_1", "relu", 64 * 4)
    assert (pool.op, pool.kernel_h, pool.groups, pool.out_h) == ("maxpool", 2, 4, 2)
    assert layer_cost(conv, ZCU102, "seml", pes=16).compute_cycles == ceil_div(4, 4) * ceil_div(3, 3) * 16 * 9


def test_workloads_agree_with_analysis_on_resnet50_from_onnx() -> None:
    """The cost model's layers are compiler.analysis's layers: same names, kinds, MACs and
    bytes -- and a whole imported ResNet-50 (90 layers) is estimated in milliseconds."""
    import os

    import onnx

    from compiler import import_onnx, run_pipeline
    from compiler.analysis import analyze

    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_resnet50.onnx")
    program = run_pipeline(import_onnx(path), "canonicalize,fold-batchnorm,fuse-activation")
    infos, ws = analyze(program), workloads(program.module)

    def facts(x: object) -> tuple[object, ...]:
        return tuple(getattr(x, k) for k in ("name", "op", "macs", "weight_bytes", "input_bytes", "output_bytes"))

    assert [facts(w) for w in ws] == [facts(i) for i in infos]
    assert sum(w.op == "conv2d" for w in ws) == 53
    start = time.perf_counter()
    seml = network_cost(ws, ZCU102, "seml", pes=2048)
    on_dpu = [w for w in ws if w.op != "softmax"]  # the DPU leaves softmax to the CPU
    dpu = network_cost(on_dpu, DPU)
    assert time.perf_counter() - start < 0.5
    assert len(seml.layers) == 90 and len(dpu.layers) == 89
    with pytest.raises(UnsupportedError, match="no 'softmax' unit"):
        network_cost(ws, DPU)
