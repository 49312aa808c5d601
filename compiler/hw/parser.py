"""Parser of the hardware-description language (grammar.lark) into a `Target`.

Two stages, both reporting `LayerloomError` located at `file:line:col`:
1. syntax: lark (LALR) parses the generic block/setting structure; its UnexpectedToken /
   UnexpectedCharacters / UnexpectedEOF become one line saying what was expected;
2. meaning: each block's settings are checked against a schema (`Param`s): unknown or
   duplicate settings, missing required ones, wrong value kinds, unknown units, units of
   the wrong dimension, non-positive sizes, unknown engine kinds, duplicate names.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from compiler.errors import LayerloomError
from compiler.hw import units
from compiler.hw.model import Dram, Engine, Memory, Target
from compiler.hw.schema import ParamError, Schema, ValueKind, count, quantity, string, word
from compiler.hw.units import Dimension

# ---------------------------------------------------------------------------------------
# Syntax tree (positions kept for every node, so meaning errors point somewhere exact)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pos:
    line: int
    col: int


@dataclass(frozen=True)
class Quantity:
    number: float
    text: str
    unit: str | None
    pos: Pos
    unit_pos: Pos | None = None


@dataclass(frozen=True)
class Product:
    factors: tuple[Quantity, ...]  # only the last one may carry a unit
    pos: Pos


@dataclass(frozen=True)
class Word:
    text: str
    pos: Pos


@dataclass(frozen=True)
class String:
    text: str
    pos: Pos


Value = Quantity | Product | Word | String


@dataclass(frozen=True)
class Setting:
    key: str
    values: tuple[Value, ...]
    pos: Pos


@dataclass(frozen=True)
class Block:
    keyword: str
    label: str | None
    items: tuple[Setting | Block, ...]
    pos: Pos
    label_pos: Pos | None = None


def _pos(token: Token) -> Pos:
    return Pos(token.line or 0, token.column or 0)


@v_args(inline=True)
class _ToAst(Transformer[Token, Any]):
    def start(self, target: Block) -> Block:
        return target

    def target(self, name: Token, *items: Setting | Block) -> Block:
        return Block("target", str(name), tuple(items), _pos(name), _pos(name))

    def block(self, keyword: Token, *rest: Any) -> Block:
        label = rest[0] if rest and isinstance(rest[0], Token) else None
        items = rest[1:] if label is not None else rest
        return Block(str(keyword), str(label) if label else None, tuple(items), _pos(keyword), _pos(label) if label else None)

    def setting(self, key: Token, *values: Value) -> Setting:
        return Setting(str(key), tuple(values), _pos(key))

    def quantity(self, number: Token, unit: Token | None = None) -> Quantity:
        return Quantity(float(number), str(number), str(unit) if unit else None, _pos(number), _pos(unit) if unit else None)

    def product(self, number: Token, rest: Quantity | Product) -> Product:
        head = Quantity(float(number), str(number), None, _pos(number))
        tail = rest.factors if isinstance(rest, Product) else (rest,)
        return Product((head, *tail), _pos(number))

    def word(self, token: Token) -> Word:
        return Word(str(token), _pos(token))

    def string(self, token: Token) -> String:
        return String(str(token)[1:-1], _pos(token))


# ---------------------------------------------------------------------------------------
# Stage 1: syntax
# ---------------------------------------------------------------------------------------

_GRAMMAR = Path(__file__).with_name("grammar.lark")

# How lark's terminal names read in a message.
_TERMINAL_WORDS = {
    "WORD": "a name",
    "NUMBER": "a number",
    "STRING": "a quoted string",
    "$END": "end of file",
}


@cache
def _lark() -> Lark:
    return Lark(_GRAMMAR.read_text(), parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _describe_terminal(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    try:
        pattern = _lark().get_terminal(name).pattern
    except KeyError:
        return name
    return f"'{pattern.value}'" if pattern.type == "str" else name


def _expected(names: Iterable[str]) -> str:
    words = sorted({_describe_terminal(n) for n in names})
    if not words:
        return "nothing more"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _syntax_error(e: UnexpectedInput, text: str, source: str) -> LayerloomError:
    if isinstance(e, UnexpectedToken):
        if e.token.type == "$END":
            line, col = _end_position(text)
            return LayerloomError(f"unexpected end of file; expected {_expected(e.expected)}", f"{source}:{line}:{col}")
        got = f"'{e.token}'"
        return LayerloomError(f"expected {_expected(e.expected)}, got {got}", f"{source}:{e.line}:{e.column}")
    if isinstance(e, UnexpectedCharacters):
        char = text[e.pos_in_stream] if e.pos_in_stream is not None and e.pos_in_stream < len(text) else "?"
        return LayerloomError(
            f"unexpected character '{char}'; expected {_expected(e.allowed or ())}", f"{source}:{e.line}:{e.column}"
        )
    if isinstance(e, UnexpectedEOF):
        line, col = _end_position(text)
        return LayerloomError(f"unexpected end of file; expected {_expected(e.expected)}", f"{source}:{line}:{col}")
    return LayerloomError(str(e).splitlines()[0], source)


def _end_position(text: str) -> tuple[int, int]:
    lines = text.rstrip("\n").split("\n") if text.strip() else [""]
    return len(lines), len(lines[-1]) + 1


def parse_syntax(text: str, source: str = "<string>") -> Block:
    """Text -> the generic block tree (positions kept); syntax errors raise LayerloomError."""
    try:
        tree: Tree[Token] = _lark().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text, source) from None
    return _ToAst().transform(tree)


# ---------------------------------------------------------------------------------------
# Stage 2: meaning
# ---------------------------------------------------------------------------------------

TARGET_SCHEMA: Schema = {
    "clock": quantity("clock of the engines (unless an engine sets its own)", Dimension.FREQUENCY, required=True),
    "pe_budget": count("MAC units all engines share; default: the sum of the engines' fixed PEs"),
    "mac_energy": quantity("energy of one multiply-accumulate", Dimension.ENERGY, default=0.0, allow_zero=True),
    "part": string("device part number, for people"),
}
DRAM_SCHEMA: Schema = {
    "bandwidth": quantity("peak DRAM bandwidth", Dimension.BANDWIDTH, required=True),
    "energy": quantity("energy per byte moved", Dimension.ENERGY_PER_BYTE, default=0.0, allow_zero=True),
    "size": quantity("capacity", Dimension.SIZE),
}
MEMORY_SCHEMA: Schema = {
    "size": quantity("total size; `N x SIZE` also sets banks to N", Dimension.SIZE, required=True),
    "banks": count("independent banks (default: N of `size N x SIZE`, else 1)"),
    "ports": count("ports per bank", default=2),
    "energy": quantity("energy per byte accessed", Dimension.ENERGY_PER_BYTE, default=0.0, allow_zero=True),
}
# Every engine takes these; its kind adds its own (EngineKind.parameters).
ENGINE_COMMON_SCHEMA: Schema = {
    "kind": word("engine kind, registered in the `layerloom.engines` entry-point group", required=True),
    "count": count("identical instances (DPU cores, arrays)", default=1),
    "clock": quantity("clock of this engine (default: the target's)", Dimension.FREQUENCY),
    "buffer": word("on-chip memory its tiles live in (default: the target's first memory)"),
}
BLOCKS = {"target": ("dram", "memory", "engine"), "dram": (), "memory": (), "engine": ()}
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*$")


class _Reader:
    """Reads one source's blocks into model objects, raising located errors."""

    def __init__(self, source: str) -> None:
        self.source = source

    def at(self, pos: Pos) -> str:
        return f"{self.source}:{pos.line}:{pos.col}"

    def error(self, message: str, pos: Pos) -> LayerloomError:
        return LayerloomError(message, self.at(pos))

    # --- blocks ---------------------------------------------------------------------

    def target(self, block: Block) -> Target:
        assert block.label is not None and block.label_pos is not None
        self.check_name(block.label, block.label_pos, "target")
        settings, blocks = self.split(block)
        values = self.settings(settings, TARGET_SCHEMA, f"target '{block.label}'", block.pos)
        drams = blocks.get("dram", [])
        if not drams:
            raise self.error(f"target '{block.label}' has no dram block (it needs `dram {{ bandwidth ...; }}`)", block.pos)
        if len(drams) > 1:
            raise self.error("duplicate dram block (a target has one)", drams[1].pos)
        dram = self.dram(drams[0])
        memories = self.named(blocks.get("memory", []), self.memory, "memory")
        memory_names = {m.name for m in memories}
        engines = self.named(blocks.get("engine", []), lambda b: self.engine(b, memory_names), "engine")
        pe_budget = values["pe_budget"]
        if pe_budget is None:
            fixed = [e.fixed_pes for e in engines]
            if not engines or any(p is None for p in fixed):
                raise self.error(
                    f"target '{block.label}' needs a pe_budget (its engines do not fix their PE counts)", block.pos
                )
            pe_budget = sum(p * e.count for p, e in zip(fixed, engines, strict=True) if p is not None)
        # Engines coexist (a hybrid's pipeline and its reused engine share the DSPs).
        used = 0
        for e, b in zip(engines, blocks.get("engine", []), strict=True):
            if e.pes is None:
                continue
            own = e.pes * e.count
            used += own
            if own > pe_budget:
                raise self.error(f"engine '{e.name}' has {own} PEs, more than the target's pe_budget {pe_budget}", b.pos)
            if used > pe_budget:
                raise self.error(
                    f"engines up to '{e.name}' have {used} PEs together, more than the target's pe_budget {pe_budget}",
                    b.pos,
                )
        return Target(
            name=block.label,
            clock=values["clock"],
            pe_budget=int(pe_budget),
            dram=dram,
            memories=tuple(memories),
            engines=tuple(engines),
            mac_energy=values["mac_energy"],
            part=values["part"] or "",
            source=self.source,
        )

    def dram(self, block: Block) -> Dram:
        if block.label is not None:
            assert block.label_pos is not None
            raise self.error(f"the dram block takes no name, got '{block.label}'", block.label_pos)
        settings, _ = self.split(block)
        v = self.settings(settings, DRAM_SCHEMA, "dram", block.pos)
        return Dram(bandwidth=v["bandwidth"], energy_per_byte=v["energy"], size=v["size"])

    def memory(self, block: Block) -> Memory:
        assert block.label is not None
        settings, _ = self.split(block)
        v = self.settings(settings, MEMORY_SCHEMA, f"memory '{block.label}'", block.pos)
        banks = v["banks"]
        if banks is None:
            size_setting = next(s for s in settings if s.key == "size")
            first = size_setting.values[0]
            banks = int(first.factors[0].number) if isinstance(first, Product) else 1
        return Memory(block.label, v["size"], banks, v["ports"], v["energy"], self.at(block.pos))

    def engine(self, block: Block, memory_names: set[str]) -> Engine:
        from compiler.engines import engine_kind, engine_kind_names

        assert block.label is not None
        settings, _ = self.split(block)
        what = f"engine '{block.label}'"
        kind_setting = next((s for s in settings if s.key == "kind"), None)
        if kind_setting is None:
            raise self.error(f"{what} has no kind (add `kind NAME;`)", block.pos)
        kind_name = self.one_value(kind_setting, "kind")
        if not isinstance(kind_name, Word):
            raise self.error("'kind' takes a name", kind_name.pos)
        kinds = engine_kind_names()
        if kind_name.text not in kinds:
            raise self.error(
                f"unknown engine kind '{kind_name.text}'{_suggest(kind_name.text, kinds)}; known kinds: {', '.join(kinds)}",
                kind_name.pos,
            )
        plugin = engine_kind(kind_name.text, self.at(kind_name.pos))
        schema = dict(ENGINE_COMMON_SCHEMA) | dict(plugin.parameters)
        v = self.settings(settings, schema, what, block.pos)
        if v["buffer"] is not None and v["buffer"] not in memory_names:
            pos = next(s.pos for s in settings if s.key == "buffer")
            raise self.error(f"{what}: buffer '{v['buffer']}' is not a memory of this target", pos)
        params = {k: val for k, val in v.items() if k not in ENGINE_COMMON_SCHEMA}
        try:
            params = dict(plugin.check(params))
        except ParamError as e:
            pos = next((s.pos for s in settings if s.key == e.param), block.pos)
            raise self.error(f"{what}: {e.message}", pos) from None
        return Engine(block.label, kind_name.text, params, v["count"], v["clock"], v["buffer"], self.at(block.pos))

    # --- helpers --------------------------------------------------------------------

    def split(self, block: Block) -> tuple[list[Setting], dict[str, list[Block]]]:
        allowed = BLOCKS.get(block.keyword, ())
        settings: list[Setting] = []
        blocks: dict[str, list[Block]] = {}
        for item in block.items:
            if isinstance(item, Setting):
                settings.append(item)
                continue
            if item.keyword not in allowed:
                where = f"a {block.keyword} block"
                inside = f"; it takes {', '.join(allowed)} blocks" if allowed else "; it takes no nested blocks"
                raise self.error(f"unexpected block '{item.keyword}' in {where}{inside}", item.pos)
            if item.keyword in ("memory", "engine") and item.label is None:
                raise self.error(f"a {item.keyword} block needs a name: `{item.keyword} NAME {{ ... }}`", item.pos)
            blocks.setdefault(item.keyword, []).append(item)
        return settings, blocks

    def named(self, blocks: list[Block], read: Any, what: str) -> list[Any]:
        seen: dict[str, Pos] = {}
        out = []
        for b in blocks:
            assert b.label is not None and b.label_pos is not None
            self.check_name(b.label, b.label_pos, what)
            if b.label in seen:
                first = seen[b.label]
                raise self.error(f"duplicate {what} name '{b.label}' (first defined at line {first.line})", b.label_pos)
            seen[b.label] = b.label_pos
            out.append(read(b))
        return out

    def check_name(self, name: str, pos: Pos, what: str) -> None:
        if not NAME.match(name):
            raise self.error(f"bad {what} name '{name}' (letters, digits, '_' and '-')", pos)

    def settings(self, settings: list[Setting], schema: Schema, what: str, anchor: Pos) -> dict[str, Any]:
        values: dict[str, Any] = {}
        seen: dict[str, Pos] = {}
        for s in settings:
            if s.key not in schema:
                raise self.error(
                    f"unknown setting '{s.key}' in {what}{_suggest(s.key, schema)}; it takes: {', '.join(schema)}", s.pos
                )
            if s.key in seen:
                raise self.error(f"duplicate setting '{s.key}' in {what} (first set at line {seen[s.key].line})", s.pos)
            seen[s.key] = s.pos
            values[s.key] = self.convert(s, schema[s.key])
        for key, param in schema.items():
            if key not in values:
                if param.required:
                    raise self.error(f"{what} is missing '{key}' ({param.doc})", anchor)
                values[key] = param.default
        return values

    def one_value(self, s: Setting, key: str) -> Value:
        if len(s.values) != 1:
            raise self.error(f"'{key}' takes one value, got {len(s.values)}", s.values[1].pos)
        return s.values[0]

    def convert(self, s: Setting, param: Any) -> Any:
        v = self.one_value(s, s.key)
        kind = param.value
        if kind is ValueKind.WORD:
            if not isinstance(v, Word):
                raise self.error(f"'{s.key}' takes {param.expects}, got {_show(v)}", v.pos)
            if param.choices and v.text not in param.choices:
                raise self.error(
                    f"'{s.key}' must be one of {', '.join(param.choices)}{_suggest(v.text, param.choices)}, got '{v.text}'",
                    v.pos,
                )
            return v.text
        if kind is ValueKind.STRING:
            if not isinstance(v, String):
                raise self.error(f"'{s.key}' takes a quoted string, got {_show(v)}", v.pos)
            return v.text
        if kind is ValueKind.DIMS:
            factors = v.factors if isinstance(v, Product) else (v,) if isinstance(v, Quantity) else None
            if factors is None or any(f.unit for f in factors):
                raise self.error(f"'{s.key}' takes {param.expects} (plain numbers), got {_show(v)}", v.pos)
            if param.rank and len(factors) != param.rank:
                raise self.error(f"'{s.key}' takes {param.expects}, got {len(factors)} numbers", v.pos)
            return tuple(self.whole(f.number, f, s.key) for f in factors)
        return self.quantity(s.key, v, param)

    def quantity(self, key: str, v: Value, param: Any) -> float | int:
        if not isinstance(v, (Quantity, Product)):
            raise self.error(f"'{key}' takes {param.expects}, got {_show(v)}", v.pos)
        factors = v.factors if isinstance(v, Product) else (v,)
        for f in factors[:-1]:
            if f.unit is not None:  # unreachable by the grammar, kept as a guard
                raise self.error(f"only the last factor of '{key}' may have a unit", f.pos)
        last = factors[-1]
        multiplier = math.prod(f.number for f in factors[:-1])
        dimension = param.dimension
        if last.unit is None:
            if dimension is not Dimension.COUNT:
                raise self.error(f"'{key}' needs a unit ({units.examples(dimension)})", last.pos)
            scale = 1.0
        else:
            scale_or_none = units.factor(last.unit, dimension)
            if scale_or_none is None:
                other = units.dimension_of(last.unit)
                unit_pos = last.unit_pos or last.pos
                if other is None:
                    raise self.error(f"unknown unit '{last.unit}' for '{key}' (use {units.examples(dimension)})", unit_pos)
                raise self.error(
                    f"'{key}' takes {dimension.value} ({units.examples(dimension)}), got {last.unit} ({other.value})",
                    unit_pos,
                )
            scale = scale_or_none
        value = multiplier * last.number * scale
        if not math.isfinite(value):
            raise self.error(f"'{key}' is too large to represent, got {_show(v)}", last.pos)
        for f in factors:
            if f.number < 0 or (f.number == 0 and not param.allow_zero):
                raise self.error(f"'{key}' must be {'non-negative' if param.allow_zero else 'positive'}, got {f.text}", f.pos)
        if dimension in (Dimension.COUNT, Dimension.SIZE):
            return self.whole(value, last, key)
        return value

    def whole(self, value: float, q: Quantity, key: str) -> int:
        if value <= 0:
            raise self.error(f"'{key}' must be positive, got {q.text}", q.pos)
        if abs(value - round(value)) > 1e-9 * max(1.0, abs(value)):
            raise self.error(f"'{key}' must be a whole number, got {value:g}", q.pos)
        return int(round(value))


def _show(v: Value) -> str:
    if isinstance(v, Word):
        return f"'{v.text}'"
    if isinstance(v, String):
        return f'"{v.text}"'
    if isinstance(v, Quantity):
        return f"'{v.text}{' ' + v.unit if v.unit else ''}'"
    return "'" + " x ".join(f.text for f in v.factors) + (f" {v.factors[-1].unit}'" if v.factors[-1].unit else "'")


def _suggest(name: str, options: Iterable[str] | Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_target(text: str, source: str = "<string>") -> Target:
    """Parse one target description; every error is a LayerloomError at file:line:col."""
    return _Reader(source).target(parse_syntax(text, source))
