"""C simulation: compile layerloom C++ with g++ and run it (as an executable or through ctypes).

    lib = load(build([source], [include_dir], out_dir, shared=True))
    (y,) = lib.predict("top", [x], [((1, 10), np.int8)])

Builds are content-addressed: the output name carries a hash of the compiler, the flags,
the sources and every header they can include (the library's, the given include
directories', and those beside the sources), so an unchanged build is a file lookup.
Builds are written atomically, so parallel builds of the same thing are safe.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from compiler.errors import LayerloomError

INCLUDE_DIR = Path(__file__).resolve().parent / "include"
BASE_FLAGS = ("-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror")
HEADER_SUFFIXES = (".h", ".hpp", ".inc")
WHERE = "csim"

# `file:line:col: error: message` (also `fatal error`, and -Werror's promoted warnings).
_DIAGNOSTIC = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?:\d+:)? (?:fatal )?error: (?P<message>.*)$", re.MULTILINE)

PathLike = str | os.PathLike[str]


def compiler() -> str:
    """The C++ compiler: $CXX, else g++; LayerloomError if it is not installed."""
    name = os.environ.get("CXX", "g++")
    path = shutil.which(name)
    if path is None:
        raise LayerloomError(f"C++ compiler '{name}' not found: install g++ (or set CXX) to build the C simulation", WHERE)
    return path


@functools.cache
def _compiler_identity(path: str) -> str:
    result = subprocess.run([path, "--version"], capture_output=True, text=True, errors="replace", check=False)
    return f"{path}\n{result.stdout.splitlines()[0] if result.stdout else ''}"


def _headers(directories: Sequence[Path], recursive: bool) -> list[Path]:
    found: set[Path] = set()
    for directory in directories:
        candidates = directory.rglob("*") if recursive else directory.glob("*")
        found.update(p for p in candidates if p.suffix in HEADER_SUFFIXES and p.is_file())
    return sorted(found)


def _digest(command: Sequence[str], identity: str, files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    h.update(identity.encode())
    h.update("\0".join(command).encode())
    for path in files:
        h.update(f"\0{path}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def compile_error(stderr: str) -> LayerloomError:
    """The first error of a g++ run, as `file:line: message` (else its first line)."""
    match = _DIAGNOSTIC.search(stderr)
    if match:
        where = f"{match['file']}:{match['line']}"
        return LayerloomError(f"C++ compilation failed: {match['message'].strip()}", where)
    lines = [line for line in stderr.splitlines() if line.strip()]
    first = next((line for line in lines if "error" in line), lines[0] if lines else "no diagnostics")
    return LayerloomError(f"C++ compilation failed: {first.strip()}", WHERE)


def build(
    sources: Sequence[PathLike],
    include_dirs: Sequence[PathLike] = (),
    out_dir: PathLike = "build/csim",
    flags: Sequence[str] = (),
    *,
    shared: bool = False,
    name: str | None = None,
) -> Path:
    """Compile `sources` into one executable (or a shared object with `shared`) in `out_dir`
    with `g++ -std=c++17 -O2 -Wall -Wextra -Werror`, the layerloom include directory, the
    given `include_dirs` and the extra `flags` (later flags win: `-O0`, `-DNAME`). Returns
    the path; an unchanged build returns the cached file without running the compiler."""
    if not sources:
        raise ValueError("build needs at least one source")
    cxx = compiler()
    source_paths = [Path(s).resolve() for s in sources]
    for path in source_paths:
        if not path.is_file():
            raise LayerloomError(f"C++ source not found: {path}", WHERE)
    includes = [INCLUDE_DIR, *(Path(d).resolve() for d in include_dirs)]
    command = [*BASE_FLAGS, *(f"-I{d}" for d in includes), *flags]
    if shared:
        command += ["-shared", "-fPIC"]
    depends = [*source_paths, *_headers(includes, recursive=True)]
    depends += [h for h in _headers([p.parent for p in source_paths], recursive=False) if h not in depends]
    digest = _digest(command, _compiler_identity(cxx), depends)
    out = Path(out_dir).resolve()
    target = out / f"{name or source_paths[0].stem}-{digest}{'.so' if shared else ''}"
    if target.exists():
        return target
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{target.name}.")
    os.close(fd)
    try:
        result = subprocess.run([cxx, *command, *map(str, source_paths), "-o", tmp], capture_output=True, text=True,
                                errors="replace")  # a damaged source makes g++ echo its bytes
        if result.returncode != 0:
            raise compile_error(result.stderr)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def run(binary: PathLike, args: Sequence[str] = (), *, cwd: PathLike | None = None, timeout: float | None = None) -> str:
    """Run a built executable; its stdout, or LayerloomError naming the exit code and the
    last line it wrote to stderr."""
    path = Path(binary)
    try:
        result = subprocess.run([str(path), *args], capture_output=True, text=True, errors="replace", cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise LayerloomError(f"{path.name} did not finish within {timeout} s", WHERE) from e
    except OSError as e:
        raise LayerloomError(f"cannot run {path}: {e.strerror}", WHERE) from e
    if result.returncode != 0:
        last = [line for line in result.stderr.splitlines() if line.strip()]
        detail = f": {last[-1].strip()}" if last else ""
        raise LayerloomError(f"{path.name} exited with status {result.returncode}{detail}", WHERE)
    return result.stdout


_ARRAY_DTYPES = {np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64,
                                        np.float16, np.float32, np.float64)}

Argument = np.ndarray | int | float | None


def _c_argument(value: Argument) -> object:
    if value is None:
        return ctypes.c_void_p(None)
    if isinstance(value, np.ndarray):
        if value.dtype not in _ARRAY_DTYPES:
            raise TypeError(f"arrays passed to C must be one of {sorted(map(str, _ARRAY_DTYPES))}, got {value.dtype}")
        if not value.flags.c_contiguous:
            raise ValueError("arrays passed to C must be C-contiguous")
        return ctypes.c_void_p(value.ctypes.data)
    if isinstance(value, bool | int | np.integer):
        return ctypes.c_int64(int(value))
    if isinstance(value, float | np.floating):
        return ctypes.c_double(float(value))
    raise TypeError(f"cannot pass {type(value).__name__} to C")


class SharedLibrary:
    """A built shared object. Its functions follow one calling convention: arrays are passed
    as pointers to their data, Python ints as int64_t, floats as double; a function returns
    an int status, 0 on success; on failure the library's optional
    `const char* layerloom_last_error(void)` explains it."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        try:
            self.cdll = ctypes.CDLL(str(self.path))
        except OSError as e:
            raise LayerloomError(f"cannot load {self.path}: {e}", WHERE) from e

    def has(self, name: str) -> bool:
        return hasattr(self.cdll, name)

    def call(self, name: str, *args: Argument) -> int:
        """Call `int name(...)` with `args` converted as above; returns its status."""
        if not self.has(name):
            raise LayerloomError(f"{self.path.name} has no function '{name}'", WHERE)
        function = getattr(self.cdll, name)
        function.restype = ctypes.c_int
        return int(function(*map(_c_argument, args)))

    def last_error(self) -> str:
        if not self.has("layerloom_last_error"):
            return ""
        function = self.cdll.layerloom_last_error
        function.restype = ctypes.c_char_p
        message = function()
        return message.decode(errors="replace") if message else ""

    def check(self, name: str, *args: Argument) -> None:
        """`call`, raising LayerloomError when the status is not 0."""
        status = self.call(name, *args)
        if status != 0:
            detail = self.last_error() or f"status {status}"
            raise LayerloomError(f"{name} failed: {detail}", WHERE)

    def predict(
        self,
        name: str,
        inputs: Sequence[np.ndarray],
        outputs: Sequence[tuple[tuple[int, ...], np.dtype | type]],
        *extra: Argument,
    ) -> list[np.ndarray]:
        """hls4ml-style predict: allocate the outputs (shape, dtype), call
        `name(inputs..., outputs..., extra...)` and return the outputs."""
        arrays = [np.ascontiguousarray(x) for x in inputs]
        results = [np.zeros(shape, dtype=dtype) for shape, dtype in outputs]
        self.check(name, *arrays, *results, *extra)
        return results


def load(path: PathLike) -> SharedLibrary:
    return SharedLibrary(path)
