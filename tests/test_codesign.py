"""The co-design loop: prune{target=latency hw=... arch=... budget=...}
(compiler/prune/codesign.py, passes/prune.py) and the engines' channel parallelism
(EngineKind.channel_multiple)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import import_onnx, run_pipeline
from compiler.cli import main
from compiler.engines import Workload
from compiler.errors import LayerloomError
from compiler.hw import load_target
from compiler.hw.parser import parse_target
from compiler.program import Program
from compiler.prune.codesign import greedy, mapped, mass_loss
from passes.prune import prune

EXAMPLES = Path(__file__).parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
import train_digits  # noqa: E402

# One streaming engine per layer with a fixed 4 x 4 PE x SIMD fold: a stage's time depends
# on its channels only, so PEs cannot move between stages and only the slowest one counts.
FIXED_FOLD = """\
target fixed_fold {
    clock 100 MHz;
    pe_budget 4096;
    dram { bandwidth 100 GB/s; }
    memory bram { size 4 MB; }
    engine sesl { kind sesl; unroll 4 x 4; }
}
"""


def chain(tmp_path: Path, widths: list[int], size: int = 8, seed: int = 0) -> Program:
    """3x3 convs conv_a, conv_b, ... from widths[0] to widths[-1] channels (ReLU between
    them) on a size x size input; the last conv is the graph output."""
    rng = np.random.default_rng(seed)
    nodes, weights, x = [], [], "input"
    for i, (cin, cout) in enumerate(zip(widths, widths[1:], strict=False)):
        name = f"conv_{'abcdefgh'[i]}"
        w = rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (9 * cin))
        weights.append(numpy_helper.from_array(w.astype(np.float32), f"{name}.w"))
        nodes.append(helper.make_node("Conv", [x, f"{name}.w"], [name], name=name, pads=[1, 1, 1, 1]))
        x = name
        if i < len(widths) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"{name}_relu"], name=f"{name}_relu"))
            x = f"{name}_relu"
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, widths[0], size, size])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, widths[-1], size, size])], weights,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 10
    path = tmp_path / "chain.onnx"
    onnx.save(model, path)
    return import_onnx(path)


def period(program: Program, hw: str, arch: str, budget: int | None = None) -> float:
    return mapped(program, load_target(hw), arch, budget).period_s


def kept(report: object) -> dict[str, int]:
    return {g.layers[0]: g.channels_after for g in report.groups}  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------
# Channel parallelism of the engine kinds
# ---------------------------------------------------------------------------------------


def test_channel_multiple_of_each_engine_kind() -> None:
    conv = Workload.conv("c", 64, 128, 14, 14, 3, 3, pad=1)
    depthwise = Workload.conv("d", 64, 64, 14, 14, 3, 3, pad=1, groups=64)
    dpu = load_target("dpu-b1152").engines[0]  # 4 x 12 x 12
    assert dpu.kind_plugin.channel_multiple(conv, dpu, 1152) == 12
    assert dpu.kind_plugin.channel_multiple(depthwise, dpu, 1152) == 12  # ICP
    array = load_target("systolic-os32").engines[0]
    assert array.kind_plugin.channel_multiple(conv, array, 1024) == 32
    fixed = parse_target(FIXED_FOLD.replace("unroll 4 x 4", "unroll 8 x 2"), "t.hw").engines[0]
    assert fixed.kind_plugin.channel_multiple(conv, fixed, 4096) == 8
    # A configurable array: the side of a square array of its PEs, a power of two.
    for name in ("seml", "sesl"):
        engine = load_target("zcu102").engine(name)
        widths = [
            engine.kind_plugin.channel_multiple(conv, engine, pes) for pes in (1, 3, 4, 100, 144, 512, 1024, 2048)
        ]
        assert widths == [1, 1, 2, 8, 8, 16, 32, 32]


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------


def test_only_the_stage_that_sets_the_period_is_pruned(tmp_path: Path) -> None:
    # Stage cycles per pixel with the fixed 4 x 4 fold: conv_a 2·7, conv_b 2·18,
    # conv_c 8·18, conv_d 4·72 -- conv_d sets the period; only conv_c's channels (its
    # input) shorten it. Pruning conv_a or conv_b costs accuracy and buys nothing.
    program = chain(tmp_path, [3, 8, 8, 32, 16])
    hw = tmp_path / "fixed.hw"
    hw.write_text(FIXED_FOLD)
    pruned, report = prune(program, target="latency", goal=0.7, hw=str(hw), arch="sesl")
    design = report.codesign
    assert design is not None
    assert [t.name for t in design.layers_before if t.critical] == ["conv_d"]
    assert all(t.pes == 16 for t in design.layers_before)  # each stage is one whole 4 x 4 array
    assert kept(report) == {"conv_a": 8, "conv_b": 8, "conv_c": 20}  # 4·ceil(9·20/4) <= 0.7·4·72
    assert [(s.layers, s.channels_after) for s in design.steps] == [
        (("conv_c",), 28),
        (("conv_c",), 24),
        (("conv_c",), 20),
    ]
    assert all(s.period_after < s.period_before for s in design.steps)
    assert {m.layers[0]: m.multiple for m in design.multiples} == {"conv_a": 4, "conv_b": 4, "conv_c": 4}
    assert report.cost_before == design.period_before == period(program, str(hw), "sesl")
    assert report.cost_after == design.period_after == period(pruned, str(hw), "sesl")
    assert design.period_after == pytest.approx(design.period_before * 4 * 45 / (4 * 72))


def test_dpu_and_systolic_round_to_their_parallelism(tmp_path: Path) -> None:
    program = chain(tmp_path, [3, 64, 64, 16], size=16)
    for hw, width in (("zcu102-dpu", 16), ("systolic-os32", 32)):
        pruned, report = prune(program, target="latency", goal=0.8, hw=hw, arch="seml")
        assert report.codesign is not None and report.multiple is None
        assert {m.multiple for m in report.codesign.multiples} == {width}
        assert all(c % width == 0 for c in kept(report).values())
        assert report.codesign.steps and all(s.period_after < s.period_before for s in report.codesign.steps)
        assert period(pruned, hw, "seml") <= 0.8 * period(program, hw, "seml")
    # multiple= overrides the engines'.
    _, report = prune(program, target="latency", goal=0.8, hw="zcu102-dpu", arch="seml", multiple=4)
    assert report.multiple == 4 and {m.multiple for m in report.codesign.multiples} == {4}  # type: ignore[union-attr]
    assert all(c % 4 == 0 for c in kept(report).values())


@pytest.fixture(scope="module")
def digits() -> tuple[Program, tuple[np.ndarray, ...]]:
    program = import_onnx(EXAMPLES / train_digits.MODELS["cnn"], input_shapes={"input": (400, 1, 8, 8)})
    return program, train_digits.digits_split()


def test_digits_on_zcu102_hybrid(
    digits: tuple[Program, tuple[np.ndarray, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    program, (x_train, y_train, x_test, y_test) = digits
    pruned, report = prune(program, x_train[:1200], y_train[:1200], target="latency", goal=0.7, hw="zcu102",
                           arch="hybrid", budget=1024)  # fmt: skip
    design = report.codesign
    assert design is not None
    before, after = period(program, "zcu102", "hybrid", 1024), period(pruned, "zcu102", "hybrid", 1024)
    assert (report.cost_before, report.cost_after) == (before, after) and after <= 0.7 * before
    # The period is what `layerloom estimate` reports for the model.
    args = [str(EXAMPLES / "digits_cnn.onnx"), "--hw", "zcu102", "--arch", "hybrid", "--budget", "1024"]
    assert main(["estimate", *args, "--input-shape", "input=400x1x8x8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["throughput_fps"] == pytest.approx(1 / before, rel=1e-12)
    # The multiples come from the PEs of the layers' engines in the unpruned mapping.
    pes = {m.layer.name: m.pes for m in mapped(program, load_target("zcu102"), "hybrid", 1024).layers}
    assert (pes["conv1"], pes["conv2"]) == (144, 768)
    assert {m.layers[0]: m.multiple for m in design.multiples} == {"conv1": 8, "conv2": 16}
    # conv1 is the sensitive layer: the search prunes conv2, whose stage sets the period.
    assert kept(report) == {"conv1": 16, "conv2": 16}
    assert report.accuracy_before == 1.0 and report.accuracy_after is not None and report.accuracy_after >= 0.95
    text = report.table()
    assert "co-design: zcu102, hybrid, budget 1,024 PEs" in text and "step 1: conv2 32 -> 16" in text
    assert f"accuracy: 100.00% -> {report.accuracy_after:.2%}" in text


def test_pipeline_text_matches_python(digits: tuple[Program, tuple[np.ndarray, ...]], tmp_path: Path) -> None:
    program, _ = digits
    pruned, report = prune(program, target="latency", goal=0.7, hw="zcu102", arch="hybrid", budget=1024)
    text = tmp_path / "prune.txt"
    piped = run_pipeline(
        program.clone(), f'prune{{target=latency goal=0.7 hw=zcu102 arch=hybrid budget=1024 report="{text}"}}'
    )
    assert piped.text() == pruned.text()
    assert text.read_text() == report.table()
    assert report.codesign is not None and report.cost_after is not None
    assert report.cost_after <= 0.7 * report.codesign.period_before


def test_goal_out_of_reach(tmp_path: Path) -> None:
    program = chain(tmp_path, [3, 8, 8, 32, 16])
    hw = tmp_path / "fixed.hw"
    hw.write_text(FIXED_FOLD)
    # conv_d's input can lose at most 90 %: 4 channels, 4·9 = 36 > 0.05·288 cycles per pixel.
    with pytest.raises(LayerloomError, match=r"goal 0.05 of the latency is out of reach .* bottleneck pipeline") as e:
        prune(program, target="latency", goal=0.05, hw=str(hw), arch="sesl")
    assert e.value.where == "prune"
    with pytest.raises(LayerloomError, match="unknown architecture 'fast'") as e:
        prune(program, target="latency", goal=0.5, hw="zcu102", arch="fast")
    assert e.value.where == "prune"


# ---------------------------------------------------------------------------------------
# The greedy search on its own
# ---------------------------------------------------------------------------------------


def test_greedy_takes_the_most_period_per_unit_loss() -> None:
    # Group 0 is a pipeline stage that never sets the period; groups 1 and 2 share the
    # slowest stage, group 2 at twice the sensitivity per channel.
    def cost(counts: dict[int, int]) -> tuple[float, float]:
        slow = 2.0 * counts[1] + counts[2]
        return max(slow, 10.0 + counts[0]), slow + counts[0]

    candidates = {g: list(range(15, 0, -1)) for g in range(3)}

    def sensitivity(g: int, k: int) -> float:
        return (16 - k) * (2.0 if g == 2 else 1.0)

    start = {0: 16, 1: 16, 2: 16}
    counts, steps = greedy(start, candidates, sensitivity, cost, limit=0.75 * 48)
    assert counts == {0: 16, 1: 10, 2: 16}  # 2·10 + 16 = 36
    assert [g for g, *_ in steps] == [1] * 6

    # When no step shortens the period (two tied stages), the frame latency decides.
    def tied(counts: dict[int, int]) -> tuple[float, float]:
        return max(counts[0], counts[1]), counts[0] + counts[1] + counts[2]

    counts, steps = greedy(start, candidates, sensitivity, tied, limit=14)
    assert counts[2] == 16 and max(counts[0], counts[1]) <= 14
    assert [g for g, *_ in steps][:2] in ([0, 1], [1, 0])


def test_mass_loss_without_data() -> None:
    loss = mass_loss(np.array([1.0, 3.0, 4.0, 2.0]))
    assert loss[4] == 0.0 and loss[0] == 1.0
    assert loss[3] == pytest.approx(0.1) and loss[2] == pytest.approx(0.3)  # keeps 4+3, then 4+3+2


def test_docs_show_this_report(digits: tuple[Program, tuple[np.ndarray, ...]]) -> None:
    program, (x_train, y_train, _, _) = digits
    _, report = prune(program, x_train[:1200], y_train[:1200], target="latency", goal=0.7, hw="zcu102",
                      arch="hybrid", budget=1024, compensate=True)  # fmt: skip
    docs = (Path(__file__).parent.parent / "docs" / "pruning.md").read_text()
    example = docs.split("## Co-design")[1].split("```text\n")[1].split("```")[0]
    assert example == report.table()
