"""The engine-kind registry. Every kind -- the built-in `seml`, `sesl`, `dpu` and
`systolic` included -- comes from the entry-point group `layerloom.engines`:

    [project.entry-points."layerloom.engines"]
    winograd = "my_package.engine:WinogradEngine"

The entry point names the kind used in target files (`kind winograd;`) and points at an
`EngineKind` subclass (instantiated once) or instance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from compiler.engines.base import SUPPORTED, WHOLE, EngineKind, Support, Tile, unsupported
from compiler.engines.workload import Workload, workload_of, workloads
from compiler.errors import LayerloomError

__all__ = [
    "SUPPORTED",
    "WHOLE",
    "EngineKind",
    "Support",
    "Tile",
    "Workload",
    "engine_kind",
    "engine_kind_names",
    "engine_kinds",
    "unsupported",
    "workload_of",
    "workloads",
]

GROUP = "layerloom.engines"


def engine_kind_names() -> list[str]:
    """The names of the registered kinds, without importing any plugin."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


@cache
def engine_kinds() -> dict[str, EngineKind]:
    """Every registered engine kind by name (loaded once per process; tests that add a
    plugin call `engine_kinds.cache_clear()`)."""
    kinds = {ep.name: _load(ep) for ep in entry_points(group=GROUP)}
    if not kinds:
        raise LayerloomError(f"no engine kinds registered in '{GROUP}'; is layerloom installed (pip install -e .)?")
    return kinds


def engine_kind(name: str, where: str = "") -> EngineKind:
    """One kind, loading only its own plugin: a broken plugin spoils only targets using it.
    Entry points are scanned once and each plugin loaded once (the cost model asks for
    kinds thousands of times per mapping); a name not seen before is looked up afresh."""
    if engine_kinds.cache_info().currsize:
        kinds = engine_kinds()
        if name in kinds:
            return kinds[name]
    ep = _registered(entry_points).get(name)
    if ep is None:
        _registered.cache_clear()
        ep = _registered(entry_points).get(name)
    if ep is None:
        raise LayerloomError(f"unknown engine kind '{name}' (known: {', '.join(engine_kind_names())})", where)
    return _load_once(ep)


@cache
def _registered(scan: Callable[..., Iterable[EntryPoint]]) -> dict[str, EntryPoint]:
    """Entry points by name, the last one winning as in engine_kinds(). Keyed by the
    scanning function so that tests which patch `entry_points` see their own."""
    return {ep.name: ep for ep in scan(group=GROUP)}


@cache
def _load_once(ep: EntryPoint) -> EngineKind:
    return _load(ep)


def _load(ep: EntryPoint) -> EngineKind:
    try:
        obj = ep.load()
    except Exception as e:  # a broken plugin is the user's problem: name it, do not crash
        raise LayerloomError(f"cannot load engine kind '{ep.name}' from '{ep.value}': {e}") from None
    plugin = obj() if isinstance(obj, type) else obj
    if not isinstance(plugin, EngineKind):
        raise LayerloomError(f"engine kind '{ep.name}' ({ep.value}) is not an EngineKind")
    if getattr(plugin, "name", ep.name) != ep.name:
        raise LayerloomError(f"engine kind registered as '{ep.name}' calls itself '{plugin.name}' ({ep.value})")
    return plugin
