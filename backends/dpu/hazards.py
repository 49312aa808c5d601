"""The hazard rule of docs/isa.md section 6, checked access by access.

Every instruction's accesses are `Region`s: a run of words of an on-chip memory, or a
strided box of DDR bytes. `HazardTracker` remembers, per location and per queue, the last
instruction that wrote it and the last that read it. Happens-before is kept as a vector
clock per instruction (`clock[q]` = the latest instruction of queue q ordered before it,
-1 for none), so "a happens-before b" is `a <= clock_b[queue(a)]`, and the check of one
access is a max-reduction per queue over the region's entries.

Two users: the simulator raises on the first unordered pair (`conflicts`), the program
builder adds the tokens that order it (backends/dpu/builder.py).
"""

from __future__ import annotations

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
        self, index: int, queue: int, clock: Clock, reads: Sequence[Region], writes: Sequence[Region]
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


def clocks(queues: Sequence[int | None], token_pairs: Sequence[Token]) -> list[Clock]:
    """The vector clock of every instruction (queue index, None for END): the max of its
    queue predecessor's and its signallers' clocks, with its own entry set to itself."""
    signallers: dict[int, list[int]] = {}
    for t in token_pairs:
        signallers.setdefault(t.waiter, []).append(t.signaller)
    last: list[Clock] = [NO_CLOCK] * len(QUEUES)
    out: list[Clock] = []
    for i, q in enumerate(queues):
        if q is None:
            out.append(NO_CLOCK)
            continue
        c = last[q]
        for s in signallers.get(i, ()):
            c = merge(c, out[s])
        out.append(advance(c, q, i))
        last[q] = out[-1]
    return out


def advance(clock: Clock, queue: int, index: int) -> Clock:
    """`clock` with instruction `index` as the latest of its queue."""
    c = list(clock)
    c[queue] = index
    return (c[0], c[1], c[2])


def merge(a: Clock, b: Clock) -> Clock:
    return (max(a[0], b[0]), max(a[1], b[1]), max(a[2], b[2]))
