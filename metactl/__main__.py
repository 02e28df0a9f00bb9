"""``python -m metactl``: the CLI, for launchers that take a module (``torchrun -m``, ``accelerate launch -m``)."""

from metactl.commands.cli import main

main()
