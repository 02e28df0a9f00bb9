"""Gymnasium environments around :mod:`metactl.runner` (phase-level and schedule-level).

They land with the train-controller work; they will call the runner, never a second
implementation of training or scoring.
"""
