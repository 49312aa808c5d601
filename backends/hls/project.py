"""An emitted HLS project, built and run in C simulation with g++ (backends/hls/csim.py).

    project = HlsProject("out/")
    y = project.predict(x)            # NCHW in, NCHW out: hls4ml's compile() / predict()
    print(project.testbench())        # the generated testbench: exit 0 iff bit-exact

Builds are cached under `<project>/csim/` (content-addressed, so an unchanged project
rebuilds nothing). The ports carry HWC order; predict() transposes NCHW arrays to it and
back, and hands the DDR image (weights.bin) to the reused engines.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from backends.hls import csim
from compiler.errors import LayerloomError
from compiler.program import read_json

CSIM_DIR = "csim"
SOURCES = ("top.cpp",)


class HlsProject:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        manifest = self.folder / "project.json"
        if not manifest.is_file():
            raise LayerloomError("not an HLS project (no project.json; write one with the hls target)", str(self.folder))
        self.manifest = read_json(manifest)

    @property
    def include_dirs(self) -> list[Path]:
        return [self.folder / "include"]

    def build(self, *, shared: bool = True) -> Path:
        """The C simulation: the shared object of predict.cpp, or the testbench executable."""
        main = "predict.cpp" if shared else "tb.cpp"
        if not shared and not self.manifest.get("testbench"):
            raise LayerloomError("the project has no testbench (emit it with test inputs)", str(self.folder))
        sources = [self.folder / name for name in (*SOURCES, main)]
        return csim.build(sources, self.include_dirs, self.folder / CSIM_DIR, shared=shared,
                          name="predict" if shared else "testbench")

    @cached_property
    def library(self) -> csim.SharedLibrary:
        return csim.load(self.build(shared=True))

    @cached_property
    def ddr(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        layout = self.manifest.get("ddr")
        if layout is None:
            return None, None
        image = np.fromfile(self.folder / "weights.bin", dtype=np.uint8)
        expected = layout["params_offset"] + 4 * layout["params_words"]
        if image.size != expected:
            raise LayerloomError(f"DDR image of {image.size} bytes, expected {expected}", str(self.folder / "weights.bin"))
        weights = image[: layout["weights_bytes"]].view(np.int8).copy()
        params = image[layout["params_offset"]:].view("<i4").astype(np.int32)
        return weights, params

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run a batch (N x C x H x W, or N x K) through the C simulation."""
        port_in, port_out = self.manifest["input"], self.manifest["output"]
        dtype_in = np.dtype(_numpy_type(port_in["ctype"]))
        per_image = list(port_in["shape"][1:])
        if list(x.shape[1:]) != per_image:
            raise LayerloomError(f"input of shape {list(x.shape)}, the accelerator takes N x {' x '.join(map(str, per_image))}",
                                 port_in["name"])
        batch = x.shape[0]
        stream = to_stream(np.asarray(x, dtype=dtype_in))
        out_shape = [batch, *port_out["stream_shape"]]
        weights, params = self.ddr
        (y,) = self.library.predict("layerloom_predict", [stream],
                                    [((batch, int(np.prod(port_out["stream_shape"]))), _numpy_type(port_out["ctype"]))],
                                    weights, params, batch)
        return from_stream(y, out_shape)

    def testbench(self) -> str:
        """Build and run the generated testbench (in the project folder, where weights.bin is)."""
        return csim.run(self.build(shared=False), cwd=self.folder)


def to_stream(x: np.ndarray) -> np.ndarray:
    """N x C x H x W -> N x (H W C); vectors unchanged."""
    if x.ndim == 4:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(x.shape[0], -1)
    return np.ascontiguousarray(x.reshape(x.shape[0], -1))


def from_stream(y: np.ndarray, shape: list[int]) -> np.ndarray:
    """N x (H W C) -> N x C x H x W (from the stream shape N, C, H, W); vectors unchanged."""
    if len(shape) == 4:
        n, c, h, w = shape
        return np.ascontiguousarray(y.reshape(n, h, w, c).transpose(0, 3, 1, 2))
    return y.reshape(shape)


def _numpy_type(ctype: str) -> type:
    return {"int8_t": np.int8, "uint8_t": np.uint8, "int32_t": np.int32, "float": np.float32,
            "layerloom::half": np.float16}[ctype]
