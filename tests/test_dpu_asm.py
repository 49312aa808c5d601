"""DPU assembly: text <-> instructions <-> binary round trips, the accepted syntax, and
located errors for bad assembly (the table of docs/isa.md section 9)."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.dpu import assemble, decode, disassemble, encode
from backends.dpu.isa import OPCODES, Instruction
from compiler.errors import LayerloomError
from tests.test_dpu_isa import DOC, conv, instructions, programs


@given(programs)
def test_text_to_binary_to_text(program: list[Instruction]) -> None:
    text = disassemble(program)
    assert disassemble(decode(encode(assemble(text)))) == text
    assert assemble(text) == program


@given(programs, st.randoms(use_true_random=False))
def test_any_spelling_assembles_to_the_same_program(program: list[Instruction], rnd: random.Random) -> None:
    """Operands in any order, mnemonics in any case, hex or decimal, defaults written out,
    comments, blank lines, tabs and CRLF line ends."""
    lines = ["; a program", ""]
    for ins in program:
        operands = []
        for f in ins.spec.fields:
            value = ins.fields[f.name]
            if value == f.default and rnd.random() < 0.5:
                continue
            text = f.format(value)
            if isinstance(value, int) and value >= 0 and rnd.random() < 0.5:
                text = hex(value) if not text.startswith("0x") else str(value)
            operands.append(f"{f.name}={text}")
        rnd.shuffle(operands)
        mnemonic = ins.mnemonic.lower() if rnd.random() < 0.3 else ins.mnemonic
        comment = rnd.choice(["", " ; note", "\t# note"])
        lines.append("  " + "\t".join([mnemonic, *operands]) + comment)
    text = rnd.choice(["\n", "\r\n"]).join(lines)
    assert assemble(text) == program


def test_canonical_text() -> None:
    program = [
        Instruction.make("CONVINIT", kernel_h=1, kernel_w=1),
        conv(wait={"save", "load"}, addr_in=0x1F0),
        Instruction.make("ELEWINIT", inputs=1, shift_out=-3, act="clip", clip_lo=-5, clip_hi=5),
        Instruction.make("END"),
    ]
    assert disassemble(program) == (
        "CONVINIT kernel_h=1 kernel_w=1\n"
        "CONV     wait=load|save bank_in=0 addr_in=0x1f0 bank_out=1 addr_out=0x0 addr_w=0x0 addr_bias=0x0 "
        "out_rows=8 out_cols=8 ic=32 oc=32\n"
        "ELEWINIT inputs=1 shift_out=-3 act=clip clip_lo=-5 clip_hi=5\n"
        "END\n"
    )
    assert disassemble([]) == "" and assemble("") == [] and assemble("\n; only a comment\n") == []


def test_docs_assembly_example() -> None:
    source = re.search(r"```dpu-asm-input\n(.*?)```", DOC, re.S)
    output = re.search(r"```dpu-asm-output\n(.*?)```", DOC, re.S)
    assert source and output
    assert disassemble(assemble(source.group(1))) == output.group(1)


def test_queue_sets() -> None:
    (ins,) = assemble(
        "SAVE wait=compute|load signal=none bank=0 addr=0 reg=output offset=0 rows=1 cols=1 chans=1 row_stride=0 col_stride=0"
    )
    assert ins.wait == frozenset({"load", "compute"}) and ins.signal == frozenset()
    assert ins.reg == "output"


def test_extreme_values() -> None:
    (load,) = assemble(
        "LOAD addr=0xffff offset=0xFFFFFFFF reg=r7 rows=4095 cols=1 chans=8191 row_stride=16777215 col_stride=65535 "
        "pad_value=-128 pad_right=15"
    )
    assert (load.addr, load.offset, load.row_stride, load.pad_value, load.pad_right) == (
        0xFFFF,
        2**32 - 1,
        2**24 - 1,
        -128,
        15,
    )
    assert decode(encode([load])) == [load]


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------

ERROR_ROWS = re.findall(
    r"^\| `([^`]+)` \| `(model\.s:[^`]+)` \|$", DOC.split("## 9. Assembly", 1)[1].split("## 10.", 1)[0], re.M
)


def test_docs_list_the_error_kinds() -> None:
    assert len(ERROR_ROWS) >= 15


@pytest.mark.parametrize(("line", "message"), ERROR_ROWS)
def test_documented_error(line: str, message: str) -> None:
    with pytest.raises(LayerloomError) as info:
        assemble(line.replace("\\|", "|"), "model.s")
    assert str(info.value) == message.replace("\\|", "|")


def error_of(text: str) -> str:
    with pytest.raises(LayerloomError) as info:
        assemble(text, "net.s")
    return str(info.value)


def test_errors_point_at_the_right_line() -> None:
    text = "; header\nCONVINIT kernel_h=3 kernel_w=3\n\n  CONV bank_in=0 addr_in=0 bank_out=1 addr_out=0 addr_w=0 addr_bias=0 out_rows=8 out_cols=8 ic=32 oc=0\n"
    column = text.splitlines()[3].index("oc=0") + 1 + len("oc=")  # the value's column
    assert error_of(text) == f"net.s:4:{column}: oc = 0 is out of range 1..8191"
    assert error_of("END\n  CONV bank_in=0\n") == (
        "net.s:2:3: CONV needs fields addr_in, bank_out, addr_out, addr_w, addr_bias, out_rows, out_cols, ic, oc"
    )
    assert error_of("END\r\nEND\r\n  bank=1") == (
        "net.s:3:3: expected an instruction, got the operand 'bank=1' (an instruction takes one line)"
    )
    assert error_of("END x\n") == "net.s:1:5: expected field=value or end of line, got 'x'"
    assert error_of("=3") == "net.s:1:1: unexpected character '='; expected an instruction or end of line"
    assert error_of("LOAD mem=sram") == "net.s:1:10: mem is one of fmap, weights, bias; not 'sram'"
    assert error_of("POOLINIT kind=max|avg") == "net.s:1:15: kind is one of max, avg; not 'max|avg'"
    assert error_of("CONVINIT kernel_h=3 kernel_w=3 alpha=-1") == "net.s:1:38: alpha = -1 is out of range 0..65535"
    assert error_of("CONVINIT kernel_h=010x") == (
        "net.s:1:19: bad value '010x' for kernel_h; expected a number (42, 0x2a, -3), a name or names joined by '|'"
    )


def test_leading_zeros_are_decimal() -> None:
    (ins,) = assemble("CONVINIT kernel_h=010 kernel_w=0x0a")
    assert ins.kernel_h == 10 and ins.kernel_w == 10


@given(instructions(), st.sampled_from(sorted({f.name for op in OPCODES.values() for f in op.fields})))
def test_unknown_fields_are_named(ins: Instruction, name: str) -> None:
    line = disassemble([ins]).rstrip("\n")
    if name in ins.spec.by_name:
        return
    message = error_of(f"{line} {name}=0")
    assert re.match(rf"net\.s:1:{len(line) + 2}: {ins.mnemonic} has no field '{name}'", message)
