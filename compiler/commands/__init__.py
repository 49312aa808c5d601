"""Driver subcommands beyond `compile` and `run`; importing this package registers them
with `compiler.cli.register_command`."""

from compiler.commands import estimate, explore

__all__ = ["estimate", "explore"]
