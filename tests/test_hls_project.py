"""Generated HLS projects in C simulation: small quantized models (conv, depthwise, grouped,
pointwise, pooling, residual add, dense) lowered in every architecture, emitted, compiled
warning-free (g++ -std=c++17 -Wall -Wextra -Werror) and run; their outputs must equal the
reference executor's on the qnn program bit for bit. Also: the generated testbench, the
DDR image, deterministic output and the report's estimates.

Projects are emitted into build/csim-tests/hls/ (the same folder every run, so that the
content-addressed g++ builds of backends/hls/csim.py are reused when nothing changed)."""

from __future__ import annotations

import json
import re
import shutil
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.hls import csim
from backends.hls.emit import STEP_FIELDS, emit_project, find_top
from backends.hls.error_bound import error_bound
from backends.hls.project import HlsProject
from backends.hls.report import estimate
from backends.reference import execute
from compiler.errors import LayerloomError
from compiler.hw import load_target
from compiler.pipeline import run_pipeline
from compiler.program import Program
from tests.hls_models import Net, float_program, quantized, sample_inputs

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = ROOT / "build" / "csim-tests" / "hls"
ARCHS = ("sesl", "seml", "hybrid")
ZCU102 = load_target("zcu102")


@cache
def reference(model: str, scheme: str) -> tuple[Program, np.ndarray, np.ndarray]:
    program = quantized(model, scheme)
    x = sample_inputs(model)
    y = np.concatenate([execute(program, {"x": x[i:i + 1]})["y"] for i in range(len(x))])
    return program, x, y


def lowered(model: str, arch: str, scheme: str = "fixed", options: str = "") -> Program:
    program = reference(model, scheme)[0].clone()
    run_pipeline(program, f"lower-to-hls{{arch={arch} pes=4 {options}}}")
    return program


def emitted(model: str, arch: str, scheme: str = "fixed", options: str = "", folder: Path | None = None) -> HlsProject:
    _, x, y = reference(model, scheme)
    program = lowered(model, arch, scheme, options)
    folder = folder or PROJECTS / "_".join(filter(None, (model, arch, scheme, re.sub(r"\W", "", options))))
    emit_project(program.module, program.weights, folder, test_inputs=x, test_outputs=y, target=ZCU102,
                 source=model)
    return HlsProject(folder)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("model", ["cnn", "mobile", "residual"])
def test_c_simulation_equals_the_reference_bit_for_bit(model: str, arch: str) -> None:
    _, x, y = reference(model, "fixed")
    assert np.array_equal(emitted(model, arch).predict(x), y)


@cache
def float_reference(model: str) -> tuple[Program, np.ndarray, np.ndarray]:
    program = float_program(model)
    x = sample_inputs(model)
    y = np.concatenate([execute(program, {"x": x[i:i + 1]})["y"] for i in range(len(x))])
    return program, x, y


def float_project(model: str, dtype: str, pes: int = 4) -> tuple[HlsProject, np.ndarray]:
    """The float or half accelerator of a model, its testbench checking the probabilistic
    error bound; returns the project and that bound."""
    program, x, y = float_reference(model)
    lowered = program.clone()
    run_pipeline(lowered, f"lower-to-hls{{dtype={dtype} pes={pes}}}")
    tolerance = error_bound(program, x, dtype, probabilistic=True)
    folder = PROJECTS / f"{model}_{dtype}_pes{pes}"
    emit_project(lowered.module, lowered.weights, folder, test_inputs=x, test_outputs=y, test_tolerance=tolerance,
                 target=ZCU102, source=model)
    return HlsProject(folder), tolerance


# What the measured error stays below, relative to the largest output: a few float ulps; for
# half, the 2^-11 unit roundoff grown over a few layers (the bounds are far looser).
MEASURED = {"float": 1e-6, "half": 4e-3}


@pytest.mark.parametrize("dtype", ["float", "half"])
@pytest.mark.parametrize("model", ["floats", "mobile", pytest.param("cnn", marks=pytest.mark.slow),
                                   pytest.param("residual", marks=pytest.mark.slow)])
def test_float_and_half_c_simulation_within_the_error_bound(model: str, dtype: str) -> None:
    program, x, y = float_reference(model)
    project, tolerance = float_project(model, dtype)
    error = np.abs(project.predict(x) - y)
    assert (error <= tolerance).all()
    assert (tolerance <= error_bound(program, x, dtype)).all()  # the probabilistic bound never exceeds the worst case
    assert error.max() <= MEASURED[dtype] * np.abs(y).max()
    if dtype == "half":
        assert error.max() > 0  # it really computes in half


def test_a_half_project_gives_the_same_bits_with_the_half_struct() -> None:
    """The generated half C++ also builds with half.h's struct (a class type, as Vitis's half
    is) instead of _Float16, and computes the same bits."""
    from backends.hls import csim
    from backends.hls.project import to_stream

    project, _ = float_project("floats", "half")
    _, x, _ = float_reference("floats")
    folder = project.folder
    library = csim.load(csim.build([folder / "top.cpp", folder / "predict.cpp"], project.include_dirs,
                                   folder / "csim", ["-DLAYERLOOM_SOFT_HALF"], shared=True, name="predict_soft_half"))
    (y,) = library.predict("layerloom_predict", [to_stream(x)], [((len(x), 5), np.float32)], None, None, len(x))
    assert np.array_equal(y, project.predict(x))


def test_half_testbench_checks_the_tolerance(tmp_path: Path) -> None:
    project, _ = float_project("floats", "half")
    assert "2 image(s), 10 values, all within the tolerance of the reference" in project.testbench()
    broken = tmp_path / "broken"
    shutil.copytree(project.folder, broken, ignore=shutil.ignore_patterns("csim"))
    data = broken / "tb_data.h"
    text = data.read_text()
    tolerances = text.index("tb_tolerance")
    data.write_text(text[:tolerances] + re.sub(r"0x[0-9a-f.]+p[-+]\d+f", "0x0p+0f", text[tolerances:]))
    with pytest.raises(LayerloomError, match="differ from the reference beyond the tolerance"):
        HlsProject(broken).testbench()


@pytest.mark.parametrize("arch", ARCHS)
def test_pow2_scheme_bit_exact(arch: str) -> None:
    _, x, y = reference("residual", "pow2")
    assert np.array_equal(emitted("residual", arch, "pow2").predict(x), y)


@pytest.mark.parametrize("scheme", ["fixed", "pow2"])
def test_lookup_tables_and_concat_on_the_pipeline_bit_exact(scheme: str) -> None:
    _, x, y = reference("tables", scheme)
    assert np.array_equal(emitted("tables", "sesl", scheme).predict(x), y)


def test_the_reused_engines_refuse_a_lookup_table_with_its_name() -> None:
    with pytest.raises(LayerloomError, match="qnn.lut 'sigmoid'.*no reused engine"):
        lowered("tables", "seml")


@pytest.mark.slow
@pytest.mark.parametrize("options", ["arch=hybrid split=1", "arch=hybrid split=4", "arch=sesl conv=im2row",
                                     "arch=sesl pes=3", "arch=seml pes=3"])
@pytest.mark.parametrize("model", ["mobile", "residual"])
def test_other_splits_templates_and_pes_bit_exact(model: str, options: str) -> None:
    _, x, y = reference(model, "fixed")
    arch, _, rest = options.partition(" ")
    assert np.array_equal(emitted(model, arch.split("=")[1], options=rest).predict(x), y)


def test_testbench_passes_and_fails_on_a_wrong_expected_value(tmp_path: Path) -> None:
    project = emitted("cnn", "sesl")
    assert "2 image(s), 20 values, all equal to the reference" in project.testbench()
    broken = tmp_path / "broken"
    shutil.copytree(project.folder, broken, ignore=shutil.ignore_patterns("csim"))
    data = broken / "tb_data.h"
    text = data.read_text()
    last = text.rindex("0x")  # the last expected value: flip a digit of its mantissa
    data.write_text(text[:last + 3] + ("1" if text[last + 3] != "1" else "2") + text[last + 4:])
    with pytest.raises(LayerloomError, match="exited with status 1: testbench: 1 of 20 values differ"):
        HlsProject(broken).testbench()


def test_seml_testbench_reads_the_ddr_image(tmp_path: Path) -> None:
    project = emitted("cnn", "seml")
    layout = json.loads((project.folder / "project.json").read_text())["ddr"]
    assert (project.folder / "weights.bin").stat().st_size == layout["params_offset"] + 4 * layout["params_words"]
    assert layout["weights_bytes"] == 8 * 9 + 10 * 128
    assert "all equal to the reference" in project.testbench()
    missing = tmp_path / "missing"
    shutil.copytree(project.folder, missing, ignore=shutil.ignore_patterns("csim", "weights.bin"))
    with pytest.raises(LayerloomError, match="exited with status 2"):
        HlsProject(missing).testbench()


def test_predict_refuses_a_wrong_input_shape() -> None:
    with pytest.raises(LayerloomError, match="the accelerator takes N x 1 x 8 x 8"):
        emitted("cnn", "sesl").predict(np.zeros((1, 3, 8, 8), np.float32))


def test_emission_is_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        emitted("residual", "hybrid", options="split=2", folder=tmp_path / name)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert Path("weights.bin") in files and Path("run_hls.tcl") in files and Path("report.json") in files
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_step_fields_are_those_of_the_header() -> None:
    header = (ROOT / "backends/hls/include/layerloom/engine_seml.h").read_text()
    macro = header[header.index("#define LAYERLOOM_SEML_STEP_FIELDS"):header.index("struct Step")]
    assert tuple(re.findall(r"X\((\w+)\)", macro)) == STEP_FIELDS


def test_report_has_every_engine_and_the_target_resources() -> None:
    project = emitted("residual", "hybrid", options="split=2")
    report = json.loads((project.folder / "report.json").read_text())
    assert report["available"] == {"dsp": 2520, "bram": 912, "lut": 274080}
    names = [e["name"] for e in report["engines"]]
    assert {"conv", "add", "pool"} <= set(names)  # the reused engines
    pipeline = [e["latency_cycles"] for e in report["engines"] if "reused" not in e["kind"]]
    reused = sum(e["latency_cycles"] for e in report["engines"] if "reused" in e["kind"])
    assert report["schedule_cycles"] > reused  # the steps, plus copying the double buffers in and the result out
    assert report["period_cycles"] == max(*pipeline, report["schedule_cycles"])
    assert report["latency_cycles"] == sum(pipeline) + report["schedule_cycles"]
    assert report["throughput_fps"] == pytest.approx(300e6 / report["period_cycles"], rel=1e-6)
    assert report["total"]["dsp"] == sum(e["dsp"] for e in report["engines"]) + report["memories"]["dsp"]
    assert report["fits"] is True


@pytest.mark.parametrize("arch", ARCHS)
def test_more_pes_are_not_slower_and_cost_more(arch: str) -> None:
    reports = []
    for pes in (1, 2, 4, 8):
        program = reference("mobile", "fixed")[0].clone()
        run_pipeline(program, f"lower-to-hls{{arch={arch} pes={pes} split=3}}")
        reports.append(estimate(find_top(program.module), ZCU102))
    for fewer, more in zip(reports, reports[1:], strict=False):
        assert more["period_cycles"] <= fewer["period_cycles"]
        assert more["total"]["dsp"] >= fewer["total"]["dsp"]
        assert more["total"]["lut"] >= fewer["total"]["lut"]
    assert reports[-1]["period_cycles"] < reports[0]["period_cycles"]
    assert reports[-1]["total"]["dsp"] > reports[0]["total"]["dsp"]


def digits_files(tmp_path: Path) -> tuple[Path, Path]:
    """Calibration images and one test image of the digits CNN (scikit-learn's digits)."""
    from sklearn.datasets import load_digits

    images = (load_digits().images[:32] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    calib, x = tmp_path / "calib.npz", tmp_path / "x.npz"
    np.savez(calib, input=images)
    np.savez(x, input=images[20:21])
    return calib, x


def test_driver_compiles_the_digits_cnn_and_runs_its_c_simulation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from compiler import cli

    calib, x = digits_files(tmp_path)
    out = tmp_path / "out"
    assert cli.main(["compile", str(ROOT / "examples/digits_cnn.onnx"), "--target", "hls", "--hw", "zcu102",
                     "--arch", "hybrid", "--calib", str(calib), "-o", str(out)]) == 0
    assert "hls: hybrid int8 accelerator for zcu102" in capsys.readouterr().out
    for name in ("top.cpp", "top.h", "weights.h", "tb.cpp", "run_hls.tcl", "report.json", "dataflow.mlir", "model.mlir"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["hls"]["throughput_fps"] == json.loads((out / "report.json").read_text())["throughput_fps"] > 0
    assert cli.main(["run", str(out), "--input", str(x), "--output", str(tmp_path / "csim.npz")]) == 0
    assert (out / "csim").is_dir()  # the C simulation is cached in the build folder
    assert cli.main(["run", str(out), "--input", str(x), "--output", str(tmp_path / "ref.npz"), "--with", "reference"]) == 0
    csim, ref = np.load(tmp_path / "csim.npz"), np.load(tmp_path / "ref.npz")
    assert list(csim.keys()) == list(ref.keys()) and all(np.array_equal(csim[k], ref[k]) for k in csim)
    assert "all equal to the reference" in HlsProject(out).testbench()


def test_driver_compiles_the_digits_cnn_in_half(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--dtype half: no quantization (no --calib), the float program in model.mlir, a half
    accelerator whose testbench checks the error bound, and `run` close to `--with reference`."""
    from compiler import cli

    _, x = digits_files(tmp_path)
    out = tmp_path / "out"
    assert cli.main(["compile", str(ROOT / "examples/digits_cnn.onnx"), "--target", "hls", "--dtype", "half",
                     "-o", str(out)]) == 0
    assert "hls: sesl half accelerator for zcu102" in capsys.readouterr().out
    assert "qnn." not in (out / "model.mlir").read_text() and "f16" in (out / "dataflow.mlir").read_text()
    assert json.loads((out / "summary.json").read_text())["hls"]["dtype"] == "half"
    assert "all within the tolerance of the reference" in HlsProject(out).testbench()
    assert cli.main(["run", str(out), "--input", str(x), "--output", str(tmp_path / "csim.npz")]) == 0
    assert cli.main(["run", str(out), "--input", str(x), "--output", str(tmp_path / "ref.npz"), "--with", "reference"]) == 0
    csim, ref = np.load(tmp_path / "csim.npz")["logits"], np.load(tmp_path / "ref.npz")["logits"]
    assert 0 < np.abs(csim - ref).max() <= MEASURED["half"] * np.abs(ref).max()
    assert cli.main(["compile", str(ROOT / "examples/digits_cnn.onnx"), "--target", "hls", "--dtype", "half",
                     "--arch", "seml", "-o", str(tmp_path / "seml")]) == 2
    assert "the reused engines are int8 only" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_mobilenet_v1_c_simulation_is_bit_exact(arch: str, tmp_path: Path) -> None:
    """MobileNetV1 (width 0.25, 128 x 128; 84 layers) through the driver as docs/hls.md shows
    it: compile (quantize on four random images), run the C simulation, and `--with reference`."""
    import onnx

    from compiler import cli
    from examples.models import build

    model = tmp_path / "mbv1.onnx"
    onnx.save(build("mobilenet_v1", 0.25, 128), model)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", input=rng.normal(size=(4, 3, 128, 128)).astype(np.float32))
    np.savez(tmp_path / "x.npz", input=rng.normal(size=(1, 3, 128, 128)).astype(np.float32))
    out = tmp_path / "out"
    assert cli.main(["compile", str(model), "--target", "hls", "--arch", arch, "--calib", str(tmp_path / "calib.npz"),
                     "-o", str(out)]) == 0
    for runner, result in ((["--with", "hls"], "csim.npz"), (["--with", "reference"], "ref.npz")):
        assert cli.main(["run", str(out), "--input", str(tmp_path / "x.npz"), "--output", str(tmp_path / result),
                         *runner]) == 0
    csim, ref = np.load(tmp_path / "csim.npz")["output"], np.load(tmp_path / "ref.npz")["output"]
    assert csim.shape == (1, 1000) and np.abs(ref).max() > 0
    assert np.array_equal(csim, ref)


def test_driver_needs_calibration_for_the_hls_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from compiler import cli

    code = cli.main(["compile", str(ROOT / "examples/digits_cnn.onnx"), "--target", "hls", "-o", str(tmp_path / "o")])
    assert code == 2
    assert "quantize needs calibration data" in capsys.readouterr().err


def test_generated_pragmas_reach_vitis_only(tmp_path: Path) -> None:
    """Preprocessed as Vitis synthesis sees it (stub vendor headers, __SYNTHESIS__), the top
    has its interfaces, DATAFLOW region and FIFO depths; plain g++ sees no pragma."""
    import subprocess

    from backends.hls import csim

    project = emitted("residual", "hybrid", options="split=2")
    vitis = tmp_path / "vitis"
    vitis.mkdir()
    (vitis / "ap_int.h").write_text("#pragma once\n")
    (vitis / "hls_half.h").write_text("#pragma once\nstruct half { unsigned short bits; };\n")
    (vitis / "hls_stream.h").write_text(
        "#pragma once\nnamespace hls { template <class T> struct stream { explicit stream(const char* = 0) {}"
        " T read() { return T(); } void write(const T&) {} bool empty() const { return false; } }; }\n")

    def preprocess(*flags: str) -> str:
        command = [csim.compiler(), "-std=c++17", "-E", f"-I{project.folder / 'include'}", *flags,
                   str(project.folder / "top.cpp")]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    synthesis = preprocess(f"-I{vitis}", "-D__SYNTHESIS__")
    for pragma in ["DATAFLOW", "INTERFACE axis port=x", "INTERFACE axis port=y",
                   "INTERFACE m_axi port=ddr_weights offset=slave bundle=gmem0",
                   "INTERFACE m_axi port=ddr_params offset=slave bundle=gmem1",
                   "INTERFACE s_axilite port=batch bundle=control", "INTERFACE s_axilite port=return bundle=control",
                   "STREAM variable=conv2_out depth=8", "STREAM variable=conv2_out_to_conv6 depth=512", "PIPELINE II=1"]:
        assert f"#pragma HLS {pragma}" in synthesis, pragma
    assert "#pragma HLS" not in preprocess()


@st.composite
def random_models(draw: st.DrawFn) -> tuple[Net, str]:
    """A small random CNN: convolutions (kernel, stride, pads, dilation, groups incl.
    depthwise, relu / leaky relu / none), pooling (max / avg, ceil mode, count_include_pad),
    residual blocks, then global pooling or flatten, and a dense layer."""
    c, h = draw(st.integers(1, 3)), draw(st.integers(5, 9))
    net = Net((1, c, h, h), seed=draw(st.integers(0, 1000)))
    x = "%x"
    for _ in range(draw(st.integers(1, 3))):
        # Asymmetric pads make maps non-square: the smaller side bounds the next window.
        channels, size = net.shapes[x][1], min(net.shapes[x][2:])
        block = draw(st.sampled_from(["conv", "depthwise", "pool", "residual"]))
        if block == "conv" or (block == "depthwise" and channels == 1):
            k = draw(st.sampled_from([1, 3] if size >= 3 else [1]))
            pads = tuple(draw(st.integers(0, k // 2)) for _ in range(4))
            group = draw(st.sampled_from([g for g in (1, 2) if channels % g == 0]))
            x = net.conv(x, group * draw(st.integers(1, 3)), k, stride=draw(st.integers(1, 2)), pads=pads, group=group,
                         act=draw(st.sampled_from(["relu", "leaky_relu", None])))
        elif block == "depthwise":
            x = net.conv(x, channels, 3, pads=1, group=channels, act=draw(st.sampled_from(["relu", None])))
        elif block == "pool" and size >= 2:
            kind = draw(st.sampled_from(["max", "avg"]))
            x = net.pool(x, kind, 2, draw(st.integers(1, 2)), ceil=draw(st.integers(0, 1)),
                         pads=draw(st.integers(0, 1)), include_pad=draw(st.integers(0, 1)) if kind == "avg" else 0)
        else:
            y = net.conv(x, channels, 3 if size >= 3 else 1, pads=1 if size >= 3 else 0, act=None)
            x = net.add(x, y, act=draw(st.sampled_from(["relu", None])))
    x = net.global_pool(x, draw(st.sampled_from(["avg", "max"]))) if draw(st.booleans()) else x
    return net, net.dense(net.flatten(x), draw(st.integers(1, 4)))


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=random_models(), arch=st.sampled_from(ARCHS), scheme=st.sampled_from(["fixed", "pow2"]),
       pes=st.integers(1, 4), split=st.integers(0, 4))
def test_random_models_bit_exact_in_every_mapping(model: tuple[Net, str], arch: str, scheme: str, pes: int,
                                                  split: int) -> None:
    import tempfile

    from compiler import quantize

    net, out = model
    rng = np.random.default_rng(0)
    shape = net.input_shape
    program = quantize(net.program(out), [{"x": rng.normal(size=(8, *shape[1:])).astype(np.float32)}], scheme=scheme)
    x = rng.normal(size=(2, *shape[1:])).astype(np.float32)
    y = np.concatenate([execute(program, {"x": x[i:i + 1]})["y"] for i in range(len(x))])
    layers = sum(1 for op in program.module.walk() if op.name.startswith("qnn.")) - 2
    run_pipeline(program, f"lower-to-hls{{arch={arch} pes={pes} split={min(split, layers)}}}")
    with tempfile.TemporaryDirectory() as folder:
        emit_project(program.module, program.weights, folder, test_inputs=x, test_outputs=y)
        assert np.array_equal(HlsProject(folder).predict(x), y)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=random_models(), arch=st.sampled_from(ARCHS), dtype=st.sampled_from(["int8", "int8", "float", "half"]),
       pes=st.lists(st.integers(1, 16), min_size=2, max_size=2, unique=True).map(sorted), split=st.integers(0, 4))
def test_estimates_more_pes_are_never_slower_nor_cheaper(model: tuple[Net, str], arch: str, dtype: str,
                                                         pes: list[int], split: int) -> None:
    """The report's monotonicity over random small models: the same mapping with more PEs per
    engine has no longer period or latency, and no fewer DSPs or LUTs (int8 in every
    architecture, float and half on the pipeline)."""
    from compiler import quantize

    net, out = model
    program = net.program(out)
    if dtype == "int8":
        calibration = np.random.default_rng(0).normal(size=(8, *net.input_shape[1:])).astype(np.float32)
        program = quantize(program, [{"x": calibration}])
    else:
        arch = "sesl"
    layers = sum(1 for op in program.module.walk() if op.name.startswith("qnn.")) - 2
    reports = []
    for count in pes:
        lowered = program.clone()
        run_pipeline(lowered, f"lower-to-hls{{arch={arch} dtype={dtype} pes={count} split={max(0, min(split, layers))}}}")
        reports.append(estimate(find_top(lowered.module), ZCU102))
    fewer, more = reports
    assert more["period_cycles"] <= fewer["period_cycles"]
    assert more["latency_cycles"] <= fewer["latency_cycles"]
    assert more["total"]["dsp"] >= fewer["total"]["dsp"]
    assert more["total"]["lut"] >= fewer["total"]["lut"]


def test_damaged_project_files_are_clean_errors(tmp_path: Path) -> None:
    """A damaged project.json, or a source g++ echoes as bytes that are not UTF-8, is a
    LayerloomError (found by flipping bytes of built folders), not a decode error."""
    (tmp_path / "project.json").write_text("")
    with pytest.raises(LayerloomError, match="not valid JSON") as info:
        HlsProject(tmp_path)
    assert info.value.where.endswith("project.json")
    (tmp_path / "bad.cpp").write_bytes(b"int broken = \xff;\n")
    with pytest.raises(LayerloomError, match="C\\+\\+ compilation failed"):
        csim.build([tmp_path / "bad.cpp"], [], tmp_path / "out")
