"""Quantization: the integer semantics (`intmath`, the spec in docs/quantization.md)
and, later, calibration and the quantize pass's helpers."""
