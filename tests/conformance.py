"""The ONNX conformance node cases for layerloom's op set, and how one case is run.

Used by tests/test_conformance.py and runnable on its own for a full report:

    .venv/bin/python -m tests.conformance            # every case: pass / refused / wrong
    .venv/bin/python -m tests.conformance resize     # only cases whose name holds 'resize'

A case passes when import + reference execution give the case's outputs (same dtype and
shape, values within the case's rtol / atol; for the cases in EXPECTED_DIFFERENCES, within
onnxruntime's outputs instead). A refusal must be a LayerloomError; anything else (a wrong
answer, another exception) is a failure. See docs/conformance.md.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import onnx
from onnx.backend.test.case.test_case import TestCase

from backends.reference import execute
from compiler.errors import LayerloomError
from compiler.onnx_import import import_onnx, parameter_inputs

# The op types of issue 2 (and LRN, which the model-zoo light models use).
OP_TYPES = frozenset(
    """Conv Gemm MatMul Relu Clip LeakyRelu Sigmoid HardSigmoid HardSwish Tanh Add Sub Mul Div
    Sum Concat MaxPool AveragePool GlobalAveragePool GlobalMaxPool BatchNormalization Flatten
    Reshape Transpose Pad Softmax Split Slice Squeeze Unsqueeze Resize Upsample Identity
    Dropout Constant ConstantOfShape Shape Gather LRN""".split()
)

# Cases where onnxruntime (our oracle) and the ONNX reference outputs disagree. For these
# the case passes when we agree with onnxruntime; the reason says who is right and why.
#
# Both are align_corners downscales given by `scales`. The spec's formula is
#   x_original = x_resized * (length_original - 1) / (length_resized - 1)
# with length_resized the output length, floor(length_original * scale). onnxruntime (and
# layerloom) use it. The ONNX reference implementation divides by length_original * scale - 1
# instead (not a whole number when the scale does not divide evenly), and so samples other
# points.
EXPECTED_DIFFERENCES: dict[str, str] = {
    # width 4, scale 0.6: 2 outputs. x = 1 samples input 1 * 3 / 1 = 3 (value 4); the
    # reference samples 3 / 1.4 = 2.14 (value 3.14).
    "test_resize_downsample_scales_linear_align_corners": "align_corners from the output length, not the scale",
    # 4x4, scale 0.8: 3x3 outputs. x = 1 samples input 1.5 (values 2.5, 8.5...); the
    # reference samples 3 / 2.2 = 1.36 (values 2.40, 7.98...).
    "test_resize_downsample_scales_cubic_align_corners": "align_corners from the output length, not the scale",
}


@dataclass(frozen=True)
class Outcome:
    name: str
    status: str  # "pass", "refused", "wrong" or "crash"
    detail: str = ""


def is_selected(model: onnx.ModelProto) -> bool:
    nodes = model.graph.node
    return bool(nodes) and all(n.op_type in OP_TYPES and n.domain in ("", "ai.onnx") for n in nodes)


@lru_cache(maxsize=1)
def cases() -> tuple[TestCase, ...]:
    """The selected node cases, collected once per process (about 5 s)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators overflow casts on purpose
        everything = collect_testcases(None)
    return tuple(c for c in everything if c.kind == "node" and c.model is not None and is_selected(c.model))


def dynamic_inputs(model: onnx.ModelProto) -> set[str]:
    """Graph inputs with a dimension that is not a fixed number (their shape comes from the data)."""
    return {
        i.name
        for i in model.graph.input
        if not i.type.tensor_type.HasField("shape") or any(not d.HasField("dim_value") for d in i.type.tensor_type.shape.dim)
    }


def onnxruntime_outputs(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.ir_version = min(m.ir_version, 10)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = min(o.version, 21)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def mismatch(name: str, got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str | None:
    """Why `got` is not `want` (dtype, shape or values), or None."""
    if got.dtype != want.dtype:
        return f"output '{name}' is {got.dtype}, expected {want.dtype}"
    if got.shape != want.shape:
        return f"output '{name}' has shape {got.shape}, expected {want.shape}"
    if want.dtype.kind in "fc":
        close = np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    else:
        close = got == want
    if not np.all(close):
        worst = np.argwhere(~close)[0]
        return f"output '{name}' differs at {tuple(int(i) for i in worst)}: {got[tuple(worst)]} vs {want[tuple(worst)]}"
    return None


def run_case(case: TestCase) -> Outcome:
    """Import and execute one case on each of its data sets."""
    model, name = case.model, case.name
    assert model is not None and case.data_sets is not None
    try:
        parameters = set(parameter_inputs(model))
        for inputs_list, outputs_list in case.data_sets:
            inputs = {i.name: np.asarray(a) for i, a in zip(model.graph.input, inputs_list, strict=False)}
            constants = {k: v for k, v in inputs.items() if k in parameters}
            runtime = {k: v for k, v in inputs.items() if k not in parameters}
            shapes = {k: v.shape for k, v in runtime.items() if k in dynamic_inputs(model)}
            program = import_onnx(model, shapes, constants=constants)
            got = execute(program, runtime)
            wanted = [np.asarray(a) for a in outputs_list]
            if name in EXPECTED_DIFFERENCES:
                wanted = onnxruntime_outputs(model, inputs)
            for out, want in zip(model.graph.output, wanted, strict=True):
                problem = mismatch(out.name, got[out.name], want, case.rtol, case.atol)
                if problem:
                    return Outcome(name, "wrong", problem)
    except LayerloomError as e:  # the message without the model name (the case's name)
        return Outcome(name, "refused", e.message.replace(f" in {e.where}", ""))
    except Exception as e:  # noqa: BLE001 - any other exception is a bug to report
        return Outcome(name, "crash", f"{type(e).__name__}: {e}")
    return Outcome(name, "pass")


def report(outcomes: list[Outcome]) -> str:
    passed = sum(o.status == "pass" for o in outcomes)
    lines = [f"{passed} of {len(outcomes)} cases pass ({100 * passed / max(len(outcomes), 1):.1f}%)"]
    for status in ("wrong", "crash", "refused"):
        group = [o for o in outcomes if o.status == status]
        if group:
            lines.append(f"{status} ({len(group)}):")
            lines += [f"  {o.name}: {o.detail}" for o in group]
    return "\n".join(lines)


if __name__ == "__main__":
    needle = sys.argv[1] if len(sys.argv) > 1 else ""
    print(report([run_case(c) for c in cases() if needle in c.name]))
