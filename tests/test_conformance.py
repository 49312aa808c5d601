"""ONNX conformance node cases (onnx.backend.test.case.node) for layerloom's op set.

Every selected case is imported and run by the reference executor (tests/conformance.py).
At least 95% must pass; the rest must be refused with a LayerloomError, never answered
wrongly and never crash with another exception. The cases are collected once per process
(so once per pytest-xdist worker). Full report: `.venv/bin/python -m tests.conformance`.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

from tests.conformance import EXPECTED_DIFFERENCES, OP_TYPES, Outcome, cases, onnxruntime_outputs, report, run_case

MIN_PASS_RATE = 0.95


@pytest.fixture(scope="module")
def outcomes() -> list[Outcome]:
    return [run_case(c) for c in cases()]


def test_selection_covers_every_op_type() -> None:
    seen = collections.Counter(n.op_type for c in cases() if c.model is not None for n in c.model.graph.node)
    assert set(seen) == OP_TYPES
    assert len(cases()) >= 300


def test_pass_rate_and_no_wrong_answers(outcomes: list[Outcome]) -> None:
    text = report(outcomes)
    print(text)  # the refused cases with their reasons (pytest -s, or python -m tests.conformance)
    bad = [o for o in outcomes if o.status in ("wrong", "crash")]
    assert not bad, text
    passed = sum(o.status == "pass" for o in outcomes)
    assert passed >= MIN_PASS_RATE * len(outcomes), text


def test_refusals_are_one_line(outcomes: list[Outcome]) -> None:
    for o in outcomes:
        if o.status == "refused":
            assert o.detail and "\n" not in o.detail, o


@pytest.mark.parametrize("name", sorted(EXPECTED_DIFFERENCES))
def test_expected_differences_are_real(name: str, outcomes: list[Outcome]) -> None:
    """Each listed case passes against onnxruntime but onnxruntime disagrees with the case's
    own outputs (else it does not belong on the list)."""
    (case,) = [c for c in cases() if c.name == name]
    assert case.model is not None and case.data_sets is not None
    inputs_list, outputs_list = case.data_sets[0]
    inputs = {i.name: np.asarray(a) for i, a in zip(case.model.graph.input, inputs_list, strict=False)}
    oracle = onnxruntime_outputs(case.model, inputs)
    assert any(
        not np.allclose(o, np.asarray(w), rtol=case.rtol, atol=case.atol) for o, w in zip(oracle, outputs_list, strict=True)
    )
    assert [o.status for o in outcomes if o.name == name] == ["pass"]
