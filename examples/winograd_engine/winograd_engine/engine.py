"""The `winograd` engine kind: a Winograd F(2x2, 3x3) convolution engine.

Its multiplier array is Tm x Tn (output x input channels), as a SEML engine's, but it
works in the Winograd domain: per 2x2 block of outputs it multiplies 16 transformed
inputs by 16 transformed weights for every channel pair, where a direct engine does 36
multiply-accumulates. The input and output transforms are adder trees beside the array,
pipelined with it, so they take no cycles of their own; weights are transformed as they
are loaded, so DRAM traffic is the direct convolution's. Compute cycles of a layer:

    N · ceil(E/2) · ceil(F/2) · 16 · steps(M over Tm) · steps(C over Tn)

-- 2.25x fewer than the direct 9·E·F when E and F are even. Tiles cut E and F into
row/column tiles (each rounded up to whole 2x2 blocks) and M, C into channel tiles.

Only dense 3x3 stride-1 convolutions fit the algorithm; `supports` says why the others
do not.
"""

from __future__ import annotations

from typing import Any

from compiler.engines import SUPPORTED, EngineKind, Support, Tile, Workload, unsupported
from compiler.engines.base import best_unroll, tiled_steps
from compiler.hw.model import Engine
from compiler.hw.schema import ParamError, count, dims
from winograd_engine.transform import KERNEL, OUT, TILE


def winograd_support(layer: Workload) -> Support:
    """Whether F(2x2, 3x3) computes `layer`, and why not when it does not."""
    if layer.op == "depthwise" or (layer.op == "conv2d" and layer.groups > 1):
        return unsupported(
            f"grouped convolution ({layer.groups} groups): the Winograd-domain products are summed over input "
            "channels on a Tm x Tn array, which one input channel per group cannot fill"
        )
    if layer.op in ("gemm", "matmul"):
        return unsupported("a fully connected layer has no sliding 3x3 window for Winograd to share")
    if layer.op != "conv2d":
        return unsupported(f"winograd engines run 3x3 convolutions only, not '{layer.op}' layers")
    if (layer.kernel_h, layer.kernel_w) != (KERNEL, KERNEL):
        return unsupported(
            f"F(2x2,3x3) needs a 3x3 kernel, not {layer.kernel_h}x{layer.kernel_w} "
            "(a 1x1 conv has no overlapping windows to share; larger kernels need another F(m, r))"
        )
    if (layer.stride_h, layer.stride_w) != (1, 1):
        return unsupported(
            f"stride {layer.stride_h}x{layer.stride_w}: F(2x2,3x3) computes 2x2 adjacent outputs from one 4x4 "
            "input tile, and strided outputs are not adjacent"
        )
    if (layer.dilation_h, layer.dilation_w) != (1, 1):
        return unsupported(f"dilation {layer.dilation_h}x{layer.dilation_w}: the windows are not 3x3 blocks of pixels")
    return SUPPORTED


class WinogradEngine(EngineKind):
    name = "winograd"
    summary = "Winograd F(2x2,3x3) conv engine: 16 multiplies per 2x2 outputs instead of 36"
    parameters = {
        "pes": count("multipliers of the Winograd-domain array (default: chosen within the target's pe_budget)"),
        "unroll": dims("fixed Tm x Tn shape of the array (default: the best for each layer)", rank=2),
    }
    op_kinds = frozenset({"conv2d"})
    # The lowering hook: `winograd-conv` rewrites a supported nn.conv2d into winograd.conv.
    lowerings = {"winograd": "winograd_engine.lower:lower_conv"}

    def check(self, params: dict[str, Any]) -> dict[str, Any]:
        """A fixed array shape sets the PE count, or must fit in it."""
        unroll = params.get("unroll")
        if unroll is not None:
            size = unroll[0] * unroll[1]
            if params.get("pes") is None:
                params["pes"] = size
            elif size > params["pes"]:
                raise ParamError(
                    f"unroll {unroll[0]} x {unroll[1]} needs {size} PEs, more than pes {params['pes']}", "unroll"
                )
        return params

    def supports(self, layer: Workload, engine: Engine) -> Support:
        return winograd_support(layer)

    def compute_cycles(self, layer: Workload, engine: Engine, pes: int, tile: Tile) -> int:
        # N · ceil(E/2) · ceil(F/2) blocks of 2x2 outputs (per tile), 16 products per block
        # and channel pair, M x C channel pairs over the Tm x Tn array.
        rows = tiled_steps(layer.out_h, tile.e or layer.out_h, OUT)  # blocks down, each row tile rounded up
        cols = tiled_steps(layer.out_w, tile.f or layer.out_w, OUT)
        m, c = tile.m or layer.out_channels, tile.n or layer.in_channels
        unroll = engine.params.get("unroll")
        if unroll is None:
            steps = best_unroll(layer.out_channels, layer.in_channels, pes, m, c)[0]
        else:
            steps = tiled_steps(layer.out_channels, m, unroll[0]) * tiled_steps(layer.in_channels, c, unroll[1])
        return int(layer.batch * rows * cols * TILE * TILE * steps)
