"""Model builders: `python -m examples.models NAME -o model.onnx` (see builders.py)."""

from examples.models.builders import MODELS, build

__all__ = ["MODELS", "build"]
