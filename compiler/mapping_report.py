"""Reports of a mapping: the per-layer records and table `layerloom estimate` prints (with
the adaptive-resource report), plan-memory's text report, and the PNG plots of
plan-memory and `layerloom explore`. Numbers come from compiler/mapping.py and the cost
model; this module only arranges them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compiler.cost import V_FLOOR, dvfs
from compiler.mapping import HOST, SESL, MappedLayer, NetworkMapping

# ---------------------------------------------------------------------------------------
# estimate
# ---------------------------------------------------------------------------------------


def layer_record(m: MappedLayer, mapping: NetworkMapping) -> dict[str, Any]:
    """One layer of `layerloom estimate --json`: the contract keys first (name is the ONNX
    node name), then what else the mapping knows."""
    layer, cost = m.layer, m.cost
    if cost is None:
        return {"name": layer.name, "op": layer.op, "engine": HOST, "pes": 0, "macs": layer.macs, "cycles": 0,
                "dram_bytes": 0, "onchip_bytes": 0, "bound": HOST, "role": HOST}  # fmt: skip
    # The time a layer may take without slowing the frame: a pipeline stage, the period; a
    # reused engine's layer, its share of the period (its time x period / the engine's
    # time per frame: the engine has slack when the pipeline is the slower part) -- and in
    # both cases at least its memory time.
    memory_s = cost.memory_cycles / cost.clock
    if m.role == SESL:
        budget = max(memory_s, mapping.period_s)
    else:
        budget = max(memory_s, cost.seconds * mapping.period_s / mapping.reused_s if mapping.reused_s else 0.0)
    policy = dvfs(cost, budget)
    tile = m.tile
    return {
        "name": layer.name, "op": layer.op, "engine": m.engine, "pes": m.pes, "macs": cost.macs,
        "cycles": cost.cycles, "dram_bytes": cost.dram_bytes, "onchip_bytes": cost.onchip_bytes, "bound": cost.bound,
        "role": m.role, "slot": m.slot,
        "tile": None if tile is None else {"m": tile.m, "n": tile.n, "e": tile.e, "f": tile.f, "order": tile.order},
        "input_on_chip": m.placement.input_on_chip, "weights_on_chip": m.placement.weights_on_chip,
        "output_on_chip": m.placement.output_on_chip,
        "compute_cycles": cost.compute_cycles, "memory_cycles": cost.memory_cycles, "seconds": cost.seconds,
        "ops": cost.ops, "intensity": cost.as_dict()["intensity"], "energy_j": cost.energy_j,
        "dvfs": policy.as_dict(),
    }  # fmt: skip


def estimate_report(mapping: NetworkMapping, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON object of `layerloom estimate --json`."""
    layers = [layer_record(m, mapping) for m in mapping.layers]
    saved = sum(r["dvfs"]["saved_j"] for r in layers if "dvfs" in r)
    a = mapping.assignment
    report: dict[str, Any] = {
        "throughput_fps": mapping.throughput_fps,
        "latency_s": mapping.latency_s,
        "energy_j": mapping.energy_j,
        "layers": layers,
        "target": mapping.target.name,
        "arch": a.arch,
        "budget": a.budget,
        "pes": mapping.pes_used,
        "split": a.split,
        "memory_plan": mapping.plan.name,
        "dram_bytes": mapping.dram_bytes,
        "onchip_bytes": mapping.onchip_bytes,
        "onchip_capacity": mapping.plan.capacity,
        "bottleneck": mapping.bottleneck,
        "engines": [{"name": e.name, "kind": e.engine.kind, "role": e.role, "pes": e.pes, "count": e.engine.count,
                     "stage": e.stage, "layers": len(e.layers)} for e in mapping.engines],  # fmt: skip
        "adaptive": {
            "model": f"V/Vnom = max(f/fnom, {V_FLOOR}); arithmetic and on-chip energy scale with V^2, DRAM energy does not; "
            "a layer slows until its compute time meets its memory time, or the period for a pipeline stage, or its share of "
            "the period for a reused engine with slack",
            "memory_bound_layers": sum(r["bound"] == "memory" for r in layers),
            "compute_bound_layers": sum(r["bound"] == "compute" for r in layers),
            "energy_j": mapping.energy_j - saved,
            "energy_saved_j": saved,
            "energy_saved_fraction": saved / mapping.energy_j if mapping.energy_j else 0.0,
        },
    }
    return report | (extra or {})


def estimate_table(report: dict[str, Any]) -> str:
    """The aligned per-layer table, totals and the adaptive-resource report."""
    header = ("layer", "op", "engine", "PEs", "MACs", "cycles", "DRAM bytes", "on-chip bytes", "bound", "f'/f")
    rows = []
    for r in report["layers"]:
        scale = f"{r['dvfs']['clock_scale']:.2f}" if "dvfs" in r else "-"
        rows.append((r["name"], r["op"], r["engine"], f"{r['pes']:,}", f"{r['macs']:,}", f"{r['cycles']:,}",
                     f"{r['dram_bytes']:,}", f"{r['onchip_bytes']:,}", r["bound"], scale))  # fmt: skip
    layers = report["layers"]
    footer = (f"total ({len(layers)} layers)", "", "", f"{report['pes']:,}", f"{sum(r['macs'] for r in layers):,}",
              f"{sum(r['cycles'] for r in layers):,}", f"{report['dram_bytes']:,}", f"{report['onchip_bytes']:,}", "", "")  # fmt: skip
    text = _table(header, rows, footer, numeric=(False, False, False, True, True, True, True, True, False, True))
    ad = report["adaptive"]
    lines = [
        f"target {report['target']}, arch {report['arch']}, budget {report['budget']:,} PEs ({report['pes']:,} used), "
        f"pipeline of {report['split']} layers, memory plan {report['memory_plan']}",
        f"throughput {report['throughput_fps']:,.1f} fps, latency {report['latency_s'] * 1e3:.3f} ms, "
        f"energy {_joules(report['energy_j'])}/frame, bottleneck: {report['bottleneck']}",
        f"DRAM {report['dram_bytes']:,} B/frame, on-chip {report['onchip_bytes']:,} of {report['onchip_capacity']:,} B",
        f"adaptive: {ad['memory_bound_layers']} memory-bound, {ad['compute_bound_layers']} compute-bound layers; "
        f"per-layer DVFS saves {_joules(ad['energy_saved_j'])}/frame ({100 * ad['energy_saved_fraction']:.1f} %)",
        f"  ({ad['model']})",
    ]
    return text + "\n".join(lines) + "\n"


def _joules(value: float) -> str:
    for unit, scale in (("J", 1.0), ("mJ", 1e-3), ("uJ", 1e-6)):
        if abs(value) >= scale:
            return f"{value / scale:.3f} {unit}"
    return f"{value / 1e-9:.3f} nJ"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], footer: Sequence[str] | None,
           numeric: Sequence[bool]) -> str:  # fmt: skip
    body = [header, *rows] + ([footer] if footer else [])
    widths = [max(len(r[i]) for r in body) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if right else c.ljust(w) for c, w, right in zip(row, widths, numeric, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line(header), rule, *map(line, rows)]
    if footer:
        out += [rule, line(footer)]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# plan-memory
# ---------------------------------------------------------------------------------------


def plan_report(mapping: NetworkMapping, options: Sequence[tuple[str, NetworkMapping | None]]) -> str:
    """Plans compared, the chosen plan's per-layer requirement and its allocations."""
    plan = mapping.plan
    out = [f"memory plan: {plan.name} (on-chip peak {plan.peak:,} of {plan.capacity:,} bytes)", ""]
    rows: list[tuple[str, ...]] = []
    for name, option in options:
        if option is None:
            rows.append((name, "no", "-", "-", "-"))
        else:
            rows.append((name, "yes", f"{option.throughput_fps:,.1f}", f"{option.dram_bytes:,}", f"{option.plan.peak:,}"))
    out.append(_table(("plan", "fits", "fps", "DRAM B/frame", "on-chip peak"), rows, None, (False, False, True, True, True)))
    rows = []
    for m in mapping.layers:
        p, w = m.placement, m.layer
        buffers = m.cost.onchip_bytes if m.cost is not None else 0
        rows.append((w.name, m.engine, _where(w.weight_bytes, p.weights_on_chip), _where(w.input_bytes, p.input_on_chip),
                     _where(w.output_bytes, p.output_on_chip), f"{buffers:,}", f"{m.cost.dram_bytes if m.cost else 0:,}"))  # fmt: skip
    out.append(_table(("layer", "engine", "weights", "input", "output", "buffers", "DRAM B"), rows, None,
                      (False, False, True, True, True, True, True)))  # fmt: skip
    rows = [(f"{a.offset:,}", f"{a.size:,}", a.kind, a.name, f"{a.first}..{a.last}") for a in plan.allocations]
    out.append(_table(("offset", "bytes", "kind", "holds", "live (layers)"), rows, None, (True, True, False, False, False)))
    return "\n".join(out)


def _where(size: int, on_chip: bool) -> str:
    if not size:
        return "-"
    return f"{size:,} {'on chip' if on_chip else 'DRAM'}"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    from compiler.program import atomic_write_with

    plt = _pyplot()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def plot_memory(mapping: NetworkMapping, path: Path) -> None:
    """Per layer: weights, input and output bytes (solid on chip, hatched in DRAM) and the
    engine's buffers; below, the on-chip bytes live during each layer against capacity."""
    plt = _pyplot()
    import numpy as np

    layers = mapping.layers
    x = np.arange(len(layers))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 0.18 * len(layers) + 4), 7), sharex=True)
    bottom_of = np.zeros(len(layers))
    parts = [
        ("weights", [m.layer.weight_bytes for m in layers], [m.placement.weights_on_chip for m in layers], "tab:blue"),
        ("input", [m.layer.input_bytes for m in layers], [m.placement.input_on_chip for m in layers], "tab:orange"),
        ("output", [m.layer.output_bytes for m in layers], [m.placement.output_on_chip for m in layers], "tab:green"),
        ("buffers", [m.cost.onchip_bytes if m.cost else 0 for m in layers], [True] * len(layers), "tab:gray"),
    ]
    for label, sizes, on_chip, color in parts:
        values = np.asarray(sizes, dtype=float)
        hatches = ["" if on else "//" for on in on_chip]
        bars = top.bar(x, values, bottom=bottom_of, color=color, label=label, edgecolor="black", linewidth=0.3)
        for bar, hatch in zip(bars, hatches, strict=True):
            bar.set_hatch(hatch)
        bottom_of += values
    top.set_ylabel("bytes (hatched: DRAM)")
    top.set_yscale("symlog")
    top.set_title(f"memory requirement per layer -- plan {mapping.plan.name} on {mapping.target.name}")
    top.legend(loc="upper right", fontsize=8)
    live = np.zeros(len(layers))
    for a in mapping.plan.allocations:
        live[a.first : a.last + 1] += a.size
    bottom.bar(x, live, color="tab:purple", label="allocated on chip")
    bottom.axhline(mapping.plan.capacity, color="red", linestyle="--", label="capacity")
    bottom.set_ylabel("on-chip bytes live")
    bottom.legend(loc="upper right", fontsize=8)
    bottom.set_xticks(x, [m.layer.name for m in layers], rotation=90, fontsize=6)
    fig.tight_layout()
    _save(fig, path)


# ---------------------------------------------------------------------------------------
# explore
# ---------------------------------------------------------------------------------------


def plot_throughput(points: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Throughput against PE budget, one line per architecture (infeasible points left out;
    an architecture with none says so in the legend)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arch in dict.fromkeys(p["arch"] for p in points):
        mine = sorted((p["budget"], p["throughput_fps"]) for p in points if p["arch"] == arch and p["feasible"])
        if mine:
            ax.plot([b for b, _ in mine], [t for _, t in mine], marker="o", label=arch)
        else:
            ax.plot([], [], linestyle="none", marker="x", color="gray", label=f"{arch}: does not fit at any budget")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("PE budget")
    ax.set_ylabel("throughput (frames/s)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_roofline(layers: Sequence[dict[str, Any]], peak_ops: float, bandwidth: float, path: Path, title: str) -> None:
    """Each layer's achieved ops/s against its intensity (ops per DRAM byte), under the
    roofline of the design's PEs and the DRAM bandwidth."""
    plt = _pyplot()
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = [(r["ops"] / r["dram_bytes"], r["ops"] / r["seconds"], r["bound"]) for r in layers
           if r.get("seconds") and r.get("dram_bytes") and r.get("ops")]  # fmt: skip
    xs = np.logspace(-2, 4, 200) if not pts else np.logspace(np.log10(min(p[0] for p in pts)) - 1, np.log10(max(p[0] for p in pts)) + 1, 200)
    ax.plot(xs, np.minimum(peak_ops, xs * bandwidth), color="black", label="roofline")
    for bound, color in (("compute", "tab:blue"), ("memory", "tab:red")):
        mine = [p for p in pts if p[2] == bound]
        if mine:
            ax.scatter([p[0] for p in mine], [p[1] for p in mine], s=14, color=color, label=f"{bound}-bound layers")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("intensity (ops per DRAM byte)")
    ax.set_ylabel("ops/s")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
