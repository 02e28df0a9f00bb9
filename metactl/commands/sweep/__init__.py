"""``metactl sweep``: many train-controller runs as Ray Tune trials.

- :mod:`.config`  the sweep YAML and every trial's controller config, checked before Ray starts
- :mod:`.run`     the trials on Ray Tune (grid or Optuna TPE), resumable
- :mod:`.report`  every finished trial and the per-setting summary
"""
