"""Foundation benchmark (issue 2): ResNet-50 (the onnx wheel's light model with seeded
random weights, 1x3x224x224) through import, canonicalize and fold-batchnorm; the
reference executor against onnxruntime with the same thread count; peak memory; and the
executor/onnxruntime ratio of the other light models.

    .venv/bin/python benchmarks/foundation.py               # print the tables
    .venv/bin/python benchmarks/foundation.py --write-docs  # and update docs/performance.md

Every measurement runs in a child process of its own: the thread count goes into the
BLAS environment variables before NumPy loads (onnxruntime gets `intra_op_num_threads`),
and the process's peak RSS belongs to that measurement alone. Within a child the executor
and onnxruntime run in alternating blocks (`BLOCKS` of each, an untimed run opening every
block), so both see the load of the same minutes on a shared machine, while neither runs
right after the other's run: onnxruntime's idle worker threads would otherwise spin on the
second core while the executor runs. Its sessions also have spinning off
(`session.intra_op.allow_spinning = 0`): spinning workers cost it little when the machine
is otherwise idle, but take a core from everything else.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: benchmarks/ is sys.path[0], not the repository
    sys.path.insert(0, str(ROOT))

from benchmarks import children  # noqa: E402
from benchmarks.children import blas_threads  # noqa: E402

MODEL = "resnet50"
SEED = 0
COMPILE_STEPS = ("canonicalize", "fold-batchnorm")
EXECUTION_PIPELINE = "canonicalize,fold-batchnorm,fuse-activation"
GOAL_RATIO = 1.5
OTHERS_REPEATS = 3
BLOCKS = 3
DOCS = ROOT / "docs" / "performance.md"
SECTION = "## Foundation"
MB = 1 << 20


# ---------------------------------------------------------------------------------------
# Children: each prints one JSON object on stdout
# ---------------------------------------------------------------------------------------


def child_compile(path: str, repeats: int) -> dict[str, object]:
    """Median seconds of import and of each pass, over `repeats` fresh imports."""
    from benchmarks.common import timed
    from compiler import import_onnx, run_pipeline

    runs: dict[str, list[float]] = {}
    for _ in range(repeats):
        seconds, program = timed(lambda: import_onnx(path))
        runs.setdefault("import", []).append(seconds)
        for step in (*COMPILE_STEPS, "fuse-activation"):
            runs.setdefault(step, []).append(timed(functools.partial(run_pipeline, program, step))[0])
    return {"runs": runs}


def child_memory(path: str) -> dict[str, object]:
    """Peak Python allocations and resident set size of import+passes, then of one execution."""
    from backends.reference import execute
    from benchmarks.common import peak_memory, seeded_inputs
    from compiler import import_onnx, run_pipeline
    from dialects.nn import WeightOp

    with peak_memory() as compiling:
        program = run_pipeline(import_onnx(path), EXECUTION_PIPELINE)
    shapes = {n: tuple(t.get_shape()) for n, t in zip(program.input_names, program.input_types, strict=True)}
    feeds = seeded_inputs(shapes)
    with peak_memory() as executing:
        execute(program, feeds)
    used = {op.handle.data for op in program.module.walk() if isinstance(op, WeightOp)}
    return {
        "compile": vars(compiling),
        "execute": vars(executing),
        "store_bytes": program.weights.nbytes(),
        "used_weight_bytes": sum(program.weights[h].nbytes for h in used),
    }


def child_execute(names: list[str], path: str | None, threads: int, repeats: int) -> dict[str, object]:
    """Per model: the executor's and onnxruntime's times (in `BLOCKS` alternating blocks of
    about repeats / BLOCKS timed runs, each block after one untimed run), the largest
    difference between their outputs, and the load average before and after."""
    import numpy as np
    import onnx

    from backends.reference import execute
    from benchmarks.common import graph_inputs, light_model, ort_session, seeded_inputs, timed
    from compiler import import_onnx, run_pipeline

    results: dict[str, object] = {"blas_threads": blas_threads(), "load_before": os.getloadavg()[0]}
    per_block = timed_runs(repeats) // BLOCKS
    for name in names:
        model = onnx.load(path) if path else light_model(name, random_weights=True, seed=SEED)
        program = run_pipeline(import_onnx(model), EXECUTION_PIPELINE)
        feeds = seeded_inputs(graph_inputs(model), SEED)
        session = ort_session(model, threads, spinning=False)
        ours, theirs = execute(program, feeds), session.run(None, feeds)
        difference = max(
            float(np.max(np.abs(ours[n] - t))) for n, t in zip(program.output_names, theirs, strict=True)
        )
        runs = {
            "layerloom": lambda p=program, f=feeds: execute(p, f),
            "onnxruntime": lambda s=session, f=feeds: s.run(None, f),
        }
        times: dict[str, list[float]] = {side: [] for side in runs}
        for _ in range(BLOCKS):
            for side, run in runs.items():
                run()  # untimed: the other side's block has just had the caches
                times[side] += [timed(run)[0] for _ in range(per_block)]
        results[name] = {"times": times, "max_abs_difference": difference}
        del model, program, session, runs
    results["load_after"] = os.getloadavg()[0]
    return results


# Parts of the executor's run that `child_profile` times: label, and the kernels' functions
# (or kernel table entries) that run the part.
PROFILED_PARTS = {
    "winograd": ("3x3 stride-1 convolutions (Winograd)", ("winograd_conv3x3",)),
    "conv": ("other convolutions (im2col or 1x1, with bias, residual add and activation)",
             ("conv2d", "conv1x1_bias_in_k")),
    "pool": ("pooling", ("pool",)),
}


def child_profile(path: str, repeats: int) -> dict[str, object]:
    """One thread: the executor's time per run, split into the parts of `PROFILED_PARTS`
    (each with the time of its BLAS products: every `kernels.gemm` call, timed where it
    runs), and onnxruntime's time (blocks as above)."""
    import time
    from collections.abc import Callable

    import onnx

    from backends.reference import KERNELS, execute, kernels
    from benchmarks.common import graph_inputs, ort_session, seeded_inputs, timed
    from compiler import import_onnx, run_pipeline
    from dialects import nn

    model = onnx.load(path)
    program = run_pipeline(import_onnx(model), EXECUTION_PIPELINE)
    feeds = seeded_inputs(graph_inputs(model), SEED)
    session = ort_session(model, 1, spinning=False)
    spent: dict[str, float] = {}
    inside = ["other"]  # the part running now (a GEMM is charged to the part that calls it)

    def timing(part: str, fn: Callable[..., object]) -> Callable[..., object]:
        def timed_call(*args: object, **kwargs: object) -> object:
            inside.append(part if part != "gemm" else inside[-1] + " gemm")
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                key = inside.pop()
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - start

        return timed_call

    functions = {"gemm": "gemm"} | {f: part for part, (_, names) in PROFILED_PARTS.items() for f in names if f != "pool"}
    plain = {name: getattr(kernels, name) for name in functions}
    plain_pool = KERNELS[nn.PoolOp]
    for name, part in functions.items():
        setattr(kernels, name, timing(part, plain[name]))
    KERNELS[nn.PoolOp] = timing("pool", plain_pool)  # type: ignore[assignment]
    runs: dict[str, list[float]] = {"layerloom": [], "onnxruntime": []}
    try:
        for _ in range(BLOCKS):
            execute(program, feeds)
            for _ in range(timed_runs(repeats) // BLOCKS):
                spent.clear()
                runs["layerloom"].append(timed(lambda: execute(program, feeds))[0])
                for part in PROFILED_PARTS:
                    for key in (part, part + " gemm"):
                        runs.setdefault(key, []).append(spent.get(key, 0.0))
                runs.setdefault("other gemm", []).append(spent.get("other gemm", 0.0))
            session.run(None, feeds)
            runs["onnxruntime"] += [timed(lambda: session.run(None, feeds))[0] for _ in range(timed_runs(repeats) // BLOCKS)]
    finally:
        for name, fn in plain.items():
            setattr(kernels, name, fn)
        KERNELS[nn.PoolOp] = plain_pool
    return {"runs": runs, "load": os.getloadavg()[0]}


def timed_runs(repeats: int) -> int:
    """How many timed runs per side `child_execute` makes for `repeats`."""
    return BLOCKS * -(-repeats // BLOCKS)


def run_child(arguments: list[str], threads: int | None = None) -> dict:
    """Run this script as a child measurement (thread variables set before NumPy loads)."""
    return children.run_child(__file__, arguments, threads)


# ---------------------------------------------------------------------------------------
# Parent: orchestrate, print, write the docs
# ---------------------------------------------------------------------------------------


def measure(threads: list[int], repeats: int, others_threads: int | None) -> dict[str, object]:
    import onnx

    from benchmarks.common import LIGHT_MODELS, light_model, machine_info

    info = machine_info() | {"load average (1 min) at start": f"{os.getloadavg()[0]:.2f}"}
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / f"{MODEL}.onnx")
        onnx.save(light_model(MODEL, random_weights=True, seed=SEED), path)
        print("compile ...", file=sys.stderr)
        compile_runs = run_child(["compile", path, str(repeats)], threads=max(threads))["runs"]
        print("memory ...", file=sys.stderr)
        memory = run_child(["memory", path], threads=max(threads))
        print("profile, 1 thread ...", file=sys.stderr)
        profile = run_child(["profile", path, str(repeats)], threads=1)
        execution = {}
        for n in threads:
            print(f"execute, {n} thread(s) ...", file=sys.stderr)
            execution[n] = run_child(["execute", MODEL, path, str(n), str(repeats)], threads=n)
    other_results = {}
    if others_threads:
        names = [m for m in LIGHT_MODELS if m != MODEL]
        print(f"other light models ({', '.join(names)}), {others_threads} thread(s) ...", file=sys.stderr)
        arguments = ["execute", ",".join(names), "", str(others_threads), str(OTHERS_REPEATS)]
        other_results = run_child(arguments, threads=others_threads)
    return {"info": info, "compile": compile_runs, "memory": memory, "execution": execution, "profile": profile,
            "others": other_results, "repeats": repeats, "others_threads": others_threads}


def median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def report(results: dict) -> str:
    """The Foundation section of docs/performance.md (markdown)."""
    from benchmarks.common import markdown_table

    info, repeats = results["info"], results["repeats"]
    compile_runs = results["compile"]
    step_medians = {step: median(times) for step, times in compile_runs.items()}
    total = median([sum(parts) for parts in zip(*(compile_runs[s] for s in ("import", *COMPILE_STEPS)), strict=True)])
    compile_rows = [[f"`{s}`" if s != "import" else "import (`import_onnx(path)`)", f"{step_medians[s]:.3f}"]
                    for s in ("import", *COMPILE_STEPS)]
    compile_rows.append(["**total** (import + canonicalize + fold-batchnorm)", f"**{total:.3f}**"])
    compile_rows.append(["`fuse-activation` (run before executing; not in the total)", f"{step_medians['fuse-activation']:.3f}"])

    execution_rows = []
    for threads, result in results["execution"].items():
        times = result[MODEL]["times"]
        ours, theirs = median(times["layerloom"]), median(times["onnxruntime"])
        ratio = ours / theirs
        execution_rows.append([
            str(threads), str(result["blas_threads"]), f"{ours * 1e3:.0f}", f"{theirs * 1e3:.0f}", f"**{ratio:.2f}**",
            "yes" if ratio <= GOAL_RATIO else "no", f"{result[MODEL]['max_abs_difference']:.1e}",
            f"{result['load_before']:.2f} / {result['load_after']:.2f}",
        ])

    m = results["memory"]
    memory_rows = [
        [step, f"{m[key]['python_bytes'] / MB:.0f}", f"{m[key]['rss_start_bytes'] / MB:.0f}",
         f"{m[key]['rss_peak_bytes'] / MB:.0f}"]
        for step, key in (("import + passes", "compile"), ("execution (one inference)", "execute"))
    ]

    other_rows = []
    for name, result in results["others"].items():
        if not isinstance(result, dict):
            continue
        ours, theirs = median(result["times"]["layerloom"]), median(result["times"]["onnxruntime"])
        other_rows.append([name, f"{ours * 1e3:.0f}", f"{theirs * 1e3:.0f}", f"{ours / theirs:.2f}",
                           f"{result['max_abs_difference']:.1e}"])

    lines = [
        SECTION,
        "",
        "Issue 2's numbers: ResNet-50 (`light_resnet50.onnx` from the onnx wheel with seeded random",
        "weights, `benchmarks/common.py:light_model`), input 1x3x224x224. Reproduce with",
        "",
        "```sh",
        ".venv/bin/python benchmarks/foundation.py --write-docs",
        "```",
        "",
        "Each measurement runs in its own child process, with the same thread count on both sides",
        "set explicitly: `OMP/OPENBLAS/MKL_NUM_THREADS` before NumPy loads (the executor's threads",
        "are OpenBLAS's, inside its GEMMs), and onnxruntime's `intra_op_num_threads` (inter-op 1).",
        f"The executor and onnxruntime run in the same process in {BLOCKS} alternating blocks per",
        "side, each block opened by one untimed run;",
        "onnxruntime's sessions have `session.intra_op.allow_spinning = 0`, so that its idle worker",
        "threads do not busy-wait on the second core while the executor runs (with spinning on it",
        "is faster alone on an idle machine, and slower the moment anything else runs). Times are",
        "medians; the machine is shared with other work, so expect a spread of 10-30 % between",
        "runs: the load average (1 min) before and after each measurement is in the table.",
        "",
        "### Machine",
        "",
        markdown_table(["", ""], [[k, f"`{v}`" if k != "date" else v] for k, v in info.items()]),
        "",
        f"### Compile time (median of {repeats}, seconds)",
        "",
        markdown_table(["step", "seconds"], compile_rows),
        "",
        f"### Executor against onnxruntime (median of {timed_runs(repeats)} runs per side; goal: ratio <= {GOAL_RATIO})",
        "",
        f"The executor runs the program after `{EXECUTION_PIPELINE}`;",
        "onnxruntime runs the same ONNX model with its default (full) graph optimisations. The",
        "ratio is executor time / onnxruntime time: onnxruntime is the anchor. With every core in",
        "use, other work on a shared machine slows both sides unevenly: the 1-thread row is the",
        "steadier one.",
        "",
        markdown_table(["threads", "BLAS threads seen", "layerloom ms", "onnxruntime ms", "ratio", "goal met",
                        "max abs diff (softmax)", "load before / after"], execution_rows),
        "",
        *EARLIER_MACHINES,
        *profile_lines(results["profile"]),
        "### Peak memory (ResNet-50)",
        "",
        "`tracemalloc`: peak of the Python and NumPy allocations made during the step. RSS: the",
        "process's resident set at the start of the step and its peak during it (Linux `VmHWM`,",
        "reset at the start of the step; `getrusage` maxrss would report the parent's peak, which",
        "Linux carries over into a child process, and cannot be reset).",
        f"After the passes the weight store holds {m['store_bytes'] / MB:.0f} MB, of which the IR uses "
        f"{m['used_weight_bytes'] / MB:.0f} MB:",
        "`fold-batchnorm` adds folded arrays and leaves the originals in the store",
        "(`Program.drop_unused_weights()` releases them).",
        "",
        markdown_table(["step", "tracemalloc peak MB", "RSS at start MB", "peak RSS MB"], memory_rows),
        "",
    ]
    if other_rows:
        lines += [
            f"### Other light models ({results['others_threads']} thread{'s' if results['others_threads'] > 1 else ''}, median of {timed_runs(OTHERS_REPEATS)} runs per side)",
            "",
            "Seeded random weights as above, the same method as for ResNet-50 with fewer runs.",
            "",
            markdown_table(["model", "layerloom ms", "onnxruntime ms", "ratio", "max abs diff"], other_rows),
            "",
        ]
    return "\n".join(lines)


# The same measurement on the machines of earlier sessions (the ratio depends on the CPU:
# onnxruntime's MLAS kernels gain more from AVX-512 on the Intel part than OpenBLAS does).
EARLIER_MACHINES = [
    "The same benchmark on the Intel Xeon (2 cores) of the sessions before 2026-11-23, before",
    "the batched Winograd GEMMs: 1 thread 81 against 55-56 ms (1.47); 2 threads 57 against",
    "31-38 ms (1.50-1.80, with onnxruntime's two-thread time in two modes from run to run).",
    "",
]


# What the executor does for speed and what was tried (prose of the docs section; numbers
# that are not measured by this script say where they come from).
FOUNDATION_NOTES = [
    "What the executor does for speed. The walk over the ops is planned once per module (values",
    "in numbered slots, each convolution's attributes read and its weights repacked once) and made",
    "again only when the module, its weights or the kernel table change. Convolutions join the ops",
    "around them (`kernels.ConvFusion`, decided in the plan, the IR unchanged):",
    "",
    "- every GEMM of a convolution accumulates into its output (cblas `sgemm` with beta = 1 from",
    "  NumPy's own OpenBLAS, `backends/reference/blas.py`), which starts as the bias or as the",
    "  residual: conv -> add -> relu is one step that writes into the add's other operand at its",
    "  last use, so the residual add costs no pass over the map, nor does OpenBLAS's zeroing;",
    "- a conv read by one 1x1 conv alone gives its result a channel of ones, and that conv's GEMM",
    "  takes its bias as one more input channel: in ResNet's bottlenecks the bias of the last",
    "  1x1 conv costs no pass either, even with the residual in the GEMM's output;",
    "- a conv read by one 3x3 conv alone leaves its activation to it, applied as that conv copies",
    "  its input for Winograd or im2col (never to the padding); one read by a max pool alone",
    "  leaves its relu to the pooled map, a quarter of the size (ResNet-50's stem);",
    "- 3x3 stride-1 dense convolutions with at least 32 output tiles and 16 channels run as",
    "  Winograd F(2x2, 3x3) (16 batched GEMMs with 2.25x fewer multiply-adds, bias on one",
    "  transform entry, the output transform one small GEMM, the activation fused into the",
    "  output interleave), on large maps in chunks of 196 tiles per BLAS thread whose transforms",
    "  stay in the L2 cache, a chunk's 16 GEMMs one cblas `sgemm_batch_strided` call that gives",
    "  each thread its own GEMMs; other convolutions are im2col from a strided channels-last",
    "  view (none for 1x1),",
    "  copied in chunks of whole output rows of at most 1 MiB, each multiplied while it is in",
    "  cache (in a whole run the stem's 7.4 MB copy otherwise left the caches before its GEMM",
    "  read it: -1.1 ms a run at one thread, -1.7 ms at two; a single layer timed alone does not",
    "  show it);",
    "- pooling is separable (width, then height) straight from the channels-last input.",
    "",
    "What is left besides the GEMMs: the Winograd input transform (two passes over tiles four",
    "times the size of the input), im2col copies (the 7x7 stem above all), one activation pass",
    "per convolution followed by neither a 3x3 conv nor a max pool, the pooling passes, and",
    "Python (ResNet-50 on a 32x32 input, whose maps are tiny, spends 2.6 ms a run outside its",
    "GEMMs).",
    "",
    "The times quoted from here on were measured on the Intel Xeon (2 cores) of the runs before",
    "2026-11-23, except the batched Winograd GEMMs' (this AMD EPYC); the tables are this run's.",
    "Threads are OpenBLAS's, inside each GEMM; the NumPy passes between the GEMMs run on one",
    "thread (they are bound by memory bandwidth, which two threads share: a ReLU over 56x56x256",
    "split in two halves took 0.22-0.23 ms on two threads against 0.19-0.27 ms on one, too",
    "little to pay for handing passes to another thread). Tried and dropped: a pool of the",
    "kernels' own threads with BLAS single-threaded inside each part (splitting a GEMM into",
    "independent GEMMs repacks the shared operand in every part: 87-107 ms against 66 ms with",
    "OpenBLAS's threads on two idle cores); F(4x4, 3x3) Winograd (its fractions 1/6 .. 1/24 lose",
    "about a decimal digit); 1x1 GEMMs in chunks of rows that fit the L2 cache, with their",
    "activation applied chunk by chunk (no faster in whole runs); Winograd on the 7x7 maps, even",
    "with the GEMMs turned round to suit their 16 tiles (ResNet-50 83.6 against 81.6 ms: the",
    "transformed weights are 16/9 the size); at two threads, Winograd's chunks on a pool of two",
    "Python threads (65 against 57 ms: the GIL and OpenBLAS's waiting threads), or im2col in place",
    "of Winograd (no change). The 56x56 Winograd layers used to take as long at two threads as",
    "at one (OpenBLAS does not split GEMMs as small as a chunk's 16); since a chunk's GEMMs are",
    "one batched call, shared out between the threads, a 56x56x64 layer takes 1.35 against",
    "1.77 ms at two threads (the transforms are still NumPy's one thread). Also measured and",
    "dropped at two threads, on single layers: each half of a layer's output rows through the",
    "whole Winograd on its own Python thread, OpenBLAS at one thread per caller",
    "(openblas_set_num_threads_local): 56x56x64 1.77-1.95 against 1.81-2.37 ms whole, 14x14x256",
    "1.80 against 1.15, no steady gain; nine GEMMs, one per kernel tap, over row-shifted views of",
    "the padded input (no transform, no im2col): 1.68 against Winograd's 1.83 ms on 56x56x64,",
    "slower on the smaller maps and at one thread.",
    "OpenBLAS's threading splits each GEMM statically and waits for both halves, so while",
    "another process holds a core a GEMM can wait a scheduler time slice, and whole runs take",
    "0.3-1.3 s; onnxruntime (spinning off) then runs at its one-thread speed. The two-thread row",
    "is therefore only meaningful on an otherwise idle machine: the load average is in the table.",
    "",
    "Why the GEMMs take longer than onnxruntime's whole run: onnxruntime runs ResNet-50's",
    "8.2 GFLOP at about 145 GFLOP/s end to end (MLAS kernels with weights packed once at load,",
    "bias, activation and the residual add fused into the convolution's output loop). OpenBLAS",
    "repacks the 97 MB of weights on every call and reaches 80-145 GFLOP/s on ResNet-50's GEMM",
    "shapes, least on the 7x7 maps (49 rows per GEMM: 48 rows take 8 % less time than 49).",
    "",
]


def profile_lines(profile: dict) -> list[str]:
    """Where the executor's time goes at one thread, and what that says about the goal."""
    from benchmarks.common import markdown_table

    runs = profile["runs"]
    ms = {key: median(values) * 1e3 for key, values in runs.items()}
    ours, theirs = ms["layerloom"], ms["onnxruntime"]
    gemm = sum(ms[key] for key in ms if key.endswith(" gemm"))
    rest = ours - sum(ms[part] for part in PROFILED_PARTS)
    rows = [["executor, whole run", f"{ours:.1f}", f"{gemm:.1f}", f"{ours - gemm:.1f}"]]
    rows += [[label, f"{ms[part]:.1f}", f"{ms[part + ' gemm']:.1f}", f"{ms[part] - ms[part + ' gemm']:.1f}"]
             for part, (label, _) in PROFILED_PARTS.items()]
    rows.append(["everything else (the walk over the ops, fully connected layer, softmax)", f"{rest:.1f}",
                 f"{ms['other gemm']:.1f}", f"{rest - ms['other gemm']:.1f}"])
    rows.append(["onnxruntime, whole run", f"{theirs:.1f}", "", ""])
    budget = GOAL_RATIO * theirs
    return [
        f"### Where the executor's time goes (1 thread, medians of {len(runs['layerloom'])} runs, load {profile['load']:.2f})",
        "",
        "Every BLAS call of the kernels goes through `kernels.gemm`, timed where it runs and charged",
        "to the kernel that calls it (the same calls, operands and caches as in a plain run; each",
        "column is a median of its own, so the parts need not add up exactly). \"Not BLAS\" is NumPy",
        "work between the GEMMs (im2col copies and padding, the Winograd transforms, bias and",
        "activation passes, pooling) and Python.",
        "",
        markdown_table(["", "ms", "of which BLAS ms", "not BLAS ms"], rows),
        "",
        *FOUNDATION_NOTES,
        f"At {GOAL_RATIO}x onnxruntime's time ({budget:.0f} ms) the GEMMs as they are ({gemm:.0f} ms, "
        f"{gemm / theirs:.2f}x onnxruntime's whole run) leave {budget - gemm:.0f} ms for everything else, "
        f"against {ours - gemm:.0f} ms measured.",
        "",
    ]


DOCS_HEADER = """# Performance

Measured numbers, one section per issue that sets a performance goal, each written by the
benchmark script it names (`benchmarks/`). Timings depend on the machine and its load: each
section records both.

"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Foundation benchmark (issue 2): ResNet-50 compile time, executor vs onnxruntime, peak memory"
    )
    parser.add_argument("--threads", default=f"1,{os.cpu_count() or 1}",
                        help="comma-separated thread counts for executor and onnxruntime (default: 1 and all cores)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (median)")
    parser.add_argument("--others-threads", type=int, default=1,
                        help="thread count for the other light models (0: skip them; default 1, the steadiest on a shared machine)")
    parser.add_argument("--write-docs", action="store_true", help=f"update the Foundation section of {DOCS.relative_to(ROOT)}")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, *rest = args.child
        if kind == "compile":
            result = child_compile(rest[0], int(rest[1]))
        elif kind == "memory":
            result = child_memory(rest[0])
        elif kind == "profile":
            result = child_profile(rest[0], int(rest[1]))
        else:
            result = child_execute(rest[0].split(","), rest[1] or None, int(rest[2]), int(rest[3]))
        print(json.dumps(result))
        return

    threads = sorted({int(t) for t in args.threads.split(",")})
    section = report(measure(threads, args.repeats, args.others_threads))
    print(section)
    if args.write_docs:
        from benchmarks.common import replace_doc_section

        replace_doc_section(section, SECTION, DOCS, DOCS_HEADER)
        print(f"wrote {DOCS}", file=sys.stderr)


if __name__ == "__main__":
    main()
