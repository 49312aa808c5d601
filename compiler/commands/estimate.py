"""`layerloom estimate MODEL --hw TARGET [--arch seml|sesl|hybrid] [--budget N] [--json]`:
map the model (assign-engines, tile, plan-memory) and print what it costs per layer --
engine, PEs, MACs, cycles, DRAM and on-chip bytes, compute- or memory-bound -- with the
totals and the adaptive-resource report (the energy a per-layer DVFS policy saves).
`--json` prints one JSON object instead (`throughput_fps`, `latency_s`, `energy_j`,
`layers`, ...)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from compiler.cli import Command, register_command
from compiler.commands.common import ARCH_HELP, add_model_flags, default_archs, load_program, parse_archs, parse_budgets
from compiler.errors import LayerloomError


def configure(p: argparse.ArgumentParser) -> None:
    add_model_flags(p)
    p.add_argument("--arch", help=f"{ARCH_HELP} (default: hybrid, or seml on a target without sesl engines)")
    p.add_argument("--budget", metavar="N", help="PE budget (default: the target's pe_budget)")
    p.add_argument("--plan", default="auto", help="memory plan (default: the cheapest by the cost model)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def run(args: argparse.Namespace) -> int:
    from xdsl.passes import PassPipeline

    from compiler.hw import load_target
    from compiler.mapping import HOST, PLANS, check_request, mapping_of_module
    from compiler.mapping_report import estimate_report, estimate_table
    from compiler.pipeline import run_pipeline
    from passes.assign_engines import AssignEnginesPass
    from passes.plan_memory import PlanMemoryPass
    from passes.tile import TilePass

    # Everything cheap is checked before the model is read.
    target = load_target(args.hw)
    archs = parse_archs(args.arch) if args.arch is not None else default_archs(target)[-1:]
    if len(archs) != 1:
        raise LayerloomError("give one architecture (explore sweeps several)", "--arch")
    budgets = parse_budgets(args.budget) if args.budget is not None else [0]
    if len(budgets) != 1:
        raise LayerloomError("give one budget (explore sweeps several)", "--budget")
    if args.plan != "auto" and args.plan not in PLANS:
        raise LayerloomError(f"unknown memory plan '{args.plan}' (one of auto, {', '.join(PLANS)})", "--plan")
    budget = check_request(target, archs[0], budgets[0] or None, "--budget")
    program = load_program(args.model, args.input_shape)

    start = time.perf_counter()
    mapping_passes = (AssignEnginesPass(archs[0], budget, args.hw), TilePass(), PlanMemoryPass(plan=args.plan))
    run_pipeline(program, PassPipeline(mapping_passes))  # type: ignore[arg-type]
    mapping = mapping_of_module(program.module, target)  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - start

    report = estimate_report(mapping, {"model": args.model, "estimate_seconds": elapsed})
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        sys.stdout.write(estimate_table(report))
    host = [r["name"] for r in report["layers"] if r["engine"] == HOST]
    if host:
        more = f" and {len(host) - 5} more" if len(host) > 5 else ""
        print(f"layerloom: note: {len(host)} layers run on the host (no {archs[0]} engine of '{target.name}' "
              f"runs them): {', '.join(host[:5])}{more}", file=sys.stderr)  # fmt: skip
    return 0


register_command(Command("estimate", "map a model onto a hardware target and print its cost per layer", configure, run))
