"""A DPU core: Xilinx's DPUCZDX8G for Zynq UltraScale+ (product guide PG338, "Architecture
of the DPUCZDX8G"). Its convolution array has pixel parallelism PP, input-channel
parallelism ICP and output-channel parallelism OCP: PP·ICP·OCP MACs, 2·PP·ICP·OCP ops
per cycle. The eight configurations (PG338 table "Parallelism for Different Convolution
Architectures"):

    B512 4x8x8   B800 4x10x10   B1024 8x8x8   B1152 4x12x12
    B1600 8x10x10   B2304 8x12x12   B3136 8x14x14   B4096 8x16x16

Cycles, with ceil-division per parallel dimension (PP runs along the output row):
    conv / fully connected:  N · E · ceil(F/PP) · ceil(C/ICP) · ceil(M/OCP) · R·S
    depthwise, pooling:      N · E · ceil(F/(PP/2)) · ceil(C/ICP) · R·S
                             (PG338: "the parallelism of depthwise convolution is half
                             that of the pixel parallelism"; pooling shares that ALU)
    elementwise:             N · E · ceil(F/PP) · ceil(C/ICP)
Activations are fused into the layer before them and cost nothing by themselves, as are
concat (addressing) and views. Limits are Vitis AI's (UG1414, "Currently Supported
Operators", DPUCZDX8G_ISA1_B4096): conv kernel 1..16, stride 1..8, group 1,
R·S·ceil(C/ICP) <= bank_depth (2048), C and M <= 256·ICP; depthwise kernel 1..256,
stride 1..8; pooling kernel 1..8 (PG338). Multiple cores (`count 3;`) run different
frames: a layer's cycles are one core's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from compiler.engines.base import SUPPORTED, EngineKind, Support, Tile, ceil_div, tiled_steps, unsupported
from compiler.engines.workload import (
    ELTWISE_KINDS,
    MAC_KINDS,
    POOL_KINDS,
    VIEW_KINDS,
    Workload,
)
from compiler.hw.schema import ParamError, count, word

if TYPE_CHECKING:
    from compiler.hw.model import Engine

# (PP, ICP, OCP) per configuration, PG338 v3.4/v4.1 "Parallelism for Different
# Convolution Architectures"; the number in the name is the peak ops per cycle.
ARCHITECTURES: dict[str, tuple[int, int, int]] = {
    "B512": (4, 8, 8),
    "B800": (4, 10, 10),
    "B1024": (8, 8, 8),
    "B1152": (4, 12, 12),
    "B1600": (8, 10, 10),
    "B2304": (8, 12, 12),
    "B3136": (8, 14, 14),
    "B4096": (8, 16, 16),
}
DPU_ACTIVATIONS = frozenset({"relu", "clip", "leaky_relu", "hardswish", "hard_sigmoid"})
DPU_ELTWISE = frozenset({"add", "mul"})


class DpuEngine(EngineKind):
    name = "dpu"
    summary = "a DPUCZDX8G core: PP x ICP x OCP convolution array (B512 ... B4096)"
    parameters = {
        "arch": word("DPUCZDX8G configuration", choices=tuple(ARCHITECTURES)),
        "pp": count("pixel parallelism (instead of arch)"),
        "icp": count("input-channel parallelism (instead of arch)"),
        "ocp": count("output-channel parallelism (instead of arch)"),
        "bank_depth": count("depth of an on-chip feature-map bank, in ICP-wide words", default=2048),
    }
    op_kinds = MAC_KINDS | POOL_KINDS | DPU_ELTWISE | DPU_ACTIVATIONS | frozenset({"concat"}) | VIEW_KINDS

    def check(self, params: dict[str, Any]) -> Mapping[str, Any]:
        explicit = [k for k in ("pp", "icp", "ocp") if params.get(k) is not None]
        arch = params.get("arch")
        if arch is not None and explicit:
            raise ParamError(f"give either arch or pp/icp/ocp, not both (arch {arch} fixes them)", explicit[0])
        if arch is not None:
            params["pp"], params["icp"], params["ocp"] = ARCHITECTURES[arch]
        elif len(explicit) != 3:
            missing = [k for k in ("pp", "icp", "ocp") if k not in explicit]
            raise ParamError(f"needs `arch B4096;` (or another B...) or all of pp, icp, ocp; missing {', '.join(missing)}")
        return params

    def fixed_pes(self, engine: Engine) -> int:
        p = engine.params
        return int(p["pp"] * p["icp"] * p["ocp"])

    def unsupported_kind_reason(self, layer: Workload) -> str:
        return f"the DPU has no '{layer.op}' unit (Vitis AI runs it on the CPU)"

    def check_layer(self, layer: Workload, engine: Engine) -> Support:
        p = engine.params
        icp, ocp, depth = p["icp"], p["ocp"], p["bank_depth"]
        kernel, stride = max(layer.kernel_h, layer.kernel_w), max(layer.stride_h, layer.stride_w)
        if layer.op == "conv2d":
            if layer.groups != 1:
                return unsupported(f"grouped convolution (group {layer.groups}) is not on the DPU; only group 1 and depthwise")
            if kernel > 16:
                return unsupported(f"kernel {layer.kernel_h}x{layer.kernel_w} exceeds the DPU's 16x16")
            if stride > 8:
                return unsupported(f"stride {stride} exceeds the DPU's 8")
            if layer.window * ceil_div(layer.in_channels, icp) > depth:
                return unsupported(
                    f"kernel x input channels too large: {layer.kernel_h}*{layer.kernel_w}*ceil({layer.in_channels}/{icp}) > bank depth {depth}"
                )
            if max(layer.dilation_h, layer.dilation_w) * layer.in_channels > 256 * icp:
                return unsupported(f"dilation x input channels exceeds 256*{icp}")
        if layer.op in MAC_KINDS and layer.op != "depthwise":
            if layer.in_channels > 256 * icp or layer.out_channels > 256 * ocp:
                return unsupported(f"channels {layer.in_channels}->{layer.out_channels} exceed the DPU's 256*{icp}")
        if layer.op == "depthwise" and (kernel > 256 or stride > 8):
            return unsupported(f"depthwise kernel {layer.kernel_h}x{layer.kernel_w} / stride {stride} beyond 256 / 8")
        if layer.op in ("maxpool", "avgpool") and kernel > 8:
            return unsupported(f"pooling kernel {layer.kernel_h}x{layer.kernel_w} exceeds the DPU's 8x8")
        return SUPPORTED

    def compute_cycles(self, layer: Workload, engine: Engine, pes: int, tile: Tile) -> int:
        p = engine.params
        pp, icp, ocp = p["pp"], p["icp"], p["ocp"]
        rows = layer.batch * layer.out_h
        op = layer.op
        if op in MAC_KINDS and op != "depthwise":
            return int(
                rows
                * tiled_steps(layer.out_w, tile.f or layer.out_w, pp)
                * tiled_steps(layer.in_channels, tile.n or layer.in_channels, icp)
                * tiled_steps(layer.out_channels, tile.m or layer.out_channels, ocp)
                * layer.window
            )
        if op == "depthwise" or op in POOL_KINDS:
            alu_pp = max(1, pp // 2)
            return int(
                rows
                * tiled_steps(layer.out_w, tile.f or layer.out_w, alu_pp)
                * tiled_steps(layer.out_channels, tile.m or layer.out_channels, icp)
                * layer.window
            )
        if op in ELTWISE_KINDS:
            return int(rows * ceil_div(layer.out_w, pp) * ceil_div(layer.out_channels, icp))
        return 0  # fused activations, concat, views

    def channel_multiple(self, layer: Workload, engine: Engine, pes: int) -> int:
        """OCP for convolutions and fully connected layers; the other units run channels
        ICP at a time (the compute_cycles formulas above)."""
        dense = layer.op in MAC_KINDS and layer.op != "depthwise"
        return int(engine.params["ocp"] if dense else engine.params["icp"])

    def operand_bytes_per_cycle(self, layer: Workload, engine: Engine, pes: int) -> float:
        p = engine.params
        return p["pp"] * p["icp"] * layer.elem_bytes + p["icp"] * p["ocp"] * layer.weight_elem_bytes
