"""The committed digits models (examples/train_digits.py): they load in onnxruntime, reach
their accuracy on the fixed test split, and layerloom imports and runs them with the same
predictions (the float baseline that int8 quantization is measured against)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from backends.reference import execute
from compiler import import_onnx, run_pipeline

EXAMPLES = Path(__file__).parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
import train_digits  # noqa: E402

# Test-split accuracy of the committed models (400 images: one image is 0.25 points).
MIN_ACCURACY = {"cnn": 0.97, "mlp": 0.96}


def test_split_is_fixed_and_disjoint() -> None:
    x_train, y_train, x_test, y_test = train_digits.digits_split()
    again = train_digits.digits_split()
    assert np.array_equal(x_test, again[2]) and np.array_equal(y_train, again[1])
    assert x_test.shape == (train_digits.TEST_SIZE, 1, 8, 8) and x_train.shape[1:] == (1, 8, 8)
    assert len(y_train) + len(y_test) == 1797
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    train_rows = {row.tobytes() for row in x_train}
    assert sum(row.tobytes() in train_rows for row in x_test) < 10  # only the dataset's own duplicates
    assert np.array_equal(train_digits.digits_split(flat=True)[2], x_test.reshape(-1, 64))


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_committed_model_accuracy(kind: str) -> None:
    path = EXAMPLES / train_digits.MODELS[kind]
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert model.ir_version <= 10 and model.opset_import[0].version <= 21
    _, _, x_test, y_test = train_digits.digits_split(flat=kind == "mlp")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"input": x_test})[0]
    assert train_digits.accuracy(theirs, y_test) >= MIN_ACCURACY[kind]

    program = run_pipeline(import_onnx(path, input_shapes={"input": x_test.shape}), "canonicalize,fold-batchnorm,fuse-activation")
    ours = execute(program, {"input": x_test})["logits"]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert np.array_equal(ours.argmax(axis=1), theirs.argmax(axis=1))


def test_cnn_has_the_layers_the_quantization_work_needs() -> None:
    model = onnx.load(EXAMPLES / train_digits.MODELS["cnn"])
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Conv", "BatchNormalization", "Relu", "MaxPool", "Conv", "BatchNormalization", "Relu",
                   "AveragePool", "Flatten", "Gemm"]
    assert all(n.name for n in model.graph.node)
