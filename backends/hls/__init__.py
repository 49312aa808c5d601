"""The HLS C++ backend: a header-only template library for dataflow accelerators
(`include/layerloom/`, see docs/hls.md) and its C simulation with g++ (`csim`)."""

from backends.hls.csim import INCLUDE_DIR, SharedLibrary, build, load, run

__all__ = ["INCLUDE_DIR", "SharedLibrary", "build", "load", "run"]
