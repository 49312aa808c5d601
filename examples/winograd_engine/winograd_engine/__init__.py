"""A Winograd F(2x2, 3x3) convolution engine for layerloom, from a separate package.

- `winograd_engine.engine`: the engine kind `winograd` (entry point `layerloom.engines`);
- `winograd_engine.dialect`: the `winograd` dialect, op `winograd.conv` (`layerloom.dialects`);
- `winograd_engine.lower`: the pass `winograd-conv` (`layerloom.passes`);
- `winograd_engine.transform`: the algorithm in NumPy;
- `zcu102-winograd.hw`: a target with a Winograd engine beside a SEML engine.

See docs/tutorial-new-engine.md in the layerloom repository.
"""

from pathlib import Path

TARGET = Path(__file__).with_name("zcu102-winograd.hw")
