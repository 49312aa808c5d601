"""Train a small CNN and an MLP on scikit-learn's digits (8x8, 10 classes) with NumPy only,
and export them as ONNX with onnx.helper:

    digits_cnn.onnx  input N x 1 x 8 x 8
                     conv1 3x3 (16) + bn1 + relu1 -> pool1 (max 2x2)           16 x 4 x 4
                     conv2 3x3 (32) + bn2 + relu2 -> pool2 (average 2x2)       32 x 2 x 2
                     flatten -> fc (10)
    digits_mlp.onnx  input N x 64: fc1 (32) + relu1 -> fc2 (10)

Outputs are logits. Pixels are scaled to [0, 1] (the digits' 0..16 divided by 16). The
train/test split is fixed by a seed; `digits_split()` gives it to the benchmarks and tests
(calibration from the training part, accuracy on the test part). Opset 13, IR version 8.

Run: python examples/train_digits.py [--out examples/]   (a few seconds; deterministic)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits

SEED = 20240611
TEST_SIZE = 400
OPSET = 13
IR_VERSION = 8
CLASSES = 10
HERE = Path(__file__).parent
MODELS = {"cnn": "digits_cnn.onnx", "mlp": "digits_mlp.onnx"}
LEARNING_RATES = {"cnn": 3e-3, "mlp": 1e-2}


def digits_split(flat: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); x is float32 in [0, 1], N x 1 x 8 x 8 (N x 64 if flat)."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))
    x, y = x[order], y[order]
    x = x.reshape(len(y), 64) if flat else x.reshape(len(y), 1, 8, 8)
    return x[TEST_SIZE:], y[TEST_SIZE:], x[:TEST_SIZE], y[:TEST_SIZE]


# ---------------------------------------------------------------------------------------
# Layers: forward caches what backward needs; parameters and their gradients are paired
# ---------------------------------------------------------------------------------------


Initializer = Callable[[str, np.ndarray], str]


@dataclass
class Layer:
    params: dict[str, np.ndarray] = field(default_factory=dict)
    grads: dict[str, np.ndarray] = field(default_factory=dict)
    training: bool = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy

    def to_onnx(self, name: str, x: str, y: str, init: Initializer) -> onnx.NodeProto:
        """The ONNX node computing this layer; `init` registers an initializer and returns its name."""
        return helper.make_node("Identity", [x], [y], name=name)


def he_init(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


class Conv3x3(Layer):
    """3x3 convolution, stride 1, padding 1, by im2col."""

    def __init__(self, rng: np.random.Generator, cin: int, cout: int) -> None:
        super().__init__({"w": he_init(rng, (cout, cin, 3, 3)), "b": np.zeros(cout, np.float32)})

    def forward(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # n c h w 3 3
        self.cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * w, c * 9)
        self.in_shape = x.shape
        out = self.cols @ self.params["w"].reshape(len(self.params["b"]), -1).T + self.params["b"]
        return out.reshape(n, h, w, -1).transpose(0, 3, 1, 2)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        n, c, h, w = self.in_shape
        d2 = dy.transpose(0, 2, 3, 1).reshape(n * h * w, -1)
        self.grads["w"] = (d2.T @ self.cols).reshape(self.params["w"].shape)
        self.grads["b"] = d2.sum(axis=0)
        dcols = (d2 @ self.params["w"].reshape(d2.shape[1], -1)).reshape(n, h, w, c, 3, 3)
        dpadded = np.zeros((n, c, h + 2, w + 2), np.float32)
        for i in range(3):
            for j in range(3):
                dpadded[:, :, i:i + h, j:j + w] += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
        return dpadded[:, :, 1:-1, 1:-1]

    def to_onnx(self, name: str, x: str, y: str, init: Initializer) -> onnx.NodeProto:
        return helper.make_node("Conv", [x, init(f"{name}.w", self.params["w"]), init(f"{name}.b", self.params["b"])],
                                [y], name=name, kernel_shape=[3, 3], pads=[1, 1, 1, 1])


class BatchNorm(Layer):
    """Batch normalization over N, H, W with running statistics for inference."""

    EPS = 1e-5
    MOMENTUM = 0.1

    def __init__(self, channels: int) -> None:
        super().__init__({"gamma": np.ones(channels, np.float32), "beta": np.zeros(channels, np.float32)})
        self.mean = np.zeros(channels, np.float32)
        self.var = np.ones(channels, np.float32)

    def forward(self, x: np.ndarray) -> np.ndarray:
        axes, shape = (0, 2, 3), (1, -1, 1, 1)
        if self.training:
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            self.mean += self.MOMENTUM * (mean - self.mean)
            self.var += self.MOMENTUM * (var * x.size / (x.size - x.shape[1]) - self.var)  # unbiased, as PyTorch
        else:
            mean, var = self.mean, self.var
        self.inv_std = 1.0 / np.sqrt(var + self.EPS).reshape(shape)
        self.xhat = (x - mean.reshape(shape)) * self.inv_std
        return self.params["gamma"].reshape(shape) * self.xhat + self.params["beta"].reshape(shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        axes, shape = (0, 2, 3), (1, -1, 1, 1)
        self.grads["gamma"] = (dy * self.xhat).sum(axis=axes)
        self.grads["beta"] = dy.sum(axis=axes)
        dxhat = dy * self.params["gamma"].reshape(shape)
        m = dy.size // dy.shape[1]
        return (self.inv_std / m) * (m * dxhat - dxhat.sum(axis=axes, keepdims=True)
                                     - self.xhat * (dxhat * self.xhat).sum(axis=axes, keepdims=True))

    def to_onnx(self, name: str, x: str, y: str, init: Initializer) -> onnx.NodeProto:
        inputs = [init(f"{name}.{k}", v) for k, v in
                  (("gamma", self.params["gamma"]), ("beta", self.params["beta"]), ("mean", self.mean), ("var", self.var))]
        return helper.make_node("BatchNormalization", [x, *inputs], [y], name=name, epsilon=self.EPS)


class Relu(Layer):
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.mask = x > 0
        return x * self.mask

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self.mask

    def to_onnx(self, name: str, x: str, y: str, init: Initializer) -> onnx.NodeProto:
        return helper.make_node("Relu", [x], [y], name=name)


class Pool2x2(Layer):
    """2x2, stride 2 pooling: max or average."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        blocks = x.reshape(n, c, h // 2, 2, w // 2, 2)
        if self.kind == "avg":
            return blocks.mean(axis=(3, 5))
        out = blocks.max(axis=(3, 5))
        self.mask = blocks == out[:, :, :, None, :, None]
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        spread = np.broadcast_to(dy[:, :, :, None, :, None], (*dy.shape[:3], 2, dy.shape[3], 2))
        grad = spread / 4.0 if self.kind == "avg" else spread * self.mask
        n, c, h, _, w, _ = grad.shape
        return grad.reshape(n, c, h * 2, w * 2)

    def to_onnx(self, name: str, x: str, y: str, init: Initializer) -> onnx.NodeProto:
        op = "MaxPool" if self.kind == "max" else "AveragePool"
        return helper.make_node(op, [x], [y], name=name, kernel_shape=[2, 2], strides=[2, 2])


class Flatten(Layer):
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(self.shape)

    def to_onnx(self, name: str, x: str, y: str, init: Initializer) -> onnx.NodeProto:
        return helper.make_node("Flatten", [x], [y], name=name, axis=1)


class Linear(Layer):
    """y = x @ w.T + b, with w as [out, in] (ONNX Gemm with transB = 1)."""

    def __init__(self, rng: np.random.Generator, cin: int, cout: int) -> None:
        super().__init__({"w": he_init(rng, (cout, cin)), "b": np.zeros(cout, np.float32)})

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.params["w"].T + self.params["b"]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.grads["w"] = dy.T @ self.x
        self.grads["b"] = dy.sum(axis=0)
        return dy @ self.params["w"]

    def to_onnx(self, name: str, x: str, y: str, init: Initializer) -> onnx.NodeProto:
        return helper.make_node("Gemm", [x, init(f"{name}.w", self.params["w"]), init(f"{name}.b", self.params["b"])],
                                [y], name=name, transB=1)


# ---------------------------------------------------------------------------------------
# The two models (layer lists with the ONNX node names they export to)
# ---------------------------------------------------------------------------------------


def build_cnn(rng: np.random.Generator) -> list[tuple[str, Layer]]:
    return [
        ("conv1", Conv3x3(rng, 1, 16)), ("bn1", BatchNorm(16)), ("relu1", Relu()), ("pool1", Pool2x2("max")),
        ("conv2", Conv3x3(rng, 16, 32)), ("bn2", BatchNorm(32)), ("relu2", Relu()), ("pool2", Pool2x2("avg")),
        ("flatten", Flatten()), ("fc", Linear(rng, 128, CLASSES)),
    ]


def build_mlp(rng: np.random.Generator) -> list[tuple[str, Layer]]:
    return [("fc1", Linear(rng, 64, 32)), ("relu1", Relu()), ("fc2", Linear(rng, 32, CLASSES))]


def run(layers: list[tuple[str, Layer]], x: np.ndarray, training: bool = False) -> np.ndarray:
    for _, layer in layers:
        layer.training = training
        x = layer.forward(x)
    return x


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())


def train(layers: list[tuple[str, Layer]], x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
          lr: float, epochs: int = 30, batch: int = 32, weight_decay: float = 1e-4) -> None:
    """Adam on softmax cross-entropy, learning rate halved every 10 epochs."""
    moments = {(i, k): (np.zeros_like(p), np.zeros_like(p))
               for i, (_, layer) in enumerate(layers) for k, p in layer.params.items()}
    step = 0
    for epoch in range(epochs):
        rate = lr * 0.5 ** (epoch // 10)
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            idx = order[start:start + batch]
            logits = run(layers, x[idx], training=True)
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(idx)), y[idx]] -= 1.0
            grad = (p / len(idx)).astype(np.float32)
            for _, layer in reversed(layers):
                grad = layer.backward(grad)
            step += 1
            for (i, k), (m, v) in moments.items():
                param = layers[i][1].params[k]
                g = layers[i][1].grads[k] + weight_decay * param
                m += 0.1 * (g - m)
                v += 0.001 * (g * g - v)
                param -= (rate * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)).astype(np.float32)


# ---------------------------------------------------------------------------------------
# ONNX export
# ---------------------------------------------------------------------------------------


def export(layers: list[tuple[str, Layer]], input_shape: tuple[str | int, ...]) -> onnx.ModelProto:
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def init(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    x = "input"
    for i, (name, layer) in enumerate(layers):
        y = "logits" if i == len(layers) - 1 else f"{name}_out"
        nodes.append(layer.to_onnx(name, x, y, init))
        x = y
    graph = helper.make_graph(
        nodes, "digits", [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [input_shape[0], CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="layerloom-examples")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def onnxruntime_logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the .onnx files (default: examples/)")
    args = parser.parse_args()
    for kind, builder in (("cnn", build_cnn), ("mlp", build_mlp)):
        rng = np.random.default_rng(SEED)
        x_train, y_train, x_test, y_test = digits_split(flat=kind == "mlp")
        layers = builder(rng)
        train(layers, x_train, y_train, rng, LEARNING_RATES[kind])
        ours = run(layers, x_test)
        model = export(layers, ("N", *x_test.shape[1:]))
        theirs = onnxruntime_logits(model, x_test)
        np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)
        args.out.mkdir(parents=True, exist_ok=True)
        onnx.save(model, args.out / MODELS[kind])
        print(f"{MODELS[kind]}: train {accuracy(run(layers, x_train), y_train):.4f}, "
              f"test {accuracy(theirs, y_test):.4f} (onnxruntime, {len(y_test)} images)")


if __name__ == "__main__":
    main()
