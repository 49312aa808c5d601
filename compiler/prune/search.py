"""How many channels each group keeps: rounding to a multiple, scoring a pruned program on
data, and the searches that meet a cost target (FLOPs, parameters or latency).

- Rounding: a group of C channels pruned by `ratio` keeps the multiple of `multiple`
  nearest to C·(1 - ratio) (ties keep more), at least one multiple and at most C; C itself
  is always allowed, so a group narrower than `multiple` is never pruned.
- Sensitivity: every prunable group is pruned alone to each candidate count (ratios
  max_ratio/steps, 2·max_ratio/steps, ..., max_ratio, rounded) and the program is scored
  on the data: the drop in top-1 accuracy when labels are given, then the relative L2
  error of the outputs against the unpruned program. The loss of a count is the pair
  (accuracy drop, error), compared in that order.
- Threshold search (Li et al., "Pruning filters for efficient ConvNets"): for a loss
  threshold t every group keeps the fewest channels whose loss is at most t. A larger t
  prunes at least as much everywhere, so the cost falls as t grows; a binary search over
  the measured losses finds the smallest t whose program meets the goal.
- Without data the ratio is uniform: the smallest uniform ratio (in steps of 0.01) whose
  program meets the goal.
Costs are measured on the pruned program itself (compiler.analysis, the cost model), not
estimated, so the goal is met exactly as the reports count it. `target=latency` searches
differently, with the mapping in the loop: compiler.prune.codesign.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from compiler.analysis import analyze, totals
from compiler.errors import LayerloomError
from compiler.program import Program
from compiler.quant import calibrate

LABELS_KEY = "labels"
TARGETS = ("flops", "params", "latency")
UNIFORM_STEP = 0.01

Counts = dict[int, int]  # group index -> channels kept
T = TypeVar("T")
Loss = tuple[float, float]  # (accuracy drop, relative output error)


def kept_channels(channels: int, ratio: float, multiple: int = 1) -> int:
    """Channels a group of `channels` keeps when pruned by `ratio` (see the module doc)."""
    if ratio <= 0 or channels <= multiple:
        return channels
    want = channels * (1.0 - ratio)
    options = np.append(np.arange(multiple, channels + 1, multiple), channels)
    distance = np.round(np.abs(options - want), 9)
    return int(options[np.lexsort((-options, distance))[0]])


def candidate_counts(channels: int, multiple: int, max_ratio: float, steps: int) -> list[int]:
    """The distinct counts below `channels` that the sensitivity analysis tries, most first."""
    ratios = np.linspace(0.0, max_ratio, steps + 1)[1:]
    return sorted({kept_channels(channels, float(r), multiple) for r in ratios} - {channels}, reverse=True)


# ---------------------------------------------------------------------------------------
# Data and scores
# ---------------------------------------------------------------------------------------


def as_batches(program: Program, data: object, where: str) -> list[calibrate.Batch]:
    """`data` (an array for a one-input program, a {input name: array} mapping, or an
    iterable of such mappings) as batches of the program's input shapes, samples in order."""
    from backends.reference.executor import main_function

    specs = calibrate.input_specs(main_function(program.module, program.source))
    if isinstance(data, np.ndarray):
        if len(specs) != 1:
            raise LayerloomError(f"the program has {len(specs)} inputs: give the data as {{name: array}}", where)
        data = {specs[0].name: data}
    items = [data] if isinstance(data, Mapping) else list(data)  # type: ignore[call-overload]
    if not all(isinstance(item, Mapping) for item in items):
        raise LayerloomError("data must be an array, {input name: array}, or a list of such dicts", where)
    return calibrate.batches(specs, items, where)


def load_data(path: str, input_names: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The inputs of an `.npz` keyed by input name, and its `labels` array if it has one
    (and no input is called `labels`)."""
    [arrays] = calibrate.load_calibration(path)
    labels = arrays.pop(LABELS_KEY) if LABELS_KEY in arrays and LABELS_KEY not in input_names else None
    return arrays, labels


@dataclass(frozen=True)
class Score:
    """A program on the data: top-1 accuracy (None without labels) and the relative L2
    error of its outputs against the unpruned program's, sqrt(sum (y - y0)^2 / sum y0^2)."""

    accuracy: float | None
    error: float


class Evaluator:
    """Runs programs over fixed batches and scores them against the unpruned `reference`."""

    def __init__(self, reference: Program, batches: list[calibrate.Batch], labels: object, where: str) -> None:
        self.batches = batches
        self.reference = [self.run(reference, b) for b in batches]
        self.labels = None if labels is None else np.asarray(labels).reshape(-1)
        if self.labels is not None:
            samples = sum(len(out[0]) for out in self.reference)
            if len(self.labels) != samples:
                raise LayerloomError(f"{len(self.labels)} labels for {samples} samples", where)
            first = self.reference[0][0]
            if first.ndim != 2:
                raise LayerloomError(f"accuracy needs a first output of shape samples x classes, not "
                                     f"{'x'.join(map(str, first.shape))}", where)  # fmt: skip
        self.baseline = self.score_outputs(self.reference)

    @staticmethod
    def run(program: Program, batch: calibrate.Batch) -> list[np.ndarray]:
        from backends.reference.executor import execute

        return [np.asarray(a, np.float64) for a in execute(program, batch).values()]

    def score(self, program: Program) -> Score:
        return self.score_outputs([self.run(program, b) for b in self.batches])

    def score_outputs(self, outputs: list[list[np.ndarray]]) -> Score:
        accuracy = None
        if self.labels is not None:
            predicted = np.concatenate([out[0].argmax(axis=1) for out in outputs])
            accuracy = float(np.mean(predicted == self.labels))
        diff = sum(float(np.square(y - y0).sum()) for out, ref in zip(outputs, self.reference, strict=True)
                   for y, y0 in zip(out, ref, strict=True))  # fmt: skip
        norm = sum(float(np.square(y0).sum()) for ref in self.reference for y0 in ref)
        return Score(accuracy, float(np.sqrt(diff / norm)) if norm > 0 else float(np.sqrt(diff)))

    def loss(self, score: Score) -> Loss:
        base = self.baseline.accuracy
        drop = 0.0 if score.accuracy is None or base is None else base - score.accuracy
        return (round(drop, 12), score.error)


# ---------------------------------------------------------------------------------------
# Costs and searches
# ---------------------------------------------------------------------------------------


def cost_function(target: str, where: str) -> Callable[[Program], float]:
    """The cost a `target` counts: MACs or parameters (target=latency searches with the
    mapping in the loop instead: compiler.prune.codesign)."""
    if target == "flops":
        return lambda p: float(totals(analyze(p)).macs)
    if target == "params":
        return lambda p: float(totals(analyze(p)).params)
    raise LayerloomError(f"target '{target}' has no cost function here (flops or params)", where)


def first_meeting(configs: Sequence[Counts], cost_of: Callable[[Counts], float], budget: float) -> int | None:
    """The first config whose cost is within `budget`, for costs that never rise along
    `configs` (binary search); None if not even the last one is."""
    if cost_of(configs[-1]) > budget:
        return None
    lo, hi = 0, len(configs) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cost_of(configs[mid]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return lo


def threshold_configs(start: Counts, candidates: Mapping[int, Sequence[int]],
                      losses: Mapping[int, Mapping[int, Loss]]) -> list[Counts]:  # fmt: skip
    """One config per distinct loss threshold, least pruning first: each group keeps the
    fewest of its candidate counts whose loss is within the threshold."""
    thresholds = sorted({loss for per_group in losses.values() for loss in per_group.values()})
    configs: list[Counts] = []
    for t in thresholds:
        counts = dict(start)
        for g, options in candidates.items():
            within = [k for k in options if losses[g][k] <= t]
            counts[g] = min([start[g], *within])
        if not configs or counts != configs[-1]:
            configs.append(counts)
    return configs or [dict(start)]


def uniform_configs(
    start: Counts, channels: Mapping[int, int], multiple: int, max_ratio: float
) -> list[tuple[float, Counts]]:
    """(ratio, config) for uniform ratios 0, 0.01, ... max_ratio over the groups in
    `channels` (the others keep their `start` count), distinct configs only."""
    out: list[tuple[float, Counts]] = []
    for r in np.round(np.arange(0.0, max_ratio + UNIFORM_STEP / 2, UNIFORM_STEP), 2):
        counts = dict(start) | {g: kept_channels(c, float(r), multiple) for g, c in channels.items()}
        if not out or counts != out[-1][1]:
            out.append((float(r), counts))
    return out


def memoised(cost: Callable[[Counts], T]) -> Callable[[Counts], T]:
    seen: dict[tuple[tuple[int, int], ...], T] = {}

    def cached(counts: Counts) -> T:
        key = tuple(sorted(counts.items()))
        if key not in seen:
            seen[key] = cost(counts)
        return seen[key]

    return cached


def sensitivity(groups: Iterable[int], candidates: Mapping[int, Sequence[int]], start: Counts,
                score_of: Callable[[Counts], Score]) -> dict[int, dict[int, Score]]:  # fmt: skip
    """The score of pruning each group alone to each of its candidate counts."""
    return {g: {k: score_of(start | {g: k}) for k in candidates[g]} for g in groups}
