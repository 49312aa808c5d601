"""The hazard rule of docs/isa.md section 6.

Every instruction's accesses are `Region`s: a run of words of an on-chip memory, or a
strided box of DDR bytes. Happens-before is kept as a vector clock per instruction
(`clock[q]` = the latest instruction of queue q ordered before it, -1 for none), so
"a happens-before b" is `a <= clock_b[queue(a)]`.

Two ways to check, one answer (tests compare them):
- `first_hazard`, the whole program at once: only an instruction of another queue that
  a clock does not order can conflict, so those pairs (one or two per instruction with
  double buffering) are enumerated with NumPy and their regions compared. The simulator
  checks a program so.
- `HazardTracker`, access by access: per location and queue the last instruction that
  wrote it and the last that read it, a max-reduction per queue over a region's entries.
  The builder adds the tokens it finds missing (backends/dpu/builder.py); the simulator
  replays the first instruction `first_hazard` found through it to name the unordered
  pair.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from backends.dpu.isa import QUEUES, Token
from backends.dpu.memory import strided_box

Clock = tuple[int, int, int]
NO_CLOCK: Clock = (-1, -1, -1)


class Region(NamedTuple):
    """A (rows, cols, chans) box of entries of `space` from entry `start` with entry
    strides; on-chip runs of words are (1, 1, count) boxes. Spaces: `fmap<bank>`,
    `weights`, `bias` (entries are words) and `ddr:<region>` (entries are bytes).
    A NamedTuple, not a dataclass: the planner makes two or three per instruction."""

    space: str
    start: int
    rows: int = 1
    cols: int = 1
    chans: int = 1
    row_stride: int = 0
    col_stride: int = 0

    @staticmethod
    def words(space: str, start: int, count: int) -> Region:
        return Region(space, start, 1, 1, count, count, count)

    @property
    def onchip(self) -> bool:
        return not self.space.startswith("ddr:")

    @property
    def dense(self) -> bool:
        """Whether the entries are one contiguous run."""
        return (self.cols == 1 or self.col_stride == self.chans) and (
            self.rows == 1 or self.row_stride == self.cols * self.chans)

    @property
    def stop(self) -> int:
        return self.start + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + self.chans

    def describe(self) -> str:
        if self.onchip:
            memory = f"fmap bank {self.space[4:]}" if self.space.startswith("fmap") else f"{self.space} bank"
            return f"{memory} words {self.start:#x}..{self.stop - 1:#x}"
        return f"DDR {self.space[4:]} + {self.start:#x} ({self.rows}x{self.cols}x{self.chans} box)"

    def overlaps(self, other: Region) -> bool:
        """Conservative for boxes (their bounding ranges), exact for runs of words."""
        return self.space == other.space and self.start < other.stop and other.start < self.stop


@dataclass(frozen=True)
class Conflict:
    """`earlier` and `later` (instruction indices, queues differ) touch `region` in the
    way `kind` says (RAW, WAR or WAW) without a token chain ordering them; `earlier` is
    -1 for a read of on-chip words nothing wrote (kind 'uninitialised')."""

    earlier: int
    later: int
    kind: str
    region: Region


class _Space:
    """Last writer and last reader per queue of every entry of one space, grown on demand
    (tables for a queue exist once that queue touched the space)."""

    def __init__(self) -> None:
        self.size = 0
        self.tables: dict[tuple[str, int], np.ndarray] = {}

    def ensure(self, stop: int) -> None:
        if stop <= self.size:
            return
        size = max(stop, 2 * self.size, 1024)
        for key, table in self.tables.items():
            grown = np.full(size, -1, np.int32)
            grown[: self.size] = table
            self.tables[key] = grown
        self.size = size

    def view(self, kind: str, queue: int, r: Region, create: bool = False) -> np.ndarray | None:
        table = self.tables.get((kind, queue))
        if table is None:
            if not create:
                return None
            table = self.tables[(kind, queue)] = np.full(self.size, -1, np.int32)
        if r.dense:
            return table[r.start : r.stop]
        return strided_box(table, r.start, r.rows, r.cols, r.chans, r.row_stride, r.col_stride)


class HazardTracker:
    """Accesses recorded in program order, checked against the earlier ones."""

    def __init__(self) -> None:
        self.spaces: dict[str, _Space] = {}

    def _space(self, r: Region) -> _Space:
        space = self.spaces.get(r.space)
        if space is None:
            space = self.spaces[r.space] = _Space()
        space.ensure(r.stop)
        return space

    def conflicts(
        self, index: int, queue: int, clock: Clock | np.ndarray, reads: Sequence[Region], writes: Sequence[Region]
    ) -> list[Conflict]:
        """The latest unordered earlier access per (region, other queue, kind), and reads
        of on-chip words that nothing wrote."""
        found: list[Conflict] = []
        for r in reads:
            space = self._space(r)
            writers = [(q, v) for q in range(len(QUEUES)) if (v := space.view("w", q, r)) is not None]
            for q, v in writers:
                if q != queue and (latest := int(v.max())) > clock[q]:
                    found.append(Conflict(latest, index, "RAW", r))
            if r.onchip and not all_written([v for _, v in writers]):
                found.append(Conflict(-1, index, "uninitialised", r))
        for r in writes:
            space = self._space(r)
            for q in range(len(QUEUES)):
                if q == queue:
                    continue
                for kind, name in (("w", "WAW"), ("r", "WAR")):
                    table = space.view(kind, q, r)
                    if table is not None and (latest := int(table.max())) > clock[q]:
                        found.append(Conflict(latest, index, name, r))
        return found

    def record(self, index: int, queue: int, reads: Sequence[Region], writes: Sequence[Region]) -> None:
        for kind, regions in (("r", reads), ("w", writes)):
            for r in regions:
                view = self._space(r).view(kind, queue, r, create=True)
                assert view is not None
                view[...] = index


def all_written(writers: list[np.ndarray]) -> bool:
    """Whether every entry has a writer, given each queue's last writers of the entries."""
    if not writers:
        return False
    latest = writers[0] if len(writers) == 1 else np.maximum.reduce(writers)
    return bool(latest.min() >= 0)


def clocks(queues: Sequence[int | None], token_pairs: Sequence[Token]) -> np.ndarray:
    """The vector clock of every instruction (queue index, None for END) as the rows of an
    (instructions, queues) array: the max of its queue predecessor's and its signallers'
    clocks, with its own entry set to itself (END's row all -1).

    Whole columns at a time: a pass takes each waiter's signallers' clocks, then a running
    max along every queue; pass k knows the chains of k tokens. Until nothing changes (a
    shortest chain passes each queue once, so at most len(QUEUES) - 1 passes add)."""
    queue = np.array([-1 if q is None else q for q in queues], np.int64)
    own = np.full((queue.size, len(QUEUES)), -1, np.int64)
    queued = np.flatnonzero(queue >= 0)
    own[queued, queue[queued]] = queued
    members = [np.flatnonzero(queue == q) for q in range(len(QUEUES))]
    waiter = np.array([t.waiter for t in token_pairs], np.int64)
    signaller = np.array([t.signaller for t in token_pairs], np.int64)
    signaller, waiter = signaller[queue[waiter] >= 0], waiter[queue[waiter] >= 0]  # END keeps no clock
    clock = own
    while True:
        joined = own.copy()
        np.maximum.at(joined, waiter, clock[signaller])
        for m in members:
            joined[m] = np.maximum.accumulate(joined[m], axis=0)
        if np.array_equal(joined, clock):
            return clock
        clock = joined


def advance(clock: Clock, queue: int, index: int) -> Clock:
    """`clock` with instruction `index` as the latest of its queue."""
    c = list(clock)
    c[queue] = index
    return (c[0], c[1], c[2])


def merge(a: Clock, b: Clock) -> Clock:
    return (max(a[0], b[0]), max(a[1], b[1]), max(a[2], b[2]))


# ---------------------------------------------------------------------------------------
# The whole program at once
# ---------------------------------------------------------------------------------------

Accesses = tuple[int, int, Sequence[Region], Sequence[Region]]  # (index, queue, reads, writes)
PAIRS_PER_BLOCK = 1 << 20


def first_hazard(accesses: Sequence[Accesses], clock: Sequence[Clock] | np.ndarray) -> int | None:
    """The index of the first instruction that breaks the hazard rule or reads on-chip
    entries that no earlier instruction wrote (what `HazardTracker.conflicts` finds, in
    program order), None if none does.

    The whole program at once, without per-entry tables: an access of instruction b can
    only conflict with an instruction a of another queue q that b's clock does not order,
    a in (clock_b[q], b) -- with double buffering one or two instructions -- so those
    pairs are enumerated and their regions compared (bounding ranges, then entry by entry
    for strided DDR boxes whose ranges meet). Reads of on-chip words are compared with the
    first instruction that wrote each word."""
    table = _AccessTable(accesses)
    if table.size == 0:
        return None
    first = [table.first_unordered_overlap(np.asarray(clock, np.int64)), table.first_uninitialised_read()]
    found = [i for i in first if i is not None]
    return min(found) if found else None


class _AccessTable:
    """Every region of a program's accesses as arrays, in program order."""

    def __init__(self, accesses: Sequence[Accesses]) -> None:
        index, queue, reads, writes = zip(*accesses, strict=True) if accesses else ((), (), (), ())
        groups = [group for pair in zip(reads, writes, strict=True) for group in pair]  # reads first
        # Each distinct region once (steps share their template's), as a row of numbers.
        regions = list(itertools.chain.from_iterable(groups))
        distinct = dict.fromkeys(regions, 0)
        for k, r in enumerate(distinct):
            distinct[r] = k
        space_ids: dict[str, int] = {}
        rows = np.array([(space_ids.setdefault(r.space, len(space_ids)), *r[1:]) for r in distinct], np.int64)
        counts = list(map(len, groups))
        self.size = len(regions)
        self.space_names = list(space_ids)
        per_instruction = np.array(counts, np.int64).reshape(-1, 2)
        self.index = np.repeat(np.array(index, np.int64), per_instruction.sum(axis=1))
        self.queue = np.repeat(np.array(queue, np.int64), per_instruction.sum(axis=1))
        self.writes = np.repeat(np.tile([False, True], len(index)), per_instruction.reshape(-1))
        numbers = rows.reshape(-1, 7)[np.fromiter(map(distinct.__getitem__, regions), np.int64, count=self.size)]
        self.numbers = numbers
        space, start, rows, cols, chans, row_stride, col_stride = numbers.T
        self.space, self.start = space, start
        self.onchip = np.array([not name.startswith("ddr:") for name in space_ids] or [False])[space]
        self.stop = start + (rows - 1) * row_stride + (cols - 1) * col_stride + chans
        self.dense = ((cols == 1) | (col_stride == chans)) & ((rows == 1) | (row_stride == cols * chans))

    def region(self, k: int) -> Region:
        space, *numbers = self.numbers[k].tolist()
        return Region(self.space_names[space], *numbers)

    def first_unordered_overlap(self, clock: np.ndarray) -> int | None:
        """The first instruction b with a region meeting one of an instruction a of another
        queue, a in (clock_b[queue a], b), one of the two a write."""
        instructions, at = np.unique(self.index, return_index=True)  # regions of an instruction are consecutive
        counts = np.diff(np.append(at, self.size))
        queues = self.queue[at]
        found: int | None = None
        for q in range(len(QUEUES)):
            members = instructions[queues == q]
            others = queues != q
            b = instructions[others]
            lo = np.searchsorted(members, clock[b, q], side="right")
            hi = np.searchsorted(members, b, side="left")
            # instruction pairs (b, a), then their region pairs
            pair_b = np.repeat(np.flatnonzero(others), hi - lo)
            pair_a = np.searchsorted(instructions, members[_ranges(lo, hi)])
            for block in range(0, pair_b.size, PAIRS_PER_BLOCK):
                later = self._overlaps(at, counts, pair_b[block : block + PAIRS_PER_BLOCK],
                                       pair_a[block : block + PAIRS_PER_BLOCK])
                if later is not None:
                    found = later if found is None else min(found, later)
                    break
        return found

    def _overlaps(self, at: np.ndarray, counts: np.ndarray, pair_b: np.ndarray, pair_a: np.ndarray) -> int | None:
        """The first instruction b among the pairs (positions into `at`) whose regions meet."""
        nb, na = counts[pair_b], counts[pair_a]
        pair = np.repeat(np.arange(pair_b.size), nb * na)
        k = _ranges(np.zeros_like(nb), nb * na)
        rb = at[pair_b][pair] + k // na[pair]
        ra = at[pair_a][pair] + k % na[pair]
        meet = ((self.space[rb] == self.space[ra]) & (self.writes[rb] | self.writes[ra])
                & (self.start[rb] < self.stop[ra]) & (self.start[ra] < self.stop[rb]))
        rb, ra = rb[meet], ra[meet]
        exact = self.dense[rb] & self.dense[ra]  # runs of entries: the ranges are the entries
        hits = rb[exact]
        later = int(self.index[hits].min()) if hits.size else None
        for i, j in zip(rb[~exact].tolist(), ra[~exact].tolist(), strict=True):
            if (later is None or self.index[i] < later) and _boxes_meet(self.region(i), self.region(j)):
                later = int(self.index[i])
        return later

    def first_uninitialised_read(self) -> int | None:
        """The first instruction reading on-chip words that no earlier instruction wrote."""
        onchip_writes = np.flatnonzero(self.onchip & self.writes)
        onchip_reads = np.flatnonzero(self.onchip & ~self.writes)
        if onchip_reads.size == 0:
            return None
        # Per space, the first instruction that wrote each word, then its latest over each read.
        size = np.zeros(int(self.space.max()) + 1, np.int64)
        np.maximum.at(size, self.space[self.onchip], self.stop[self.onchip])
        offset = np.concatenate([[0], np.cumsum(size)])
        lo, hi = self.start + offset[self.space], self.stop + offset[self.space]
        written = _least_cover(lo[onchip_writes], hi[onchip_writes], self.index[onchip_writes], int(offset[-1]) + 1)
        reads_lo = lo[onchip_reads]
        latest_first = _range_max(written, reads_lo, np.maximum(hi[onchip_reads], reads_lo + 1))
        bad = onchip_reads[latest_first >= self.index[onchip_reads]]
        return int(self.index[bad].min()) if bad.size else None


def _floor_log2(n: np.ndarray) -> np.ndarray:
    return np.frexp(n.astype(np.float64))[1].astype(np.int64) - 1


def _least_cover(lo: np.ndarray, hi: np.ndarray, value: np.ndarray, size: int) -> np.ndarray:
    """Per entry of arange(size), the least value of the ranges [lo, hi) covering it (int64
    max for none), without expanding the ranges: each range is two blocks of a power-of-two
    length, whose levels are pushed down to single entries."""
    nonempty = hi > lo
    lo, hi, value = lo[nonempty], hi[nonempty], value[nonempty]
    level = _floor_log2(hi - lo) if lo.size else np.zeros(0, np.int64)
    levels = int(level.max()) + 1 if lo.size else 1
    table = np.full((levels, size), np.iinfo(np.int64).max)
    np.minimum.at(table.reshape(-1), level * size + lo, value)
    np.minimum.at(table.reshape(-1), level * size + hi - (1 << level), value)
    for j in range(levels - 1, 0, -1):
        half = 1 << (j - 1)
        np.minimum(table[j - 1], table[j], out=table[j - 1])
        np.minimum(table[j - 1, half:], table[j, : size - half], out=table[j - 1, half:])
    return table[0]


def _range_max(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """max(values[lo[i]:hi[i]]) for every i (non-empty ranges), from a sparse table of
    power-of-two block maxima."""
    level = _floor_log2(hi - lo)
    size = values.size
    table = [values]
    for j in range(1, int(level.max()) + 1 if lo.size else 1):
        half = 1 << (j - 1)
        previous = table[-1]
        table.append(np.concatenate([np.maximum(previous[: size - half], previous[half:]), previous[size - half :]]))
    stacked = np.stack(table).reshape(-1)
    return np.maximum(stacked[level * size + lo], stacked[level * size + hi - (1 << level)])


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The concatenation of arange(lo[i], hi[i])."""
    n = hi - lo
    return np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n - lo, n)


def _entries(r: Region) -> np.ndarray:
    return (np.arange(r.rows)[:, None, None] * r.row_stride + np.arange(r.cols)[None, :, None] * r.col_stride
            + np.arange(r.chans)[None, None, :] + r.start).reshape(-1)


def _boxes_meet(a: Region, b: Region) -> bool:
    """Whether two boxes of one space share an entry."""
    return bool(np.isin(_entries(a), _entries(b)).any())
