"""``metactl transfer``: carry a controller's decisions from the proxy to another model.

- :mod:`.source`  what is carried (a run dir's schedule or controller), read without weights
- :mod:`.config`  the transfer config and its plan, checked before any weights load
- :mod:`.run`     every method on every task seed through the same runner; resumable output dir
- :mod:`.report`  the side-by-side comparison
"""
