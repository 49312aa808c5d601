"""Malformed input never escapes as anything but a LayerloomError.

Hypothesis mutates inputs the way a fuzzer would (numbers, words, brackets and quotes cut
or inserted): the bundled hardware descriptions, which must parse or raise a located
LayerloomError, and printed IR (the digits CNN in float and int8, weights inline), which
must load, pass the pipeline and run, or raise a LayerloomError, within a time limit (xDSL's
lexer once took minutes over a string left open: compiler/xdsl_fixes.py). The ONNX mutation
fuzzer that found the import bugs named beside their fixes is not in the suite.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.reference import execute
from compiler import import_onnx, quantize, run_pipeline
from compiler.errors import LayerloomError
from compiler.hw.parser import parse_target
from compiler.program import Program
from compiler.registry import parse_module

TARGETS = sorted((Path(__file__).parents[1] / "compiler" / "hw" / "targets").glob("*.hw"))


def outcome(fn: object, *args: object) -> object:
    """fn(*args), or None when it refuses with a LayerloomError (anything else fails the test)."""
    try:
        return fn(*args)  # type: ignore[operator]
    except LayerloomError:
        return None


def mutate_text(text: str, data: st.DataObject, numbers: list[str], words: list[str]) -> str:
    for _ in range(data.draw(st.integers(1, 3))):
        spots = list(re.finditer(r"-?\d+", text))
        kind = data.draw(st.sampled_from(["number", "word", "cut"]))
        if kind == "number" and spots:
            m = data.draw(st.sampled_from(spots))
            text = text[: m.start()] + data.draw(st.sampled_from(numbers)) + text[m.end():]
        elif kind == "word":
            at = data.draw(st.integers(0, len(text)))
            text = text[:at] + data.draw(st.sampled_from(words)) + text[at:]
        else:
            at = data.draw(st.integers(0, max(0, len(text) - 1)))
            text = text[:at] + text[at + data.draw(st.integers(1, 8)):]
    return text


@settings(deadline=None)  # examples: the profile's (conftest.py), so that `make soak` draws 400
@given(st.data())
def test_mutated_hardware_descriptions_parse_or_are_located_errors(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(TARGETS))
    text = mutate_text(path.read_text(), data, ["0", "1", "-1", "0.5", "1e999", "2 x 1e308", "65536"],
                       ["{", "}", ";", "x", "GB/s", "MHz", "KiB", '"', "engine e { kind seml; }"])
    outcome(parse_target, text, "mutated.hw")


EXAMPLES = Path(__file__).parents[1] / "examples"
IR_NUMBERS = ["0", "1", "-1", "3", "8", "127", "-128", "2147483648", "1e999", "nan", "0x7F"]
IR_WORDS = ['"', "<", ">", "{", "}", "(", ")", "[", "]", ",", ":", "x", "i8", "i32", "f32", "i2147483648",
            '"relu"', '"max"', "dense<", "array<i64: ", "%0", "\\", "// "]


@cache
def printed_programs() -> tuple[str, ...]:
    """The digits CNN after the float pipeline, and quantized to int8, printed with inline weights."""
    program = run_pipeline(import_onnx(EXAMPLES / "digits_cnn.onnx"), "canonicalize,fold-batchnorm")
    calibration = [{"input": np.random.default_rng(i).random((1, 1, 8, 8), dtype=np.float32)} for i in range(2)]
    return program.text(inline_weights=True), quantize(program, calibration).text(inline_weights=True)


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail, instead of hanging the suite, when the body runs longer than `seconds`."""
    def expire(*_: object) -> None:
        raise TimeoutError(f"a mutated input took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def load_run(text: str) -> object:
    program = run_pipeline(Program(parse_module(text, "mutated.mlir"), source="mutated.mlir"), "fuse-activation")
    return execute(program, {"input": np.zeros((1, 1, 8, 8), np.float32)})


@settings(deadline=None)  # examples: the profile's (conftest.py), so that `make soak` draws 400
@given(st.data())
def test_mutated_ir_loads_and_runs_or_is_an_error(data: st.DataObject) -> None:
    text = mutate_text(data.draw(st.sampled_from(printed_programs())), data, IR_NUMBERS, IR_WORDS)
    with time_limit(30):
        outcome(load_run, text)
