"""``python -m metactl``: the CLI, for launchers that take a module (``torchrun -m``, ``accelerate launch -m``)."""

from metactl.cli import main

main()
