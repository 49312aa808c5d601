"""Golden-model tests: the nine model-zoo "light" models of the onnx wheel, as shipped
(every weight one constant) and with seeded random weights, imported, run through
`canonicalize,fold-batchnorm,fuse-activation` and executed by the reference executor,
against onnxruntime on the same model and input (rtol 1e-4, atol 1e-5).

The random weights are He-scaled and then scaled per layer so that activations stay of
order 1 (benchmarks/common.py explains why): with logits of 1e3 and more, float32
rounding alone breaks atol and the test would say nothing. The pre-softmax logits are
compared too, since a softmax over large logits is one-hot and hides errors.

The big models are marked slow (`make test-slow`); squeezenet, shufflenet, inception_v1
and resnet50 run by default.
"""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.ir import SSAValue

from backends.reference import execute
from benchmarks.common import LIGHT_MODELS, light_model, run_ort, seeded_inputs, with_outputs
from compiler import Program, import_onnx, run_pipeline
from dialects import nn

PIPELINE = "canonicalize,fold-batchnorm,fuse-activation"
RTOL, ATOL = 1e-4, 1e-5
SEED = 7
# A few seconds each on the shared 2-core machine (ResNet-50 is the benchmark model); the
# other five take up to half a minute each (VGG-19: 550 MB of random weights, three onnxruntime sessions).
DEFAULT_RUN = {"squeezenet", "shufflenet", "inception_v1", "resnet50"}


def cases() -> list[object]:
    return [
        pytest.param(name, random, id=f"{name}-{'random' if random else 'shipped'}",
                     marks=() if name in DEFAULT_RUN else pytest.mark.slow)
        for name in LIGHT_MODELS
        for random in (False, True)
    ]


def sole_producer(value: SSAValue) -> nn.NNOp | None:
    """The conv/gemm that defines `value` if `value` has no other user."""
    owner = value.owner
    if isinstance(owner, nn.Conv2dOp | nn.GemmOp) and len(value.uses) == 1:
        return owner
    return None


def assert_passes_applied(program: Program) -> None:
    """No batchnorm right after a conv, no ReLU right after a conv/gemm it alone uses, and
    no Identity/Dropout left: what the three passes promise, checked on a real model."""
    for op in program.main.body.ops:
        assert not isinstance(op, nn.IdentityOp), op.layer_name
        if isinstance(op, nn.BatchNormOp):
            assert not isinstance(op.operands[0].owner, nn.Conv2dOp), f"batchnorm {op.layer_name} not folded"
        if isinstance(op, nn.ReluOp):
            assert sole_producer(op.operands[0]) is None, f"relu {op.layer_name} not fused"


@pytest.mark.parametrize(("name", "random_weights"), cases())
def test_light_model_after_passes_matches_onnxruntime(name: str, random_weights: bool) -> None:
    model = light_model(name, random_weights=random_weights, seed=SEED)
    logits = [n.input[0] for n in model.graph.node if n.op_type == "Softmax"]
    model = with_outputs(model, logits)
    program = import_onnx(model)
    run_pipeline(program, PIPELINE)
    assert_passes_applied(program)

    shapes = {n: tuple(t.get_shape()) for n, t in zip(program.input_names, program.input_types, strict=True)}
    feeds = seeded_inputs(shapes, SEED + 1)  # not the input the weights were scaled on
    want = run_ort(model, feeds)
    got = execute(program, feeds)
    assert list(got) == program.output_names == [o.name for o in model.graph.output]
    for output, expected in want.items():
        assert got[output].shape == expected.shape, output
        assert got[output].dtype == np.float32, output
        np.testing.assert_allclose(got[output], expected, rtol=RTOL, atol=ATOL, err_msg=f"{name}: {output}")
    if random_weights:
        # The comparison means something only if the outputs are neither flat nor huge.
        scores = want[logits[0]] if logits else want[program.output_names[0]]
        assert 0.1 < float(np.std(scores)) and float(np.max(np.abs(scores))) < 100
