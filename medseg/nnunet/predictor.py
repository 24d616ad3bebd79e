"""Run an nnU-Net v2 results folder with medseg: :class:`NnUNetPredictor`.

The pipeline follows nnU-Net's ``nnUNetPredictor`` step by step, on medseg's :class:`~medseg.types.Volume`:

1. **axis order** — nnU-Net reads images with SimpleITK, whose arrays are ``(z, y, x)`` = medseg's
   ``(k, j, i)``; the volume is transposed the same way (no reorientation: nnU-Net works in the file's
   voxel order; a spec may ask for a canonical orientation first, as TotalSegmentator does);
2. ``transpose_forward`` of the plans; spacing permuted alike;
3. crop to the bounding box of the nonzero voxels (any channel, holes filled);
4. normalise each channel (CT: clip to the foreground 0.5/99.5 percentiles, subtract mean, divide by std);
5. resample to the configuration's spacing (cubic spline, separate z for anisotropic data);
6. sliding window with nnU-Net's tiling, Gaussian blending, step 0.5 and mirroring TTA over the axes the
   trainer allowed; the folds' logits are averaged;
7. logits resampled back to the cropped shape (linear), argmax (or sigmoid > 0.5 per region);
8. the crop is pasted into a background volume, ``transpose_backward``, back to ``(i, j, k)``.

The output is a label :class:`~medseg.types.Volume` with exactly the input's geometry.

>>> p = NnUNetPredictor("nnUNet_results/Dataset291_X/nnUNetTrainer__nnUNetPlans__3d_fullres")  # doctest: +SKIP
>>> labels = p.predict(medseg.io.read("ct.nii.gz"))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import Decision as Rule
from medseg.engine.decision import Decision
from medseg.engine.options import RunOptions
from medseg.engine.protocol import label_volume
from medseg.errors import ModelError
from medseg.nnunet.plans import NnUNetModel, NormScheme, build_network, read_model_folder
from medseg.nnunet.resample import compute_new_shape, resample_to_shape
from medseg.progress import ProgressFn
from medseg.types import Label, Volume

__all__ = ["LogitsDtype", "NnUNetMeta", "NnUNetPredictor", "crop_to_nonzero", "normalize_channels"]

_SPEC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


class LogitsDtype(str, Enum):
    """Accumulator dtype of the blended logits."""

    FLOAT16 = "float16"  # nnU-Net's accumulator (default): half the memory, labels identical to nnUNetPredictor
    FLOAT32 = "float32"  # exact blending; may flip voxels whose top-2 logits differ by less than fp16 resolution


@dataclass(frozen=True)
class NnUNetMeta:
    """What :meth:`NnUNetPredictor.postprocess` needs to undo preprocessing.

    Shapes/bounding boxes are in nnU-Net's transposed axis order; ``spacing`` in mm, same order.
    """

    source: Volume  # the input volume (its geometry is the output's)
    reoriented_affine: np.ndarray | None  # set when the input was reoriented before inference
    shape_before_cropping: tuple[int, int, int]
    bbox: tuple[tuple[int, int], ...]
    shape_after_cropping: tuple[int, int, int]
    spacing: tuple[float, float, float]

    def back(self, model: NnUNetModel):  # -> medseg.engine.export.CropBack
        """The way back to the source grid (:class:`medseg.engine.export.CropBack`)."""
        from medseg.engine.export import CropBack

        return CropBack(self.source.geometry, self.shape_before_cropping, self.bbox, model.transpose_backward,
                        self.reoriented_affine)


# --------------------------------------------------------------------------------------------- array functions


def crop_to_nonzero(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]:
    """Crop ``(C, X, Y, Z)`` to the bounding box of voxels nonzero in any channel (holes filled).

    Returns the cropped data (a view), the cropped hole-filled nonzero mask ``(X', Y', Z')`` and the
    half-open bounding box ``((x0, x1), (y0, y1), (z0, z1))``. An all-zero image keeps its full extent.
    """
    from scipy.ndimage import binary_fill_holes

    mask = np.any(data != 0, axis=0)
    mask = binary_fill_holes(mask)
    bbox = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        hits = np.flatnonzero(np.any(mask, axis=other))
        bbox.append((int(hits[0]), int(hits[-1]) + 1) if hits.size else (0, mask.shape[ax]))
    sl = tuple(slice(a, b) for a, b in bbox)
    return data[(slice(None), *sl)], mask[sl], tuple(bbox)


def normalize_channels(data: np.ndarray, mask: np.ndarray, model: NnUNetModel) -> np.ndarray:
    """Normalise ``(C, X, Y, Z)`` float32 ``data`` in place, per channel, with the plans' schemes."""
    for c, norm in enumerate(model.config.normalization):
        x = data[c]
        if norm.scheme is NormScheme.CT:
            np.clip(x, norm.percentile_00_5, norm.percentile_99_5, out=x)
            x -= norm.mean
            x /= max(norm.std, 1e-8)
        elif norm.scheme is NormScheme.ZSCORE:
            if norm.use_mask:
                vals = x[mask]
                mean, std = vals.mean(), vals.std()
                x[mask] = (x[mask] - mean) / max(std, 1e-8)
            else:
                mean, std = x.mean(), x.std()
                x -= mean
                x /= max(std, 1e-8)
        elif norm.scheme is NormScheme.RESCALE_01:
            x -= x.min()
            x /= np.clip(x.max(), a_min=1e-8, a_max=None)
        elif norm.scheme is NormScheme.RGB_01:
            if x.min() < 0 or x.max() > 255:
                raise ModelError(f"channel {c}: RGBTo01Normalization expects values in [0, 255], got "
                                 f"[{x.min():g}, {x.max():g}]")
            x /= 255.0
    return data


def _to_torch_dtype(d: LogitsDtype):
    import torch

    return torch.float16 if d is LogitsDtype.FLOAT16 else torch.float32


# ------------------------------------------------------------------------------------------------ predictor


class NnUNetPredictor:
    """Predictor for an nnU-Net v2 results folder (same interface as medseg's ``Predictor``).

    Args:
        folder: ``.../DatasetXXX_Name/<Trainer>__<Plans>__<configuration>``, or an already read
            :class:`~medseg.nnunet.plans.NnUNetModel`.
        folds: folds to ensemble (default: every ``fold_N`` with ``checkpoint_final.pth``).
        options: run options (or the same as keyword arguments ``device``, ``precision``, ``threads``,
            ``overlap``, ``tta``): ``overlap`` is ``1 - step_size`` of the sliding window (default nnU-Net's
            0.5); ``tta`` mirrors over the axes the trainer allowed (default on, as nnU-Net); ``precision``
            ``"auto"`` is nnU-Net's choice — float16 autocast on CUDA, float32 on the CPU, so labels match
            ``nnUNetPredictor`` (``"bfloat16"`` is fast only on CPUs with AVX512-BF16/AMX, labels may differ
            at near-ties); ``threads``: torch CPU threads while predicting.
        gaussian: Gaussian blending of the tiles (nnU-Net default on).
        logits_dtype: ``"float16"`` (default; nnU-Net's accumulator: labels identical to ``nnUNetPredictor``,
            half the memory — 117 TotalSegmentator channels) or ``"float32"`` (exact blending).
        orientation: ``None`` (nnU-Net: the file's voxel order) or a code like ``"RAS"``: reorient first
            (TotalSegmentator feeds its models canonical RAS volumes), undone on the output.
        checkpoint_sha256: optional ``{fold: sha256}`` the checkpoints must match (registered downloads).
        name: model name for provenance (default: the dataset name).
        progress: default ``progress(done, total)`` callback for :meth:`predict`.
        mirror_batch: mirrored copies of a tile per network call: ``"auto"`` (as many as fit in one
            128^3-voxel batch: all 8 for patches up to 64^3, 1 for 128^3) or an int. ``1`` evaluates them one
            by one exactly like nnU-Net (bit-identical labels); batching is ~4x faster for small patches on
            CPUs, and its float rounding (~1e-6) can flip voxels whose top-2 logits are tied within fp16.

    Raises:
        ModelError: invalid folder, checkpoint or architecture; checkpoints whose weights do not fit.
    """

    def __init__(
        self,
        folder: str | Path | NnUNetModel,
        *,
        options: RunOptions | None = None,
        folds: Sequence[int | str] | None = None,
        gaussian: bool = True,
        logits_dtype: str | LogitsDtype = LogitsDtype.FLOAT16,
        orientation: str | None = None,
        checkpoint_sha256: dict[str, str] | None = None,
        name: str | None = None,
        progress: ProgressFn | None = None,
        mirror_batch: int | str = "auto",
        **run_options: Any,
    ) -> None:
        import time

        from medseg.engine.runtime import precision_name, resolve_device, resolve_precision
        from medseg.nnunet.checkpoint import load_checkpoint

        t_load = time.perf_counter()
        self.options = RunOptions.build(options, **run_options)
        try:
            self.logits_dtype = LogitsDtype(logits_dtype)
        except ValueError:
            raise ValueError(f"logits_dtype must be one of {[d.value for d in LogitsDtype]}, got {logits_dtype!r}.") from None
        if orientation is not None and (len(orientation) != 3 or set(orientation.upper()) - set("RLAPSI")):
            raise ValueError(f"orientation must be None or a code like 'RAS', got {orientation!r}.")
        self.model = folder if isinstance(folder, NnUNetModel) else read_model_folder(
            folder, None if folds is None else tuple(folds))
        self.device = resolve_device(self.options.device)
        self.step_size = 1.0 - (0.5 if self.options.overlap is None else self.options.overlap)
        self.tta = True if self.options.tta is None else self.options.tta
        self.gaussian = bool(gaussian)
        self.autocast_dtype = resolve_precision(self.options.precision, self.device)
        self.precision = precision_name(self.autocast_dtype)
        self.progress = progress
        if mirror_batch != "auto" and (isinstance(mirror_batch, bool) or not isinstance(mirror_batch, int)
                                       or mirror_batch < 1):
            raise ValueError(f"mirror_batch must be 'auto' or an int >= 1, got {mirror_batch!r}.")
        self._mirror_batch = mirror_batch
        self.threads = self.options.threads
        self.orientation = None if orientation is None else orientation.upper()
        self.name = name or self.model.dataset_name
        self.network = build_network(self.model).to(self.device)
        self.weights: list[dict[str, Any]] = []
        self.checkpoint_digests: dict[str, str] = {}
        mirror_axes: tuple[int, ...] | None = None
        for i, (fold, path) in enumerate(self.model.folds.items()):
            ck = load_checkpoint(path, (checkpoint_sha256 or {}).get(fold))
            if ck.configuration is not None and ck.configuration != self.model.config.name:
                raise ModelError(f"checkpoint was trained with configuration {ck.configuration!r}, the folder "
                                 f"is {self.model.config.name!r}", path)
            try:
                self.network.load_state_dict(ck.state_dict)
            except RuntimeError as e:
                raise ModelError(f"weights do not fit the plans' network: {str(e).splitlines()[0]}", path) from None
            if i == 0:
                mirror_axes = ck.mirroring_axes
            self.weights.append(ck.state_dict)
            self.checkpoint_digests[fold] = ck.sha256
        #: spatial axes (0-2, transposed nnU-Net order) mirrored for TTA; ``None`` = the trainer allows none.
        self.allowed_mirroring_axes = mirror_axes
        self._spec = None
        labels_info = self.model.labels
        max_id = max((lab.id for lab in labels_info.labels), default=0)
        if labels_info.has_regions:  # sigmoid > 0.5 per region, painted in regions_class_order
            order = labels_info.regions_class_order or ()
            self.decision = Decision(Rule.THRESHOLD, max_id, 0.5, tuple((c, int(lid)) for c, lid in enumerate(order)))
        else:
            self.decision = Decision(Rule.ARGMAX, max_id)
        #: ``"full"`` or ``"rows"``: how the last :meth:`predict` stitched (see :meth:`streams`)
        self.last_stitch: str | None = None
        #: one converted network per fold under the OpenVINO runtime (``None``: torch, weights swapped per fold)
        self.fold_networks: list[Any] | None = None
        self._use_runtime(self.options.runtime)
        #: seconds per stage of the last :meth:`predict` (``load``: building, converting and compiling networks)
        self.timings: dict[str, float] = {"load": time.perf_counter() - t_load}

    def _use_runtime(self, runtime: str) -> None:
        """Put the fold networks on ``runtime`` (:func:`medseg.engine.backends.select_network`) and set
        :attr:`runtime_info` (provenance).

        OpenVINO converts one network per fold (the weights become constants), for the static input
        ``(mirror_batch, C, *patch)``: every call of the sliding window has that shape (a last, smaller batch of
        mirrored copies runs zero-padded). The compiled-model cache key is the plans' and dataset's digest, the
        configuration, the fold's checkpoint sha256, the input shape and the OpenVINO version.
        """
        from medseg.engine.backends import select_network

        shape = (self.mirror_batch, self.model.num_input_channels, *self.model.config.patch_size)
        h = hashlib.sha256()
        for f in ("plans.json", "dataset.json"):
            h.update((self.model.path / f).read_bytes())
        nets: list[Any] = []
        info = None
        for i, (fold, state) in enumerate(zip(self.checkpoint_digests, self.weights)):
            self.network.load_state_dict(state)
            fingerprint = json.dumps({"nnunet": h.hexdigest(), "configuration": self.model.config.name,
                                      "role": "network", "device": self.device.type}, sort_keys=True)
            net, fold_info = select_network(self.network.eval(), shape, runtime=runtime, device=self.device,
                                            precision=self.precision, threads=self.threads,
                                            fingerprint=fingerprint, weights_sha256=self.checkpoint_digests[fold])
            if i == 0:
                info = fold_info
            elif fold_info.cache != info.cache:  # report a miss when any fold was converted
                info = replace(info, cache="miss")
            if fold_info.name != "openvino":  # auto fell back (or torch asked for): every fold runs on torch
                nets = []
                break
            nets.append(net)
        self.fold_networks = nets or None
        self.runtime_info = info

    # ------------------------------------------------------------------------------------------- properties

    @property
    def labels(self) -> tuple[Label, ...]:
        """Output labels (from ``dataset.json``; background 0 not listed)."""
        return self.model.labels.labels

    @property
    def _network_autocast(self):
        """torch autocast dtype around the network calls (none for OpenVINO, which has its own precision)."""
        return self.autocast_dtype if self.fold_networks is None else None

    @property
    def mirror_axes(self) -> tuple[int, ...] | None:
        """Axes actually mirrored (``None`` when TTA is off or not allowed)."""
        return self.allowed_mirroring_axes if self.tta else None

    @property
    def mirror_batch(self) -> int:
        """Mirrored copies per network call (resolved ``"auto"``)."""
        from medseg.nnunet.sliding import auto_mirror_batch, mirror_combinations

        n_views = 1 + len(mirror_combinations(self.mirror_axes))
        if self._mirror_batch == "auto":
            return auto_mirror_batch(self.model.config.patch_size, n_views)
        return min(int(self._mirror_batch), n_views)

    @property
    def fingerprint(self) -> str:
        """Stable hash of plans, dataset.json, checkpoint digests and the run settings."""
        p = self.model.path
        h = hashlib.sha256()
        for f in ("plans.json", "dataset.json"):
            h.update((p / f).read_bytes())
        settings = {
            "configuration": self.model.config.name, "folds": self.checkpoint_digests, "step": self.step_size,
            "tta": self.mirror_axes, "gaussian": self.gaussian, "logits": self.logits_dtype.value,
            "precision": self.precision, "orientation": self.orientation, "mirror_batch": self.mirror_batch,
        }
        if self.fold_networks is not None:  # converted to OpenVINO: kernels round differently from torch
            settings["runtime"] = "openvino"
        h.update(json.dumps(settings, sort_keys=True).encode())
        return h.hexdigest()

    @property
    def spec(self):  # -> medseg.config.ModelSpec
        """The :class:`medseg.config.ModelSpec` this predictor runs: the registry spec it was loaded from, or
        one describing the folder (``network: {nnunet: true}``, labels from dataset.json) for provenance."""
        if self._spec is None:
            self._spec = self._describe()
        return self._spec

    def _describe(self):
        from medseg.config import load_spec

        m, labels = self.model, self.model.labels
        channel_names = [c.upper() for c in labels.channel_names]
        modality = channel_names[0] if len(set(channel_names)) == 1 and channel_names[0] in ("CT", "MR") else "any"
        d: dict[str, Any] = {
            "name": self.name if _SPEC_NAME.fullmatch(self.name) else "nnunet-model",
            "description": f"nnU-Net v2 {m.dataset_name} {m.trainer_name}__{m.plans_name}__{m.config.name}, "
                           f"folds {', '.join(m.folds)}",
            "network": {"nnunet": True},
            "weights": {"source": str(m.path.resolve())},
            "input": {"modality": modality, "channels": m.num_input_channels, "orientation": self.orientation,
                      "spacing": list(m.config.spacing)},
            "inferer": {"mode": "sliding", "roi_size": list(m.config.patch_size), "overlap": 1.0 - self.step_size,
                        "blend": "gaussian" if self.gaussian else "constant",
                        "tta_flips": [[int(a)] for a in (self.mirror_axes or ())]},
            "labels": [{"id": lab.id, "name": lab.name, "color": list(lab.color)} for lab in self.labels],
        }
        if labels.has_regions:
            d["output"] = {"activation": "sigmoid", "decision": "threshold",
                           "channel_labels": [[i, c] for i, c in enumerate(labels.regions_class_order or ())
                                              if c != 0]}
        return load_spec(d)

    @spec.setter
    def spec(self, value) -> None:
        self._spec = value

    def __repr__(self) -> str:
        c = self.model.config
        return (f"NnUNetPredictor({self.model.dataset_name}/{self.model.trainer_name}__{self.model.plans_name}__"
                f"{c.name}, folds={list(self.model.folds)}, patch={c.patch_size}, spacing={c.spacing}, "
                f"labels={len(self.labels)}, tta={self.mirror_axes}, device={self.device})")

    # ------------------------------------------------------------------------------------------------ stages

    def preprocess(self, volume: Volume) -> tuple[Any, NnUNetMeta]:
        """``Volume`` → ``(C, X, Y, Z)`` float32 tensor in nnU-Net's transposed axes + what undoes it."""
        import torch

        if not isinstance(volume, Volume):
            raise TypeError(f"volume must be a medseg Volume, got {type(volume).__name__}.")
        n_ch = self.model.num_input_channels
        arr = volume.array
        channels = 1 if arr.ndim == 3 else arr.shape[3]
        if channels != n_ch:
            raise ModelError(f"model {self.name} expects {n_ch} input channel(s) "
                             f"({', '.join(self.model.labels.channel_names)}), the volume has {channels}",
                             volume.source.path)
        affine = volume.affine
        reoriented = None
        if self.orientation is not None:
            from medseg.geometry import reorient

            arr, affine = reorient(arr, affine, self.orientation)
            reoriented = affine
        if arr.ndim == 3:
            arr = arr[..., None]
        # (i, j, k, c) -> SimpleITK/nnU-Net (c, z, y, x) = (c, k, j, i); float32 copy (never alters the input)
        data = np.ascontiguousarray(arr.transpose(3, 2, 1, 0), dtype=np.float32)
        spacing_ijk = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
        spacing = tuple(float(s) for s in spacing_ijk[::-1])
        tf = self.model.transpose_forward
        data = data.transpose(0, *[t + 1 for t in tf])
        spacing = tuple(spacing[t] for t in tf)
        shape_before = tuple(int(s) for s in data.shape[1:])
        data, mask, bbox = crop_to_nonzero(data)
        data = np.ascontiguousarray(data)
        shape_after = tuple(int(s) for s in data.shape[1:])
        target = self.model.config.spacing
        new_shape = compute_new_shape(shape_after, spacing, target)
        data = normalize_channels(data, mask, self.model)
        data = resample_to_shape(data, new_shape, spacing, target, self.model.config.resample_data)
        meta = NnUNetMeta(volume, reoriented, shape_before, bbox, shape_after, spacing)  # type: ignore[arg-type]
        return torch.from_numpy(np.ascontiguousarray(data)), meta

    def predict_logits(self, x, progress: ProgressFn | None = None):
        """Fold-averaged, blended logits ``(heads, X, Y, Z)`` for a preprocessed ``(C, X, Y, Z)`` tensor."""
        from medseg.engine.runtime import torch_settings
        from medseg.nnunet.sliding import tile_starts

        patch = self.model.config.patch_size
        padded = [max(s, p) for s, p in zip(x.shape[1:], patch)]
        n_tiles = int(np.prod([len(s) for s in tile_starts(padded, patch, self.step_size)]))
        total = n_tiles * len(self.weights)
        done = [0]

        def tick() -> None:
            done[0] += 1
            if progress is not None:
                progress(done[0], total)

        with torch_settings(self.device, self.threads):
            return self._predict_logits(x, patch, tick)

    def _predict_logits(self, x, patch, tick):
        import torch

        from medseg.nnunet.sliding import predict_sliding_window

        with torch.inference_mode():
            out = None
            for i, state in enumerate(self.weights):
                if self.fold_networks is None:
                    self.network.load_state_dict(state)
                network = self.network if self.fold_networks is None else self.fold_networks[i]
                out = predict_sliding_window(
                    network, x, self.model.labels.num_heads, patch, step_size=self.step_size,
                    gaussian=self.gaussian, mirror_axes=self.mirror_axes, device=self.device,
                    logits_dtype=_to_torch_dtype(self.logits_dtype), autocast_dtype=self._network_autocast,
                    out=out, progress=tick, mirror_batch=self.mirror_batch)
            if len(self.weights) > 1:
                out /= len(self.weights)
        return out

    def full_path_bytes(self, x, meta: NnUNetMeta) -> int:
        """Peak bytes the full path holds for ``x`` (a preprocessed ``(C, X, Y, Z)`` tensor): the blended logits
        and weights of the padded working grid, plus the export's float64 temporaries of one channel."""
        patch = self.model.config.patch_size
        working = int(np.prod([max(s, p) for s, p in zip(x.shape[1:], patch)]))
        cropped = int(np.prod(meta.shape_after_cropping))
        item = 2 if self.logits_dtype is LogitsDtype.FLOAT16 else 4
        return (self.model.labels.num_heads + 1) * working * item + 8 * working + cropped * (8 + 2 * item + 2)

    def streams(self, x, meta: NnUNetMeta) -> bool:
        """Whether :meth:`predict` stitches and exports in bounded row slabs (:meth:`_predict_rows`): when the full
        path would hold more than ``options.stream_bytes`` and the resampling back can stream bitwise
        (:meth:`medseg.nnunet.resample.RowResampler.supports`: linear, or no resampling)."""
        from medseg.nnunet.resample import RowResampler

        if self.full_path_bytes(x, meta) <= self.options.stream_bytes:
            return False
        cfg = self.model.config
        return RowResampler.supports(tuple(x.shape[1:]), meta.shape_after_cropping, cfg.spacing, meta.spacing,
                                     cfg.resample_probabilities)

    def _predict_rows(self, x, meta: NnUNetMeta, progress: ProgressFn | None) -> np.ndarray:
        """The bounded path: tiles stitched, fold-averaged, resampled and decided in slabs of rows along the first
        working axis (:func:`medseg.nnunet.sliding.stream_sliding_window` →
        :class:`medseg.nnunet.resample.RowResampler` → :class:`medseg.engine.export.SlabExport`). Labels
        bitwise equal to the full path's; about ``tile / X`` of its logits memory and no full-size float channel."""
        from medseg.engine.export import SlabExport
        from medseg.engine.runtime import torch_settings
        from medseg.nnunet.resample import RowResampler
        from medseg.nnunet.sliding import stream_sliding_window, tile_starts

        cfg = self.model.config
        patch = cfg.patch_size
        padded = [max(s, p) for s, p in zip(x.shape[1:], patch)]
        total = int(np.prod([len(s) for s in tile_starts(padded, patch, self.step_size)])) * len(self.weights)
        done = [0]

        def tick() -> None:
            done[0] += 1
            if progress is not None:
                progress(done[0], total)

        loaded = [-1]

        def network_for(i: int):
            if self.fold_networks is not None:
                return self.fold_networks[i]
            if loaded[0] != i:
                self.network.load_state_dict(self.weights[i])
                loaded[0] = i
            return self.network

        out_dtype = np.float16 if self.logits_dtype is LogitsDtype.FLOAT16 else np.float32
        resampler = RowResampler(tuple(x.shape[1:]), meta.shape_after_cropping, cfg.spacing, meta.spacing,
                                 cfg.resample_probabilities, out_dtype)
        export = SlabExport(resampler, self.decision, meta.back(self.model),
                            "sigmoid" if self.model.labels.has_regions else None)
        with torch_settings(self.device, self.threads):
            stream_sliding_window(
                network_for, len(self.weights), x, self.model.labels.num_heads, patch, export.push,
                step_size=self.step_size, gaussian=self.gaussian, mirror_axes=self.mirror_axes, device=self.device,
                logits_dtype=_to_torch_dtype(self.logits_dtype), autocast_dtype=self._network_autocast,
                progress=tick, mirror_batch=self.mirror_batch)
        return export.finish()

    def postprocess(self, logits, meta: NnUNetMeta) -> Volume:
        """Logits → label :class:`Volume` on the source volume's exact grid: nnU-Net's export through
        :func:`medseg.engine.export.export_cropped_scores` (resample each channel to the cropped shape,
        :attr:`decision`, uncrop, ``transpose_backward``, back to ``(i, j, k)``, reorientation undone)."""
        from medseg.engine.export import export_cropped_scores

        cfg = self.model.config

        def resample(channel: np.ndarray) -> np.ndarray:  # exactly as nnU-Net resamples probabilities
            return resample_to_shape(channel, meta.shape_after_cropping, cfg.spacing, meta.spacing,
                                     cfg.resample_probabilities)

        activation = "sigmoid" if self.model.labels.has_regions else None
        out = export_cropped_scores(logits, resample, self.decision, meta.back(self.model), activation)
        return label_volume(out, meta.source.geometry, meta.source.source, self, labels_of=self.labels,
                            keep_source_extra=True)

    def predict(self, volume: Volume, progress: ProgressFn | None = None) -> Volume:
        """Segment ``volume``: a label volume with exactly ``volume.geometry``.

        Args:
            volume: CT/MR volume ``(I, J, K)`` (or ``(I, J, K, C)`` for multi-channel models).
            progress: called as ``progress(done, total)`` after every sliding-window tile.
        """
        import time

        progress = progress if progress is not None else self.progress
        t0 = time.perf_counter()
        x, meta = self.preprocess(volume)
        t1 = time.perf_counter()
        self.last_stitch = "rows" if self.streams(x, meta) else "full"
        if self.last_stitch == "rows":  # the network stage also resamples and decides finished rows
            labels = self._predict_rows(x, meta, progress)
            del x
            t2 = time.perf_counter()
            out = label_volume(labels, meta.source.geometry, meta.source.source, self, labels_of=self.labels,
                               keep_source_extra=True)
        else:
            logits = self.predict_logits(x, progress)
            del x
            t2 = time.perf_counter()
            out = self.postprocess(logits, meta)
        self.timings = {"load": self.timings.get("load", 0.0), "preprocess": t1 - t0, "network": t2 - t1,
                        "export": time.perf_counter() - t2}
        return out


# ----------------------------------------------------------------------------------- engine entry points


def load_nnunet_predictor(
    model,
    *,
    options: RunOptions | None = None,
    progress: ProgressFn | None = None,
    **run_options: Any,
) -> NnUNetPredictor:
    """:func:`medseg.predictor.load_predictor` for nnU-Net models (the same run options).

    Args:
        model: an nnU-Net results folder, or a ``ModelSpec`` whose ``network`` is ``{nnunet: true}`` and
            whose ``weights.source`` is such a folder or a ``.zip`` of one (local or a pulled URL).
        options: run options (or the same as keywords). ``precision``: ``auto`` = nnU-Net's choice (float16
            autocast on CUDA, float32 on the CPU: labels identical to nnU-Net); ``overlap`` = ``1 - step_size``,
            default nnU-Net's 0.5 or the spec's; ``tta``: mirroring over the trainer's allowed axes, ``None`` = on
            (nnU-Net default) or the spec's; ``sw_batch_size`` is ignored (nnU-Net tiles run one at a time).
        progress: default ``progress(done, total)`` callback.
    """
    import warnings

    from medseg.engine.runtime import resolve_device

    options = RunOptions.build(options, **run_options)
    resolve_device(options.device)  # an unavailable device fails before any model file is touched
    kwargs: dict[str, Any] = {}
    spec = None
    if hasattr(model, "network") and hasattr(model, "weights"):  # a ModelSpec
        spec = model
        from medseg.models.loaders import resolve_nnunet_folder

        folder = resolve_nnunet_folder(spec)
        kwargs["orientation"] = spec.input.orientation
        kwargs["gaussian"] = getattr(spec.inferer.blend, "value", spec.inferer.blend) == "gaussian"
        default_overlap = spec.inferer.overlap
        default_tta = bool(spec.inferer.tta_flips)
        kwargs["name"] = spec.name
    else:
        folder = Path(model)
        default_overlap, default_tta = 0.5, True
    options = replace(options, overlap=default_overlap if options.overlap is None else options.overlap,
                      tta=default_tta if options.tta is None else options.tta)
    p = NnUNetPredictor(folder, options=options, progress=progress, **kwargs)
    if spec is not None:
        p.spec = spec
        ours = [(lab.id, lab.name) for lab in p.labels]
        theirs = [(lab.id, lab.name) for lab in spec.labels]
        if ours != theirs:
            warnings.warn(f"{spec.name}: the spec's labels differ from the model's dataset.json; using dataset.json "
                          f"({len(ours)} labels)", stacklevel=2)
    return p
