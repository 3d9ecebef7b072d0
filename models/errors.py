"""The one error tree of the model layer.

Every failure a user can cause (an unknown model or analysis name, a weights file that is missing
or does not match its checksum) is a subclass of :class:`ModelError` whose message names the bad
value and what to do next.
"""

from __future__ import annotations


class ModelError(Exception):
    """Base class of every error raised by ``models``."""


class UnknownModelError(ModelError, KeyError):
    """A model or analysis name that is not registered.

    Attributes:
        name: the unknown name.
        known: the registered names.
    """

    def __init__(self, name: str, known: list[str], *, what: str = "model") -> None:
        self.name = name
        self.known = list(known)
        listing = ", ".join(self.known) or "none"
        super().__init__(f"unknown {what} {name!r}; known {what}s: {listing}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class WeightsError(ModelError):
    """A weights file that is missing, unreadable or not the one the registry expects.

    Attributes:
        model: the model name.
        path: the weights file.
    """

    def __init__(self, message: str, *, model: str, path: str) -> None:
        self.model = model
        self.path = path
        super().__init__(f"{model}: {message} ({path})")


class AnalysisCancelled(ModelError):
    """The cancel check returned True; the analysis stopped between batches."""


class InvalidSettingsError(ModelError, ValueError):
    """A setting combination the pipeline cannot run (e.g. an analysis needing a disabled one)."""


class LabelError(ModelError):
    """A labelled image set that cannot be read, or labels a task does not know."""
