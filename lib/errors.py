"""Errors the suite raises on bad input: each names the problem and the fix."""


class SuiteError(Exception):
    """Base class: a problem with what the user asked for, not a bug in the suite."""


class CheckpointError(SuiteError):
    """A checkpoint exists but cannot be loaded as it is (missing files, truncated or corrupt weights)."""


class CheckpointUnavailable(SuiteError):
    """A checkpoint cannot be reached here (Hub id not cached and the Hub out of reach)."""


class PickleRefused(CheckpointError):
    """Only pickle-format weights are present and pickle loading was not allowed."""


class PromptError(SuiteError):
    """Prompts or answers that do not fit the measurement (lengths differ, answer not one token)."""


class HookNameError(SuiteError, KeyError):
    """A hook name the model does not have."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ShapeMismatch(SuiteError):
    """Two models that must share a shape (cross-model patching) do not."""


class SAEError(SuiteError):
    """A saved SAE that cannot be used as it is, or activations that do not fit an SAE."""


class HookNotFired(SuiteError):
    """A patch or hook was asked for at a hook point that never ran, so it would have been a silent no-op."""
