"""`layerloom explore MODEL --hw TARGET --arch seml,sesl,hybrid --budget 256,512,1024,2048
[--jobs N] -o OUT/`: map the model for every architecture and budget, in parallel, and
write the Pareto front (throughput up; PEs, on-chip memory and energy down) as CSV and
JSON, with plots: throughput against budget per architecture and the per-layer roofline
of the fastest design. OUT/ is written whole or not at all (a temporary folder renamed)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import cache
from pathlib import Path
from typing import Any

from compiler.cli import Command, build_folder, register_command
from compiler.commands.common import ARCH_HELP, add_model_flags, default_archs, load_program, parse_archs, parse_budgets
from compiler.errors import LayerloomError

POINTS_CSV, PARETO_CSV, PARETO_JSON = "points.csv", "pareto.csv", "pareto.json"
THROUGHPUT_PNG, ROOFLINE_PNG = "throughput_vs_budget.png", "roofline.png"
COLUMNS = ("arch", "budget", "feasible", "throughput_fps", "latency_s", "energy_j", "pes", "onchip_bytes",
           "dram_bytes", "split", "plan", "bottleneck", "reason")  # fmt: skip


def configure(p: argparse.ArgumentParser) -> None:
    add_model_flags(p)
    p.add_argument("--arch", help=f"comma-separated: {ARCH_HELP} (default: those the target has engines for)")
    p.add_argument("--budget", default="256,512,1024,2048", help="comma-separated PE budgets (default 256,512,1024,2048)")
    p.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                   help="worker processes (default: up to 4 local cores; 1 runs in this process)")  # fmt: skip
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder to write (replaced on success)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from compiler.hw import load_target
    from compiler.mapping import LayerGraph, check_request

    target = load_target(args.hw)
    archs = parse_archs(args.arch) if args.arch is not None else default_archs(target)
    budgets = parse_budgets(args.budget)
    for arch in archs:
        for budget in budgets:
            check_request(target, arch, budget, "--budget")
    if args.jobs < 1:
        raise LayerloomError(f"--jobs must be at least 1, got {args.jobs}", "--jobs")
    out = Path(args.output)
    check_replaceable(out)
    program = load_program(args.model, args.input_shape)
    graph, _ = LayerGraph.of_module(program.module)  # type: ignore[attr-defined]

    points = [(arch, budget) for arch in archs for budget in budgets]
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(points), desc="explore", unit="design", file=sys.stderr)
    if args.jobs == 1:
        for arch, budget in points:
            results.append(explore_point(graph, args.hw, arch, budget))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=min(args.jobs, len(points))) as pool:
            futures = [pool.submit(explore_point, graph, args.hw, arch, budget) for arch, budget in points]
            for future in as_completed(futures):
                results.append(future.result())
                bar.update()
    bar.close()
    order = {p: i for i, p in enumerate(points)}
    results.sort(key=lambda r: order[(r["arch"], r["budget"])])
    front = pareto_front(results)

    with build_folder(out) as folder:
        (folder / POINTS_CSV).write_text(to_csv(results))
        (folder / PARETO_CSV).write_text(to_csv(front))
        summary = {"model": args.model, "target": target.name, "archs": archs, "budgets": budgets,
                   "objectives": {"throughput_fps": "max", "pes": "min", "onchip_bytes": "min", "energy_j": "min"},
                   "pareto": [_without_layers(r) for r in front], "points": [_without_layers(r) for r in results]}  # fmt: skip
        (folder / PARETO_JSON).write_text(json.dumps(summary, indent=2) + "\n")
        write_plots(folder, results, target, Path(args.model).stem)

    feasible = sum(r["feasible"] for r in results)
    print(f"explored {len(results)} designs ({feasible} fit {target.name}); Pareto front of {len(front)}:")
    for r in front:
        print(f"  {r['arch']:6} budget {r['budget']:>6,}: {r['throughput_fps']:12,.1f} fps, {r['pes']:>6,} PEs, "
              f"{r['onchip_bytes']:>11,} B on chip, {r['energy_j'] * 1e3:9.3f} mJ/frame")  # fmt: skip
    print(f"wrote {out}/ ({POINTS_CSV}, {PARETO_CSV}, {PARETO_JSON}, {THROUGHPUT_PNG}, {ROOFLINE_PNG})")
    return 0


@cache
def _target(ref: str) -> Any:
    from compiler.hw import load_target

    return load_target(ref)


def explore_point(graph: Any, hw: str, arch: str, budget: int) -> dict[str, Any]:
    """One design point (run in a worker process): its summary and per-layer records, or
    why it does not fit."""
    from compiler.mapping import assign
    from compiler.mapping_report import estimate_report

    point: dict[str, Any] = {"arch": arch, "budget": budget}
    try:
        mapping = assign(graph, _target(hw), arch, budget)
    except LayerloomError as e:
        return point | {"feasible": False, "reason": e.message}
    report = estimate_report(mapping)
    keep = ("throughput_fps", "latency_s", "energy_j", "pes", "onchip_bytes", "dram_bytes", "split", "bottleneck")
    return point | {"feasible": True, "reason": ""} | {k: report[k] for k in keep} | {
        "plan": report["memory_plan"], "layers": report["layers"]}  # fmt: skip


def pareto_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Feasible points no other point beats on every objective (more throughput; fewer
    PEs, on-chip bytes and joules) and strictly on one."""
    feasible = [p for p in points if p["feasible"]]

    def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
        ge = (a["throughput_fps"] >= b["throughput_fps"], a["pes"] <= b["pes"],
              a["onchip_bytes"] <= b["onchip_bytes"], a["energy_j"] <= b["energy_j"])  # fmt: skip
        gt = (a["throughput_fps"] > b["throughput_fps"], a["pes"] < b["pes"],
              a["onchip_bytes"] < b["onchip_bytes"], a["energy_j"] < b["energy_j"])  # fmt: skip
        return all(ge) and any(gt)

    return [p for p in feasible if not any(dominates(q, p) for q in feasible)]


def to_csv(points: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for p in points:
        writer.writerow({k: p.get(k, "") for k in COLUMNS})
    return buffer.getvalue()


def _without_layers(point: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in point.items() if k != "layers"}


def write_plots(folder: Path, results: list[dict[str, Any]], target: Any, model: str) -> None:
    from compiler.mapping_report import plot_roofline, plot_throughput

    plot_throughput(results, folder / THROUGHPUT_PNG, f"{model} on {target.name}")
    feasible = [r for r in results if r["feasible"]]
    best = max(feasible, key=lambda r: r["throughput_fps"], default=None)
    layers = best["layers"] if best else []
    pes = best["pes"] if best else target.pe_budget
    title = f"{model}: {best['arch']} at {best['budget']} PEs" if best else f"{model}: no design fits"
    plot_roofline(layers, 2.0 * pes * target.clock, target.dram.bandwidth, folder / ROOFLINE_PNG, title)


def check_replaceable(out: Path) -> None:
    """Only an empty folder or an earlier explore output may be replaced."""
    if not out.exists():
        return
    if not out.is_dir():
        raise LayerloomError("exists and is not a folder", str(out))
    if any(out.iterdir()) and not (out / PARETO_JSON).is_file():
        raise LayerloomError(f"exists and is not an explore output (no {PARETO_JSON}); remove it or choose another", str(out))


register_command(Command("explore", "sweep architectures and PE budgets, write the Pareto front and plots", configure, run))
