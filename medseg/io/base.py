"""Types shared by the readers: what ``medseg info`` reports for each series or file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Irregular(str, Enum):
    """What to do when slices do not form a regular grid (uneven spacing, missing slice, gantry tilt)."""

    ERROR = "error"  # raise GeometryError naming the problem
    RESAMPLE = "resample"  # resample onto a regular grid, with a warning


@dataclass(frozen=True)
class SeriesInfo:
    """One readable series (DICOM) or file (NIfTI/NRRD/...), as listed by ``medseg info``.

    ``shape`` is ``(i, j, k[, t])``, ``spacing`` in mm along ``(i, j, k)``.
    """

    path: str
    format: str
    uid: str | None = None
    number: int | None = None
    description: str | None = None
    modality: str | None = None
    shape: tuple[int, ...] = ()
    spacing: tuple[float, ...] = ()
    orientation: str | None = None
    n_files: int = 1
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["spacing"] = [round(s, 6) for s in self.spacing]
        d["warnings"] = list(self.warnings)
        return d

    def one_line(self) -> str:
        """``UID  #number  description  modality  shape  spacing`` for error messages."""
        shape = "x".join(str(s) for s in self.shape)
        spacing = "x".join(f"{s:.3g}" for s in self.spacing)
        return (
            f"{self.uid or '-'}  #{self.number if self.number is not None else '-'}  "
            f"{self.description or '-'!r}  {self.modality or '-'}  {shape}  {spacing} mm"
        )
