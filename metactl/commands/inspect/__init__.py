"""``metactl inspect``: what a controller decided, why, and what each tool did to the model.

Modules, each holding one kind of reading:

- :mod:`.source`      the run dir being inspected, validated before any weights load
- :mod:`.rollout`     the policy's greedy episode on one task, with everything it saw
- :mod:`.shapley`     exact Shapley values and leave-one-out over any small set of players
- :mod:`.ablate`      ablations on a trained model (tools, layer groups) and on a schedule (phases, order)
- :mod:`.saliency`    which observation features move the policy's controls
- :mod:`.readout`     per-layer linear readout of a behaviour (is it inside the model?)
- :mod:`.plots`       the PNGs
- :mod:`.report`      the assembled report: terminal tables, JSON, one self-contained HTML
- :mod:`.run`         the orchestration ``metactl inspect`` calls
"""
