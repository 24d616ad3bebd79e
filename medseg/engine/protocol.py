"""The predictor contract every model kind implements, and the label volume they all return.

A predictor is configured once (a model spec + :class:`~medseg.engine.options.RunOptions`), then
``predict(volume, progress)`` returns the label map on exactly ``volume.geometry``. The MONAI-spec
:class:`medseg.predictor.Predictor`, :class:`medseg.nnunet.predictor.NnUNetPredictor` and the liver
predictors (:mod:`medseg.liver.predictor`) implement it; pipeline, batch and the napari plugin rely only on it.
Imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from medseg.progress import ProgressFn
from medseg.types import Geometry, Label, SourceInfo, Volume

if TYPE_CHECKING:  # pragma: no cover
    from medseg.config import ModelSpec

__all__ = ["Predictor", "label_volume"]


@runtime_checkable
class Predictor(Protocol):
    """What every predictor offers.

    Attributes:
        spec: the :class:`~medseg.config.ModelSpec` it runs (labels, colours, provenance).
        fingerprint: stable hash of the spec, the weights and the settings that change the output.
        device: the ``torch.device`` the network runs on.
    """

    spec: ModelSpec
    device: Any

    @property
    def fingerprint(self) -> str: ...

    def predict(self, volume: Volume, progress: ProgressFn | None = None) -> Volume:
        """Label map of ``volume`` on exactly ``volume.geometry`` (``progress(done, total)`` as work advances)."""
        ...


def label_volume(
    labels: np.ndarray, geometry: Geometry, src: SourceInfo, predictor: Predictor, *,
    labels_of: tuple[Label, ...] | None = None, keep_source_extra: bool = False, **extra: Any
) -> Volume:
    """The label :class:`Volume` a predictor returns: ``labels`` on the source ``geometry``, the label list
    ``labels_of`` (default ``predictor.spec.labels``) and the same provenance for every model kind (the input's ``src`` path, modality
    and series; ``extra``: ``model``, ``fingerprint`` + ``extra``).

    ``keep_source_extra`` carries the input's format items (``src.extra``, e.g. NIfTI's ``space_code``, so the
    written header keeps the input's qform/sform code) ahead of the provenance: nnU-Net models always did.

    Raises:
        ValueError: ``labels`` does not have the geometry's shape.
    """
    if tuple(labels.shape) != tuple(geometry.shape):
        raise ValueError(f"label map has shape {labels.shape}, the source grid is {geometry.shape}.")
    return Volume(
        labels,
        geometry,
        source=SourceInfo(
            path=src.path, format="labels", modality=src.modality, series_uid=src.series_uid,
            extra={**(dict(src.extra) if keep_source_extra else {}), "model": predictor.spec.name,
                   "fingerprint": predictor.fingerprint, **extra},
        ),
        is_label=True,
        labels=predictor.spec.labels if labels_of is None else labels_of,
    )
