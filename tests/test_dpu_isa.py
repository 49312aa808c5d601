"""The DPU instruction table, the binary encoder/decoder, the token rules and the
configurations, against docs/isa.md (its tables and worked encodings)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.dpu import assemble, decode, disassemble, encode
from backends.dpu.encoding import _decode_in_order
from backends.dpu.isa import (
    OPCODE_LSB,
    OPCODES,
    QUEUES,
    Choice,
    DpuConfig,
    Field,
    Instruction,
    QueueSet,
    SInt,
    UInt,
    Value,
    _tokens_in_order,
    configuration_table,
    field_table,
    opcode_table,
    tokens,
)
from compiler.errors import LayerloomError
from compiler.hw import load_target, parse_target

DOC = (Path(__file__).parents[1] / "docs" / "isa.md").read_text()


# ---------------------------------------------------------------------------------------
# Random instructions (shared with test_dpu_asm.py)
# ---------------------------------------------------------------------------------------


def field_values(f: Field) -> st.SearchStrategy[Value]:
    if isinstance(f, UInt):
        return st.integers(f.lo, f.top)
    if isinstance(f, SInt):
        return st.integers(*f.bounds)
    if isinstance(f, Choice):
        return st.sampled_from(f.names)
    assert isinstance(f, QueueSet)
    return st.sets(st.sampled_from([q for q in QUEUES if q != f.own])).map(frozenset)


@st.composite
def instructions(draw: st.DrawFn) -> Instruction:
    op = draw(st.sampled_from(list(OPCODES.values())))
    return Instruction(op.mnemonic, {f.name: draw(field_values(f)) for f in op.fields})


programs = st.lists(instructions(), max_size=25)


def words(data: bytes) -> list[int]:
    return np.frombuffer(data, dtype="<u4").tolist()


def from_words(ws: list[int]) -> bytes:
    return np.asarray(ws, dtype="<u4").tobytes()


def conv(**changes: Any) -> Instruction:
    fields: dict[str, Value] = dict(
        bank_in=0, addr_in=0, bank_out=1, addr_out=0, addr_w=0, addr_bias=0, out_rows=8, out_cols=8, ic=32, oc=32
    )
    return Instruction.make("CONV", **{**fields, **changes})


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mnemonic", list(OPCODES))
def test_fields_fit_their_words_without_overlap(mnemonic: str) -> None:
    op = OPCODES[mnemonic]
    taken = [0] * op.words
    taken[0] = 0xF << OPCODE_LSB
    for f in op.fields:
        assert 0 <= f.word < op.words and f.lsb + f.width <= 32, f.name
        assert taken[f.word] & f.mask == 0, f"{mnemonic}.{f.name} overlaps"
        taken[f.word] |= f.mask
        if f.default is not None:
            f.check(f.default)  # every default is a value the field holds
        assert not hasattr(Instruction, f.name), f"field {f.name} would hide Instruction.{f.name}"
    assert tuple(taken) == op.used
    assert [f.name for f in op.fields[:2]] == ([] if op.queue is None else ["wait", "signal"])


def test_opcodes_are_distinct_and_nonzero() -> None:
    codes = [op.code for op in OPCODES.values()]
    assert len(set(codes)) == len(codes) and 0 not in codes


def test_every_field_range_fits_its_width() -> None:
    for op in OPCODES.values():
        for f in op.fields:
            if isinstance(f, UInt):
                assert f.top < 1 << f.width
            if isinstance(f, SInt):
                lo, hi = f.bounds
                assert -(1 << (f.width - 1)) <= lo and hi < 1 << (f.width - 1)
            if isinstance(f, Choice):
                assert len(f.names) <= 1 << f.width


def test_docs_carry_the_generated_tables() -> None:
    assert opcode_table() in DOC
    assert configuration_table() in DOC
    for mnemonic in OPCODES:
        section = DOC.split(f"\n### {mnemonic}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        assert field_table(mnemonic) in section, f"docs/isa.md: the {mnemonic} table differs from isa.py"


# ---------------------------------------------------------------------------------------
# Worked encodings of docs/isa.md
# ---------------------------------------------------------------------------------------

WORKED = re.findall(r"```dpu-asm\n(.*?)```\n\n```dpu-hex\n(.*?)```", DOC, re.S)


def test_docs_have_worked_encodings() -> None:
    assert len(WORKED) >= 5
    assert sum(text.count("\n") for text, _ in WORKED) >= 10


@pytest.mark.parametrize(("text", "hex_lines"), WORKED)
def test_worked_encoding(text: str, hex_lines: str) -> None:
    expected = [[int(w, 16) for w in line.split()] for line in hex_lines.splitlines()]
    program = assemble(text)
    assert words(encode(program)) == [w for line in expected for w in line]
    assert [ins.spec.words for ins in program] == [len(line) for line in expected]
    assert disassemble(decode(from_words([w for line in expected for w in line]))) == text


def test_one_encoding_by_hand() -> None:
    """CONVINIT kernel 3x3 stride 2 leaky alpha 6554, bit by bit (docs section 10)."""
    ins = Instruction.make("CONVINIT", kernel_h=3, kernel_w=3, stride_h=2, stride_w=2, act="leaky", alpha=6554)
    w0 = 0x3 << 28 | 3 << 18 | 2 << 14 | 2 << 10 | 3 << 5 | 3
    w1 = 0x7F << 16 | 0x80 << 8 | 1 << 4 | 1
    assert words(encode([ins])) == [w0, w1, 6554]
    wait_save = Instruction.make("SAVE", wait={"compute", "load"}, signal={"load"}, bank=2, addr=0x10, reg="output",
                                 offset=0xDEADBEEF, rows=3, cols=4, chans=5, row_stride=0x123456, col_stride=7)  # fmt: skip
    assert words(encode([wait_save])) == [
        0x2 << 28 | 0b011 << 25 | 0b001 << 22 | 2 << 16 | 0x10,
        0xDEADBEEF,
        3 << 24 | 0x123456,
        5 << 16 | 7,
        4 << 12 | 3,
    ]


# ---------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------


@given(programs)
def test_binary_round_trip(program: list[Instruction]) -> None:
    data = encode(program)
    assert len(data) == 4 * sum(ins.spec.words for ins in program)
    assert decode(data) == program
    assert encode(decode(data)) == data


@given(programs)
def test_binary_to_text_to_binary(program: list[Instruction]) -> None:
    data = encode(program)
    assert encode(assemble(disassemble(decode(data)))) == data


@given(instructions())
def test_instruction_is_a_value(ins: Instruction) -> None:
    same = Instruction(ins.mnemonic, dict(ins.fields))
    assert same == ins and hash(same) == hash(ins)
    assert Instruction.make(ins.mnemonic, **ins.fields) == ins
    for name, value in ins.fields.items():
        assert getattr(ins, name) == ins[name] == value


def test_instruction_make_and_replace() -> None:
    c = conv()
    assert c.wait == frozenset() and c.queue == "compute"
    d = c.replace(wait=["load"], oc=16)
    assert d.wait == frozenset({"load"}) and d.oc == 16 and c.oc == 32
    with pytest.raises(AttributeError):
        c.oc = 5  # type: ignore[misc]
    with pytest.raises(LayerloomError, match=r"CONV: addr_in = 65536 is out of range 0\.\.65535"):
        conv(addr_in=65536)
    with pytest.raises(LayerloomError, match="CONV needs fields out_rows, out_cols"):
        Instruction.make("CONV", bank_in=0, addr_in=0, bank_out=0, addr_out=0, addr_w=0, addr_bias=0, ic=1, oc=1)
    with pytest.raises(LayerloomError, match="unknown instruction 'CONV2'"):
        Instruction.make("CONV2")
    with pytest.raises(LayerloomError, match="CONV has no field 'stride'"):
        conv(stride=2)
    with pytest.raises(LayerloomError, match="signal cannot name the instruction's own queue 'compute'"):
        conv(signal={"compute"})


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


def test_encode_names_the_instruction_and_field() -> None:
    bad = Instruction("CONV", {**conv().fields, "out_rows": 0})  # built around the checks
    with pytest.raises(LayerloomError, match=r"instruction 2 \(CONV\): out_rows = 0 is out of range 1\.\.4095"):
        encode([conv(), Instruction.make("END"), bad], where="net.bin")
    neg = Instruction("CONVINIT", {**Instruction.make("CONVINIT", kernel_h=1, kernel_w=1).fields, "clip_lo": -129})
    with pytest.raises(LayerloomError, match=r"instruction 0 \(CONVINIT\): clip_lo = -129 is out of range -128\.\.127"):
        encode([neg])
    missing = Instruction("END", {"wait": frozenset()})
    with pytest.raises(LayerloomError, match="instruction 0 \\(END\\): END has no field 'wait'"):
        encode([missing])
    with pytest.raises(LayerloomError, match="instruction 0 \\(CONV\\): CONV needs field ic"):
        encode([Instruction("CONV", {k: v for k, v in conv().fields.items() if k != "ic"})])


def test_decode_truncated_streams() -> None:
    data = encode([Instruction.make("CONVINIT", kernel_h=3, kernel_w=3), conv(), Instruction.make("END")])
    with pytest.raises(LayerloomError, match="34 bytes is not a whole number of 32-bit words"):
        decode(data[:34])
    with pytest.raises(
        LayerloomError, match=r"instruction 1 \(CONV\) at byte 0xc needs 5 words, but the stream ends after 2"
    ):
        decode(data[:20])
    assert decode(data[:12]) == decode(data)[:1]  # cut between instructions: a shorter program
    assert decode(b"") == []


def test_decode_invalid_streams() -> None:
    end = Instruction.make("END")
    good = words(encode([end, conv()]))
    with pytest.raises(LayerloomError, match=r"instruction 0 at byte 0x0: opcode 0x0 is not an instruction"):
        decode(bytes(8))
    with pytest.raises(LayerloomError, match=r"instruction 1 at byte 0x4: opcode 0xc is not an instruction"):
        decode(from_words([good[0], 0xC0000000]))
    with pytest.raises(LayerloomError, match=r"instruction 0 \(END\) at byte 0x0: reserved bits 0x00000001 of word 0"):
        decode(from_words([0xF0000001]))
    with pytest.raises(LayerloomError, match=r"instruction 1 \(CONV\) at byte 0x4: reserved bits 0x80000000 of word 4"):
        decode(from_words(good[:5] + [good[5] | 1 << 31]))
    with pytest.raises(LayerloomError, match=r"instruction 1 \(CONV\) at byte 0x4: out_rows = 0 is out of range"):
        decode(from_words(good[:4] + [good[4] & ~0xFFF] + good[5:]))
    with pytest.raises(LayerloomError, match="wait cannot name the instruction's own queue 'compute'"):
        decode(from_words([good[0], good[1] | 0b010 << 25] + good[2:]))
    elewinit = words(encode([Instruction.make("ELEWINIT")]))
    with pytest.raises(LayerloomError, match=r"act code 3 names nothing \(codes 0\.\.2\)"):
        decode(from_words([elewinit[0] | 3 << 19, elewinit[1]]))
    with pytest.raises(LayerloomError, match=r"inputs = 0 is out of range 1\.\.2"):
        decode(from_words([elewinit[0] & ~3, elewinit[1]]))


@given(st.binary(max_size=64))
def test_decode_of_any_bytes_is_a_program_or_a_clear_error(data: bytes) -> None:
    try:
        program = decode(data)
    except LayerloomError as e:
        assert re.match(r"(\d+ bytes is not|instruction \d+)", e.message)
    else:
        assert encode(program) == data


@settings(max_examples=150, deadline=None)
@given(program=st.lists(instructions(), min_size=1, max_size=12), flips=st.lists(st.integers(0, 2**16), max_size=3),
       cut=st.integers(0, 3))
def test_decode_matches_decoding_in_order(program: list[Instruction], flips: list[int], cut: int) -> None:
    """`decode` (fields cut out per opcode with numpy) gives what decoding instruction by
    instruction gives, program or error, on valid streams with random bits flipped (codes
    out of range, reserved bits, unknown opcodes) and words cut off."""
    ws = words(encode(program))
    for flip in flips:
        ws[flip % len(ws)] ^= 1 << (flip // len(ws) % 32)
    data = from_words(ws[: len(ws) - cut])
    results = []
    for run in (decode, lambda d: _decode_in_order(d, "")):
        try:
            results.append(run(data))
        except LayerloomError as e:
            results.append(e.message)
    assert results[0] == results[1]


# ---------------------------------------------------------------------------------------
# Dependency tokens
# ---------------------------------------------------------------------------------------


def load(**changes: Any) -> Instruction:
    fields: dict[str, Value] = dict(addr=0, reg="work", offset=0, rows=1, cols=1, chans=1, row_stride=0, col_stride=1)
    return Instruction.make("LOAD", **{**fields, **changes})


def save(**changes: Any) -> Instruction:
    fields: dict[str, Value] = dict(
        bank=1, addr=0, reg="work", offset=0, rows=1, cols=1, chans=1, row_stride=0, col_stride=1
    )
    return Instruction.make("SAVE", **{**fields, **changes})


def test_tokens_pair_kth_signal_with_kth_wait() -> None:
    program = assemble(DOC.split("```dpu-asm\n", 1)[1].split("```", 1)[0])
    pairs = tokens(program)
    assert [(t.source, t.dest, t.signaller, t.waiter) for t in pairs] == [
        ("load", "compute", 2, 4),
        ("compute", "save", 4, 5),
    ]
    # double buffering: two loads ahead, each conv frees its buffer for the load after next
    program = [
        load(signal={"compute"}),
        load(signal={"compute"}),
        conv(wait={"load"}, signal={"load", "save"}),
        load(wait={"compute"}, signal={"compute"}),
        conv(wait={"load"}, signal={"load", "save"}),
        save(wait={"compute"}, signal={"load"}),
        conv(wait={"load"}, signal={"save"}),
        save(wait={"compute"}),
        load(wait={"compute", "save"}),  # the next layer reads what the first SAVE wrote
        save(wait={"compute"}),
        Instruction.make("END"),
    ]
    got = {(t.source, t.dest, t.signaller, t.waiter) for t in tokens(program)}
    assert got == {
        ("load", "compute", 0, 2),
        ("load", "compute", 1, 4),
        ("compute", "load", 2, 3),
        ("compute", "save", 2, 5),
        ("load", "compute", 3, 6),
        ("compute", "load", 4, 8),
        ("compute", "save", 4, 7),
        ("save", "load", 5, 8),
        ("compute", "save", 6, 9),
    }


def test_token_rules() -> None:
    end = Instruction.make("END")
    with pytest.raises(
        LayerloomError,
        match=r"prog.bin: instruction 0 \(CONV\) waits for token 0 on load->compute, but only 0 are signalled",
    ):
        tokens([conv(wait={"load"}), load(signal={"compute"}), end], where="prog.bin")
    with pytest.raises(
        LayerloomError, match=r"instruction 3 \(CONV\) waits for token 1 on load->compute, but only 1 is"
    ):
        tokens([load(signal={"compute"}), conv(wait={"load"}), load(), conv(wait={"load"}), end])
    with pytest.raises(
        LayerloomError, match=r"1 token on compute->save never waited for \(first: instruction 0, CONV\)"
    ):
        tokens([conv(signal={"save"}), end])
    with pytest.raises(
        LayerloomError, match=r"2 tokens on compute->save never waited for \(first: instruction 2, CONV\)"
    ):
        tokens([conv(signal={"save"}), save(wait={"compute"}), conv(signal={"save"}), conv(signal={"save"}), end])
    with pytest.raises(LayerloomError, match="does not end with END"):
        tokens([conv()])
    with pytest.raises(LayerloomError, match="instruction 0: END before the last instruction"):
        tokens([end, end])
    assert tokens([end]) == []


@st.composite
def token_programs(draw: st.DrawFn) -> list[Instruction]:
    """Short programs of LOAD / CONV / SAVE with random wait and signal sets (most of them
    breaking some rule), END usually last."""
    makers = {"load": load, "compute": conv, "save": save}
    program = []
    for _ in range(draw(st.integers(0, 12))):
        queue = draw(st.sampled_from(QUEUES))
        others = [q for q in QUEUES if q != queue]
        program.append(makers[queue](wait=draw(st.sets(st.sampled_from(others))),
                                     signal=draw(st.sets(st.sampled_from(others)))))
    if draw(st.integers(0, 9)):
        program.append(Instruction.make("END"))
    return program


@settings(max_examples=150, deadline=None)
@given(program=token_programs())
def test_tokens_match_the_rules_in_program_order(program: list[Instruction]) -> None:
    """`tokens` (channel by channel, vectorised) pairs and refuses exactly as the rules
    applied instruction by instruction do."""
    try:
        expected: list | str = _tokens_in_order(program, "")
    except LayerloomError as e:
        expected = str(e)
    try:
        got: list | str = tokens(program)
    except LayerloomError as e:
        got = str(e)
    assert got == expected


# ---------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["B512", "B800", "B1024", "B1152", "B1600", "B2304", "B3136", "B4096"])
def test_bundled_dpu_targets_agree_with_the_bank_layout(arch: str) -> None:
    config = DpuConfig.from_target(load_target(f"dpu-{arch.lower()}"))
    assert config == DpuConfig.from_arch(arch)
    assert config.macs * 2 == int(arch[1:])
    assert config.bank_bytes("fmap") == config.bank_depth * config.icp


def test_zcu102_dpu_has_three_b4096_cores() -> None:
    config = DpuConfig.from_target(load_target("zcu102-dpu"))
    assert (config.name, config.pp, config.icp, config.ocp, config.cores, config.bank_num) == ("B4096", 8, 16, 16, 3, 8)
    assert config.bank_bytes("weights") == 2048 * 256 and config.word_bytes("bias") == 8


def test_target_whose_banks_do_not_match_is_refused() -> None:
    text = """target odd { clock 300 MHz; dram { bandwidth 19.2 GB/s; }
        memory fmap { size 8 x 16 KB; } engine dpu { kind dpu; arch B4096; } }"""
    with pytest.raises(LayerloomError, match="banks of 16384 bytes, but a DPU bank holds 2048 words of ICP = 16"):
        DpuConfig.from_target(parse_target(text))
    with pytest.raises(LayerloomError, match="target 'zcu102' has no DPU engine"):
        DpuConfig.from_target(load_target("zcu102"))
    with pytest.raises(LayerloomError, match="unknown DPU configuration 'B9999'"):
        DpuConfig.from_arch("B9999")


def test_large_program_round_trip_is_fast() -> None:
    """A ResNet-50 lowers to tens of thousands of instructions; both directions take well
    under a second for 20000."""
    import time

    program = [conv(addr_in=i % 2048, signal={"save"} if i % 3 else frozenset()) for i in range(20000)]
    start = time.perf_counter()
    assert decode(encode(program)) == program
    assert time.perf_counter() - start < 3.0
