"""The project's error types: one base class, one subclass per boundary a caller may want to catch.

Each is also the built-in type it replaces (`ValueError`), so code that caught `ValueError` keeps
working. The CLI turns any `DeformableDetrError` into one `error: ...` line (exit 2); any other
exception is a bug and keeps its traceback.

    DeformableDetrError
      DatasetError       a dataset or image file is missing, unreadable or malformed
      CheckpointError    a weights file cannot be read, is not recognised, or does not fit the model
      ConfigError        a configuration value or a command-line option is invalid
      ModelInputError    tensors given to a model have the wrong shape, dtype or values
      BackendError       an attention backend cannot run here (also a RuntimeError)
"""

from __future__ import annotations


class DeformableDetrError(Exception):
    """Base class of every error the package raises on purpose; the message says what to do."""


class DatasetError(DeformableDetrError, ValueError):
    """A dataset or image file is missing, unreadable or malformed; the message names the file and the fix."""


class CheckpointError(DeformableDetrError, ValueError):
    """A weights file cannot be read, is not a recognised format, or does not fit the model."""


class ConfigError(DeformableDetrError, ValueError):
    """A configuration value or command-line option is invalid; the message lists what is allowed."""


class ModelInputError(DeformableDetrError, ValueError):
    """Tensors given to a model have the wrong shape, dtype or values (e.g. NaN pixels)."""


class BackendError(DeformableDetrError, RuntimeError):
    """An attention backend cannot run on this machine (the fused CPU kernel failed to build, Triton is missing)."""
