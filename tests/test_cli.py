"""The `layerloom` driver end to end: compile writes a build folder and a table, run agrees
with onnxruntime, builds are replaced atomically and are deterministic."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import cli
from compiler.analysis import analyze
from compiler.program import Program

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY_CNN = EXAMPLES / "tiny_cnn.onnx"
RTOL, ATOL = 1e-4, 1e-5


def onnxruntime_run(model: str | Path | onnx.ModelProto, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, options)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def tiny_input(batch: int = 1) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(7).standard_normal((batch, 3, 32, 32)).astype(np.float32)}


def compile_ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = cli.main(["compile", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def run_ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = cli.main(["run", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_compile_writes_build_folder_summary_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "build"
    table = compile_ok(capsys, str(TINY_CNN), "-o", str(out))
    assert sorted(p.name for p in out.iterdir()) == ["model.mlir", "summary.json", "weights.npz"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"] == "reference"
    assert summary["pipeline"] == cli.DEFAULT_PIPELINE
    assert summary["inputs"] == [{"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert summary["outputs"] == [{"name": "output", "shape": [1, 10], "dtype": "float32"}]
    layers = {x["name"]: x for x in summary["layers"]}
    # Batchnorms are folded and activations fused by the default pipeline.
    assert not any(x["op"] == "batchnorm" for x in layers.values())
    assert (layers["conv1"]["op"], layers["conv1"]["activation"]) == ("conv2d", "relu")
    assert (layers["dw"]["op"], layers["dw"]["activation"]) == ("depthwise", "relu")
    assert layers["conv1"]["macs"] == 16 * 32 * 32 * 3 * 3 * 3
    assert layers["conv1"]["params"] == 16 * 3 * 3 * 3 + 16
    assert layers["fc"]["output_shape"] == [1, 10]
    totals = summary["totals"]
    assert totals["macs"] == sum(x["macs"] for x in summary["layers"])
    assert totals["params"] == sum(x["params"] for x in summary["layers"]) == 8290
    # The printed table lists every layer and the totals.
    for name in layers:
        assert any(line.startswith(name + " ") for line in table.splitlines()), name
    assert f"{totals['macs']:,}" in next(line for line in table.splitlines() if line.startswith("total"))


def test_run_matches_onnxruntime_with_npz_and_npy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compile_ok(capsys, str(TINY_CNN), "-o", str(tmp_path / "build"))
    inputs = tiny_input()
    want = onnxruntime_run(TINY_CNN, inputs)["output"]
    np.savez(tmp_path / "in.npz", **inputs)
    run_ok(capsys, str(tmp_path / "build"), "--input", str(tmp_path / "in.npz"), "--output", str(tmp_path / "out.npz"))
    with np.load(tmp_path / "out.npz") as got:
        assert got.files == ["output"]
        np.testing.assert_allclose(got["output"], want, rtol=RTOL, atol=ATOL)
    np.save(tmp_path / "in.npy", inputs["input"])
    run_ok(capsys, str(tmp_path / "build"), "--input", str(tmp_path / "in.npy"), "--output", str(tmp_path / "out.npy"),
           "--with", "reference")
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, rtol=RTOL, atol=ATOL)


def test_output_without_suffix_is_written_under_that_exact_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compile_ok(capsys, str(TINY_CNN), "-o", str(tmp_path / "build"))
    np.savez(tmp_path / "in.npz", **tiny_input())
    run_ok(capsys, str(tmp_path / "build"), "--input", str(tmp_path / "in.npz"), "--output", str(tmp_path / "result"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "in.npz", "result"]
    with np.load(tmp_path / "result") as got:
        assert got.files == ["output"]


def test_empty_pipeline_keeps_the_graph_as_imported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "build"
    compile_ok(capsys, str(TINY_CNN), "--pipeline", "", "-o", str(out))
    summary = json.loads((out / "summary.json").read_text())
    ops = [x["op"] for x in summary["layers"]]
    assert summary["pipeline"] == "" and ops.count("batchnorm") == 2 and ops.count("relu") == 5
    assert all(x["activation"] is None for x in summary["layers"])
    # Unfused, the same program still computes the same function.
    np.savez(tmp_path / "in.npz", **tiny_input())
    run_ok(capsys, str(out), "--input", str(tmp_path / "in.npz"), "--output", str(tmp_path / "y.npz"))
    with np.load(tmp_path / "y.npz") as got:
        np.testing.assert_allclose(got["output"], onnxruntime_run(TINY_CNN, tiny_input())["output"], rtol=RTOL, atol=ATOL)


def test_print_weights_inlines_the_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compile_ok(capsys, str(TINY_CNN), "--print-weights", "-o", str(tmp_path / "inline"))
    compile_ok(capsys, str(TINY_CNN), "-o", str(tmp_path / "handles"))
    inline_text = (tmp_path / "inline" / "model.mlir").read_text()
    assert "dense<" in inline_text and "dense<" not in (tmp_path / "handles" / "model.mlir").read_text()
    inline, handles = Program.load(tmp_path / "inline"), Program.load(tmp_path / "handles")
    assert sorted(inline.weights) == sorted(handles.weights)
    for handle in handles.weights:
        np.testing.assert_array_equal(inline.weights[handle], handles.weights[handle])


def test_builds_are_deterministic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        compile_ok(capsys, str(TINY_CNN), "-o", str(tmp_path / name))
    for file in ("model.mlir", "weights.npz", "summary.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file


def test_summary_layers_are_the_analysis_of_the_saved_program(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compile_ok(capsys, str(TINY_CNN), "-o", str(tmp_path / "build"))
    summary = json.loads((tmp_path / "build" / "summary.json").read_text())
    assert summary["layers"] == [x.as_dict() for x in analyze(Program.load(tmp_path / "build"))]


def test_existing_build_is_replaced_only_on_success(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "build"
    compile_ok(capsys, str(TINY_CNN), "--pipeline", "", "-o", str(out))
    first = (out / "summary.json").read_bytes()
    # A failing compile leaves the earlier build as it was.
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    assert cli.main(["compile", str(tmp_path / "bad.onnx"), "-o", str(out)]) == 2
    assert (out / "summary.json").read_bytes() == first
    # A successful one replaces it, and no temporary folder is left beside it.
    compile_ok(capsys, str(TINY_CNN), "-o", str(out))
    assert json.loads((out / "summary.json").read_text())["pipeline"] == cli.DEFAULT_PIPELINE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx", "build"]


def test_a_folder_that_is_not_a_build_is_never_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert cli.main(["compile", str(TINY_CNN), "-o", str(precious)]) == 2
    assert "not a layerloom build folder" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"


def test_input_shape_fixes_a_dynamic_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = onnx.load(str(TINY_CNN))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(model, tmp_path / "dynamic.onnx")
    compile_ok(capsys, str(tmp_path / "dynamic.onnx"), "--input-shape", "input=2x3x32x32", "-o", str(tmp_path / "b2"))
    summary = json.loads((tmp_path / "b2" / "summary.json").read_text())
    assert summary["inputs"][0]["shape"] == [2, 3, 32, 32] and summary["outputs"][0]["shape"] == [2, 10]
    assert summary["layers"][0]["macs"] == 2 * 16 * 32 * 32 * 27
    np.savez(tmp_path / "in.npz", **tiny_input(batch=2))
    run_ok(capsys, str(tmp_path / "b2"), "--input", str(tmp_path / "in.npz"), "--output", str(tmp_path / "y.npz"))
    with np.load(tmp_path / "y.npz") as got:
        np.testing.assert_allclose(got["output"], onnxruntime_run(model, tiny_input(batch=2))["output"], rtol=RTOL, atol=ATOL)


def test_multiple_outputs_are_keyed_by_graph_output_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["pos.out"], name="relu"), helper.make_node("Mul", ["x", "minus_one"], ["n"]),
             helper.make_node("Relu", ["n"], ["neg/out"], name="relu2")]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("pos.out", "neg/out")],
                              [numpy_helper.from_array(np.array(-1, np.float32), "minus_one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "two.onnx")
    if cli.main(["compile", str(tmp_path / "two.onnx"), "-o", str(tmp_path / "b")]) != 0:
        pytest.fail(capsys.readouterr().err)
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    run_ok(capsys, str(tmp_path / "b"), "--input", str(tmp_path / "in.npz"), "--output", str(tmp_path / "y.npz"))
    with np.load(tmp_path / "y.npz") as got:
        assert sorted(got.files) == ["neg/out", "pos.out"]
        np.testing.assert_array_equal(got["pos.out"], np.maximum(x, 0))
        np.testing.assert_array_equal(got["neg/out"], np.maximum(-x, 0))


def failing_target(monkeypatch: pytest.MonkeyPatch) -> None:
    def build(program: Program, folder: Path, args: argparse.Namespace) -> dict[str, object]:
        (folder / "partial.bin").write_bytes(b"half")
        raise RuntimeError("backend exploded\nsecond line")

    monkeypatch.setitem(cli.TARGETS, "boom", cli.Target("boom", "fails half-way", "", "reference", build=build))


def test_internal_error_is_one_line_exit_3_and_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    failing_target(monkeypatch)
    out = tmp_path / "new" / "nested" / "build"
    assert cli.main(["compile", str(TINY_CNN), "--target", "boom", "-o", str(out)]) == 3
    err = capsys.readouterr().err
    assert err == "layerloom: internal error: RuntimeError: backend exploded second line (please report)\n"
    # The build folder, its temporary and the parents compile created are all gone.
    assert list(tmp_path.iterdir()) == []


def test_debug_keeps_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    failing_target(monkeypatch)
    assert cli.main(["compile", str(TINY_CNN), "--target", "boom", "--debug", "-o", str(tmp_path / "b")]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "backend exploded" in err
    assert cli.main(["--debug", "compile", str(TINY_CNN), "--target", "boom", "-o", str(tmp_path / "b")]) == 3
    assert "Traceback" in capsys.readouterr().err


def test_installed_command_compiles_and_runs(tmp_path: Path) -> None:
    layerloom = str(Path(sys.executable).with_name("layerloom"))
    result = subprocess.run([layerloom, "compile", str(TINY_CNN), "--target", "reference", "-o", "build"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "conv1" in result.stdout and "total" in result.stdout
    np.savez(tmp_path / "in.npz", **tiny_input())
    result = subprocess.run([layerloom, "run", "build", "--input", "in.npz", "--output", "out.npz"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "out.npz") as got:
        np.testing.assert_allclose(got["output"], onnxruntime_run(TINY_CNN, tiny_input())["output"], rtol=RTOL, atol=ATOL)


def test_tiny_cnn_example_is_small_and_regenerates_identically(tmp_path: Path) -> None:
    assert TINY_CNN.stat().st_size < 200_000
    subprocess.run([sys.executable, str(EXAMPLES / "build_tiny_cnn.py"), "-o", str(tmp_path / "t.onnx")], check=True,
                   capture_output=True)
    assert (tmp_path / "t.onnx").read_bytes() == TINY_CNN.read_bytes()
    ops = {n.op_type for n in onnx.load(str(TINY_CNN)).graph.node}
    assert {"Conv", "BatchNormalization", "Relu", "MaxPool", "Add", "Concat", "GlobalAveragePool", "Gemm"} <= ops
    assert any(a.name == "group" and a.i > 1 for n in onnx.load(str(TINY_CNN)).graph.node for a in n.attribute)


def test_demo_compiles_runs_and_checks(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "demo.py"), "--out", str(tmp_path / "demo")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("OK") and "max |layerloom - onnxruntime|" in result.stdout
