"""medseg's exceptions. Each carries the file it is about, so the CLI prints one clear line."""

from __future__ import annotations

from os import PathLike

__all__ = ["MedsegError", "ReadError", "WriteError", "SeriesSelectionError", "GeometryError", "ModelError", "InputError"]


class MedsegError(Exception):
    """Base error: ``str(err)`` is ``"<path>: <problem>"`` when a path is known."""

    def __init__(self, message: str, path: str | PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ReadError(MedsegError):
    """An input could not be read (missing, corrupt, unsupported, not an image)."""


class WriteError(MedsegError):
    """An output could not be written (exists, no such directory, outside the output root)."""


class SeriesSelectionError(ReadError):
    """A path holds several series and none was chosen; ``series`` lists them."""

    def __init__(self, message: str, path: str | PathLike[str] | None = None, series: list | None = None) -> None:
        super().__init__(message, path)
        self.series = series or []


class GeometryError(ReadError):
    """Slices do not form a regular grid (irregular spacing, missing slice, gantry tilt)."""


class ModelError(MedsegError):
    """A model spec, checkpoint or network is invalid or unavailable."""


class InputError(MedsegError):
    """An input does not fit the model: wrong modality, a 4D scan for a one-channel model, a bad volume choice."""
