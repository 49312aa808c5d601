"""The dpu dialect and lower-to-dpu: instruction ops round-trip (custom and generic
syntax) and check their fields against the ISA table; the lowering's choices -- DDR
liveness, concat placement, dense layers as convolutions, channel-sliced global pools,
minimal tokens, no redundant INITs, determinism -- and its refusals, each naming the
layer and why. Whole-model bit-exactness is tests/test_dpu_models.py."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given
from xdsl.printer import Printer

from backends.dpu.artifacts import program_of, weights_blob
from backends.dpu.isa import OPCODES, Instruction, tokens
from backends.dpu.runtime import ddr_image, feature_map, run_program
from backends.dpu.simulator import simulate
from compiler import run_pipeline
from compiler.errors import LayerloomError, UnsupportedError
from compiler.program import print_module
from compiler.registry import parse_module
from dialects.dpu import INSTRUCTION_OPS, InstructionOp, ProgramOp
from tests.dpu_programs import random_order, without_token
from tests.test_dpu_isa import programs
from tests.test_dpu_models import assert_bit_exact, dpu_program, host_ops, lowered, quantized
from tests.test_random_cnns import NetBuilder

# ---------------------------------------------------------------------------------------
# The dialect
# ---------------------------------------------------------------------------------------


def module_text(instructions: list[Instruction], generic: bool = False) -> str:
    from io import StringIO

    from xdsl.dialects.builtin import ModuleOp

    module = ModuleOp([InstructionOp.of(i) for i in instructions])
    out = StringIO()
    Printer(stream=out, print_generic_format=generic).print_op(module)
    return out.getvalue()


def parsed_instructions(text: str) -> list[Instruction]:
    return [op.instruction() for op in parse_module(text).ops if isinstance(op, InstructionOp)]


@given(programs)
def test_instruction_ops_round_trip(program: list[Instruction]) -> None:
    """Every instruction as an op, printed (custom and generic form) and parsed back."""
    assert [InstructionOp.of(i).instruction() for i in program] == program
    assert parsed_instructions(module_text(program)) == program
    assert parsed_instructions(module_text(program, generic=True)) == program


def test_one_op_per_instruction_and_assembly_syntax() -> None:
    assert set(INSTRUCTION_OPS) == set(OPCODES)
    conv = Instruction.make("CONVINIT", kernel_h=3, kernel_w=3, act="relu", wait={"load"})
    text = module_text([conv])
    assert "dpu.convinit wait=load kernel_h=3 kernel_w=3 act=relu\n" in text  # defaults left out, table order


@pytest.mark.parametrize(("line", "message"), [
    ("dpu.convinit kernal_h=3 kernel_w=3", "CONVINIT has no field 'kernal_h'; did you mean 'kernel_h'?"),
    ("dpu.convinit kernel_h=3 kernel_w=3 act=sigmoid", "act is one of none, relu, clip, leaky; not 'sigmoid'"),
    ("dpu.convinit kernel_h=17 kernel_w=3", "kernel_h = 17 is out of range 1..16"),
    ("dpu.convinit wait=compute kernel_h=3 kernel_w=3", "wait cannot name the instruction's own queue 'compute'"),
    ("dpu.save wait=load|dram bank=0", "wait: 'dram' is not a queue (load, compute, save)"),
    ("dpu.convinit kernel_h=3 kernel_h=3 kernel_w=3", "field 'kernel_h' given twice"),
    ("dpu.convinit kernel_h=relu kernel_w=3", "kernel_h takes a number, not 'relu'"),
    ("dpu.convinit kernel_h=3", "CONVINIT needs field kernel_w"),
])  # fmt: skip
def test_syntax_errors_name_the_field(line: str, message: str) -> None:
    with pytest.raises(LayerloomError) as e:
        parse_module(f"builtin.module {{\n  {line}\n}}")
    assert message in str(e.value)


# ---------------------------------------------------------------------------------------
# Small models for the lowering
# ---------------------------------------------------------------------------------------


def chain(layers: int = 4, c: int = 8, side: int = 12) -> onnx.ModelProto:
    """x -> (3x3 conv + relu) x layers."""
    b = NetBuilder(np.random.default_rng(1))
    b.shapes["input"] = (1, c, side, side)
    y = "input"
    for _ in range(layers):
        y = b.node("Conv", [y, b.he((c, c, 3, 3), 9 * c)], (1, c, side, side), kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        y = b.node("Relu", [y], (1, c, side, side))
    return b.model("input", y, opset=17)


def head(c: int = 12, side: int = 5, classes: int = 7) -> onnx.ModelProto:
    """conv -> flatten (c x side x side) -> dense."""
    b = NetBuilder(np.random.default_rng(2))
    b.shapes["input"] = (1, 3, side, side)
    y = b.node("Conv", ["input", b.he((c, 3, 1, 1), 3)], (1, c, side, side), kernel_shape=[1, 1])
    y = b.node("Flatten", [y], (1, c * side * side), axis=1)
    y = b.node("Gemm", [y, b.he((classes, c * side * side), c * side * side)], (1, classes), transB=1)
    return b.model("input", y, opset=17)


def wide_gap(c: int = 2048, side: int = 7) -> onnx.ModelProto:
    """conv 1x1 to 2048 channels of 7x7, global average pool: ResNet-50's last pool."""
    b = NetBuilder(np.random.default_rng(3))
    b.shapes["input"] = (1, 16, side, side)
    y = b.node("Conv", ["input", b.he((c, 16, 1, 1), 16)], (1, c, side, side), kernel_shape=[1, 1])
    y = b.node("GlobalAveragePool", [y], (1, c, 1, 1))
    return b.model("input", y, opset=17)


def with_node(op_type: str, shape_out: tuple[int, ...], *extra: str, **attrs: object) -> onnx.ModelProto:
    """conv 1x1 (8 channels of 4x4), then one node of `op_type`, then conv 1x1."""
    b = NetBuilder(np.random.default_rng(4))
    b.shapes["input"] = (1, 8, 4, 4)
    y = b.node("Conv", ["input", b.he((8, 8, 1, 1), 8)], (1, 8, 4, 4), kernel_shape=[1, 1])
    y = b.node(op_type, [y, *extra], shape_out, **attrs)
    if len(shape_out) == 4:
        y = b.node("Conv", [y, b.he((4, shape_out[1], 1, 1), shape_out[1])], (1, 4, *shape_out[2:]), kernel_shape=[1, 1])
    return b.model("input", y, opset=17)


def layers_of(program: ProgramOp) -> dict[str, list[Instruction]]:
    return {layer.layer_name.data: [op.instruction() for op in layer.instruction_ops()] for layer in program.layer_ops()}


# ---------------------------------------------------------------------------------------
# What the lowering chooses
# ---------------------------------------------------------------------------------------


def test_work_memory_is_reused_by_liveness() -> None:
    """A chain of four convolutions needs two maps in `work` at a time (the last one is
    the program's output): three maps, placed in two slots."""
    program, feeds = quantized(chain())
    low = lowered(program)
    dpu = dpu_program(low)
    size = 12 * 12 * 8
    offsets = [feature_map(_fields(layer)).offset for layer in dpu.layer_ops()]
    assert int(dpu.work.value.data) == 2 * size
    assert offsets[:3] == [0, size, 0]  # conv1, conv2, conv3 (conv4's map is the output)
    assert_bit_exact(program, low, feeds)


def _fields(layer: object) -> dict:
    from dialects.dpu import feature_map_fields

    return feature_map_fields(layer.attributes["output"])  # type: ignore[attr-defined]


def test_a_dense_layer_after_a_flatten_is_a_convolution_over_the_map() -> None:
    """The gemm reads the flattened 12 x 5 x 5 map in C, H, W order: the DPU convolves the
    5 x 5 x 12 map (HWC in DDR) with a 5 x 5 kernel, so the flatten moves no byte."""
    program, feeds = quantized(head())
    low = lowered(program)
    layers = layers_of(dpu_program(low))
    convinit = next(i for i in next(iter(v for k, v in layers.items() if k.startswith("gemm"))) if i.mnemonic == "CONVINIT")
    assert (convinit.kernel_h, convinit.kernel_w) == (5, 5)
    flatten = next(layer for layer in dpu_program(low).layer_ops() if layer.attributes["kind"].data == "view")  # type: ignore[attr-defined]
    assert not list(flatten.instruction_ops())
    assert_bit_exact(program, low, feeds)


def test_a_wide_global_pool_goes_in_channel_slices() -> None:
    """A 7x7 window of 2048 channels is 6272 words, more than a bank: POOLs of channel
    slices whose windows fit (41 words of 16 channels per pixel: 656 channels)."""
    program, feeds = quantized(wide_gap())
    low = lowered(program)
    instructions, _ = dpu_program(low).instructions()
    pools = [i for i in instructions if i.mnemonic == "POOL"]
    assert [p.chans for p in pools] == [656, 656, 656, 80]
    assert_bit_exact(program, low, feeds)


def test_tokens_are_minimal_and_any_token_respecting_order_computes_the_same() -> None:
    """Every dependency token of a lowered program is needed (the simulator's hazard check
    catches its removal), and random schedules that respect the tokens agree."""
    program, _ = quantized(with_node("Add", (1, 8, 4, 4), "input"))
    low = lowered(program)
    dpu, run = program_of(low)
    instructions, _ = dpu.instructions()
    x = np.random.default_rng(0).integers(-128, 128, (1, 8, 4, 4)).astype(np.int8)
    ddr = ddr_image(dpu, weights_blob(low, run), [x])
    reference = simulate(instructions, ddr, dpu.config()).ddr.data
    rng = np.random.default_rng(5)
    for _ in range(5):
        order = random_order(instructions, rng)
        assert np.array_equal(simulate(instructions, ddr, dpu.config(), order=order).ddr.data, reference)
    pairs = tokens(instructions)
    assert len(pairs) >= 5
    for token in pairs:
        with pytest.raises(LayerloomError, match="hazard"):
            simulate(without_token(instructions, token), ddr, dpu.config())


def test_no_init_repeats_the_configuration_in_force() -> None:
    program, _ = quantized(chain())
    instructions, _ = dpu_program(lowered(program)).instructions()
    inits = [i for i in instructions if i.mnemonic.endswith("INIT")]
    assert len(inits) == 1  # four identical convolutions: one CONVINIT


def test_a_mapped_module_lowers_to_the_same_program() -> None:
    program, _ = quantized(head())
    mapped = program.clone()
    run_pipeline(mapped, 'assign-engines{arch=seml hw="zcu102-dpu"},tile,plan-memory,lower-to-dpu')
    assert print_module(mapped.module) == print_module(lowered(program).module)
    assert not mapped.module.attributes  # the accel.* attributes are gone with the mapping


def test_lowering_is_deterministic_and_runs_once() -> None:
    program, _ = quantized(head())
    first, second = lowered(program), lowered(program)
    assert print_module(first.module) == print_module(second.module)
    with pytest.raises(LayerloomError, match="already has a dpu.program @dpu"):
        run_pipeline(first, "lower-to-dpu")


def test_another_configuration_runs_bit_exact() -> None:
    program, feeds = quantized(head())
    low = lowered(program, 'hw="dpu-b512"')
    assert dpu_program(low).config().name == "B512"
    assert_bit_exact(program, low, feeds)


def test_run_program_takes_the_binary_from_model_bin() -> None:
    """The runtime runs the encoded program instead of the IR's instructions when given."""
    from backends.dpu.encoding import encode

    program, _ = quantized(head())
    low = lowered(program)
    dpu, run = program_of(low)
    x = np.zeros((1, 3, 5, 5), np.int8)
    weights = weights_blob(low, run)
    instructions, _ = dpu.instructions()
    with pytest.raises(LayerloomError, match="the binary has 2 instructions"):
        run_program(dpu, [x], weights, binary=encode(instructions[:1] + instructions[-1:]))
    outputs, result = run_program(dpu, [x], weights, binary=encode(instructions))
    assert outputs[0].shape == (1, 7, 1, 1) and result.fps > 0


# ---------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------


def refusal(model: onnx.ModelProto, options: str = "") -> str:
    program, _ = quantized(model)
    with pytest.raises(UnsupportedError) as e:
        lowered(program, options)
    return str(e.value)


def test_grouped_convolution_is_refused_or_left_to_the_host() -> None:
    b = NetBuilder(np.random.default_rng(6))
    b.shapes["input"] = (1, 8, 4, 4)
    y = b.node("Conv", ["input", b.he((8, 8, 1, 1), 8)], (1, 8, 4, 4), kernel_shape=[1, 1])
    y = b.node("Conv", [y, b.he((8, 4, 3, 3), 36)], (1, 8, 4, 4), kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=2)
    model = b.model("input", y, opset=17)
    assert refusal(model) == f"{y}: grouped convolution (group 2) is not on the DPU; only group 1 and depthwise"
    program, feeds = quantized(model)
    low = lowered(program, "host-suffix=true")
    assert host_ops(low) == ["qnn.quantize", "qnn.conv2d", "qnn.dequantize"]
    assert_bit_exact(program, low, feeds)


def test_a_reshape_that_reorders_bytes_is_refused() -> None:
    model = with_node("Reshape", (1, 8, 16), "shape")
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([1, 8, 16], np.int64), "shape"))
    assert "a reshape from (1, 8, 4, 4) to (1, 8, 16) reorders the bytes of the map" in refusal(model)


def test_a_resize_that_does_not_repeat_pixels_is_refused() -> None:
    b = NetBuilder(np.random.default_rng(7))
    b.shapes["input"] = (1, 4, 3, 3)
    scales = b.weight(np.array([1.0, 1.0, 2.0, 2.0]))
    y = b.node("Conv", ["input", b.he((4, 4, 1, 1), 4)], (1, 4, 3, 3), kernel_shape=[1, 1])
    y = b.node("Resize", [y, "", scales], (1, 4, 6, 6), mode="nearest",
               coordinate_transformation_mode="asymmetric", nearest_mode="ceil")
    y = b.node("Conv", [y, b.he((4, 4, 1, 1), 4)], (1, 4, 6, 6), kernel_shape=[1, 1])
    assert "nearest resize does not repeat each pixel 2x2 times" in refusal(b.model("input", y, opset=17))


def test_a_kernel_too_large_for_the_weights_bank_is_refused() -> None:
    """On B512 (ICP 8) a 16x16 kernel over 72 channels needs 256 x 9 weight words per
    output-channel group: more than the weights bank's 2048."""
    b = NetBuilder(np.random.default_rng(8))
    b.shapes["input"] = (1, 72, 16, 16)
    y = b.node("Conv", ["input", b.he((72, 72, 1, 1), 72)], (1, 72, 16, 16), kernel_shape=[1, 1])
    y = b.node("Conv", [y, b.he((4, 72, 16, 16), 72 * 256)], (1, 4, 1, 1), kernel_shape=[16, 16])
    message = refusal(b.model("input", y, opset=17), 'hw="dpu-b512"')
    assert message == f"{y}: the DPU cannot run qnn.conv2d: kernel 16x16 over 72 input channels needs 2304 weight " \
                      "words per output group, the weights bank has 2048"


def test_a_float_layer_ends_the_dpu_program() -> None:
    """Softmax after the dense layer: refused by default (naming it), on the host with
    host-suffix, which records where and why in the program."""
    b = NetBuilder(np.random.default_rng(9))
    b.shapes["input"] = (1, 3, 4, 4)
    y = b.node("Conv", ["input", b.he((6, 3, 1, 1), 3)], (1, 6, 4, 4), kernel_shape=[1, 1])
    y = b.node("Flatten", [y], (1, 96), axis=1)
    y = b.node("Gemm", [y, b.he((5, 96), 96)], (1, 5), transB=1)
    y = b.node("Softmax", [y], (1, 5), axis=1)
    model = b.model("input", y, opset=17)
    assert "its result is float (the host runs it; nn.softmax" in refusal(model)
    program, feeds = quantized(model)
    low = lowered(program, "host-suffix=true")
    assert host_ops(low) == ["qnn.quantize", "qnn.dequantize", "nn.softmax"]
    assert "nn.softmax" in dpu_program(low).attributes["host_from"].data  # type: ignore[attr-defined]
    assert_bit_exact(program, low, feeds)


def test_the_fixed_point_scheme_is_refused() -> None:
    from compiler import import_onnx, quantize

    program = import_onnx(chain(1))
    run_pipeline(program, "canonicalize,fold-batchnorm,fuse-activation")
    fixed = quantize(program, [{"input": np.ones((1, 8, 12, 12), np.float32)}], scheme="fixed")
    with pytest.raises(UnsupportedError, match="the DPU requantizes by powers of two; 'qnn.conv2d' uses scheme 'fixed'"):
        run_pipeline(fixed, "lower-to-dpu{host-suffix=true}")
