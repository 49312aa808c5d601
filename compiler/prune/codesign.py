"""The co-design loop of `prune{target=latency hw=NAME arch=... budget=N goal=G}`: the
mapping of the program on the hardware decides where channels go.

- Cost: the period of the program mapped as `layerloom estimate` maps it (the default
  graph pipeline folds batchnorms and fuses activations, then `compiler.mapping.assign`,
  the one cost model): the time between two frames, 1 / throughput. On a reused engine (SEML) it is
  the sum of the layers' times; in a pipeline (SESL) the slowest stage; in a hybrid the
  slower of the two parts; never less than the frame's DRAM bytes at the DRAM bandwidth.
  Only what sets the period counts: shortening a pipeline stage that is not the slowest,
  or a reused engine that waits for the pipeline, gains nothing.
- Rounding: a group's kept channels are multiples of the channel parallelism of the
  engines that run its layers in the unpruned mapping (`EngineKind.channel_multiple`: a
  PE array's output-channel unroll, a DPU's OCP, a systolic array's columns; the least
  common multiple over the group's layers). A group no wider than that is rounded to the
  largest divisor of it that is at most half its channels, so that it stays prunable and
  the array still folds evenly. `multiple=N` overrides this for every group.
- Greedy search: from the unpruned counts, each step prunes one group to a smaller
  candidate count (the counts the sensitivity analysis tries; the first that shortens the
  period, as costs fall in steps): the step that saves the most period per unit of
  sensitivity lost. The period saved is measured by mapping the
  pruned program again -- assign-engines re-balances the PEs, so a step that frees PEs
  in a balanced pipeline gains as much as the freed PEs buy the slowest stage. Sensitivity
  of a count: with data, the measured loss of the group pruned alone (accuracy drop +
  relative output error, compiler.prune.search); without data, the share of the group's
  criterion mass (filter norms) removed. Steps are evaluated lazily (a step's last score
  is an estimate until re-measured; only the best one is re-measured, and taken if it
  stays best). When no step shortens the period (stages that tie), the step saving the
  most frame latency per unit lost is taken, so the next one can.
- The search stops at `goal` x the unpruned period, or fails when no step is left.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.ir import Operation

from compiler.hw.model import Target
from compiler.mapping import HOST, SEML, SESL, LayerGraph, NetworkMapping, assign, check_request
from compiler.program import Program
from compiler.prune.groups import Group

Counts = dict[int, int]
EPS = 1e-6  # least sensitivity a step costs (so that ratios stay finite)
TIE = 1e-9  # relative: times within this of each other are equal


@dataclass(frozen=True)
class LayerTime:
    """A layer in a mapping: its engine, PEs, time per frame, and whether it sets the
    period (a layer of the reused engine when that is the bottleneck, a slowest stage)."""

    name: str
    op: str
    engine: str
    pes: int
    seconds: float
    critical: bool


@dataclass(frozen=True)
class Step:
    """One greedy step: a group pruned further, and what it did to the period."""

    layers: tuple[str, ...]
    channels_before: int
    channels_after: int
    period_before: float
    period_after: float
    loss: float  # sensitivity the step added


@dataclass(frozen=True)
class Multiple:
    layers: tuple[str, ...]
    multiple: int
    engines: tuple[str, ...]  # the engines whose parallelism it is ("" on the host)


@dataclass(frozen=True)
class CodesignReport:
    hw: str
    arch: str
    budget: int
    multiples: tuple[Multiple, ...]
    steps: tuple[Step, ...]
    period_before: float
    period_after: float
    latency_before: float
    latency_after: float
    bottleneck_before: str
    bottleneck_after: str
    layers_before: tuple[LayerTime, ...]
    layers_after: tuple[LayerTime, ...]

    @property
    def throughput_before(self) -> float:
        return 1.0 / self.period_before if self.period_before else math.inf

    @property
    def throughput_after(self) -> float:
        return 1.0 / self.period_after if self.period_after else math.inf

    def lines(self) -> list[str]:
        ratio = self.period_after / self.period_before if self.period_before else 1.0
        out = [
            f"co-design: {self.hw}, {self.arch}, budget {self.budget:,} PEs",
            f"  period (1/throughput) {_us(self.period_before)} -> {_us(self.period_after)} ({ratio:.3f}), "
            f"throughput {self.throughput_before:,.1f} -> {self.throughput_after:,.1f} fps, "
            f"latency {_us(self.latency_before)} -> {_us(self.latency_after)}",
            f"  bottleneck: {self.bottleneck_before} -> {self.bottleneck_after}",
            "  channel multiples: " + ", ".join(
                f"{'+'.join(m.layers)} {m.multiple} ({'/'.join(e or 'host' for e in m.engines)})" for m in self.multiples
            ),
        ]  # fmt: skip
        out.extend(
            f"  step {i}: {'+'.join(s.layers)} {s.channels_before} -> {s.channels_after}: "
            f"period {_us(s.period_before)} -> {_us(s.period_after)}, sensitivity +{s.loss:.4f}"
            for i, s in enumerate(self.steps, 1)
        )
        after = {t.name: t for t in self.layers_after}
        header = ("layer", "op", "engine", "PEs", "time", "sets period")
        rows = []
        for b in self.layers_before:
            a = after.get(b.name, b)
            rows.append((b.name, b.op, _change(b.engine, a.engine), _change(str(b.pes), str(a.pes)),
                         f"{_us(b.seconds)} -> {_us(a.seconds)}", _change(_yes(b.critical), _yes(a.critical))))  # fmt: skip
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        out.extend(
            "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]
        )
        return out


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.4g} us"


def _change(before: str, after: str) -> str:
    return before if before == after else f"{before} -> {after}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "-"


def layer_times(mapping: NetworkMapping) -> tuple[LayerTime, ...]:
    """Per layer of `mapping`: its time per frame and whether it sets the period."""
    bottleneck = mapping.bottleneck
    out = []
    for m in mapping.layers:
        seconds = m.cost.seconds if m.cost is not None else 0.0
        if bottleneck == "reused engine":
            critical = m.role == SEML and seconds > 0
        elif bottleneck == "pipeline":
            critical = m.role == SESL and seconds >= mapping.pipeline_s * (1 - TIE)
        else:
            critical = False
        out.append(LayerTime(m.layer.name, m.layer.op, m.engine, m.pes, seconds, critical))
    return tuple(out)


def mapped(program: Program, target: Target, arch: str, budget: int | None, owned: bool = False) -> NetworkMapping:
    """`program` mapped as `layerloom estimate` maps a model: after the default graph
    pipeline (canonicalize, fold-batchnorm, fuse-activation: batchnorms fold into their
    convs, activations fuse), by assign-engines. `owned`: `program` may be changed."""
    from compiler.cli import DEFAULT_PIPELINE
    from compiler.pipeline import run_pipeline

    graph = run_pipeline(program if owned else program.clone(), DEFAULT_PIPELINE, verify_each=False)
    return assign(LayerGraph.of_module(graph.module)[0], target, arch, budget)


class Codesign:
    """The mapping side of the loop: maps programs on `target` and gives each group its
    channel multiple from the unpruned mapping."""

    def __init__(self, program: Program, target: Target, hw: str, arch: str, budget: int | None, where: str) -> None:
        check_request(target, arch, budget, where)
        self.target, self.hw, self.arch, self.budget = target, hw, arch, budget
        self.before = self.map(program)
        self.by_name = {m.layer.name: m for m in self.before.layers}

    def map(self, program: Program, owned: bool = False) -> NetworkMapping:
        return mapped(program, self.target, self.arch, self.budget, owned)

    def multiple(self, group: Group, names: Mapping[Operation, str]) -> tuple[int, tuple[str, ...]]:
        """The group's channel multiple (module doc) and the engines it comes from; layers
        are found in the mapping by name (`names`: compiler.analysis's, kept by the folds)."""
        engines = {e.name: e.engine for e in self.before.engines}
        found: list[tuple[int, str]] = []
        for op in (*group.sources, *group.followers):
            layer = self.by_name.get(names.get(op, ""))
            if layer is None or not layer.layer.has_macs:
                continue
            if layer.role == HOST:
                found.append((1, ""))
                continue
            engine = engines[layer.engine]
            found.append((engine.kind_plugin.channel_multiple(layer.layer, engine, layer.pes), layer.engine))
        multiple = math.lcm(*(m for m, _ in found)) if found else 1
        if multiple >= group.channels:
            multiple = max(d for d in range(1, max(1, group.channels // 2) + 1) if multiple % d == 0)
        return multiple, tuple(dict.fromkeys(e for _, e in found))

    def report(self, after: NetworkMapping, multiples: Sequence[Multiple], steps: Sequence[Step]) -> CodesignReport:
        b = self.before
        return CodesignReport(
            self.hw, self.arch, b.assignment.budget, tuple(multiples), tuple(steps), b.period_s, after.period_s,
            b.latency_s, after.latency_s, b.bottleneck, after.bottleneck, layer_times(b), layer_times(after),
        )  # fmt: skip


def mass_loss(scores: np.ndarray) -> dict[int, float]:
    """Without data, the sensitivity of keeping k channels: the share of the group's
    criterion mass (summed filter norms) in the channels removed, for every k."""
    ordered = np.sort(np.asarray(scores, np.float64))[::-1]
    total = float(ordered.sum())
    kept = np.concatenate([[0.0], np.cumsum(ordered)])
    return {k: (1.0 - kept[k] / total) if total > 0 else 0.0 for k in range(len(ordered) + 1)}


@dataclass
class _Estimate:
    key: tuple[bool, float]  # (shortens the period, saving per unit loss)
    version: int  # the state it was measured in
    count: int
    period: float
    loss: float


def greedy(start: Counts, candidates: Mapping[int, Sequence[int]], sensitivity: Callable[[int, int], float],
           cost: Callable[[Counts], tuple[float, float]], limit: float) -> tuple[Counts, list[tuple[int, int, int, float, float, float]]]:  # fmt: skip
    """The greedy search of the module doc. `cost(counts)` = (period, latency);
    `sensitivity(group, count)` grows as a group keeps fewer channels. Returns the counts
    reached and the steps: (group, before, after, period before, period after, loss)."""
    counts = dict(start)
    period, latency = cost(counts)
    steps: list[tuple[int, int, int, float, float, float]] = []
    version = 0
    estimates: dict[int, _Estimate] = {}

    def measure(g: int) -> _Estimate | None:
        """Group g's step: to the first of its next counts that shortens the period (costs
        are staircases: a fold that is not emptied saves nothing), else to the next one."""
        fallback = None
        for k in (k for k in candidates[g] if k < counts[g]):
            p, lat = cost(counts | {g: k})
            loss = max(sensitivity(g, k) - sensitivity(g, counts[g]), 0.0) + EPS
            if p < period * (1 - TIE):
                return _Estimate((True, (period - p) / loss), version, k, p, loss)
            fallback = fallback or _Estimate((False, (latency - lat) / loss), version, k, p, loss)
        return fallback

    def refresh_all() -> None:
        estimates.clear()
        for g in candidates:
            if (e := measure(g)) is not None:
                estimates[g] = e

    refresh_all()
    while period > limit and estimates:
        g = max(estimates, key=lambda x: estimates[x].key)
        best = estimates[g]
        if best.version != version:
            fresh = measure(g)
            if fresh is None:
                del estimates[g]
            else:
                estimates[g] = fresh
            continue  # taken next round if it is still the best
        if not best.key[0] and any(e.version != version for e in estimates.values()):
            refresh_all()  # no fresh step shortens the period: make sure none does
            continue
        if best.key[1] <= 0:
            break  # nothing shortens the period or the frame latency any more
        steps.append((g, counts[g], best.count, period, best.period, best.loss))
        counts[g] = best.count
        period, latency = cost(counts)
        version += 1
        if (e := measure(g)) is not None:
            estimates[g] = e
        else:
            del estimates[g]
    return counts, steps


__all__ = ["CodesignReport", "Codesign", "LayerTime", "Multiple", "Step", "greedy", "layer_times", "mapped", "mass_loss"]
