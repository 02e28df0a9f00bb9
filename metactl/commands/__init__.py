"""The commands layer: what ``metactl`` runs. Each command is split into its config (the command
line -> a checked config, before any weights load), its run and its report; :mod:`.cli` is the
typer app over them. Nothing in the core (``metactl.*``) or the RL layer (``metactl.envs``,
``metactl.policies``) imports from here.
"""
