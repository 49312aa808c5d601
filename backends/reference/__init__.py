"""The NumPy reference executor for the nn dialect (and any dialect that registers kernels)."""

from backends.reference import qnn_kernels  # noqa: F401  (registers the qnn kernels)
from backends.reference.executor import execute
from backends.reference.kernels import KERNELS, evaluate, register_kernel

__all__ = ["KERNELS", "evaluate", "execute", "register_kernel"]
