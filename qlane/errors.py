"""The common base of every error qlane raises for bad models, inputs, targets or builds."""

from __future__ import annotations


class QlaneError(Exception):
    """Base of qlane's typed errors; the message is one line meant for the user."""


class InputError(QlaneError, ValueError):
    """Inputs or arguments that do not fit the model: an unreadable or mismatched NPZ, no samples,
    an output file that would replace the model or the inputs."""
