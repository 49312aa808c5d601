"""The NumPy reference executor for the nn dialect (and any dialect that registers kernels)."""

from backends.reference.executor import execute
from backends.reference.kernels import KERNELS, evaluate, register_kernel

__all__ = ["KERNELS", "evaluate", "execute", "register_kernel"]
