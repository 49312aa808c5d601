"""Engine kinds as plugins: the registry, a user's engine through an entry point, and each
built-in kind's supported layers and compute cycles against hand-computed values."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import compiler.engines as engines
from compiler.cost import layer_cost
from compiler.engines import WHOLE, EngineKind, Tile, Workload, engine_kinds
from compiler.engines.base import UNREACHABLE, best_unroll, ceil_div, tiled_steps
from compiler.engines.dpu import ARCHITECTURES
from compiler.errors import LayerloomError, UnsupportedError
from compiler.hw import load_target, parse_target
from compiler.hw.model import Engine
from compiler.hw.schema import ParamError, count


def test_builtins_come_from_the_entry_point_group() -> None:
    from importlib.metadata import entry_points

    declared = {ep.name: ep.value for ep in entry_points(group="layerloom.engines")}
    # Installed plugins (examples/winograd_engine, tests/test_engine_plugin.py) add their own.
    assert declared.items() >= {
        "seml": "compiler.engines.seml:SemlEngine",
        "sesl": "compiler.engines.sesl:SeslEngine",
        "dpu": "compiler.engines.dpu:DpuEngine",
        "systolic": "compiler.engines.systolic:SystolicEngine",
    }.items()
    kinds = engine_kinds()
    assert set(kinds) == set(declared)
    assert all(isinstance(k, EngineKind) and k.name == name for name, k in kinds.items())


# --- a user's engine, registered through a (faked) entry point ------------------------


class WinogradEngine(EngineKind):
    """F(2x2, 3x3) Winograd: 16 multiplies per 2x2 output tile and channel pair instead of
    36, so a 3x3 conv takes ceil(E/2)·ceil(F/2)·16·M·C/pes cycles."""

    name = "winograd"
    summary = "Winograd F(2x2,3x3) conv engine"
    parameters = {"pes": count("multipliers", required=True)}
    op_kinds = frozenset({"conv2d"})

    def check(self, params: dict[str, Any]) -> Mapping[str, Any]:
        if params["pes"] % 16:
            raise ParamError("pes must be a multiple of 16 (one 4x4 tile per step)", "pes")
        return params

    def fixed_pes(self, engine: Engine) -> int:
        return int(engine.params["pes"])

    def check_layer(self, layer: Workload, engine: Engine) -> engines.Support:
        if (layer.kernel_h, layer.kernel_w, layer.stride_h, layer.stride_w) != (3, 3, 1, 1):
            return engines.unsupported("Winograd F(2x2,3x3) needs a 3x3 kernel with stride 1")
        return engines.SUPPORTED

    def compute_cycles(self, layer: Workload, engine: Engine, pes: int, tile: Tile) -> int:
        tiles = layer.batch * ceil_div(layer.out_h, 2) * ceil_div(layer.out_w, 2)
        return tiles * ceil_div(16 * layer.out_channels * layer.in_channels, pes)


class NotAnEngine:
    name = "broken"


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = engines.entry_points

    def fake(group: str) -> list[EntryPoint]:
        eps = list(real(group=group))
        if group == engines.GROUP:
            eps.append(EntryPoint("winograd", "tests.test_engines:WinogradEngine", group))
        return eps

    monkeypatch.setattr(engines, "entry_points", fake)
    engine_kinds.cache_clear()
    yield
    engine_kinds.cache_clear()


WINOGRAD_TARGET = """\
target wino {
    clock 200 MHz;
    dram { bandwidth 4 GB/s; }
    memory bram { size 100 x 36 Kb; }
    engine w { kind winograd; pes 256; }
}
"""


def test_plugin_engine_is_used_like_a_builtin(plugin: None) -> None:
    assert {"seml", "sesl", "dpu", "systolic", "winograd"} <= set(engine_kinds())
    target = parse_target(WINOGRAD_TARGET, "wino.hw")
    assert target.pe_budget == 256  # its fixed PEs
    conv = Workload.conv("c", 32, 64, 28, 28, 3, 3, pad=1)
    cost = layer_cost(conv, target)
    assert cost.compute_cycles == 14 * 14 * ceil_div(16 * 64 * 32, 256)
    assert cost.engine == "w" and cost.pes == 256
    with pytest.raises(UnsupportedError, match="needs a 3x3 kernel") as info:
        layer_cost(Workload.conv("p", 32, 64, 28, 28, 1, 1), target)
    assert info.value.where == "p"
    with pytest.raises(UnsupportedError, match="winograd engines do not run 'maxpool' layers"):
        layer_cost(Workload("pool", "maxpool", 8, 8, 4, 4, kernel_h=2, kernel_w=2, stride_h=2, stride_w=2, groups=8), target)


def test_plugin_parameters_are_checked_with_locations(plugin: None) -> None:
    with pytest.raises(LayerloomError) as info:
        parse_target(WINOGRAD_TARGET.replace("pes 256", "pes 100"), "wino.hw")
    assert info.value.where == "wino.hw:5:31" and "multiple of 16" in info.value.message
    with pytest.raises(LayerloomError) as info:
        parse_target(WINOGRAD_TARGET.replace("pes 256;", ""), "wino.hw")
    assert "engine 'w' is missing 'pes'" in info.value.message


def test_a_broken_plugin_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(group: str) -> list[EntryPoint]:
        return [EntryPoint("broken", "tests.test_engines:NotAnEngine", group)]

    monkeypatch.setattr(engines, "entry_points", fake)
    engine_kinds.cache_clear()
    try:
        with pytest.raises(LayerloomError, match="engine kind 'broken' .* is not an EngineKind"):
            engine_kinds()
    finally:
        engine_kinds.cache_clear()


def test_lowering_hook_says_there_is_none_yet() -> None:
    for kind in engine_kinds().values():
        with pytest.raises(UnsupportedError, match=f"engine kind '{kind.name}' has no lowering to 'hls'"):
            kind.lowering_for("hls")


# --- supports: which layers, and why not --------------------------------------------

DPU = load_target("zcu102-dpu")
SYSTOLIC = load_target("systolic-os32")
ZCU102 = load_target("zcu102")


def why_not(layer: Workload, target: Any, engine: str | None = None) -> str:
    e = target.engine(engine) if engine else target.engines[0]
    support = e.kind_plugin.supports(layer, e)
    assert not support
    return support.reason


def test_dpu_limits() -> None:
    assert "grouped convolution (group 4)" in why_not(Workload.conv("g", 64, 64, 8, 8, 3, 3, groups=4), DPU)
    assert "exceeds the DPU's 16x16" in why_not(Workload.conv("k", 16, 16, 8, 8, 17, 17), DPU)
    assert "stride 9" in why_not(Workload.conv("s", 16, 16, 8, 8, 9, 9, stride=9), DPU)
    # R·S·ceil(C/ICP) <= bank depth 2048: 3x3 over 4096 channels needs 9·256 = 2304 words.
    assert "bank depth 2048" in why_not(Workload.conv("b", 4096, 16, 8, 8, 3, 3), DPU)
    assert "has no 'sigmoid' unit" in why_not(Workload("sig", "sigmoid", 8, 8, 4, 4), DPU)
    pool = Workload("p", "maxpool", 8, 8, 1, 1, kernel_h=9, kernel_w=9, stride_h=9, stride_w=9, groups=8)
    assert "pooling kernel 9x9" in why_not(pool, DPU)
    dpu = DPU.engines[0]
    assert dpu.kind_plugin.supports(Workload.conv("dw", 32, 32, 8, 8, 3, 3, groups=32), dpu)
    assert dpu.kind_plugin.supports(Workload.gemm("fc", 1, 2048, 1000), dpu)


def test_systolic_runs_gemms_only() -> None:
    reason = why_not(Workload("add", "add", 8, 8, 4, 4, inputs=2), SYSTOLIC)
    assert "computes GEMMs only" in reason and "'add'" in reason


def test_seml_sesl_run_every_known_kind() -> None:
    kinds = ["conv2d", "depthwise", "gemm", "maxpool", "global_avgpool", "add", "relu", "concat", "reshape"]
    for engine in ("seml", "sesl"):
        e = ZCU102.engine(engine)
        for kind in kinds:
            layer = Workload("l", kind, 8, 8, 4, 4, groups=8 if kind in ("depthwise", "maxpool", "global_avgpool") else 1)
            assert e.kind_plugin.supports(layer, e), (engine, kind)
        assert "do not run 'lstm'" in why_not(Workload("x", "lstm", 8, 8, 4, 4), ZCU102, engine)


# --- compute cycles against hand-computed values -------------------------------------


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_dpu_cycles_per_architecture(arch: str) -> None:
    pp, icp, ocp = ARCHITECTURES[arch]
    target = load_target(f"dpu-{arch.lower()}")
    e = target.engines[0]
    conv = Workload.conv("c", 3, 64, 112, 112, 7, 7, stride=2, pad=3)  # ResNet's first conv
    expected = 112 * ceil_div(112, pp) * ceil_div(3, icp) * ceil_div(64, ocp) * 49
    assert e.kind_plugin.compute_cycles(conv, e, e.pes, WHOLE) == expected
    dw = Workload.conv("dw", 32, 32, 112, 112, 3, 3, pad=1, groups=32)  # depthwise at PP/2
    assert e.kind_plugin.compute_cycles(dw, e, e.pes, WHOLE) == 112 * ceil_div(112, pp // 2) * ceil_div(32, icp) * 9
    fc = Workload.gemm("fc", 1, 2048, 1000)  # one pixel: PP idles
    assert e.kind_plugin.compute_cycles(fc, e, e.pes, WHOLE) == ceil_div(2048, icp) * ceil_div(1000, ocp)


def test_dpu_b4096_conv_by_hand() -> None:
    e = DPU.engines[0]
    conv = Workload.conv("c", 64, 64, 56, 56, 3, 3, pad=1)
    # 56 rows · ceil(56/8)=7 · ceil(64/16)=4 · ceil(64/16)=4 · 9 taps
    assert e.kind_plugin.compute_cycles(conv, e, 2048, WHOLE) == 56 * 7 * 4 * 4 * 9 == 56448
    # Tiles of 24 output channels waste OCP lanes: 64 = 24 + 24 + 16 -> 2 + 2 + 1 steps.
    assert e.kind_plugin.compute_cycles(conv, e, 2048, Tile(m=24).resolved(conv)) == 56 * 7 * 4 * 5 * 9


def test_seml_and_sesl_by_hand() -> None:
    conv = Workload.conv("c", 64, 128, 28, 28, 3, 3, pad=1)
    seml, sesl = ZCU102.engine("seml"), ZCU102.engine("sesl")
    # SEML, 1024 PEs: best Tm x Tn = 128 x 8 -> ceil(128/128)·ceil(64/8) = 8 steps per pixel-tap.
    assert seml.kind_plugin.compute_cycles(conv, seml, 1024, WHOLE) == 8 * 784 * 9
    # SESL: PE x SIMD over 128 x 576 -> 128 x 8 gives 72 per pixel.
    assert sesl.kind_plugin.compute_cycles(conv, sesl, 1024, WHOLE) == 784 * 72
    # Both are perfect here: MACs / PEs.
    assert 784 * 72 * 1024 == conv.macs
    # A fixed unrolling that fits badly: 48 x 16 over 128 x 64 -> ceil(128/48)=3 · 4.
    fixed = parse_target(
        "target t { clock 1 GHz; pe_budget 1024; dram { bandwidth 1 GB/s; } memory m { size 1 MB; }"
        " engine e { kind seml; unroll 48 x 16; } }"
    ).engines[0]
    assert fixed.pes == 768
    assert fixed.kind_plugin.compute_cycles(conv, fixed, 768, WHOLE) == 3 * 4 * 784 * 9
    # The fixed array is all of the engine: it cannot run with fewer PEs, so the mapping
    # never gives it fewer (it once gave each 4 x 4 pipeline stage a single PE).
    curve = fixed.kind_plugin.cycles_curve(conv, fixed, 1024, WHOLE)
    assert (curve[:767] == UNREACHABLE).all() and (curve[767:] == 3 * 4 * 784 * 9).all()


@given(
    a=st.integers(1, 300),
    b=st.integers(1, 300),
    pes=st.integers(1, 600),
    ta=st.integers(1, 300),
    tb=st.integers(1, 300),
)
def test_best_unroll_is_the_brute_force_minimum(a: int, b: int, pes: int, ta: int, tb: int) -> None:
    ta, tb = min(ta, a), min(tb, b)
    steps, pa, pb = best_unroll(a, b, pes, ta, tb)
    assert pa * pb <= pes
    assert steps == tiled_steps(a, ta, pa) * tiled_steps(b, tb, pb)
    brute = min(
        tiled_steps(a, ta, x) * tiled_steps(b, tb, y) for x in range(1, pes + 1) for y in range(1, pes // x + 1)
    )
    assert steps == brute


def test_tiled_steps() -> None:
    assert tiled_steps(64, 64, 16) == 4
    assert tiled_steps(64, 24, 16) == 2 + 2 + 1
    assert tiled_steps(10, 3, 4) == 3 * 1 + 1
    assert math.prod([tiled_steps(7, 7, 2), tiled_steps(5, 5, 5)]) == 4
