"""Whole models on the DPU: the lowered program (lower-to-dpu) run on the instruction-set
simulator gives, bit for bit, what the reference executor gives on the quantized IR.

- random small CNNs that the DPU runs entirely (hypothesis: convolutions and depthwise
  ones with strides, pads and dilations, max / average pooling with ceil_mode and
  count_include_pad, residual adds, concats, nearest upsampling, lookup-table
  activations, flatten + dense heads);
- random CNNs of any kind (tests/test_random_cnns.py's generator) with `host-suffix`:
  the DPU runs what it can, the host the rest;
- the example models (MobileNetV1/V2, ResNet-50, tiny-YOLOv3, EfficientNet-B0) in small
  variants, and (slow) at full size, and the onnx wheel's light model-zoo models with
  random weights;
- the driver: `layerloom compile --target dpu` / `layerloom run` (simulator, --with
  reference, --trace), the build folder's files and their determinism.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.dpu import assemble, decode, encode
from backends.dpu.isa import tokens
from backends.dpu.runtime import binary_digest, recording
from backends.reference import execute
from benchmarks.common import graph_inputs, light_model, seeded_inputs
from compiler import import_onnx, quantize, run_pipeline
from compiler.cli import main as layerloom
from compiler.errors import UnsupportedError
from compiler.program import Program
from dialects.dpu import ProgramOp
from examples.models import build
from tests.dpu_programs import without_token
from tests.test_random_cnns import (
    MAX_SIDE,
    Draw,
    NetBuilder,
    concat,
    gemm_head,
    pool,
    random_cnns,
    window_output,
)

PIPELINE = "canonicalize,fold-batchnorm,fuse-activation"
Feeds = dict[str, np.ndarray]


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def quantized(model: onnx.ModelProto, seed: int = 0, samples: int = 2) -> tuple[Program, Feeds]:
    """The pow2-quantized program (calibrated on seeded normal samples) and another
    seeded input to check it on."""
    program = import_onnx(model)
    run_pipeline(program, PIPELINE)
    rng = np.random.default_rng(seed)
    shapes = {n: tuple(t.get_shape()) for n, t in zip(program.input_names, program.input_types, strict=True)}
    calibration = [{n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()} for _ in range(samples)]
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    return quantize(program, calibration, scheme="pow2"), feeds


def lowered(program: Program, options: str = "") -> Program:
    out = program.clone()
    run_pipeline(out, f"lower-to-dpu{{{options}}}" if options else "lower-to-dpu")
    return out


def dpu_program(program: Program) -> ProgramOp:
    return next(o for o in program.module.ops if isinstance(o, ProgramOp))


def assert_bit_exact(program: Program, low: Program, feeds: Feeds) -> None:
    """The lowered program (DPU on the simulator, host on the reference executor) equals
    the reference executor on the quantized program, output by output."""
    want = execute(program, feeds)
    with recording() as rec:
        got = execute(low, feeds)
    assert len(rec.results) == 1  # the DPU did run
    for name, expected in want.items():
        bad = np.argwhere(got[name] != expected)
        assert not bad.size, (f"{name}: {len(bad)} of {expected.size} values differ, first at {tuple(bad[0])}: "
                              f"{got[name][tuple(bad[0])]} != {expected[tuple(bad[0])]}")


def host_ops(low: Program) -> list[str]:
    """The ops @main runs on the host besides the dpu.run (weights and return left out)."""
    return [o.name for o in low.main.body.block.ops if o.name not in ("dpu.run", "nn.weight", "func.return")]


def run_model(model: onnx.ModelProto, options: str = "", seed: int = 0) -> Program:
    program, feeds = quantized(model, seed)
    low = lowered(program, options)
    assert_bit_exact(program, low, feeds)
    return low


# ---------------------------------------------------------------------------------------
# Random CNNs the DPU runs entirely
# ---------------------------------------------------------------------------------------


def dpu_conv(draw: Draw, b: NetBuilder, x: str) -> str:
    """A convolution of group 1 or depthwise, with an optional fused activation."""
    _, c, h, w = b.shapes[x]
    depthwise = draw(st.booleans())
    out_channels = c if depthwise else draw(st.integers(1, 12))
    kernel, dilation, stride, out, begins, ends = [], [], [], [], [], []
    for size in (h, w):
        d = draw(st.integers(1, 2))
        k = draw(st.integers(1, max(1, min(3, (size - 1) // d + 1))))
        # Padding up to the window's reach: a wider pad makes outputs that read only
        # padding, which the DPU's tiles refuse (backends/dpu/builder.py).
        begin, end = draw(st.integers(0, min(2, d * (k - 1)))), draw(st.integers(0, min(2, d * (k - 1))))
        s = draw(st.integers(1, 2))
        kernel.append(k), dilation.append(d), stride.append(s), begins.append(begin), ends.append(end)
        out.append(window_output(size, k, s, begin, end, d, False))
    pads = [begins[0], begins[1], ends[0], ends[1]]
    group = c if depthwise else 1
    inputs = [x, b.he((out_channels, c // group, *kernel), (c // group) * kernel[0] * kernel[1])]
    if draw(st.booleans()):
        inputs.append(b.weight(b.rng.standard_normal(out_channels) * 0.1))
    y = b.node("Conv", inputs, (1, out_channels, *out), kernel_shape=kernel, strides=stride, pads=pads,
               dilations=dilation, group=group)
    act = draw(st.sampled_from(["none", "Relu", "Clip", "LeakyRelu"]))
    if act == "Clip":
        return b.node("Clip", [y, b.weight(np.array(0.0)), b.weight(np.array(6.0))], b.shapes[y])
    if act == "LeakyRelu":
        return b.node("LeakyRelu", [y], b.shapes[y], alpha=0.1)
    return b.node("Relu", [y], b.shapes[y]) if act == "Relu" else y


def residual(draw: Draw, b: NetBuilder, x: str) -> str:
    """x + conv(x) (a 3x3 'same' convolution keeps the shape), optionally with a ReLU."""
    _, c, h, w = b.shapes[x]
    branch = b.node("Conv", [x, b.he((c, c, 3, 3), 9 * c)], (1, c, h, w), kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    y = b.node("Add", [x, branch] if draw(st.booleans()) else [branch, x], (1, c, h, w))
    return b.node("Relu", [y], (1, c, h, w)) if draw(st.booleans()) else y


def table_activation(draw: Draw, b: NetBuilder, x: str) -> str:
    """An activation the quantizer turns into a lookup table (ALU lut)."""
    return b.node(draw(st.sampled_from(["Sigmoid", "Tanh", "HardSwish"])), [x], b.shapes[x])


def upsample(draw: Draw, b: NetBuilder, x: str) -> str:
    """Nearest resize by whole factors, in the coordinate modes that repeat each pixel."""
    _, c, h, w = b.shapes[x]
    factors = [draw(st.integers(1, max(1, MAX_SIDE // h))), draw(st.integers(1, max(1, MAX_SIDE // w)))]
    mode = draw(st.sampled_from([("asymmetric", "floor"), ("half_pixel", "round_prefer_floor")]))
    scales = b.weight(np.array([1.0, 1.0, *factors]))
    return b.node("Resize", [x, "", scales], (1, c, h * factors[0], w * factors[1]), mode="nearest",
                  coordinate_transformation_mode=mode[0], nearest_mode=mode[1])


DPU_LAYERS = [dpu_conv, dpu_conv, pool, residual, concat, upsample, table_activation]


@st.composite
def dpu_cnns(draw: Draw) -> onnx.ModelProto:
    b = NetBuilder(np.random.default_rng(draw(st.integers(0, 2**32 - 1))))
    x = "input"
    b.shapes[x] = (1, draw(st.integers(1, 20)), draw(st.integers(3, 10)), draw(st.integers(3, 10)))
    y = dpu_conv(draw, b, x)
    for _ in range(draw(st.integers(1, 6))):
        y = draw(st.sampled_from(DPU_LAYERS))(draw, b, y)
    if draw(st.booleans()):
        y = gemm_head(draw, b, y)
    return b.model(x, y, opset=17)


@settings(deadline=None)
@given(dpu_cnns(), st.integers(0, 2**16))
def test_random_cnn_runs_on_the_dpu_bit_exact(model: onnx.ModelProto, seed: int) -> None:
    low = run_model(model, seed=seed)  # strict: every layer is on the DPU
    assert host_ops(low) == ["qnn.quantize", "qnn.dequantize"]


@settings(deadline=None)
@given(random_cnns(), st.integers(0, 2**16))
def test_random_cnn_with_a_host_suffix_is_bit_exact(model: onnx.ModelProto, seed: int) -> None:
    """Any CNN: the DPU runs a prefix (possibly all), the host the rest (grouped
    convolutions, broadcast adds, float batchnorms, ...)."""
    program, feeds = quantized(model, seed)
    try:
        low = lowered(program, "host-suffix=true")
    except UnsupportedError as e:  # the DPU can run none of the layers: refused, naming the first
        assert e.where in {node.name for node in model.graph.node} | {"input.quantize"} and e.message, e
        return
    assert_bit_exact(program, low, feeds)


def test_pool_variants_and_placed_concats() -> None:
    """Deterministic cover of what the hypothesis test draws at random: ceil_mode and
    count_include_pad pools, a concat of two placed operands, depthwise with dilation."""
    b = NetBuilder(np.random.default_rng(7))
    b.shapes["input"] = (1, 20, 9, 11)
    c = b.node("Conv", ["input", b.he((20, 1, 3, 3), 9)], (1, 20, 7, 9), kernel_shape=[3, 3], group=20,
               dilations=[1, 1])
    p = b.node("AveragePool", [c], (1, 20, 4, 5), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
               ceil_mode=1, count_include_pad=1)
    q = b.node("MaxPool", [c], (1, 20, 4, 5), kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    y = b.node("Concat", [p, q], (1, 40, 4, 5), axis=1)
    run_model(b.model("input", y, opset=17))


# ---------------------------------------------------------------------------------------
# The example models and the light model zoo
# ---------------------------------------------------------------------------------------

SMALL = {  # width, resolution
    "mobilenet_v1": (0.25, 64),
    "mobilenet_v2": (0.25, 64),
    "resnet50": (0.25, 64),
    "tiny_yolov3": (0.25, 96),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_small_example_models_run_entirely_on_the_dpu(name: str) -> None:
    width, resolution = SMALL[name]
    low = run_model(build(name, width=width, resolution=resolution))
    outputs = 2 if name == "tiny_yolov3" else 1
    assert host_ops(low) == ["qnn.quantize"] + ["qnn.dequantize"] * outputs


def test_efficientnet_runs_its_prefix_on_the_dpu() -> None:
    """EfficientNet's swish (x * sigmoid(x)) stays a float multiplication after quantize:
    the DPU runs the stem convolution and its sigmoid (a table), the host the rest."""
    low = run_model(build("efficientnet_b0", width=0.25, resolution=64), "host-suffix=true")
    program = dpu_program(low)
    assert [layer.layer_name.data for layer in program.layer_ops()] == ["stem", "stem_swish_sigmoid"]
    assert "nn.mul 'stem_swish' computes in float" in program.attributes["host_from"].data  # type: ignore[attr-defined]
    assert "nn.mul" in host_ops(low)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "resnet50", "tiny_yolov3"])
def test_full_size_example_models(name: str) -> None:
    low = run_model(build(name))
    assert host_ops(low)[0] == "qnn.quantize" and set(host_ops(low)[1:]) == {"qnn.dequantize"}


# Where the DPU program of each light model ends (the host's first layer) and why.
LIGHT_BOUNDARIES = {
    "resnet50": ("n174.dequantize", "nn.softmax"),  # all 70 layers on the DPU, softmax on the host
    "squeezenet": ("n65.dequantize", "nn.softmax"),
    "vgg19": ("n44.dequantize", "nn.softmax"),
    "bvlc_alexnet": ("n0.dequantize", "nn.lrn"),  # local response normalisation: float
    "zfnet512": ("n0.dequantize", "nn.lrn"),
    "inception_v1": ("n2.dequantize", "nn.lrn"),
    "inception_v2": ("n0.dequantize", "nn.mul"),  # batchnorm as Mul + Add: float
    "densenet121": ("n0.dequantize", "nn.mul"),
    "shufflenet": ("n4", "group 4"),  # grouped convolution
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LIGHT_BOUNDARIES))
def test_light_model_zoo(name: str) -> None:
    model = light_model(name, random_weights=True, seed=0)
    program = import_onnx(model)
    run_pipeline(program, PIPELINE)
    feeds = {k: v.astype(np.float32) for k, v in seeded_inputs(graph_inputs(model), 1).items()}
    calibration = {k: v.astype(np.float32) for k, v in seeded_inputs(graph_inputs(model), 2).items()}
    program = quantize(program, [calibration], scheme="pow2")
    low = lowered(program, "host-suffix=true")
    assert_bit_exact(program, low, feeds)
    layer, why = LIGHT_BOUNDARIES[name]
    host_from = dpu_program(low).attributes["host_from"].data  # type: ignore[attr-defined]
    assert host_from.startswith(f"{layer}:") and why in host_from


# ---------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "mobilenet_v2.onnx"
    onnx.save(build("mobilenet_v2", width=0.25, resolution=64), str(path))
    return path


@pytest.fixture(scope="module")
def built(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build") / "out"
    calib = out.parent / "calib.npz"
    np.savez(calib, input=np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32))
    assert layerloom(["compile", str(onnx_model), "--target", "dpu", "--hw", "zcu102-dpu", "--calib", str(calib),
                      "-o", str(out)]) == 0
    return out


def test_compile_writes_the_build_folder(built: Path) -> None:
    files = {p.name for p in built.iterdir()}
    assert {"model.bin", "model.s", "weights.bin", "manifest.json", "report.json", "dpu.mlir", "model.mlir",
            "weights.npz", "summary.json"} <= files
    binary = (built / "model.bin").read_bytes()
    assert assemble((built / "model.s").read_text()) == decode(binary)  # the disassembly is the binary
    manifest = json.loads((built / "manifest.json").read_text())
    regions = manifest["ddr"]["regions"]
    assert [r["reg"] for r in regions] == ["weights", "work", "input", "output"]
    assert regions[0]["size"] == (built / "weights.bin").stat().st_size
    assert all(a["base"] + a["size"] <= b["base"] and b["base"] % 4096 == 0 for a, b in zip(regions, regions[1:], strict=False))
    (x,), (y,) = manifest["inputs"], manifest["outputs"]
    assert x["hwc"] == [64, 64, 3] and x["row_stride"] == 64 * 3 and x["quantization"]["scale"] > 0
    assert y["shape"] == [1, 1000] and y["reg"] == "output"
    assert manifest["host"]["before"] == [{"op": "qnn.quantize", "name": "input.quantize"}]
    assert all(layer["output"]["reg"] in ("work", "output") for layer in manifest["layers"])
    report = json.loads((built / "report.json").read_text())
    assert report["throughput_fps"] > 0 and report["latency_s"] > 0 and report["check"]["bit_exact"]
    assert report["check"]["input"] == "the first sample of calib.npz"
    # Per-layer cycles add up to core 0's time (the three cores, sharing the DDR round robin, run in lockstep).
    core0 = max(layer["end"] for layer in report["layers"])
    assert sum(layer["cycles"] for layer in report["layers"]) == core0 <= report["latency_cycles"]
    conv = next(layer for layer in report["layers"] if layer["kind"] == "conv")
    assert conv["model_cycles"] > 0 and len(conv["tile"]) == 3


def test_run_matches_the_reference_and_writes_a_trace(built: Path, tmp_path: Path) -> None:
    x = tmp_path / "x.npz"
    np.savez(x, input=np.random.default_rng(9).standard_normal((1, 3, 64, 64)).astype(np.float32))
    sim, ref, trace = tmp_path / "y.npz", tmp_path / "r.npz", tmp_path / "trace.json"
    assert layerloom(["run", str(built), "--input", str(x), "--output", str(sim), "--trace", str(trace)]) == 0
    assert layerloom(["run", str(built), "--input", str(x), "--output", str(ref), "--with", "reference"]) == 0
    assert np.array_equal(np.load(sim)["output"], np.load(ref)["output"])
    events = json.loads(trace.read_text())["traceEvents"]
    threads = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert threads == {"load", "compute", "save"}
    assert {e["name"] for e in events if e["ph"] == "X"} >= {"LOAD", "CONV", "DWCONV", "SAVE", "ELEW"}


def test_run_skips_the_hazard_check_only_for_the_binary_the_build_checked(built: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """manifest.json names the model.bin the compiler's own run checked; `run` trusts that
    one binary (the check is static), checks any other, and checks on --check-hazards."""
    folder = tmp_path / "build"
    shutil.copytree(built, folder)
    assert json.loads((folder / "manifest.json").read_text())["hazard_checked"]["sha256"] == \
        binary_digest((folder / "model.bin").read_bytes())
    program = decode((folder / "model.bin").read_bytes())
    broken = encode(without_token(program, tokens(program)[0]))  # still right in program order
    (folder / "model.bin").write_bytes(broken)
    x = tmp_path / "x.npz"
    np.savez(x, input=np.random.default_rng(9).standard_normal((1, 3, 64, 64)).astype(np.float32))
    run = ["run", str(folder), "--input", str(x), "--output", str(tmp_path / "y.npz")]
    assert layerloom(run) == 2 and "hazard" in capsys.readouterr().err
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["hazard_checked"]["sha256"] = binary_digest(broken)  # as if the compiler had checked it
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert layerloom(run) == 0
    assert layerloom([*run, "--check-hazards"]) == 2 and "hazard" in capsys.readouterr().err
    assert layerloom([*run, "--with", "reference", "--check-hazards"]) == 2
    assert "runner 'reference' has no hazard check" in capsys.readouterr().err


def test_run_refuses_a_trace_from_the_reference(built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = tmp_path / "x.npz"
    np.savez(x, input=np.zeros((1, 3, 64, 64), np.float32))
    code = layerloom(["run", str(built), "--input", str(x), "--output", str(tmp_path / "y.npz"), "--with",
                      "reference", "--trace", str(tmp_path / "t.json")])
    assert code == 2 and "runner 'reference' writes no trace" in capsys.readouterr().err


def test_a_build_is_deterministic_and_without_calib_says_so(onnx_model: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert layerloom(["compile", str(onnx_model), "--target", "dpu", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("layerloom: note: no --calib: calibrating on 4 seeded random inputs") == 2
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    report = json.loads((first / "report.json").read_text())
    assert report["check"]["input"].startswith("seeded random")
