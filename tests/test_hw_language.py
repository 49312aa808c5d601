"""The hardware-description language: parsing, units, located errors, bundled targets."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from compiler.errors import LayerloomError
from compiler.hw import bundled_targets, load_target, parse_target
from compiler.hw.model import Target

EXAMPLE = """\
# a comment
target board {
    part "xczu9eg";
    clock 300 MHz;
    pe_budget 2520;
    mac_energy 0.23 pJ;
    dram {
        bandwidth 19.2 GB/s;   // decimal giga
        energy 20 pJ/B;
    }
    memory bram {
        size 912 x 36 Kb;
        ports 2;
        energy 2.5 pJ/B;
    }
    engine seml { kind seml; pes 1024; }
    engine big { kind systolic; array 16 x 8; clock 1 GHz; }
}
"""


def parse(text: str) -> Target:
    return parse_target(textwrap.dedent(text), "board.hw")


def error_of(text: str) -> LayerloomError:
    with pytest.raises(LayerloomError) as info:
        parse(text)
    return info.value


def test_example_parses_and_normalises_units() -> None:
    t = parse(EXAMPLE)
    assert t.name == "board" and t.part == "xczu9eg"
    assert t.clock == 300e6
    assert t.pe_budget == 2520
    assert t.mac_energy == pytest.approx(0.23e-12)
    assert t.dram.bandwidth == pytest.approx(19.2e9)
    assert t.dram.energy_per_byte == pytest.approx(20e-12)
    (bram,) = t.memories
    assert bram.size == 912 * 36 * 1024 // 8  # 36 Kb blocks of 4608 bytes
    assert bram.banks == 912  # `N x SIZE` sets the bank count
    assert bram.ports == 2 and bram.energy_per_byte == pytest.approx(2.5e-12)
    seml, big = t.engines
    assert (seml.kind, seml.pes, seml.clock) == ("seml", 1024, None)
    assert (big.kind, big.params["array"], big.pes, big.clock) == ("systolic", (16, 8), 128, 1e9)
    assert t.clock_of(big) == 1e9 and t.clock_of(seml) == 300e6
    assert t.ridge_point == pytest.approx(2 * 2520 * 300e6 / 19.2e9)
    assert len({t, parse(EXAMPLE)}) == 1  # targets are values: hashable, equal when equal


@pytest.mark.parametrize(
    ("setting", "attr", "expected"),
    [
        ("clock 1.5 GHz;", "clock", 1.5e9),
        ("clock 250000 kHz;", "clock", 250e6),
        ("clock 2e8 Hz;", "clock", 2e8),
        ("bandwidth 1 Gb/s;", "bandwidth", 1.25e8),
        ("bandwidth 512 MB/s;", "bandwidth", 512e6),
        ("bandwidth 1 GiB/s;", "bandwidth", 1024.0**3),
        ("energy 2 pJ/b;", "energy", 16e-12),
        ("energy 0.1 nJ/B;", "energy", 1e-10),
        ("size 64 KB;", "size", 65536),
        ("size 3 x 64 KB;", "size", 3 * 65536),
        ("size 2 MiB;", "size", 2 * 1024**2),
        ("size 36 Kb;", "size", 4608),
    ],
)
def test_units(setting: str, attr: str, expected: float) -> None:
    key = setting.split()[0]
    if key == "clock":
        t = parse(f"target t {{ {setting} pe_budget 1; dram {{ bandwidth 1 GB/s; }} }}")
        assert t.clock == pytest.approx(expected)
    elif key in ("bandwidth", "energy") and attr != "size":
        extra = "" if key == "bandwidth" else "bandwidth 1 GB/s;"
        t = parse(f"target t {{ clock 1 GHz; pe_budget 1; dram {{ {extra} {setting} }} }}")
        value = t.dram.bandwidth if key == "bandwidth" else t.dram.energy_per_byte
        assert value == pytest.approx(expected)
    else:
        t = parse(f"target t {{ clock 1 GHz; pe_budget 1; dram {{ bandwidth 1 GB/s; }} memory m {{ {setting} }} }}")
        assert t.memories[0].size == expected


# --- syntax errors: lark's exceptions become one located line saying what was expected ---


def test_missing_semicolon_points_at_next_token() -> None:
    e = error_of("""\
        target t {
            clock 300 MHz
            pe_budget 4;
        }""")
    assert e.where == "board.hw:3:5"
    assert "expected" in e.message and "';'" in e.message and "'pe_budget'" in e.message


def test_unexpected_character() -> None:
    e = error_of("target t {\n  clock 300 MHz!;\n}")
    assert e.where == "board.hw:2:16"
    assert e.message.startswith("unexpected character '!'")


def test_unexpected_end_of_file() -> None:
    e = error_of("target t {\n  clock 300 MHz;\n")
    assert e.where == "board.hw:2:17"
    assert "unexpected end of file" in e.message and "'}'" in e.message


def test_missing_target_keyword() -> None:
    e = error_of("targte t { }")
    assert e.where == "board.hw:1:1"
    assert "'target'" in e.message


def test_block_without_name_or_value() -> None:
    e = error_of("target t {\n  clock;\n}")
    assert e.where == "board.hw:2:8"
    assert "a number" in e.message and "a name" in e.message


# --- meaning errors, each at line:col ------------------------------------------------

BASE = """\
target t {{
    clock 300 MHz;
    pe_budget 2048;
    dram {{ bandwidth 10 GB/s; }}
    memory bram {{ size 4 x 36 Kb; }}
{extra}
}}"""


def error_with(extra: str) -> LayerloomError:
    return error_of(BASE.format(extra=textwrap.indent(textwrap.dedent(extra), "    ")))


@pytest.mark.parametrize(
    ("extra", "where", "message"),
    [
        ("engine e { kind semll; }", "6:21", "unknown engine kind 'semll' (did you mean 'seml'?)"),
        ("memory m { size -4 KB; }", "6:21", "'size' must be positive, got -4"),
        ("memory bram { size 1 KB; }", "6:12", "duplicate memory name 'bram' (first defined at line 5)"),
        ("engine e { kind seml; }\nengine e { kind sesl; }", "7:12", "duplicate engine name 'e'"),
        ("engine e { kind seml; pes 4; pes 8; }", "6:34", "duplicate setting 'pes'"),
        ("memory m { size 4 Kbit; }", "6:23", "unknown unit 'Kbit'"),
        ("memory m { size 4 GB/s; }", "6:23", "'size' takes a size (B, KB, MB, b, Kb, Mb), got GB/s (a bandwidth)"),
        ("memory m { size 4; }", "6:21", "'size' needs a unit"),
        ("memory m { size 1 KB; banks 2.5; }", "6:33", "'banks' must be a whole number"),
        ("memory m { sise 1 KB; }", "6:16", "unknown setting 'sise' in memory 'm' (did you mean 'size'?)"),
        ("memory m { ports 1; }", "6:5", "memory 'm' is missing 'size'"),
        ("engine e { pes 4; }", "6:5", "engine 'e' has no kind"),
        ("engine e { kind dpu; arch B9999; }", "6:31", "'arch' must be one of B512"),
        ("engine e { kind dpu; arch B4096; pp 8; }", "6:38", "give either arch or pp/icp/ocp, not both"),
        ("engine e { kind dpu; pp 8; }", "6:5", "missing icp, ocp"),
        ("engine e { kind systolic; array 32 x 32; dataflow ws; }", "6:55", "'dataflow' must be one of os"),
        ("engine e { kind systolic; array 32 x 32 x 2; }", "6:37", "'array' takes N x N, got 3 numbers"),
        ("engine e { kind seml; pes 4096; }", "6:5", "engine 'e' has 4096 PEs, more than the target's pe_budget 2048"),
        ("engine a { kind seml; pes 1024; }\nengine b { kind systolic; array 32 x 32; count 2; }", "7:5",
         "engines up to 'b' have 3072 PEs together, more than the target's pe_budget 2048"),
        ("engine e { kind seml; unroll 64 x 64; pes 1024; }", "6:27", "unroll 64 x 64 needs 4096 PEs, more than pes 1024"),
        ("engine e { kind seml; buffer uram; }", "6:27", "buffer 'uram' is not a memory of this target"),
        ("engine e { kind seml; clock 10 GB/s; }", "6:36", "'clock' takes a frequency"),
        ("engine e { kind 12; }", "6:21", "'kind' takes a name"),
        ("dram { bandwidth 1 GB/s; }", "6:5", "duplicate dram block"),
        ("cache c { size 1 KB; }", "6:5", "unexpected block 'cache' in a target block; it takes dram, memory, engine"),
        ('part xczu9eg;', "6:10", "'part' takes a quoted string, got 'xczu9eg'"),
        ("clok 200 MHz;", "6:5", "unknown setting 'clok' in target 't' (did you mean 'clock'?)"),
        ("memory m { size 1e999 KB; }", "6:21", "'size' is too large to represent, got '1e999 KB'"),
        ("engine e { kind seml; clock 2 x 1e308 GHz; }", "6:37", "'clock' is too large to represent"),
    ],
)
def test_meaning_errors_are_located(extra: str, where: str, message: str) -> None:
    e = error_with(extra)
    assert e.where == f"board.hw:{where}", e
    assert message in e.message, e


def test_missing_dram_and_clock() -> None:
    e = error_of("target t {\n  clock 1 GHz;\n  pe_budget 1;\n}")
    assert e.where == "board.hw:1:8" and "has no dram block" in e.message
    e = error_of("target t {\n  pe_budget 1;\n  dram { bandwidth 1 GB/s; }\n}")
    assert e.where == "board.hw:1:8" and "missing 'clock'" in e.message


def test_pe_budget_defaults_to_fixed_engines_and_is_required_otherwise() -> None:
    t = parse("target t { clock 1 GHz; dram { bandwidth 1 GB/s; } engine a { kind systolic; array 4 x 8; count 2; } }")
    assert t.pe_budget == 64
    e = error_of("target t { clock 1 GHz; dram { bandwidth 1 GB/s; } engine a { kind seml; } }")
    assert "needs a pe_budget" in e.message and e.where == "board.hw:1:8"


def test_bad_target_name() -> None:
    e = error_of("target a/b { }")
    assert e.where == "board.hw:1:8" and "bad target name 'a/b'" in e.message


# --- bundled targets ----------------------------------------------------------------


@pytest.mark.parametrize("name", bundled_targets())
def test_every_bundled_target_loads(name: str) -> None:
    t = load_target(name)
    assert t.name == name
    assert t.clock > 0 and t.dram.bandwidth > 0 and t.pe_budget > 0
    assert t.engines and t.memories
    assert all(e.kind_plugin.name == e.kind for e in t.engines)


def test_bundled_target_set() -> None:
    expected = {"zcu102", "zcu104", "ultra96", "vck190", "zcu102-dpu", "systolic-os32"}
    expected |= {f"dpu-b{n}" for n in (512, 800, 1024, 1152, 1600, 2304, 3136, 4096)}
    assert set(bundled_targets()) == expected


def test_fpga_figures() -> None:
    zcu102 = load_target("zcu102")
    assert zcu102.pe_budget == 2520
    assert zcu102.memory("bram").size == 912 * 4608 and zcu102.memory("bram").banks == 912
    assert zcu102.dram.bandwidth == pytest.approx(19.2e9)
    assert load_target("ultra96").pe_budget == 360 and load_target("ultra96").memory("bram").banks == 216
    assert load_target("zcu104").pe_budget == 1728 and load_target("zcu104").memory("uram").banks == 96
    assert load_target("vck190").pe_budget == 1968


def test_dpu_targets() -> None:
    t = load_target("zcu102-dpu")
    (dpu,) = t.engines
    assert (dpu.kind, dpu.params["arch"], dpu.count, dpu.pes) == ("dpu", "B4096", 3, 8 * 16 * 16)
    assert t.clock == 281e6 and t.pe_budget == 3 * 2048
    for n in (512, 800, 1024, 1152, 1600, 2304, 3136, 4096):
        (e,) = load_target(f"DPU-B{n}").engines  # names are case-insensitive
        p = e.params
        assert 2 * p["pp"] * p["icp"] * p["ocp"] == n  # peak ops per cycle = the B number


def test_systolic_target() -> None:
    (e,) = load_target("systolic-os32").engines
    assert e.params["array"] == (32, 32) and e.params["dataflow"] == "os" and e.pes == 1024


def test_load_by_path_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "mine.hw"
    f.write_text("target mine { clock 100 MHz; pe_budget 8; dram { bandwidth 1 GB/s; } }")
    assert load_target(f).name == "mine"
    assert load_target(str(f)).source == str(f)
    with pytest.raises(LayerloomError, match="unknown target 'zcu999'.*zcu102"):
        load_target("zcu999")
    with pytest.raises(LayerloomError, match="no such hardware description file"):
        load_target(tmp_path / "missing.hw")
    bad = tmp_path / "bad.hw"
    bad.write_text("target bad {\n  clock 100 MHz\n}")
    with pytest.raises(LayerloomError) as info:
        load_target(bad)
    assert info.value.where == f"{bad}:3:1"


def test_docs_cover_every_bundled_target_and_engine_parameter() -> None:
    from compiler.engines import engine_kinds

    doc = (Path(__file__).parents[1] / "docs" / "hardware.md").read_text()
    for name in bundled_targets():
        assert f"`{name}`" in doc or name.startswith("dpu-b"), name
    for kind in engine_kinds().values():
        for param in kind.parameters:
            assert f"| `{kind.name}` | `{param}`" in doc or f"`{param}`" in doc, (kind.name, param)


def test_docs_example_target_parses() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "hardware.md").read_text()
    example = doc.split("```\n# ZCU102 with", 1)[1].split("```", 1)[0]
    t = parse_target("# ZCU102 with" + example, "hardware.md")
    assert t.engine("sesl").params["unroll"] == (32, 16) and t.memory("bram").banks == 912
