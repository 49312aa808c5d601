"""Hardware targets: the description language (grammar.lark, parser.py), the model
(model.py) and the bundled targets (targets/*.hw).

    from compiler.hw import load_target
    target = load_target("zcu102")            # a bundled target, by name
    target = load_target("boards/my.hw")      # or a file

See docs/hardware.md for the language and the bundled targets' sources.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from compiler.errors import LayerloomError
from compiler.hw.model import Dram, Engine, Memory, Target
from compiler.hw.parser import parse_target

__all__ = ["Dram", "Engine", "Memory", "Target", "bundled_targets", "load_target", "parse_target"]

TARGETS_DIR = Path(__file__).with_name("targets")


def bundled_targets() -> list[str]:
    """Names of the targets shipped with layerloom, usable as `load_target(name)`."""
    return sorted(p.stem for p in TARGETS_DIR.glob("*.hw"))


def load_target(name_or_path: str | Path) -> Target:
    """A bundled target by name (case-insensitive), or a description file by path."""
    text = str(name_or_path)
    bundled = TARGETS_DIR / f"{text.lower()}.hw"
    looks_like_path = isinstance(name_or_path, Path) or "/" in text or text.endswith(".hw")
    path = Path(text) if looks_like_path else bundled
    if not looks_like_path and not bundled.is_file():
        raise LayerloomError(
            f"unknown target '{text}' (bundled: {', '.join(bundled_targets())}; or give a path to a .hw file)"
        )
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LayerloomError("no such hardware description file", str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise LayerloomError(f"cannot read hardware description: {e}", str(path)) from None
    return _parsed(source, str(path))


@lru_cache(maxsize=64)
def _parsed(source: str, where: str) -> Target:
    """Targets are immutable: every pass of a pipeline that loads the same text shares one
    parse (parsing takes tens of milliseconds)."""
    return parse_target(source, where)
