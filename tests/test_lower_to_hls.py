"""lower-to-hls and the dataflow dialect: what the lowering builds from small quantized
models (kernels, streams, forks, slots, DDR offsets, double buffers), how it reads an
assign-engines mapping, and what it refuses. The C simulation of the result is in
tests/test_hls_project.py."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.utils.exceptions import VerifyException

from compiler import quantize
from compiler.errors import LayerloomError, UnsupportedError
from compiler.pipeline import run_pipeline
from compiler.program import Program, print_module
from compiler.registry import parse_module
from dialects import nn, qnn
from dialects.dataflow import BufferOp, EngineOp, InvokeOp, KernelOp, ScheduleOp, StreamOp, TopOp
from dialects.nn import WeightOp
from passes.lower_to_hls import largest_divisor
from tests.hls_models import Net, float_program, quantized


def lower(program: Program, options: str = "") -> TopOp:
    run_pipeline(program, f"lower-to-hls{{{options}}}" if options else "lower-to-hls")
    (top,) = [op for op in program.module.ops if isinstance(op, TopOp)]
    return top


def kernels(top: TopOp) -> list[KernelOp]:
    return [op for op in top.body.block.ops if isinstance(op, KernelOp)]


def schedule_of(top: TopOp) -> ScheduleOp:
    (schedule,) = [op for op in top.body.block.ops if isinstance(op, ScheduleOp)]
    return schedule


def by_layer(top: TopOp, template: str) -> list[KernelOp]:
    return [k for k in kernels(top) if k.template.data == template]


def test_sesl_is_one_kernel_per_layer_joined_by_streams() -> None:
    top = lower(quantized("residual"), "arch=sesl")
    assert [k.template.data for k in kernels(top)] == [
        "quantize", "conv2d", "fork", "conv2d", "conv2d", "add", "max_pool2d", "conv2d", "global_max_pool",
        "dense", "dequantize"]
    # The skip connection: the first conv's map is forked; each branch holds a whole map
    # (8 x 8 x 8) so that the long branch cannot stall the short one.
    (fork,) = by_layer(top, "fork")
    assert len(fork.outputs) == 2
    assert all(int(b.owner.depth.value.data) == 512 for b in fork.outputs)
    (add,) = by_layer(top, "add")
    assert {v for v in add.inputs} <= set(fork.outputs) | {v for k in kernels(top) for v in k.outputs}
    ports = {s.port.data: s.stream_name.data for s in top.body.block.ops if isinstance(s, StreamOp) and s.port}
    assert ports == {"in": "x", "out": "y"}


def test_lowered_ir_prints_parses_and_verifies() -> None:
    program = quantized("mobile")
    lower(program, "arch=hybrid split=3")
    text = print_module(program.module)
    again = parse_module(text, "roundtrip")
    assert print_module(again) == text


def test_a_stream_with_two_readers_does_not_verify() -> None:
    top = lower(quantized("cnn"), "arch=sesl")
    conv = by_layer(top, "conv2d")[0]
    reader = next(k for k in kernels(top) if conv.outputs[0] in k.inputs)
    top.body.block.add_op(reader.clone())
    with pytest.raises(VerifyException, match="has 1 writers and 2 readers"):
        top.verify()


@pytest.mark.parametrize(("pes", "conv_pes", "dense_pes"), [(1, 1, 1), (3, 2, 2), (5, 4, 5), (100, 8, 10)])
def test_pes_are_the_largest_divisor_of_the_parallel_dimension(pes: int, conv_pes: int, dense_pes: int) -> None:
    top = lower(quantized("cnn"), f"arch=sesl pes={pes}")
    assert by_layer(top, "conv2d")[0].pe_count == conv_pes  # 8 output channels
    assert by_layer(top, "dense")[0].pe_count == dense_pes  # 10 outputs
    assert by_layer(top, "max_pool2d")[0].pe_count == conv_pes  # 8 channels


def test_layer_pes_override_one_layer() -> None:
    program = quantized("cnn")
    conv_name = next(op.layer_name for op in program.module.walk() if isinstance(op, qnn.Conv2dOp))
    top = lower(program, f'arch=sesl pes=1 layer-pes="{conv_name}:4"')
    assert by_layer(top, "conv2d")[0].pe_count == 4
    assert by_layer(top, "dense")[0].pe_count == 1


def test_largest_divisor() -> None:
    assert [largest_divisor(12, p) for p in (1, 5, 7, 12, 99)] == [1, 4, 6, 12, 12]


def test_flatten_permutes_the_dense_columns_to_hwc_order() -> None:
    program = quantized("cnn")
    store = program.weights
    gemm = next(op for op in program.module.walk() if isinstance(op, qnn.GemmOp))
    original = store[gemm.b.owner.handle.data].astype(np.int64)
    top = lower(program, "arch=sesl")
    (dense,) = by_layer(top, "dense")
    handle = next(op.handle.data for op in dense.body.block.ops if isinstance(op, WeightOp) and op.result.type.get_shape() == (10, 128))
    assert handle.endswith(".hwc")
    permuted = store[handle].astype(np.int64)
    chw = np.random.default_rng(0).integers(-128, 128, size=(8, 4, 4))
    assert np.array_equal(original @ chw.reshape(-1), permuted @ chw.transpose(1, 2, 0).reshape(-1))


def test_seml_runs_every_layer_on_reused_engines_in_ping_pong_slots() -> None:
    top = lower(quantized("cnn"), "arch=seml pes=4")
    # Only the float ports stream: quantize, stream_to_buffer, the schedule, dequantize.
    assert [k.template.data for k in kernels(top)] == ["quantize", "stream_to_buffer", "dequantize"]
    engines = {e.kind.data: e for e in top.body.block.ops if isinstance(e, EngineOp)}
    assert set(engines) == {"conv", "pool"}
    assert engines["conv"].limit_values == {"MAX_M": 10, "MAX_K": 128}
    schedule = schedule_of(top)
    slots = [op.result for op in schedule.body.block.ops if isinstance(op, BufferOp)]
    invokes = [op for op in schedule.body.block.ops if isinstance(op, InvokeOp)]
    assert len(slots) == 2
    assert [(slots.index(i.inputs[0]), slots.index(i.outputs[0])) for i in invokes] == [(0, 1), (1, 0), (0, 1)]
    # DDR offsets: the conv's 8 x 9 weights and 5 x 8 parameters, then the dense layer's.
    assert [(int(i.weights_offset.value.data), int(i.params_offset.value.data)) for i in invokes] == [
        (0, 0), (72, 40), (72, 40)]
    assert int(schedule.slot_size.value.data) == 8 * 8 * 8


def test_seml_keeps_the_skip_map_in_a_third_slot() -> None:
    top = lower(quantized("residual"), "arch=seml")
    schedule = schedule_of(top)
    slots = [op.result for op in schedule.body.block.ops if isinstance(op, BufferOp)]
    assert len(slots) == 3
    add = next(i for i in schedule.body.block.ops if isinstance(i, InvokeOp) and i.engine_op().kind.data == "add")
    assert len({*add.inputs, *add.outputs}) == 3  # never writes a slot it reads


def test_hybrid_pipeline_then_reused_engines_through_double_buffers() -> None:
    top = lower(quantized("residual"), "arch=hybrid split=2")
    assert [k.template.data for k in kernels(top) if k.layer_op is not None] == [
        "quantize", "conv2d", "conv2d", "dequantize"]
    # Both maps that cross (the skip and the second conv's) get their own double buffer.
    doubles = [op for op in top.body.block.ops if isinstance(op, BufferOp)]
    assert [d.kind.data for d in doubles] == ["double", "double"]
    assert set(schedule_of(top).inputs) == {d.result for d in doubles}
    assert len(by_layer(top, "stream_to_buffer")) == 2


def test_the_assignment_of_assign_engines_drives_the_lowering() -> None:
    program = quantized("cnn")
    run_pipeline(program, "assign-engines{arch=seml hw=zcu102 budget=64}")
    top = lower(program)
    assert top.arch.data == "seml"
    engines = {e.kind.data: e.pe_count for e in top.body.block.ops if isinstance(e, EngineOp)}
    assert engines == {"conv": 10, "pool": 8}  # 64 PEs, capped at the widest layer
    assert "accel.arch" not in program.module.attributes
    sesl = quantized("cnn")
    run_pipeline(sesl, "assign-engines{arch=sesl hw=zcu102 budget=64}")
    with pytest.raises(LayerloomError, match="mapped for sesl"):
        lower(sesl, "arch=seml")


@pytest.mark.parametrize(("options", "message"), [
    ("arch=fast", "arch must be one of"),
    ("conv=winograd", "conv must be one of"),
    ("pes=0", "pes must be positive"),
    ('layer-pes="conv1"', "is not NAME:PES"),
    ('layer-pes="nothere:2"', "unknown layers: nothere"),
    ("arch=hybrid split=99", "split 99 exceeds"),
])
def test_bad_options_are_refused(options: str, message: str) -> None:
    with pytest.raises(LayerloomError, match=message):
        lower(quantized("cnn"), options)


def test_a_float_op_left_in_the_program_is_refused_with_its_name() -> None:
    net = Net((1, 1, 8, 8))
    x = net.conv("%x", 4, 3, pads=1)
    logits = net.dense(net.flatten(x), 3)
    y = net.op("s", f'nn.softmax {logits} {{name = "probabilities", axis = 1 : i64}}', [logits], (1, 3))
    q = quantize(net.program(y), [{"x": np.ones((2, 1, 8, 8), np.float32)}])
    with pytest.raises(UnsupportedError, match="nn.softmax 'probabilities'.*has no HLS kernel"):
        lower(q)


def test_a_flattened_map_at_the_output_is_refused() -> None:
    net = Net((1, 1, 6, 6))
    y = net.flatten(net.conv("%x", 2, 3, pads=1))
    q = quantize(net.program(y), [{"x": np.ones((2, 1, 6, 6), np.float32)}])
    with pytest.raises(UnsupportedError, match="the output is a flattened C x H x W map"):
        lower(q)


# --- float and half accelerators (dtype=float / half: the float nn program) ---------------


def test_half_converts_the_ports_and_the_weights_and_fuses_activations() -> None:
    program = float_program("floats")
    originals = dict(program.weights.items())
    top = lower(program, "dtype=half")
    assert top.scheme.data == "none"
    assert [k.template.data for k in kernels(top)] == [
        "convert", "fork", "conv2d", "pointwise_conv2d", "concat_channels", "fork", "conv2d", "add", "max_pool2d",
        "activation", "dense", "convert"]
    streams = [op for op in top.body.block.ops if isinstance(op, StreamOp)]
    ports = {s.port.data: str(s.result.type) for s in streams if s.port is not None}
    assert ports == {"in": "!dataflow.stream<f32>", "out": "!dataflow.stream<f32>"}
    assert all(str(s.result.type) == "!dataflow.stream<f16>" for s in streams if s.port is None)
    # The activations behind the first conv (clip), the 1x1 conv (leaky relu) and the add
    # (leaky relu) are in their payloads; the relu behind the max pool is a kernel of its own.
    fused = {k.layer.data: k.fused_activation.name for k in kernels(top) if k.fused_activation is not None}
    assert sorted(fused.values()) == ["nn.clip", "nn.leaky_relu", "nn.leaky_relu"]
    assert by_layer(top, "activation")[0].layer_op.name == "nn.relu"
    # Every weight is the original rounded to half (the dense layer's also in HWC order).
    weights = [op for k in kernels(top) if k.payload_region is not None for op in k.body.block.ops
               if isinstance(op, WeightOp)]
    assert len(weights) == 7 and all(str(w.result.type).endswith("xf16>") for w in weights)
    for w in weights:
        half, base = program.weights[w.handle.data], w.handle.data.removesuffix(".f16")
        assert half.dtype == np.float16
        if not base.endswith(".hwc"):
            assert np.array_equal(half, originals[base].astype(np.float16))


def test_float_lowering_keeps_f32_and_prints_parses_back() -> None:
    program = float_program("mobile")
    top = lower(program, "dtype=float pes=4")
    assert {k.template.data for k in kernels(top)} >= {"conv2d", "depthwise_conv2d", "pointwise_conv2d",
                                                        "avg_pool2d", "global_avg_pool", "dense"}
    assert "convert" not in {k.template.data for k in kernels(top)}
    text = print_module(program.module)
    assert "f16" not in text and print_module(parse_module(text, "roundtrip")) == text


def test_dtype_follows_the_program_by_default() -> None:
    assert lower(float_program("cnn")).scheme.data == "none"  # a float program: float
    assert lower(quantized("cnn")).scheme.data == "fixed"  # a quantized one: int8


@pytest.mark.parametrize(("program", "options", "message"), [
    ("quantized", "dtype=half", "dtype=half lowers the float program"),
    ("float", "dtype=int8", "dtype=int8 lowers a quantized program"),
    ("float", "dtype=float arch=seml", "the reused engines are int8 only: a float accelerator is sesl"),
    ("float", "dtype=half arch=hybrid", "a half accelerator is sesl, not hybrid"),
    ("float", "dtype=double", "dtype must be one of int8, float, half"),
])
def test_data_types_are_checked_against_the_program(program: str, options: str, message: str) -> None:
    with pytest.raises(LayerloomError, match=message):
        lower(quantized("cnn") if program == "quantized" else float_program("cnn"), options)


def test_a_float_op_without_a_template_is_refused_with_its_name() -> None:
    net = Net((1, 1, 6, 6))
    x = net.conv("%x", 2, 3, pads=1)
    y = net.op("s", f'nn.sigmoid {x} {{name = "gate"}}', [x], net.shapes[x])
    with pytest.raises(UnsupportedError, match="nn.sigmoid 'gate'.*has no half HLS kernel"):
        lower(net.program(y), "dtype=half")


def test_a_payload_fuses_only_an_activation_of_the_layer() -> None:
    top = lower(float_program("floats"), "dtype=float")
    add = by_layer(top, "add")[0]
    block = add.body.block
    activation = add.fused_activation
    sigmoid = nn.SigmoidOp.build(operands=[activation.operands[0]], result_types=[activation.results[0].type])
    block.insert_op_before(sigmoid, activation)
    activation.operands[0] = sigmoid.results[0]
    with pytest.raises(VerifyException, match="holds 3 layer ops"):
        add.verify()
    block.last_op.operands[0] = sigmoid.results[0]
    block.erase_op(activation)
    with pytest.raises(VerifyException, match="nn.sigmoid cannot be fused behind nn.add"):
        add.verify()
