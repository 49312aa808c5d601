"""The engine-kind registry. Every kind -- the built-in `seml`, `sesl`, `dpu` and
`systolic` included -- comes from the entry-point group `layerloom.engines`:

    [project.entry-points."layerloom.engines"]
    winograd = "my_package.engine:WinogradEngine"

The entry point names the kind used in target files (`kind winograd;`) and points at an
`EngineKind` subclass (instantiated once) or instance.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

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
    "engine_kinds",
    "unsupported",
    "workload_of",
    "workloads",
]

GROUP = "layerloom.engines"


@cache
def engine_kinds() -> dict[str, EngineKind]:
    """Every registered engine kind by name (loaded once per process; tests that add a
    plugin call `engine_kinds.cache_clear()`)."""
    kinds: dict[str, EngineKind] = {}
    for ep in entry_points(group=GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # a broken plugin is the user's problem: name it, do not crash
            raise LayerloomError(f"cannot load engine kind '{ep.name}' from '{ep.value}': {e}") from None
        plugin = obj() if isinstance(obj, type) else obj
        if not isinstance(plugin, EngineKind):
            raise LayerloomError(f"engine kind '{ep.name}' ({ep.value}) is not an EngineKind")
        if getattr(plugin, "name", ep.name) != ep.name:
            raise LayerloomError(f"engine kind registered as '{ep.name}' calls itself '{plugin.name}' ({ep.value})")
        kinds[ep.name] = plugin
    if not kinds:
        raise LayerloomError(f"no engine kinds registered in '{GROUP}'; is layerloom installed (pip install -e .)?")
    return kinds


def engine_kind(name: str, where: str = "") -> EngineKind:
    kinds = engine_kinds()
    if name not in kinds:
        raise LayerloomError(f"unknown engine kind '{name}' (known: {', '.join(sorted(kinds))})", where)
    return kinds[name]
