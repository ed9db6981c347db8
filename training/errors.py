"""Expected failures: the CLI reports them in one line each, not as a traceback."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Something the user can fix (bad data, options or output directory), not a bug."""


class PublishError(TrainingError):
    """The model repository cannot take a new version."""


class ConfigError(TrainingError):
    """A training configuration the model cannot honour."""
