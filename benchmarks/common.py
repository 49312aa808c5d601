"""Helpers shared by the benchmarks and the model tests: the onnx wheel's light model-zoo
models (as shipped or with seeded random weights), an onnxruntime session with a fixed
thread count, timing, peak memory and a description of the machine."""

from __future__ import annotations

import datetime
import os
import platform
import resource
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.stem.removeprefix("light_") for p in LIGHT.glob("light_*.onnx"))
# onnxruntime 1.3x loads IR version 13 at most; 10 is what the project hands it.
ORT_IR_VERSION = 10

# Ops that pass a tensor through unchanged in value (a weight reaches its real consumer through them).
_PASS_THROUGH = {"Unsqueeze", "Reshape", "Identity", "Flatten", "Squeeze"}
# (op type, input index) of weights that multiply (or divide) activations: kept near 1 and positive
# so batchnorm variances stay valid and the scale of activations does not drift layer by layer.
_SCALES = {("BatchNormalization", 1), ("BatchNormalization", 4), ("Mul", 0), ("Mul", 1)}


def light_model(name: str, random_weights: bool = False, seed: int = 0) -> onnx.ModelProto:
    """`light_<name>.onnx` from the onnx wheel; with `random_weights`, every float weight
    (ConstantOfShape fill or initializer) is replaced by a seeded random one, then scaled
    per layer so that activations stay of order 1 on `seeded_inputs(graph_inputs(model), seed)`."""
    model = onnx.load(str(LIGHT / f"light_{name}.onnx"))
    if not random_weights:
        return model
    model = with_random_weights(model, seed)
    return calibrated(model, seeded_inputs(graph_inputs(model), seed))


def graph_inputs(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Shapes of the real graph inputs (IR 3 models list initializers as inputs too); dynamic dims are 1."""
    initializers = {t.name for t in model.graph.initializer}
    return {
        i.name: tuple(d.dim_value or 1 for d in i.type.tensor_type.shape.dim)
        for i in model.graph.input
        if i.name not in initializers
    }


def with_random_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """A copy of `model` whose float weights are seeded random values: He-scaled kernels
    (`standard_normal * sqrt(2 / fan_in)`), multiplicative vectors (batchnorm scale and
    variance, Mul operands) in [0.5, 1.5], additive vectors (biases, means) N(0, 0.1^2).
    The constant fills of the light models hide layout mistakes (every permutation of a
    constant tensor is the same tensor); random weights do not."""
    model = clone(model)
    graph = model.graph
    rng = np.random.default_rng(seed)
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))
    shapes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}

    def draw(name: str, shape: tuple[int, ...]) -> np.ndarray:
        uses = _real_uses(name, consumers)
        if len(shape) >= 2:
            return rng.standard_normal(shape) * np.sqrt(2.0 / _fan_in(shape, uses))
        if any((node.op_type, index) in _SCALES for node, index in uses):
            return rng.uniform(0.5, 1.5, shape)
        return rng.standard_normal(shape) * 0.1

    for i, node in enumerate(graph.node):
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if node.op_type != "ConstantOfShape" or value is None or value.data_type != TensorProto.FLOAT:
            continue
        shape = tuple(int(d) for d in shapes[node.input[0]])
        tensor = numpy_helper.from_array(draw(node.output[0], shape).astype(np.float32))
        graph.node[i].CopyFrom(helper.make_node("Constant", [], [node.output[0]], name=node.name, value=tensor))
    for t in graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(draw(t.name, tuple(t.dims)).astype(np.float32), t.name))
    return model


def calibrated(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], rounds: int = 2) -> onnx.ModelProto:
    """A copy of `model` whose conv and gemm weights and biases are scaled by one number per
    layer, and whose batchnorm variances and means by one number per layer, so that each of
    their outputs has a mean square near 1 on `feeds`. Without this the activations grow
    layer by layer (biases, LRN, residual sums, batchnorms with random statistics, layers
    without ReLU), to logits of 1e3..1e15 where float32 rounding alone exceeds atol.

    Fixing each layer from its measured input would over-correct, since every earlier layer
    changes at the same time. Instead one onnxruntime run measures every tensor, and a walk
    in graph order tracks by what factor each tensor will change: the network is positively
    homogeneous up to its biases, so the factors pass through ReLUs, pools and reshapes
    unchanged. A second round absorbs what biases and sums add."""
    model = clone(model)
    tensors = _FloatTensors(model.graph)
    constant = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if all(i in constant for i in node.input):  # Constant, ConstantOfShape of a shape, Unsqueeze of a weight...
            constant.update(node.output)
    probes = sorted({n.output[0] for n in model.graph.node if n.output and n.output[0] not in constant})
    for _ in range(rounds):
        seen = run_ort(model, feeds, extra_outputs=probes)
        change: dict[str, float] = {}  # the factor by which each activation will change
        for node in model.graph.node:
            acts = [i for i in node.input if i and i not in constant]
            if not acts:
                continue
            factors = [change.get(a, 1.0) for a in acts]
            old = seen[node.output[0]].astype(np.float64)
            if node.op_type in {"Conv", "Gemm"} and all(i in tensors for i in node.input[1:]):
                # y = W x + b: W x moves with x, b stays; scale W and b so that y has mean square 1.
                bias = _bias_term(node, tensors, old.ndim)
                gain = 1.0 / max(_rms(factors[0] * (old - bias) + bias), 1e-30)
                for name in node.input[1:]:
                    tensors[name] = tensors[name] * gain
                change[node.output[0]] = 1.0 / max(_rms(old), 1e-30)
            elif node.op_type == "BatchNormalization":
                x = seen[acts[0]].astype(np.float64) * factors[0]
                gain = _rms(x)  # one number per layer: channels keep their random relative variances
                tensors[node.input[3]] = tensors[node.input[3]] * gain
                tensors[node.input[4]] = tensors[node.input[4]] * gain**2
                scale, bias, mean, var = (_per_channel(tensors[node.input[k]], x.ndim) for k in (1, 2, 3, 4))
                epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
                y = scale * (x - mean) / np.sqrt(var + epsilon) + bias
                change[node.output[0]] = _rms(y) / max(_rms(old), 1e-30)
            elif node.op_type in {"Sum", "Add"} and len(acts) > 1:
                moved = sum(seen[a].astype(np.float64) * f for a, f in zip(acts, factors, strict=True))
                change[node.output[0]] = _rms(moved) / max(_rms(old), 1e-30)
            elif len(acts) > 1:  # concat: the parts' factors weighted by their energy
                energy = [float(np.sum(np.square(seen[a], dtype=np.float64))) for a in acts]
                moved = [e * f**2 for e, f in zip(energy, factors, strict=True)]
                change[node.output[0]] = float(np.sqrt(sum(moved) / max(sum(energy), 1e-30)))
            else:
                change[node.output[0]] = factors[0]
    return model


def _bias_term(node: onnx.NodeProto, tensors: _FloatTensors, rank: int) -> np.ndarray | float:
    """What a conv or gemm adds to its product, broadcastable to its output."""
    if len(node.input) < 3 or not node.input[2]:
        return 0.0
    if node.op_type == "Conv":
        return _per_channel(tensors[node.input[2]], rank)
    beta = next((a.f for a in node.attribute if a.name == "beta"), 1.0)
    return beta * tensors[node.input[2]]


def _per_channel(vector: np.ndarray, rank: int) -> np.ndarray:
    return vector.reshape([-1 if a == 1 else 1 for a in range(rank)])


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


class _FloatTensors:
    """The float initializers and Constant outputs of a graph, read and replaced by name;
    a reshaped one (as a gemm weight can be) by the name of the reshape's output too."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self._protos = {t.name: t for t in graph.initializer if t.data_type == TensorProto.FLOAT}
        for node in graph.node:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if node.op_type == "Constant" and value is not None and value.data_type == TensorProto.FLOAT:
                self._protos[node.output[0]] = value
            elif node.op_type in _PASS_THROUGH and node.input[0] in self._protos:
                self._protos[node.output[0]] = self._protos[node.input[0]]

    def __contains__(self, name: str) -> bool:
        return name in self._protos

    def __getitem__(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self._protos[name]).astype(np.float64)

    def __setitem__(self, name: str, array: np.ndarray) -> None:
        proto = self._protos[name]
        proto.CopyFrom(numpy_helper.from_array(np.asarray(array, np.float32), proto.name))


def _real_uses(name: str, consumers: dict[str, list[tuple[onnx.NodeProto, int]]]) -> list[tuple[onnx.NodeProto, int]]:
    """The (node, input index) pairs that use `name`, looking through reshapes and the like."""
    uses: list[tuple[onnx.NodeProto, int]] = []
    for node, index in consumers.get(name, []):
        if node.op_type in _PASS_THROUGH and index == 0:
            uses += _real_uses(node.output[0], consumers)
        else:
            uses.append((node, index))
    return uses


def _fan_in(shape: tuple[int, ...], uses: list[tuple[onnx.NodeProto, int]]) -> int:
    """Inputs summed per output: conv (O, I/g, kh, kw) -> I/g*kh*kw; Gemm B by transB; MatMul B -> K."""
    for node, index in uses:
        if node.op_type == "Gemm" and index == 1:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            return shape[1] if trans_b else shape[0]
        if node.op_type == "MatMul" and index == 1:
            return shape[-2]
    return max(1, int(np.prod(shape[1:])))


def clone(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` that also returns the (untyped) intermediate tensors `names`."""
    model = clone(model)
    model.graph.output.extend(helper.make_value_info(n, onnx.TypeProto()) for n in names)
    return model


def ort_session(model: onnx.ModelProto, threads: int = 0, extra_outputs: Sequence[str] = (), spinning: bool = True) -> Any:
    """An onnxruntime CPU session for `model` (IR version lowered for onnxruntime), also
    returning the intermediate tensors `extra_outputs`; `threads` > 0 fixes the thread
    count; `spinning=False` makes its idle worker threads sleep instead of busy-waiting.
    `model` is changed only while it is serialized (no copy: VGG-19 is 550 MB)."""
    import onnxruntime as ort

    ir_version, outputs = model.ir_version, len(model.graph.output)
    model.ir_version = min(ir_version, ORT_IR_VERSION)
    model.graph.output.extend(helper.make_value_info(n, onnx.TypeProto()) for n in extra_outputs)
    try:
        serialized = model.SerializeToString()
    finally:
        model.ir_version = ir_version
        del model.graph.output[outputs:]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])


def run_ort(
    model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], threads: int = 0, extra_outputs: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """All outputs of `model` (and `extra_outputs`) on `feeds`, keyed by name."""
    session = ort_session(model, threads, extra_outputs)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds)), strict=True))


def seeded_inputs(shapes: Mapping[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


# ---------------------------------------------------------------------------------------
# Timing, memory, machine
# ---------------------------------------------------------------------------------------


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def median_time(work: Callable[[], Any], repeats: int) -> float:
    return statistics.median(timed(work)[0] for _ in range(repeats))


@dataclass
class PeakMemory:
    """Memory of a block: the peak of Python/NumPy allocations made in it (tracemalloc; what
    was allocated before does not count), the resident set size when it starts, and the
    peak resident set size during it (includes everything resident before)."""

    python_bytes: int = 0
    rss_start_bytes: int = 0
    rss_peak_bytes: int = 0


@contextmanager
def peak_memory() -> Iterator[PeakMemory]:
    result = PeakMemory(rss_start_bytes=_rss("VmRSS"))
    reset_peak_rss()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield result
    finally:
        result.python_bytes = tracemalloc.get_traced_memory()[1]
        if not was_tracing:
            tracemalloc.stop()
        result.rss_peak_bytes = peak_rss()


def peak_rss() -> int:
    """The process's peak resident set size: VmHWM on Linux. `getrusage`'s ru_maxrss is the
    fallback only, since Linux carries it over from the parent across fork and exec (a child
    of a big process starts with the parent's peak) and it cannot be reset."""
    return _rss("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> None:
    """Start VmHWM again from the current RSS (Linux >= 4.0; a no-op elsewhere)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _rss(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str]:
    """What a performance number needs beside it to mean anything."""
    from importlib.metadata import version

    import onnxruntime
    import xdsl

    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "xdsl": getattr(xdsl, "__version__", None) or version("xdsl"),
    }


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


PERFORMANCE_DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def replace_doc_section(text: str, heading: str, path: Path = PERFORMANCE_DOC,
                        header: str = "# Performance\n", append: bool = True) -> None:
    """Put `text` in place of the part of `path` under `heading` (a `## ` or `### ` line, up
    to the next heading of its level or above), keeping the rest; where there is no such
    heading, append it (or, without `append`, stop with a message). Written atomically."""
    from compiler.program import atomic_write_with

    doc = path.read_text() if path.exists() else header
    start = doc.find(heading + "\n")
    if start < 0:
        if not append:
            raise SystemExit(f"{path}: no '{heading}' to replace")
        doc = doc.rstrip("\n") + "\n\n" + text
    else:
        level = len(heading.split(" ", 1)[0])
        stops = [doc.find("\n" + "#" * n + " ", start + len(heading)) for n in range(2, level + 1)]
        end = min((i for i in stops if i >= 0), default=-1)
        doc = doc[:start] + text.rstrip("\n") + "\n" + (doc[end:] if end >= 0 else "")
    atomic_write_with(path, lambda tmp: Path(tmp).write_text(doc.rstrip("\n") + "\n"))


def section_main(description: str, section: Callable[[], str], heading: str) -> int:
    """The command line of a benchmark that prints one section of docs/performance.md and,
    with --write-docs, puts it there."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--write-docs", action="store_true", help="replace the section in docs/performance.md")
    args = parser.parse_args()
    text = section()
    print(text)
    if args.write_docs:
        replace_doc_section(text, heading)
    return 0
