"""An R x C output-stationary systolic array, following SCALE-Sim's conventions
(scalesim/compute/systolic_compute_os.py, v2 and v3 alike) so results can be cross-checked
against it.

A layer is a GEMM: Sr = N·E·F output pixels (rows of the ifmap operand matrix), Sc = M
filters (columns of the filter matrix), T = K = R·S·C/G (the window, the common
dimension). The array keeps an R x C block of outputs; each fold streams K operands in
(T - 1 cycles before the last one arrives), then drains through R rows and C columns, so

    cycles = ceil(Sr/R) · ceil(Sc/C) · (K + R + C - 2)

-- SCALE-Sim's folds x (rows of its skewed ofmap demand matrix per fold). SCALE-Sim's
COMPUTE_REPORT prints "Total Cycles - Stall Cycles" one less than this (it reports the
last cycle's 0-based index): its golden 32x32 OS run of the GEMM 256x128x256 has
32 folds x 318 = 10176 rows and reports 52447 - 42272 = 10175.

SCALE-Sim maps one layer as one GEMM and has no groups; a grouped or depthwise conv is
modelled here as G independent GEMMs run one after the other. A tile cuts the GEMM into
sub-GEMMs (output-channel, pixel and K tiles), each paying its own fill and drain.
Only GEMM-shaped layers run on the array.
"""

from __future__ import annotations

from itertools import product
from typing import TYPE_CHECKING

from compiler.engines.base import EngineKind, Tile, ceil_div
from compiler.engines.workload import MAC_KINDS, VIEW_KINDS, Workload
from compiler.hw.schema import dims, word

if TYPE_CHECKING:
    from compiler.hw.model import Engine


def os_cycles(sr: int, sc: int, k: int, rows: int, cols: int) -> int:
    """SCALE-Sim's output-stationary compute cycles of one Sr x K by K x Sc GEMM."""
    return ceil_div(sr, rows) * ceil_div(sc, cols) * (k + rows + cols - 2)


def _classes(total: int, tile: int) -> list[tuple[int, int]]:
    """(size, how many) of the tiles cutting `total` into pieces of `tile`."""
    full, rest = divmod(total, tile)
    return [(s, n) for s, n in ((tile, full), (rest, 1)) if s and n]


class SystolicEngine(EngineKind):
    name = "systolic"
    summary = "an R x C output-stationary systolic array (SCALE-Sim's conventions)"
    parameters = {
        "array": dims("rows x columns of PEs", rank=2, required=True),
        "dataflow": word("dataflow; only output-stationary is modelled", choices=("os",), default="os"),
    }
    op_kinds = MAC_KINDS | VIEW_KINDS

    def fixed_pes(self, engine: Engine) -> int:
        rows, cols = engine.params["array"]
        return int(rows * cols)

    def unsupported_kind_reason(self, layer: Workload) -> str:
        return f"a systolic array computes GEMMs only; '{layer.op}' needs a vector unit (not modelled, as in SCALE-Sim)"

    def compute_cycles(self, layer: Workload, engine: Engine, pes: int, tile: Tile) -> int:
        if layer.op in VIEW_KINDS:
            return 0
        rows, cols = engine.params["array"]
        mg, cg = layer.out_channels_per_group, layer.in_channels_per_group
        e, f = layer.out_h, layer.out_w
        tm, tn = min(tile.m or mg, mg), tile.n or cg
        te, tf = tile.e or e, tile.f or f
        total = 0
        for (m, nm), (n, nn), (er, ne), (fc, nf) in product(
            _classes(mg, tm), _classes(cg, tn), _classes(e, te), _classes(f, tf)
        ):
            # Untiled pixels of all images form one Sr, as SCALE-Sim stacks them.
            whole = te == e and tf == f
            sr = layer.batch * er * fc if whole else er * fc
            reps = nm * nn * ne * nf * (1 if whole else layer.batch)
            total += reps * os_cycles(sr, m, n * layer.window, rows, cols)
        return layer.groups * total

    def channel_multiple(self, layer: Workload, engine: Engine, pes: int) -> int:
        """The columns: the filters (Sc = M) an output-stationary fold computes at once."""
        return int(engine.params["array"][1])

    def operand_bytes_per_cycle(self, layer: Workload, engine: Engine, pes: int) -> float:
        rows, cols = engine.params["array"]
        return rows * layer.elem_bytes + cols * layer.weight_elem_bytes
