"""Predictors for the ``liver`` and ``liver-lesions`` specs (``pipeline: {kind: liver | liver-lesions}``).

They implement :class:`medseg.engine.protocol.Predictor` (``spec``, ``device``, ``fingerprint``,
``predict(volume, progress)``) and return a label map on exactly the input's grid: the
volume is reoriented to RAS (a flip/permutation, no resampling), processed as pyliverlesionseg does
(:mod:`medseg.liver.pipeline`) and the labels are reoriented back.

>>> pred = load_predictor("liver")                       # doctest: +SKIP
>>> pred.predict(medseg.io.read("ct.nii.gz")).labels     # doctest: +SKIP
(Label(id=1, name='liver', ...),)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import numpy as np

from medseg.config import ModelSpec
from medseg.engine.options import RunOptions
from medseg.engine.protocol import label_volume
from medseg.errors import ModelError
from medseg.progress import ProgressFn
from medseg.types import Volume

__all__ = ["LiverPredictor", "LiverLesionPredictor", "load_liver_predictor", "to_ras", "from_ras"]


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
    """The network (torch module or :class:`~medseg.engine.openvino.OpenVINONetwork`) as
    ``(X, Y, Z) float32 -> (x, y, z) float32`` (one segment, batch 1); ``seconds`` adds up its calls."""

    def __init__(self, network: Any, device: Any, autocast_dtype: Any) -> None:
        self.network, self.device, self.autocast_dtype = network, device, autocast_dtype
        self.seconds = 0.0

    def __call__(self, segment: np.ndarray) -> np.ndarray:
        import time

        import torch

        from medseg.engine.runtime import autocast

        t0 = time.perf_counter()
        x = torch.from_numpy(np.ascontiguousarray(segment, dtype=np.float32))[None, None].to(self.device)
        with torch.inference_mode(), autocast(self.device, self.autocast_dtype):
            y = self.network(x)
        out = y[0, 0].float().cpu().numpy()
        self.seconds += time.perf_counter() - t0
        return out


def _small_input(network: Any) -> tuple[int, int, int, int, int]:
    """``(1, 1, X, Y, Z)``: the smallest input the network takes. OpenVINO converts the network on it (the
    traced graph takes any valid size: cheap to trace and to check) and compiles it for the real segment
    size at the first call."""
    from medseg.nets.unet_generalized import possible_sizes

    _, _, ins, outs = possible_sizes(network.sfs, network.kernels, network.kernels_common, network.padding,
                                     network.upsampling)
    size = [int(ins[np.nonzero(outs[:, a] > 0)[0][0], a]) for a in range(3)]
    return (1, 1, *size)  # type: ignore[return-value]


class LiverPredictor:
    """pyliverlesionseg's whole-liver model (CT and MR) on any volume; label 1 = liver.

    Args:
        spec: a spec with ``pipeline: {kind: liver}`` and a ``unet_generalized`` network.
        options: run options (or as keywords); ``device``, ``precision`` and ``threads`` apply (the pipeline
            has no sliding window or TTA to set).
        modality: ``auto`` (DICOM Modality, else the shared CT intensity test), ``ct`` or ``mr``.
        progress: default ``progress(done, total)`` callback.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        options: RunOptions | None = None,
        modality: str = "auto",
        progress: ProgressFn | None = None,
        **run_options: Any,
    ) -> None:
        import time

        from medseg.infer.network import build_network

        t_load = time.perf_counter()
        if spec.pipeline is None or spec.pipeline.get("kind") != "liver" or spec.network.unet_generalized is None:
            raise ModelError(f"{spec.name}: not a liver pipeline spec (pipeline.kind: liver + unet_generalized)")
        if str(modality).lower() not in ("auto", "ct", "mr"):
            raise ValueError(f"modality must be one of auto, ct, mr; got {modality!r}.")
        self._runtime(spec, RunOptions.build(options, **run_options), progress)
        self.modality = str(modality).lower()
        self.network, self._weights_digest = build_network(spec.network, spec.weights, self.device)
        self.input_size = tuple(self.network.input_size)
        self.output_size = tuple(self.network.output_size)
        self.target_voxsize = tuple(spec.input.spacing or (3.0, 3.0, 3.0))
        self.last_info: dict[str, Any] = {}
        self.network, self.runtime_info = self._select_runtime(self.network, self._weights_digest)
        #: seconds per stage of the last :meth:`predict` (``load``: building, converting and compiling)
        self.timings: dict[str, float] = {"load": time.perf_counter() - t_load}

    def _runtime(self, spec: ModelSpec, options: RunOptions, progress: ProgressFn | None) -> None:
        from medseg.engine.runtime import resolve_device, resolve_precision

        self.spec = spec
        self.options = options
        self.device = resolve_device(options.device)
        self.autocast_dtype = resolve_precision(options.precision, self.device)
        self.threads = options.threads
        self.progress = progress

    def _select_runtime(self, network: Any, weights_digest: str) -> tuple[Any, Any]:
        """``(network to call, RuntimeInfo)`` under ``options.runtime``
        (:func:`medseg.engine.backends.select_network`): OpenVINO converts the network once on its smallest
        input (cached by the spec's digest, the weights' sha256, that shape and OpenVINO's version) and
        compiles it for the segment size."""
        from medseg.engine.backends import select_network
        from medseg.nets.unet_generalized import PORT_VERSION

        precision = str(self.autocast_dtype).replace("torch.", "") if self.autocast_dtype is not None else "float32"
        fingerprint = json.dumps({"spec": self.spec.digest(), "device": self.device.type, "role": "network",
                                  "pipeline": self.spec.pipeline.get("kind"), "port": PORT_VERSION}, sort_keys=True)
        net, info = select_network(network, _small_input(network), runtime=self.options.runtime, device=self.device,
                                   precision=precision, threads=self.threads, fingerprint=fingerprint,
                                   weights_sha256=weights_digest)
        if info.name == "openvino":
            net.compiled_for((1, 1, *self.input_size))  # compiled at load: the first predict pays no compile
        return net, info

    @property
    def fingerprint(self) -> str:
        payload = {"spec": self.spec.digest(), "weights": self._weights_digest, "modality": self.modality,
                   "precision": str(self.autocast_dtype), "device": self.device.type}
        info = getattr(self, "runtime_info", None)
        if info is not None and info.name != "torch":  # OpenVINO's float32 sums differ from torch's in the last bits
            payload["runtime"] = info.name
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
        """``(liver mask, image, affine, orientation)`` in RAS order for ``volume``; sets :attr:`timings`'
        ``preprocess``, ``network`` and ``export`` (crop to probabilities / forward passes / mask on the grid)."""
        import time

        from medseg.engine.runtime import torch_settings
        from medseg.liver.pipeline import abdomen_crop, liver_mask, liver_probabilities

        ras, affine, ornt = to_ras(self._image(volume), volume.affine)
        vox = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
        lps = np.ascontiguousarray(np.flip(ras, (0, 1)))
        crop = abdomen_crop(lps, vox, modality, self.spec.pipeline["crop"])
        self.last_info["crop"] = {"method": crop.method, "reason": crop.reason,
                                  "box_lps": [[s.start, s.stop] for s in crop.box]}
        net = _NetCall(self.network, self.device, self.autocast_dtype)
        t0 = time.perf_counter()
        with torch_settings(self.device, self.threads):
            prob = liver_probabilities(lps, vox, modality, crop, net, self.input_size, self.output_size,
                                       self.target_voxsize, pad_value=self._pad_value(modality), progress=progress,
                                       slab_extend_mm=float(self.spec.pipeline.get("slab_extend_mm", 0.0)))
        t1 = time.perf_counter()
        self.last_quality = {1: q} if (q := _threshold_quality(prob, self.spec.pipeline["threshold"])) is not None else {}
        mask_lps = liver_mask(prob, lps.shape, crop, self.spec.pipeline["threshold"])
        self.timings.update(preprocess=t1 - t0 - net.seconds, network=net.seconds, export=time.perf_counter() - t1)
        return np.ascontiguousarray(np.flip(mask_lps, (0, 1))), ras, affine, ornt

    def _pad_value(self, modality: str) -> float:
        """Value of the network input outside the volume (CT: ``pad_value``; MR: ``mr_pad_value``)."""
        key = "mr_pad_value" if modality == "MR" else "pad_value"
        return float(self.spec.pipeline.get(key, self.spec.pipeline.get("pad_value", 0.0)))

    def _volume(self, labels_ras: np.ndarray, ornt: np.ndarray, volume: Volume) -> Volume:
        labels = from_ras(labels_ras, ornt)
        if labels.shape != volume.geometry.shape:
            raise ModelError(f"internal error: labels {labels.shape} vs input {volume.geometry.shape}")
        return label_volume(labels.astype(np.uint8), volume.geometry, volume.source, self, **self.last_info)

    def predict(self, volume: Volume, progress: ProgressFn | None = None) -> Volume:
        """Label map (1 = liver) on exactly ``volume.geometry``; ``last_quality`` ``{1: score}`` (the mean
        threshold margin of the liver probabilities on the 3 mm grid, see README "Quality score")."""
        self.last_info = {}
        self.last_quality: dict[int, float] = {}
        modality = self._modality(volume)
        mask, _, _, ornt = self.liver_ras(volume, modality, progress or self.progress)
        return self._volume(mask.astype(np.uint8), ornt, volume)


class LiverLesionPredictor(LiverPredictor):
    """The cascade: the liver model first, then the lesion model inside the dilated liver; 1 liver, 2 lesion.

    Args:
        spec: a spec with ``pipeline: {kind: liver-lesions}``.
        liver_spec: the spec its ``pipeline.liver_model`` names (loaded by the caller,
            :func:`medseg.predictor.load_predictor`).
        options, modality, progress: as :class:`LiverPredictor`.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        liver_spec: ModelSpec,
        options: RunOptions | None = None,
        modality: str = "auto",
        progress: ProgressFn | None = None,
        **run_options: Any,
    ) -> None:
        import time

        from medseg.infer.network import build_network

        t_load = time.perf_counter()
        if spec.pipeline is None or spec.pipeline.get("kind") != "liver-lesions" or spec.network.unet_generalized is None:
            raise ModelError(f"{spec.name}: not a liver-lesions pipeline spec")
        options = RunOptions.build(options, **run_options)
        self.liver = LiverPredictor(liver_spec, options=options, modality=modality, progress=progress)
        self._runtime(spec, options, progress)
        self.modality = self.liver.modality
        self.network, digest = build_network(spec.network, spec.weights, self.device)
        self._weights_digest = f"{self.liver._weights_digest}+{digest}"
        self.input_size = tuple(self.network.input_size)
        self.output_size = tuple(self.network.output_size)
        self.target_voxsize = tuple(spec.input.spacing or (1.0, 1.0, 3.0))
        self.last_info = {}
        self.network, info = self._select_runtime(self.network, digest)
        if info.name != self.liver.runtime_info.name:  # auto converted one network and not the other: say so
            note = f"runtime: liver network on {self.liver.runtime_info.name}, lesion network on {info.name}"
            info = replace(info, note=" / ".join(n for n in (info.note, note) if n))
        self.runtime_info = info
        self.timings = {"load": time.perf_counter() - t_load}

    def predict(self, volume: Volume, progress: ProgressFn | None = None) -> Volume:
        """Label map (1 = liver, 2 = lesion) on exactly ``volume.geometry``; ``last_quality`` scores the liver
        only (the lesion stage returns masks, not probabilities)."""
        import time

        from medseg.engine.runtime import torch_settings
        from medseg.liver.pipeline import lesion_mask

        self.last_info = {}
        self.last_quality = {}
        modality = self._modality(volume)
        self.liver.last_info = {}
        liver, ras, affine, ornt = self.liver.liver_ras(volume, modality, progress or self.progress)
        self.last_info.update(self.liver.last_info)
        self.last_quality = dict(getattr(self.liver, "last_quality", {}))
        vox = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
        net = _NetCall(self.network, self.device, self.autocast_dtype)
        t0 = time.perf_counter()
        with torch_settings(self.device, self.threads):
            lesions, region = lesion_mask(ras, liver, vox, modality, net, self.input_size, self.output_size,
                                          self.target_voxsize, self.spec.pipeline["threshold"], progress or self.progress)
        lesions &= region  # the model only saw the dilated liver (outside it its input was constant)
        stages = self.liver.timings
        self.timings.update(preprocess=stages["preprocess"] + time.perf_counter() - t0 - net.seconds,
                            network=stages["network"] + net.seconds, export=stages["export"])
        labels = liver.astype(np.uint8)
        labels[lesions] = 2
        return self._volume(labels, ornt, volume)


def _threshold_quality(prob: np.ndarray, threshold: float) -> float | None:
    """Mean threshold margin of the voxels ``prob > threshold`` (:class:`medseg.engine.decision.Margins`)."""
    import torch

    from medseg.config import Decision as Rule
    from medseg.engine.decision import Decision, Margins

    margins = Margins()
    Decision(Rule.THRESHOLD, 1, float(threshold)).tally(torch.as_tensor(np.asarray(prob, dtype=np.float32))[None], margins)
    return margins.mean().get(1)


def load_liver_predictor(spec: ModelSpec, *, liver_spec: ModelSpec | None = None, **kwargs: Any) -> LiverPredictor:
    """The predictor for a ``pipeline`` spec (``liver``, or ``liver-lesions`` with its ``liver_spec``)."""
    kind = (spec.pipeline or {}).get("kind")
    if kind == "liver":
        return LiverPredictor(spec, **kwargs)
    if kind == "liver-lesions":
        if liver_spec is None:
            raise ValueError(f"{spec.name}: a liver-lesions pipeline needs liver_spec (its pipeline.liver_model).")
        return LiverLesionPredictor(spec, liver_spec=liver_spec, **kwargs)
    raise ModelError(f"{spec.name}: unknown pipeline kind {kind!r}")
