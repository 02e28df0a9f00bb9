"""``metactl train-controller``: learn how to conduct the tools on a proxy, then compare.

- :mod:`.config`       the command line -> a checked controller config and run dir (no weights)
- :mod:`.run`          the training loop, evaluation on held-out tasks, the run dir
- :mod:`.episode_log`  ``scores.jsonl``: one row per (episode, phase)
- :mod:`.checkpoints`  ``checkpoints/``: resume after any kill
- :mod:`.report`       the final table and the learning curve
"""
