"""Predictors for the ``liver`` and ``liver-lesions`` specs (``pipeline: {kind: liver | liver-lesions}``).

They follow the :class:`medseg.predictor.Predictor` surface (``spec``, ``device``, ``autocast_dtype``,
``fingerprint``, ``predict(volume, progress)``) and return a label map on exactly the input's grid: the
volume is reoriented to RAS (a flip/permutation, no resampling), processed as pyliverlesionseg does
(:mod:`medseg.liver.pipeline`) and the labels are reoriented back.

>>> pred = load_predictor("liver")                       # doctest: +SKIP
>>> pred.predict(medseg.io.read("ct.nii.gz")).labels     # doctest: +SKIP
(Label(id=1, name='liver', ...),)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from medseg.config import ModelSpec
from medseg.errors import ModelError
from medseg.types import SourceInfo, Volume

__all__ = ["LiverPredictor", "LiverLesionPredictor", "load_liver_predictor", "to_ras", "from_ras"]

ProgressFn = Callable[[int, int], None]


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(array in RAS order, its affine, the orientation transform)`` — flips/permutations only."""
    import nibabel.orientations as nio

    ornt = nio.io_orientation(np.asarray(affine))
    ras = nio.apply_orientation(array, ornt)
    new_affine = np.asarray(affine) @ nio.inv_ornt_aff(ornt, array.shape[:3])
    return np.ascontiguousarray(ras), new_affine, ornt


def from_ras(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Undo :func:`to_ras` on an array of the RAS shape."""
    import nibabel.orientations as nio

    back = nio.ornt_transform(nio.axcodes2ornt(("R", "A", "S")), ornt)
    return np.ascontiguousarray(nio.apply_orientation(array, back))


class _NetCall:
    """A torch network as ``(X, Y, Z) float32 -> (x, y, z) float32`` (one segment, batch 1)."""

    def __init__(self, network: Any, device: Any, autocast_dtype: Any) -> None:
        self.network, self.device, self.autocast_dtype = network, device, autocast_dtype

    def __call__(self, segment: np.ndarray) -> np.ndarray:
        import torch

        from medseg.device import autocast

        x = torch.from_numpy(np.ascontiguousarray(segment, dtype=np.float32))[None, None].to(self.device)
        with torch.inference_mode(), autocast(self.device, self.autocast_dtype):
            y = self.network(x)
        return y[0, 0].float().cpu().numpy()


class LiverPredictor:
    """pyliverlesionseg's whole-liver model (CT and MR) on any volume; label 1 = liver.

    Args:
        spec: a spec with ``pipeline: {kind: liver}`` and a ``unet_generalized`` network.
        device, precision, threads: as :func:`medseg.predictor.load_predictor`.
        modality: ``auto`` (DICOM Modality, else the shared CT intensity test), ``ct`` or ``mr``.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: str = "auto",
        precision: str = "auto",
        threads: int | None = None,
        modality: str = "auto",
        progress: ProgressFn | None = None,
        **_: Any,
    ) -> None:
        from medseg.device import resolve_device, resolve_precision
        from medseg.infer.network import build_network

        if spec.pipeline is None or spec.pipeline.get("kind") != "liver" or spec.network.unet_generalized is None:
            raise ModelError(f"{spec.name}: not a liver pipeline spec (pipeline.kind: liver + unet_generalized)")
        if str(modality).lower() not in ("auto", "ct", "mr"):
            raise ValueError(f"modality must be one of auto, ct, mr; got {modality!r}.")
        self.spec = spec
        self.device = resolve_device(device)
        self.autocast_dtype = resolve_precision(precision, self.device)
        self.threads = threads
        self.modality = str(modality).lower()
        self.progress = progress
        self.network, self._weights_digest = build_network(spec.network, spec.weights, self.device)
        self.input_size = tuple(self.network.input_size)
        self.output_size = tuple(self.network.output_size)
        self.target_voxsize = tuple(spec.input.spacing or (3.0, 3.0, 3.0))
        self.last_info: dict[str, Any] = {}

    @property
    def fingerprint(self) -> str:
        payload = {"spec": self.spec.digest(), "weights": self._weights_digest, "modality": self.modality,
                   "precision": str(self.autocast_dtype), "device": self.device.type}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.name!r}, device={self.device})"

    def _modality(self, volume: Volume) -> str:
        from medseg.modality import resolve_modality

        decision = resolve_modality(volume, self.modality)
        if decision.modality not in ("CT", "MR"):
            raise ModelError(
                f"{self.spec.name}: needs CT or MR, got modality {decision.modality!r} (use --modality ct|mr)",
                volume.source.path,
            )
        self.last_info["modality"] = decision.as_dict()
        return decision.modality

    @staticmethod
    def _image(volume: Volume) -> np.ndarray:
        if volume.is_label:
            raise ModelError("cannot segment a label map", volume.source.path)
        arr = volume.array if volume.array.ndim == 3 else volume.array[..., 0]  # 4D: the first volume, as the original
        return np.asarray(arr, dtype=np.float32)

    def liver_ras(self, volume: Volume, modality: str, progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
        """``(liver mask, image, affine, orientation)`` in RAS order for ``volume``."""
        from medseg.device import torch_settings
        from medseg.liver.pipeline import abdomen_crop, liver_mask, liver_probabilities

        ras, affine, ornt = to_ras(self._image(volume), volume.affine)
        vox = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
        lps = np.ascontiguousarray(np.flip(ras, (0, 1)))
        crop = abdomen_crop(lps, vox, modality, self.spec.pipeline["crop"])
        self.last_info["crop"] = {"method": crop.method, "reason": crop.reason,
                                  "box_lps": [[s.start, s.stop] for s in crop.box]}
        net = _NetCall(self.network, self.device, self.autocast_dtype)
        with torch_settings(self.device, self.threads):
            prob = liver_probabilities(lps, vox, modality, crop, net, self.input_size, self.output_size,
                                       self.target_voxsize, pad_value=self._pad_value(modality), progress=progress)
        mask_lps = liver_mask(prob, lps.shape, crop, self.spec.pipeline["threshold"])
        return np.ascontiguousarray(np.flip(mask_lps, (0, 1))), ras, affine, ornt

    def _pad_value(self, modality: str) -> float:
        """Value of the network input outside the volume (CT: ``pad_value``; MR: ``mr_pad_value``)."""
        key = "mr_pad_value" if modality == "MR" else "pad_value"
        return float(self.spec.pipeline.get(key, self.spec.pipeline.get("pad_value", 0.0)))

    def _volume(self, labels_ras: np.ndarray, ornt: np.ndarray, volume: Volume) -> Volume:
        labels = from_ras(labels_ras, ornt)
        if labels.shape != volume.geometry.shape:
            raise ModelError(f"internal error: labels {labels.shape} vs input {volume.geometry.shape}")
        return Volume(
            labels.astype(np.uint8),
            volume.geometry,
            source=SourceInfo(path=volume.source.path, format="labels", modality=volume.source.modality,
                              series_uid=volume.source.series_uid,
                              extra={"model": self.spec.name, "fingerprint": self.fingerprint, **self.last_info}),
            is_label=True,
            labels=self.spec.labels,
        )

    def predict(self, volume: Volume, progress: ProgressFn | None = None) -> Volume:
        """Label map (1 = liver) on exactly ``volume.geometry``."""
        self.last_info = {}
        modality = self._modality(volume)
        mask, _, _, ornt = self.liver_ras(volume, modality, progress or self.progress)
        return self._volume(mask.astype(np.uint8), ornt, volume)


class LiverLesionPredictor(LiverPredictor):
    """The cascade: the liver model first, then the lesion model inside the dilated liver; 1 liver, 2 lesion."""

    def __init__(self, spec: ModelSpec, **kwargs: Any) -> None:
        from medseg.device import resolve_device, resolve_precision
        from medseg.infer.network import build_network
        from medseg.models.loaders import load_model_spec

        if spec.pipeline is None or spec.pipeline.get("kind") != "liver-lesions" or spec.network.unet_generalized is None:
            raise ModelError(f"{spec.name}: not a liver-lesions pipeline spec")
        liver_spec = load_model_spec(spec.pipeline["liver_model"])
        self.liver = LiverPredictor(liver_spec, **kwargs)
        self.spec = spec
        self.device = resolve_device(kwargs.get("device", "auto"))
        self.autocast_dtype = resolve_precision(kwargs.get("precision", "auto"), self.device)
        self.threads = kwargs.get("threads")
        self.modality = self.liver.modality
        self.progress = kwargs.get("progress")
        self.network, digest = build_network(spec.network, spec.weights, self.device)
        self._weights_digest = f"{self.liver._weights_digest}+{digest}"
        self.input_size = tuple(self.network.input_size)
        self.output_size = tuple(self.network.output_size)
        self.target_voxsize = tuple(spec.input.spacing or (1.0, 1.0, 3.0))
        self.last_info = {}

    def predict(self, volume: Volume, progress: ProgressFn | None = None) -> Volume:
        """Label map (1 = liver, 2 = lesion) on exactly ``volume.geometry``."""
        from medseg.device import torch_settings
        from medseg.liver.pipeline import lesion_mask

        self.last_info = {}
        modality = self._modality(volume)
        self.liver.last_info = {}
        liver, ras, affine, ornt = self.liver.liver_ras(volume, modality, progress or self.progress)
        self.last_info.update(self.liver.last_info)
        vox = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
        net = _NetCall(self.network, self.device, self.autocast_dtype)
        with torch_settings(self.device, self.threads):
            lesions, region = lesion_mask(ras, liver, vox, modality, net, self.input_size, self.output_size,
                                          self.target_voxsize, self.spec.pipeline["threshold"], progress or self.progress)
        lesions &= region  # the model only saw the dilated liver (outside it its input was constant)
        labels = liver.astype(np.uint8)
        labels[lesions] = 2
        return self._volume(labels, ornt, volume)


def load_liver_predictor(spec: ModelSpec, **kwargs: Any) -> LiverPredictor:
    """The predictor for a ``pipeline`` spec (``liver`` or ``liver-lesions``)."""
    kind = (spec.pipeline or {}).get("kind")
    if kind == "liver":
        return LiverPredictor(spec, **kwargs)
    if kind == "liver-lesions":
        return LiverLesionPredictor(spec, **kwargs)
    raise ModelError(f"{spec.name}: unknown pipeline kind {kind!r}")
