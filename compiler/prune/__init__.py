"""Support for the `prune` pass (passes/prune.py): channel groups (`groups`) and the choice
of how many channels each group keeps (`search`: rounding, sensitivity, cost targets)."""
