"""Errors the user can act on. Their message is the whole story: front ends show it without a traceback."""

from __future__ import annotations


class TaggerError(Exception):
    """Base class of every expected failure; ``str(err)`` is a complete message for a user."""


class ModelUnavailableError(TaggerError):
    """A model's files are not here and could not be downloaded."""


class ModelFormatError(TaggerError):
    """A model's files are present but unusable (csv/model mismatch, not a WD model, opset too new)."""


class ImageError(TaggerError):
    """One image could not be read; names the file and the reason. Batches go on after it."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class OptionsError(TaggerError, ValueError):
    """An option is out of range or of the wrong kind; names the field."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")
