"""The built-in configs (package data, found through ``importlib.resources``; see metactl.paths)."""
