"""examples/stann_arc: STANN's arc-detection MLP in float and half with 1 and 4 PEs per layer,
C-simulated against the reference executor, and the latency estimates behind the printed
speed-ups. Projects go to build/csim-tests/stann_arc/ (cached g++ builds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from backends.hls.report import NUMERICS
from examples.stann_arc import run
from examples.stann_arc.model import FFT_LONG, HIDDEN, INPUT_NAME, INPUTS, RAW, build_model, synthesize_inputs

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "csim-tests" / "stann_arc"


def test_the_model_is_the_320_input_mlp_and_the_reference_agrees_with_onnxruntime() -> None:
    model = build_model()
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    assert [shapes[g.input[1]] for g in gemms] == [(64, 320), (32, 64), (16, 32), (1, 16)]
    model.ir_version = 10
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x, _ = synthesize_inputs()
    expected = np.concatenate([session.run(None, {INPUT_NAME: x[i:i + 1]})[0] for i in range(len(x))])
    np.testing.assert_allclose(run.reference(run.float_program(), x), expected, rtol=1e-5, atol=1e-6)


def test_arcing_windows_have_the_broadband_spectrum() -> None:
    x, arcing = synthesize_inputs(8)
    assert x.shape == (8, INPUTS) and x.dtype == np.float32
    spectrum = x[:, RAW:RAW + FFT_LONG]
    assert (spectrum >= 0).all()
    high = spectrum[:, 10:].sum(axis=1)  # above 500 Hz: the mains' harmonics are weak, arcs are not
    assert high[arcing].min() > 3 * high[~arcing].max()


def dense_cycles(k: int, n: int, pes: int, ii: int) -> int:
    """docs/hls.md: read K inputs, N / PE blocks of a K-long reduction at II, write N outputs."""
    pes = max(d for d in range(1, pes + 1) if n % d == 0)
    return k + n // pes * k * ii + n


@pytest.fixture(scope="module")
def variants() -> list[run.Variant]:
    return run.run(OUT)


def test_float_and_half_c_simulation_within_the_bound_and_the_latency_model(variants: list[run.Variant]) -> None:
    sizes = (INPUTS, *HIDDEN, 1)
    for v in variants:
        assert v.max_error <= v.tolerance
        converts = INPUTS + 1 if v.dtype == "half" else 0  # the float32 ports' conversions
        ii = NUMERICS[v.dtype].add_latency
        assert v.latency_cycles == converts + sum(dense_cycles(k, n, v.pes, ii) for k, n in zip(sizes, sizes[1:], strict=False))
    half = {v.pes: v for v in variants if v.dtype == "half"}
    flt = {v.pes: v for v in variants if v.dtype == "float"}
    assert 0 < half[1].max_error and flt[1].max_error < half[1].max_error / 100
    # More PEs: faster and dearer; half cheaper than float.
    for by_pes in (half, flt):
        assert by_pes[4].dsp > by_pes[1].dsp and by_pes[4].latency_cycles < by_pes[1].latency_cycles
    assert half[4].dsp < flt[4].dsp
    assert 3.5 < run.speedup(variants, "half") < run.speedup(variants, "float") < 4


def test_the_table_puts_our_speedups_beside_stanns(variants: list[run.Variant]) -> None:
    text = run.table(variants)
    assert f"| {run.speedup(variants, 'float'):.2f}x | 3.2x |" in text
    assert f"| {run.speedup(variants, 'half'):.2f}x | 1.7x |" in text
