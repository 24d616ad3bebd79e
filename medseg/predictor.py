"""The :class:`Predictor`: configured once, then ``preprocess → predict_logits → postprocess`` per volume.

>>> from medseg.predictor import load_predictor                       # doctest: +SKIP
>>> labels = load_predictor("brain-mri").predict(volume)             # doctest: +SKIP
>>> labels.geometry == volume.geometry                                # doctest: +SKIP
True
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.config import InferMode, InvertMode, LocalizeSpec, ModelSpec
from medseg.errors import ModelError
from medseg.postprocess import activate
from medseg.types import SourceInfo, Volume

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from monai.data import MetaTensor

__all__ = ["Predictor", "Preprocessed", "load_predictor"]

ProgressFn = Callable[[int, int], None]


@dataclass
class Preprocessed:
    """Output of :meth:`Predictor.preprocess`.

    Attributes:
        x: ``(1, C, X, Y, Z)`` float32 network input on the CPU.
        image: the spatially preprocessed MetaTensor ``(C, X, Y, Z)`` (carries the applied operations).
        transforms: the spatial Compose to invert.
        geometry: the source volume's geometry.
        crop: localiser crop on the reoriented grid (or ``None``).
    """

    x: Any
    image: Any
    transforms: Any
    geometry: Any
    source: SourceInfo = field(default_factory=SourceInfo)
    crop: tuple[slice, ...] | None = None


def load_predictor(
    model: str | Path | ModelSpec = "brain-mri",
    *,
    device: str = "auto",
    precision: str = "auto",
    overlap: float | None = None,
    tta: bool | None = None,
    threads: int | None = None,
    sw_batch_size: int | None = None,
    progress: ProgressFn | None = None,
    modality: str = "auto",
    trust_model_code: bool = False,
) -> Predictor:
    """Build a :class:`Predictor` (loads the network once).

    Args:
        model: registry name (``medseg models list``), spec YAML path, MONAI bundle directory, or a spec.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda[:N]`` or ``mps``; unavailable → error.
        precision: ``auto`` | ``float32`` | ``bfloat16`` | ``float16`` (autocast dtype).
        overlap: sliding-window overlap override in ``[0, 1)``.
        tta: test-time flips: ``None`` = the spec's, ``False`` = none, ``True`` = the spec's or all 3 axes.
        threads: CPU threads during prediction (restored afterwards).
        sw_batch_size: windows per network call override.
        progress: default ``progress(done, total)`` callback for :meth:`Predictor.predict`.
        modality: ``auto`` | ``ct`` | ``mr`` for models whose preprocessing depends on it (``liver``).
        trust_model_code: load TorchScript whose sha256 nothing pins (it is code; see :mod:`medseg.models.trust`).
    """
    kwargs = dict(
        device=device, precision=precision, overlap=overlap, tta=tta, threads=threads, sw_batch_size=sw_batch_size,
        progress=progress,
    )
    from medseg.models.loaders import is_nnunet_folder, load_model_spec

    if not isinstance(model, ModelSpec) and Path(str(model)).is_dir() and is_nnunet_folder(model):
        from medseg.nnunet.predictor import load_nnunet_predictor  # nnU-Net results folder (issue: nnU-Net support)

        return load_nnunet_predictor(Path(model), **kwargs)
    spec = model if isinstance(model, ModelSpec) else load_model_spec(model)
    if spec.pipeline is not None:  # a model-specific pipeline (pyliverlesionseg's liver / lesion cascade)
        from medseg.liver.predictor import load_liver_predictor

        return load_liver_predictor(spec, modality=modality, **kwargs)
    if spec.network.nnunet:
        from medseg.nnunet.predictor import load_nnunet_predictor

        return load_nnunet_predictor(spec, **kwargs)
    return Predictor(spec, **kwargs, trust_model_code=trust_model_code)


class Predictor:
    """Runs one model spec on volumes. Stages: :meth:`preprocess`, :meth:`predict_logits`, :meth:`postprocess`."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: str = "auto",
        precision: str = "auto",
        overlap: float | None = None,
        tta: bool | None = None,
        threads: int | None = None,
        sw_batch_size: int | None = None,
        progress: ProgressFn | None = None,
        trust_model_code: bool = False,
    ) -> None:
        from medseg.device import resolve_device, resolve_precision
        from medseg.infer.network import build_network

        if overlap is not None and not (isinstance(overlap, (int, float)) and 0 <= overlap < 1):
            raise ValueError(f"overlap must be >= 0 and < 1, got {overlap}.")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer, got {threads}.")
        if sw_batch_size is not None and (not isinstance(sw_batch_size, int) or sw_batch_size < 1):
            raise ValueError(f"sw_batch_size must be a positive integer, got {sw_batch_size}.")
        inferer = spec.inferer
        if overlap is not None:
            inferer = replace(inferer, overlap=float(overlap))
        if sw_batch_size is not None:
            inferer = replace(inferer, sw_batch_size=sw_batch_size)
        if tta is False:
            inferer = replace(inferer, tta_flips=())
        elif tta is True and not inferer.tta_flips:
            inferer = replace(inferer, tta_flips=((0,), (1,), (2,)))
        self.spec = replace(spec, inferer=inferer)
        self.device = resolve_device(device)
        self.precision = str(getattr(precision, "value", precision))
        self.autocast_dtype = resolve_precision(precision, self.device)
        self.threads = threads
        self.progress = progress
        self.network, self._weights_digest = build_network(
            spec.network, spec.weights, self.device, trust_model_code=trust_model_code
        )
        self.localizer = None
        self._localizer_digest = None
        if spec.input.localize is not None:
            self.localizer, self._localizer_digest = build_network(
                spec.input.localize.network, spec.input.localize.weights, self.device,
                trust_model_code=trust_model_code,
            )

    # ------------------------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """Stable hash of the spec, the weights' sha256 and the settings that change the output."""
        payload = {
            "spec": self.spec.digest(),
            "weights": self._weights_digest,
            "localizer": self._localizer_digest,
            "precision": str(self.autocast_dtype),
            "device": self.device.type,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

    def __repr__(self) -> str:
        return f"Predictor({self.spec.name!r}, device={self.device}, autocast={self.autocast_dtype})"

    def _autocast(self):
        from medseg.device import autocast

        return autocast(self.device, self.autocast_dtype)

    # ------------------------------------------------------------------------------------------------
    def _localize(self, image: MetaTensor, loc: LocalizeSpec, stats: dict) -> tuple[slice, ...]:
        """Bounding box (slices on ``image``'s grid) of the localiser's largest foreground component."""
        import torch
        import torch.nn.functional as F

        from medseg.postprocess import largest_component
        from medseg.transforms import normalize

        shape = tuple(image.shape[1:])
        small = F.interpolate(image.as_tensor()[None], size=loc.input_size, mode=loc.resize_mode)[0]
        small = normalize(small, self.spec.input.normalize, stats)
        with torch.inference_mode(), self._autocast():
            out = self.localizer(torch.as_tensor(small)[None].to(self.device)).float()[0]
        out = activate(out, loc.activation)
        mask = (out[loc.channel] > loc.threshold).cpu().numpy()
        if not mask.any():
            raise ModelError(f"{self.spec.name}: the localiser found no foreground (is this the right modality?)")
        mask = largest_component(mask).astype(np.float32)
        slices = []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            idx = np.nonzero(mask.mean(axis=other) > loc.projection_threshold)[0]
            if idx.size == 0:
                raise ModelError(f"{self.spec.name}: not enough foreground to place the bounding box")
            scale = shape[axis] / loc.input_size[axis]
            center = (idx.max() + 1 + idx.min()) / 2 * scale
            size = (idx.max() + 1 - idx.min()) * scale * (1 + 2 * loc.margin)
            center, size = round(float(center)), round(float(size))  # torch.round: half to even, like Python
            lo, hi = int(center - size / 2), int(center + size / 2)
            slices.append(slice(max(0, lo), min(shape[axis], hi)))
        return tuple(slices)

    def preprocess(self, volume: Volume) -> Preprocessed:
        """Volume → network input: channels first, spatial transforms (invertible), normalisation."""
        from medseg.transforms import image_statistics, normalize, spatial_transforms, to_metatensor

        if volume.is_label:
            raise ModelError("cannot segment a label map", volume.source.path)
        inp = self.spec.input
        img = to_metatensor(volume, inp.channels)
        crop = None
        stats: dict = {}
        if inp.localize is not None or any(s.params.get("reference") == "image" for s in inp.normalize):
            oriented = spatial_transforms(replace(inp, spacing=None, crop_foreground=None, resize=None))(img)
            stats = image_statistics(oriented, inp)
            if inp.localize is not None:
                crop = self._localize(oriented, inp.localize, stats)
        late_crop = inp.crop_foreground is not None and inp.crop_foreground.get("source") == "normalized"
        spatial = replace(inp, crop_foreground=None) if late_crop else inp
        transforms = spatial_transforms(spatial, crop, float64=math.prod(volume.geometry.shape) <= self.float64_voxels)
        image = transforms(img)
        x = normalize(image, inp.normalize, stats)
        import torch

        if late_crop:  # crop to the foreground of the normalised image (normalisation stats of the whole image)
            from monai.transforms import Compose, CropForeground

            thr = float(inp.crop_foreground["threshold"])
            cropper = CropForeground(select_fn=lambda v: v > thr, margin=int(inp.crop_foreground["margin"]))
            start, end = cropper.compute_bounding_box(x)
            image = cropper.crop_pad(image, start, end)
            x = cropper.crop_pad(torch.as_tensor(x), start, end)
            transforms = Compose([*transforms.transforms, cropper])

        x = torch.as_tensor(x).float()[None]
        return Preprocessed(x=x, image=image, transforms=transforms, geometry=volume.geometry, source=volume.source, crop=crop)

    def _n_steps(self, spatial: tuple[int, ...]) -> int:
        from medseg.infer.sliding import count_windows

        inf = self.spec.inferer
        if inf.mode is InferMode.WHOLE:
            return 1
        return count_windows(spatial, inf.roi_size, inf.overlap)

    def predict_logits(self, x: torch.Tensor, progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """One pass of the network over ``x`` ``(1, C, X, Y, Z)`` → raw output ``(1, C_out, X, Y, Z)`` float32
        on the CPU (or on the GPU when it fits there)."""
        import torch

        from medseg.device import torch_settings
        from medseg.infer.sliding import choose_stitch_device, sliding_window_predict, whole_predict

        inf = self.spec.inferer
        with torch_settings(self.device, self.threads), torch.inference_mode():
            if inf.mode is InferMode.WHOLE:
                return whole_predict(
                    x.to(self.device), self.network, device=torch.device("cpu") if self.device.type != "cpu" else None,
                    autocast_ctx=self._autocast, progress=progress,
                )
            out_ch = max(self.spec.n_classes, len(self.spec.labels))
            stitch = choose_stitch_device(out_ch, tuple(x.shape[2:]), self.device)
            return sliding_window_predict(
                x,
                self.network,
                roi_size=inf.roi_size,
                overlap=inf.overlap,
                sw_batch_size=inf.sw_batch_size,
                blend=inf.blend.value,
                padding_mode=inf.padding_mode,
                sw_device=self.device,
                device=stitch,
                autocast_ctx=self._autocast,
                progress=progress,
            )

    def predict_scores(self, x: torch.Tensor, progress: ProgressFn | None = None) -> torch.Tensor:
        """Activated output ``(C_out, X, Y, Z)`` float32 on the CPU, averaged over the test-time flips."""
        import torch

        flips = [()] + [tuple(a + 2 for a in f) for f in self.spec.inferer.tta_flips]
        total = self._n_steps(tuple(x.shape[2:])) * len(flips)
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(min(done, total), total)

        acc = None
        for dims in flips:
            xi = torch.flip(x, dims) if dims else x
            y = self.predict_logits(xi, progress=step if self.spec.inferer.mode is InferMode.SLIDING else None)
            if self.spec.inferer.mode is InferMode.WHOLE:
                step(1)
            y = torch.as_tensor(y)[0]
            if self.spec.output.smooth_sigma > 0:
                y = _smooth(y, self.spec.output.smooth_sigma)
            y = activate(y, self.spec.output.activation)
            if dims:
                y = torch.flip(y, [d - 1 for d in dims])
            y = y.cpu()
            acc = y if acc is None else acc.add_(y)
        if len(flips) > 1:
            acc /= len(flips)
        return acc

    def postprocess(
        self,
        scores: torch.Tensor | None,
        pre: Preprocessed,
        working_labels: np.ndarray | None = None,
        source_labels: np.ndarray | None = None,
    ) -> Volume:
        """Scores on the network grid → label map on the source grid (exact shape and affine), cleaned.

        On an axis-aligned working grid (reorientation and resampling only), ``invert: probabilities`` with an
        argmax decision resamples the scores with :func:`medseg.infer.resample.invert_and_argmax` (the
        sampling of MONAI's ``Spacing`` inverse, one chunk of resampled scores at a time) and label maps are
        resampled nearest by :func:`medseg.infer.resample.resample_labels_nearest`; other specs (crops,
        resize, oblique grids) go through MONAI's ``Compose.inverse``.

        ``working_labels``: an already decided label map on the network grid (the streamed ``invert: labels``
        path), inverted like ``invert: labels``. ``source_labels``: an already inverted label map (the
        streamed ``invert: probabilities`` path), only cleaned.
        """
        import torch

        from medseg.infer.resample import invert_and_argmax, resample_labels_nearest
        from medseg.postprocess import clean_labels, decide
        from medseg.transforms import invert

        out = self.spec.output
        geometry = pre.geometry
        inv_affine = geometry.affine  # medseg's inverters write the source grid itself
        if source_labels is not None:
            labels = source_labels
        elif working_labels is None and out.invert is InvertMode.PROBABILITIES:
            maps = self._linear_inversion(pre)
            if maps is not None:
                labels = invert_and_argmax(scores, maps, geometry.shape, dtype=self._label_dtype()).numpy()
            else:
                inv = invert(scores, pre.image, pre.transforms)
                labels = decide(torch.as_tensor(inv), out, self.spec.labels)
                inv_affine = np.asarray(inv.affine, dtype=np.float64)
        else:
            lab = working_labels if working_labels is not None else decide(scores, out, self.spec.labels)
            maps = self._axis_maps(pre)
            if maps is not None:  # nearest, chunked: the source grid holds one byte per voxel
                labels = resample_labels_nearest(torch.from_numpy(lab), maps, geometry.shape).numpy()
            else:
                inv = invert(torch.from_numpy(lab.astype(np.float32))[None], pre.image, pre.transforms, nearest=True)
                labels = torch.as_tensor(inv)[0].round().cpu().numpy().astype(lab.dtype)
                inv_affine = np.asarray(inv.affine, dtype=np.float64)
        if tuple(labels.shape) != geometry.shape:
            raise ModelError(f"internal error: inverted prediction has shape {labels.shape}, expected {geometry.shape}")
        if not np.allclose(inv_affine, geometry.affine, atol=1e-3):
            raise ModelError("internal error: inverted prediction's affine differs from the input's")
        labels = clean_labels(labels, out.postprocess, geometry.spacing)
        return Volume(
            labels,
            geometry,
            source=SourceInfo(
                path=pre.source.path,
                format="labels",
                modality=pre.source.modality,
                series_uid=pre.source.series_uid,
                extra={"model": self.spec.name, "fingerprint": self.fingerprint},
            ),
            is_label=True,
            labels=self.spec.labels,
        )

    def _axis_maps(self, pre: Preprocessed) -> tuple | None:
        """Axis maps (source → working grid) when the spatial preprocessing only reorients and resamples (no
        crop, no resize) and the grids are axis-aligned: medseg's own bounded inverters apply. ``None``
        otherwise (MONAI's ``Compose.inverse`` is used)."""
        from medseg.infer.resample import axis_maps_from_affines

        inp = self.spec.input
        if inp.crop_foreground is not None or inp.resize is not None or pre.crop is not None:
            return None
        if tuple(pre.x.shape[2:]) != tuple(pre.image.shape[1:]):  # pragma: no cover - defensive
            return None
        try:
            return axis_maps_from_affines(pre.geometry.affine, np.asarray(pre.image.affine, dtype=np.float64))
        except ValueError:
            return None

    def _label_dtype(self) -> Any:
        """Torch dtype of label maps (uint8/uint16 from the largest label id, as ``decide`` picks)."""
        from medseg.infer.resample import label_dtype

        return label_dtype(max((lab.id for lab in self.spec.labels), default=1) + 1)

    def _linear_inversion(self, pre: Preprocessed) -> tuple | None:
        """:meth:`_axis_maps` for ``invert: probabilities`` specs with an argmax decision, else ``None``."""
        from medseg.config import Decision

        out = self.spec.output
        if out.invert is not InvertMode.PROBABILITIES or out.decision is not Decision.ARGMAX:
            return None
        return self._axis_maps(pre)

    def predict(self, volume: Volume, progress: ProgressFn | None = None) -> Volume:
        """Segment ``volume``: a label map with exactly ``volume.geometry`` and ``labels=spec.labels``.

        Args:
            volume: 3D image ``(I, J, K)`` or multi-channel ``(I, J, K, C)``.
            progress: ``progress(done, total)`` in network windows (defaults to the predictor's).
        """
        progress = progress or self.progress
        pre = self.preprocess(volume)
        if self._streams(pre):
            return self._stream_predict(pre, progress)
        scores = self.predict_scores(pre.x, progress=progress)
        return self.postprocess(scores, pre)

    #: Source volumes with more voxels than this are resampled to the working grid in float32 instead of
    #: MONAI's float64 (whose temporaries for a 512x512x1000 CT alone peak above 6 GB). 2**27 voxels is
    #: e.g. 512 x 512 x 512. Coordinates then carry float32 rounding (~1e-4 voxel at index 1000).
    float64_voxels: int = 2**27

    #: Above this size (bytes) of the float32 score volume, sliding-window specs without TTA stream the
    #: windows in cells (:mod:`medseg.infer.slab`): same labels, memory bounded by the cells alive at once
    #: instead of the whole ``(C, X, Y, Z)`` scores. ``invert: labels`` specs decide each finished cell;
    #: ``invert: probabilities`` + argmax specs on axis-aligned grids resample each finished cell to the
    #: source grid (:class:`medseg.infer.resample.LinearInverter`). Other specs take the full path.
    stream_bytes: int = 2**30

    def _streams(self, pre: Preprocessed) -> bool:
        inf = self.spec.inferer
        if inf.mode is not InferMode.SLIDING or inf.tta_flips or self.spec.output.smooth_sigma > 0:
            return False
        if self.spec.output.invert is not InvertMode.LABELS and self._linear_inversion(pre) is None:
            return False
        out_ch = max(self.spec.n_classes, len(self.spec.labels))
        return 4 * out_ch * math.prod(pre.x.shape[2:]) > self.stream_bytes

    def _stream_predict(self, pre: Preprocessed, progress: ProgressFn | None) -> Volume:
        """The bounded path: MONAI's window order (bitwise the same scores) when its cells fit in
        ``stream_bytes``, else streamed along the longest axis (smaller peak)."""
        from medseg.device import torch_settings
        from medseg.infer.slab import estimate_peak_bytes, plan_windows, stream_decide

        inf = self.spec.inferer
        spatial = tuple(pre.x.shape[2:])
        plan = plan_windows(spatial, inf.roi_size, inf.overlap)
        out_ch = max(self.spec.n_classes, len(self.spec.labels))
        order: str | int = "monai"
        if estimate_peak_bytes(plan, out_ch) > self.stream_bytes:
            order = int(np.argmax(spatial))
        total, done = plan.n_windows, 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(min(done, total), total)

        maps = self._linear_inversion(pre)
        invert_to = None if maps is None else (maps, pre.geometry.shape, self._label_dtype())
        with torch_settings(self.device, self.threads):
            labels = stream_decide(
                pre.x, self.network, inf, self.spec.output, self.spec.labels, sw_device=self.device,
                autocast_ctx=self._autocast, progress=step, order=order, invert_to=invert_to,
            )
        if maps is not None:
            return self.postprocess(None, pre, source_labels=labels)
        return self.postprocess(None, pre, working_labels=labels)


def _smooth(scores: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``(C, X, Y, Z)`` raw outputs along the spatial axes (scipy, mode ``nearest``)."""
    import torch
    from scipy import ndimage

    arr = ndimage.gaussian_filter(scores.float().cpu().numpy(), sigma=(0.0, sigma, sigma, sigma), mode="nearest")
    return torch.from_numpy(arr)
