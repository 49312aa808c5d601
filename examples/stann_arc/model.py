"""The arc-detection MLP of STANN's evaluation, and input vectors for it.

STANN (Synthesis Templates for Artificial Neural Networks, University of Osnabrück) evaluates
its templates on a multilayer perceptron that detects electric arcs in a current signal. The
network takes 320 features -- 160 raw samples and two groups of FFT magnitudes (128 and 32) --
through three hidden layers to one output. The paper's hidden sizes were not at hand, so the
sizes here are a stated choice: 64, 32 and 16 (relu), then one linear output (the arc score:
positive means arcing). The weights are seeded random (He initialisation): the example
measures latency and numerical agreement, not detection accuracy.

The inputs are synthesised with NumPy: a 50 Hz current sampled at 10 kHz, 256 samples. An
arcing current is held near zero around its zero crossings (the arc extinguishes, then
re-ignites) and carries broadband noise bursts; a normal one carries a little sensor noise.
The features are the last 160 samples, the magnitudes of the Hann-windowed 256-point FFT
(bins 1 to 128) and of the Hann-windowed FFT of the last 64 samples (bins 1 to 32), each
divided by its length.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RAW, FFT_LONG, FFT_SHORT = 160, 128, 32
INPUTS = RAW + FFT_LONG + FFT_SHORT  # 320
HIDDEN = (64, 32, 16)
OUTPUTS = 1
SAMPLE_RATE, MAINS_HZ, WINDOW = 10_000.0, 50.0, 256
OPSET, IR_VERSION = 13, 8
INPUT_NAME, OUTPUT_NAME = "features", "arc_score"


def build_model(seed: int = 0) -> onnx.ModelProto:
    """The MLP as ONNX (Gemm with transB, Relu), batch 1, seeded random weights."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    sizes = (INPUTS, *HIDDEN, OUTPUTS)
    x = INPUT_NAME
    for i, (k, n) in enumerate(zip(sizes, sizes[1:], strict=False)):
        name = f"fc{i + 1}"
        last = i == len(sizes) - 2
        initializers += [numpy_helper.from_array(rng.normal(0, np.sqrt(2 / k), (n, k)).astype(np.float32), f"{name}.w"),
                         numpy_helper.from_array(rng.normal(0, 0.05, n).astype(np.float32), f"{name}.b")]
        gemm_out = OUTPUT_NAME if last else f"{name}_pre"
        nodes.append(helper.make_node("Gemm", [x, f"{name}.w", f"{name}.b"], [gemm_out], name=name, transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [gemm_out], [f"{name}_out"], name=f"relu{i + 1}"))
        x = f"{name}_out"
    graph = helper.make_graph(nodes, "stann_arc_mlp",
                              [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, INPUTS])],
                              [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, OUTPUTS])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="layerloom-examples")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def current(arcing: bool, rng: np.random.Generator) -> np.ndarray:
    """WINDOW samples of a 50 Hz current, arcing or not."""
    t = np.arange(WINDOW) / SAMPLE_RATE
    signal = np.sin(2 * np.pi * MAINS_HZ * t + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.8, 1.2)
    if not arcing:
        return signal + rng.normal(0, 0.01, WINDOW)
    shoulder = np.abs(signal) < rng.uniform(0.1, 0.25)  # the arc is out around the zero crossings
    bursts = rng.normal(0, 0.15, WINDOW) * (rng.uniform(size=WINDOW) < 0.3)  # re-ignition noise
    return np.where(shoulder, 0.0, signal) + bursts + rng.normal(0, 0.01, WINDOW)


def features(signal: np.ndarray) -> np.ndarray:
    """The 320 inputs of one window: raw samples, then the two FFT magnitude groups."""
    long = np.abs(np.fft.rfft(signal * np.hanning(WINDOW)))[1:FFT_LONG + 1] / WINDOW
    recent = signal[-2 * FFT_SHORT:]
    short = np.abs(np.fft.rfft(recent * np.hanning(recent.size)))[1:FFT_SHORT + 1] / recent.size
    return np.concatenate([signal[-RAW:], long, short]).astype(np.float32)


def synthesize_inputs(count: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` feature vectors (count x 320, float32), alternately normal and arcing, and
    which of them arc."""
    rng = np.random.default_rng(seed)
    arcing = np.arange(count) % 2 == 1
    return np.stack([features(current(bool(a), rng)) for a in arcing]), arcing
