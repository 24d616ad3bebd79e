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

from medseg.config import InferMode, LocalizeSpec, ModelSpec
from medseg.engine.decision import Decision, Margins
from medseg.engine.options import RunOptions
from medseg.engine.protocol import Predictor as PredictorProtocol
from medseg.engine.protocol import label_volume
from medseg.errors import ModelError
from medseg.postprocess import activate
from medseg.progress import ProgressFn
from medseg.types import SourceInfo, Volume

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from monai.data import MetaTensor

    from medseg.engine.plan import InferencePlan

__all__ = ["Predictor", "Preprocessed", "load_predictor"]


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
    options: RunOptions | None = None,
    runtime: str = "torch",
) -> PredictorProtocol:
    """Build the predictor for ``model`` (loads the network once): a :class:`Predictor` for MONAI-style
    specs, :class:`medseg.nnunet.predictor.NnUNetPredictor` for nnU-Net models, the liver predictors for
    ``pipeline`` specs. All implement :class:`medseg.engine.protocol.Predictor`.

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
        options: all run options at once (instead of ``device`` ... ``sw_batch_size``, ``runtime``).
        runtime: ``torch`` | ``openvino`` | ``auto`` (:mod:`medseg.engine.backends`).
    """
    if options is None:
        options = RunOptions(device=device, precision=precision, overlap=overlap, tta=tta, threads=threads,
                             runtime=runtime,
                             sw_batch_size=sw_batch_size)
    from medseg.models.loaders import is_nnunet_folder, load_model_spec

    if not isinstance(model, ModelSpec) and Path(str(model)).is_dir() and is_nnunet_folder(model):
        from medseg.nnunet.predictor import load_nnunet_predictor  # nnU-Net results folder (issue: nnU-Net support)

        return load_nnunet_predictor(Path(model), options=options, progress=progress)  # runtime: its own
    spec = model if isinstance(model, ModelSpec) else load_model_spec(model)
    if spec.pipeline is not None:  # a model-specific pipeline (pyliverlesionseg's liver / lesion cascade)
        from medseg.liver.predictor import load_liver_predictor

        liver_spec = None
        if spec.pipeline.get("kind") == "liver-lesions":
            liver_spec = load_model_spec(spec.pipeline["liver_model"])
        # chooses its runtime itself (options.runtime: both U-Nets convert to OpenVINO)
        return load_liver_predictor(spec, liver_spec=liver_spec, options=options, modality=modality, progress=progress)
    if spec.network.nnunet:
        from medseg.nnunet.predictor import load_nnunet_predictor

        return load_nnunet_predictor(spec, options=options, progress=progress)
    return Predictor(spec, options=options, progress=progress, trust_model_code=trust_model_code)


class Predictor:
    """Runs one MONAI-style model spec on volumes (implements :class:`medseg.engine.protocol.Predictor`).

    Stages: :meth:`preprocess`, :meth:`predict_scores` (:meth:`predict_logits` per flip), :meth:`postprocess`;
    :meth:`plan` decides the stitching and the way back for one volume. After :meth:`predict`,
    ``last_quality`` holds ``{label id: quality score}`` of that volume (mean decision margin, 0..1, see
    :class:`medseg.engine.decision.Margins`; empty when the scores are not probabilities).

    Args:
        spec: the model spec.
        options: run options (or the same as keyword arguments: ``device``, ``precision``, ``overlap``, ...).
        progress: default ``progress(done, total)`` callback for :meth:`predict`.
        trust_model_code: load TorchScript whose sha256 nothing pins.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        options: RunOptions | None = None,
        progress: ProgressFn | None = None,
        trust_model_code: bool = False,
        **run_options: Any,
    ) -> None:
        import time

        from medseg.engine.runtime import resolve_device, resolve_precision
        from medseg.infer.network import build_network

        t_load = time.perf_counter()
        self.options = RunOptions.build(options, **run_options)
        opts = self.options
        inferer = spec.inferer
        if opts.overlap is not None:
            inferer = replace(inferer, overlap=opts.overlap)
        if opts.sw_batch_size is not None:
            inferer = replace(inferer, sw_batch_size=opts.sw_batch_size)
        if opts.tta is False:
            inferer = replace(inferer, tta_flips=())
        elif opts.tta is True and not inferer.tta_flips:
            inferer = replace(inferer, tta_flips=((0,), (1,), (2,)))
        self.spec = replace(spec, inferer=inferer)
        self.last_quality: dict[int, float] = {}
        self.decision = Decision.for_output(spec.output, spec.labels)
        self.device = resolve_device(opts.device)
        self.precision = opts.precision.value
        self.autocast_dtype = resolve_precision(opts.precision, self.device)
        self.threads = opts.threads
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
        self._use_runtime(opts.runtime)
        #: seconds per stage of the last :meth:`predict` (``load``: building, converting and compiling networks)
        self.timings: dict[str, float] = {"load": time.perf_counter() - t_load}

    def _use_runtime(self, runtime: str) -> None:
        """Put the network (and the localiser) on ``runtime`` (:func:`medseg.engine.backends.select_network`);
        sets :attr:`runtime_info` (provenance)."""
        from medseg.config import InferMode
        from medseg.engine.backends import select_network

        inp, inf = self.spec.input, self.spec.inferer
        if inf.mode is InferMode.SLIDING:
            shape = (inf.sw_batch_size, inp.channels, *inf.roi_size)
        else:
            shape = (1, inp.channels, *inp.resize) if inp.resize is not None and inp.crop_foreground is None else None
        precision = str(self.autocast_dtype).replace("torch.", "") if self.autocast_dtype is not None else "float32"
        base = {"spec": self.spec.digest(), "device": self.device.type}
        common = dict(device=self.device, precision=precision, threads=self.threads)
        self.network, self.runtime_info = select_network(
            self.network, shape, runtime=runtime, fingerprint=json.dumps({**base, "role": "network"}, sort_keys=True),
            weights_sha256=self._weights_digest, **common)
        if self.localizer is not None and self.runtime_info.name == "openvino":
            loc = inp.localize
            self.localizer, _ = select_network(
                self.localizer, (1, inp.channels, *loc.input_size), runtime=runtime,
                fingerprint=json.dumps({**base, "role": "localizer"}, sort_keys=True),
                weights_sha256=self._localizer_digest, **common)

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
        info = getattr(self, "runtime_info", None)
        if info is not None and info.cache is not None:  # converted to OpenVINO; torch (and ONNX) stay as they were
            payload["runtime"] = info.name
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

    def __repr__(self) -> str:
        return f"Predictor({self.spec.name!r}, device={self.device}, autocast={self.autocast_dtype})"

    def _autocast(self):
        from medseg.engine.runtime import autocast

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
        import time

        t0 = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            out = self.localizer(torch.as_tensor(small)[None].to(self.device)).float()[0]
        self._localizer_seconds = time.perf_counter() - t0
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

        from medseg.engine.runtime import torch_settings
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

    def plan(self, pre: Preprocessed) -> InferencePlan:
        """The inference plan of one preprocessed volume (stitching, way back) under ``options.stream_bytes``."""
        from medseg.engine.plan import plan_inference

        return plan_inference(self.spec, pre, self.options.stream_bytes)

    def postprocess(
        self, result: Any, pre: Preprocessed, plan: InferencePlan | None = None, margins: Margins | None = None
    ) -> Volume:
        """Stitched result → cleaned label map on the source grid (exact shape and affine).

        ``result`` is what ``plan`` (default: :meth:`plan` of ``pre``, i.e. the full scores of
        :meth:`predict_scores`) says the stitching produced; :func:`medseg.engine.export.export_labels` takes
        it back to the source grid.
        """
        from medseg.engine.export import export_labels

        plan = plan or self.plan(pre)
        labels = export_labels(result, plan, pre, self.decision, self.spec.output.postprocess, margins)
        return label_volume(labels, pre.geometry, pre.source, self)

    def predict(self, volume: Volume, progress: ProgressFn | None = None) -> Volume:
        """Segment ``volume``: a label map with exactly ``volume.geometry`` and ``labels=spec.labels``.

        Args:
            volume: 3D image ``(I, J, K)`` or multi-channel ``(I, J, K, C)``.
            progress: ``progress(done, total)`` in network windows (defaults to the predictor's).
        """
        from medseg.engine.plan import Stitch

        import time

        progress = progress or self.progress
        t0 = time.perf_counter()
        self._localizer_seconds = 0.0
        margins = Margins()
        self.last_quality = {}
        pre = self.preprocess(volume)
        plan = self.plan(pre)
        t1 = time.perf_counter()
        loc = self._localizer_seconds  # the localiser's forward pass is network time, not preprocessing
        if plan.stitch is Stitch.CELLS:
            result = self._predict_cells(pre, plan, progress, margins)
        else:
            result = self.predict_scores(pre.x, progress=progress)
        t2 = time.perf_counter()
        labels = self.postprocess(result, pre, plan, margins)
        self.last_quality = margins.mean()
        # streamed plans resample finished cells to the source grid while stitching: that is in "network"
        self.timings = {"load": self.timings.get("load", 0.0), "preprocess": t1 - t0 - loc, "network": loc + t2 - t1,
                        "export": time.perf_counter() - t2}
        return labels

    #: Source volumes with more voxels than this are resampled to the working grid in float32 instead of
    #: MONAI's float64 (whose temporaries for a 512x512x1000 CT alone peak above 6 GB). 2**27 voxels is
    #: e.g. 512 x 512 x 512. Coordinates then carry float32 rounding (~1e-4 voxel at index 1000).
    float64_voxels: int = 2**27

    def _predict_cells(
        self, pre: Preprocessed, plan: InferencePlan, progress: ProgressFn | None, margins: Margins | None = None
    ) -> np.ndarray:
        """The bounded stitching of ``plan`` (:mod:`medseg.infer.slab`): labels on the working grid, or on the
        source grid when the plan resamples probabilities along axis maps."""
        from medseg.engine.runtime import torch_settings
        from medseg.infer.slab import plan_windows, stream_decide

        inf = self.spec.inferer
        total, done = plan_windows(tuple(pre.x.shape[2:]), inf.roi_size, inf.overlap).n_windows, 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(min(done, total), total)

        invert_to = None if plan.result == "working_labels" else (plan.maps, pre.geometry.shape)
        with torch_settings(self.device, self.threads):
            return stream_decide(
                pre.x, self.network, inf, self.spec.output.activation, self.decision, sw_device=self.device,
                autocast_ctx=self._autocast, progress=step, order=plan.order, invert_to=invert_to,
                margins=margins,
            )


def _smooth(scores: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``(C, X, Y, Z)`` raw outputs along the spatial axes (scipy, mode ``nearest``)."""
    import torch
    from scipy import ndimage

    arr = ndimage.gaussian_filter(scores.float().cpu().numpy(), sigma=(0.0, sigma, sigma, sigma), mode="nearest")
    return torch.from_numpy(arr)
