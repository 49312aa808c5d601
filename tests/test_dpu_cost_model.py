"""The cost model of a DPU layer (compiler/engines/dpu.py) against the instruction-set
simulator: per layer of small lowered models on one B4096 core, and the DPU's own
transfers (weights in bank layout, concatenation by placement)."""

from __future__ import annotations

import statistics

import pytest

from benchmarks.dpu_fidelity import layer_ratios, lower_and_simulate
from compiler.cost import layer_cost
from compiler.engines import Tile, Workload
from compiler.engines.dpu import lowered_workload
from compiler.hw import load_target

ONE_CORE = load_target("dpu-b4096")


@pytest.mark.parametrize(("name", "width", "resolution"), [("mobilenet_v2", 0.25, 64), ("resnet50", 0.25, 64)])
def test_per_layer_cycles_agree_with_the_simulator(name: str, width: float, resolution: int) -> None:
    """Issue 5's goal, on small models (layers of a few hundred to a few thousand cycles,
    where the first loads, the last save and the per-instruction latencies are most of
    the time): the cost model's cycles of each layer, for the tile lower-to-dpu chose,
    within 10% of the simulator's (median), and their sums within 5%."""
    run = lower_and_simulate(name, resolution, "dpu-b4096", width=width)
    ratios = layer_ratios(run)
    assert len(ratios) >= 60  # every layer but the views and placed concatenations
    errors = [abs(r - 1) for *_, r in ratios]
    assert statistics.median(errors) <= 0.10, sorted(ratios, key=lambda t: -abs(t[4] - 1))[:5]
    assert sum(e <= 0.25 for e in errors) >= 0.7 * len(errors)
    assert sum(sim for _, _, sim, _, _ in ratios) == pytest.approx(sum(m for _, _, _, m, _ in ratios), rel=0.05)


def test_depthwise_weights_load_in_bank_layout() -> None:
    """A depthwise kernel's weights words are ICP x OCP bytes wide with one ICP-byte lane
    used (docs/isa.md section 3): 16 times the kernel's bytes on B4096, plus a bias record
    per channel."""
    dw = Workload.conv("dw", 32, 32, 56, 56, 3, 3, pad=1, groups=32, elem_bytes=1)
    cost = layer_cost(dw, ONE_CORE)
    assert cost.traffic.weights == 9 * 2 * 16 * 16 + 8 * 32
    assert dw.weight_bytes == 9 * 32  # the generic model's bytes


def test_concatenation_by_placement_costs_nothing() -> None:
    concat = Workload("cat", "concat", 384, 384, 26 * 26, elem_bytes=1, weight_elem_bytes=1)
    cost = layer_cost(concat, ONE_CORE)
    assert (cost.cycles, cost.dram_bytes) == (0, 0)


def test_a_copied_concat_operand_costs_an_elew_pass() -> None:
    """lower-to-dpu's model of a concatenation: the ELEW copy of the channels its
    producers do not SAVE in place, over the map's rows and columns."""
    from dialects import nn, qnn
    from tests import dpu_programs as dp

    op = dp.pow2_concat([(1, 128, 26, 26), (1, 256, 26, 26)], [4, 5], 4)
    assert isinstance(op, qnn.ConcatOp) and nn.shape_of(op.results[0]) == (1, 384, 26, 26)
    copy = lowered_workload(op, copied=128)
    assert copy is not None
    assert (copy.op, copy.inputs, copy.in_channels, copy.out_h, copy.out_w) == ("add", 1, 128, 26, 26)
    cost = layer_cost(copy, ONE_CORE, tile=Tile(m=128, e=9, f=26))
    assert cost.compute_cycles == 26 * 4 * 8  # ELEW: rows x ceil(26/PP) x ceil(128/ICP)
    assert cost.traffic.input == cost.traffic.output == 26 * 26 * 128
    placed = lowered_workload(op)
    assert placed is not None and layer_cost(placed, ONE_CORE).cycles == 0
