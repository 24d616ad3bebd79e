"""The OpenVINO CPU runtime: a torch module medseg built, converted once, cached on disk, called like the module.

:func:`convert_network` takes the network medseg already builds (a MONAI spec network, a bundle's state
dict or verified TorchScript, the deepbet brain U-Nets, an nnU-Net network, the LiteMedSAM image encoder),
converts it with ``openvino.convert_model`` on an example input and returns an :class:`OpenVINONetwork`:
called with a ``(N, C, *spatial)`` float32 torch tensor, it returns the network's first output as a float32
torch tensor on the CPU, the contract of the torch network inside sliding-window inference.

- **Shapes.** The converted model keeps dynamic dimensions where the network allows (OpenVINO's
  frontend marks every input dimension dynamic); it is compiled once per concrete input shape it sees
  (a sliding window sees one or two: full and last batch) and those compiled models are kept.
- **Cache.** The converted model is saved as OpenVINO IR (``model.xml`` + ``model.bin``) under
  ``<medseg cache>/openvino/<key>/``, ``key`` = sha256 of the spec's fingerprint, the weights' sha256, the
  example input shape, the OpenVINO version and the cache format. The folder is written under a temporary
  name and renamed into place (atomic: a reader sees a whole model or none), so a second run reads the IR
  instead of converting again (:attr:`OpenVINONetwork.cache_hit`).
- **Threads and precision.** ``INFERENCE_NUM_THREADS`` = ``threads``; precision ``float32`` (default) sets
  ``INFERENCE_PRECISION_HINT=f32``: OpenVINO itself would pick bfloat16 on CPUs with AMX/AVX512-BF16
  (this project's Xeons), which is not at parity with torch float32. ``bfloat16`` is accepted only where
  the CPU has native bf16 support.

Failures are :class:`RuntimeUnavailableError` (OpenVINO not installed, not a CPU device) or
:class:`ConversionError` (the network does not convert or compile), both :class:`~medseg.errors.ModelError`
with one line; callers decide whether a fallback to torch is allowed (``auto``) or not (``openvino``).

>>> net = convert_network(module, (1, 1, 96, 96, 96), fingerprint=fp, weights_sha256=sha)  # doctest: +SKIP
>>> y = net(torch.zeros(4, 1, 96, 96, 96))                                                # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.engine.ov_norm import rewrite_normalizations
from medseg.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "AUTO_PRECISION",
    "CACHE_FORMAT",
    "ConversionError",
    "OpenVINONetwork",
    "RuntimeUnavailableError",
    "auto_precision",
    "cache_key",
    "check_agreement",
    "convert_module",
    "convert_network",
    "cpu_kind",
    "openvino_cache_dir",
    "openvino_version",
    "ov_precision",
    "read_onnx",
    "trace_shape",
]

#: Bump when the layout or the conversion recipe of cached models changes (old entries are then ignored).
CACHE_FORMAT = 2

_PRECISIONS = {"auto": "f32", "float32": "f32", "f32": "f32", "bfloat16": "bf16", "bf16": "bf16"}


class RuntimeUnavailableError(ModelError):
    """The OpenVINO runtime cannot be used here (not installed, or a non-CPU device was asked for)."""


class ConversionError(ModelError):
    """The network could not be converted to OpenVINO or compiled for this CPU."""


def _first_line(err: BaseException, limit: int = 300) -> str:
    """OpenVINO's reason in one line (its frontends report C++ locations and a summary of failed ops)."""
    text = str(err).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "Summary:" in lines:  # the frontend's report: "-- No conversion rule found for operations: aten::x"
        summary = [ln.lstrip("- ").strip() for ln in lines[lines.index("Summary:") + 1:] if ln.startswith("--")]
        if summary:
            return "; ".join(summary)[:limit]
    useful = [ln for ln in lines if not ln.startswith(("Exception from src", "Check '")) and not ln.endswith(":")]
    return (useful or lines or [type(err).__name__])[0][:limit]


def _import_openvino() -> Any:
    try:
        import openvino as ov
    except ImportError:
        raise RuntimeUnavailableError(
            "the OpenVINO runtime is not installed: pip install openvino (or use --runtime torch)"
        ) from None
    return ov


def openvino_version() -> str | None:
    """OpenVINO's version string (``'2026.4.1-22982-...'``), ``None`` when it is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    return str(ov.get_version())


def openvino_cache_dir() -> Path:
    """Where converted models live: ``$MEDSEG_CACHE/openvino`` (default ``~/.cache/medseg/openvino``)."""
    from medseg.models.cache import cache_dir

    return cache_dir() / "openvino"


def ov_precision(precision: str) -> str:
    """OpenVINO's ``INFERENCE_PRECISION_HINT`` for medseg's precision name.

    ``auto``/``float32`` → ``f32`` (parity with torch float32); ``bfloat16`` → ``bf16``.

    Raises:
        ValueError: another name (``float16`` has no OpenVINO CPU kernel worth using here).
    """
    key = str(getattr(precision, "value", precision)).lower()
    if key not in _PRECISIONS:
        raise ValueError(f"precision must be one of auto, float32, bfloat16 for the OpenVINO runtime, got {precision!r}.")
    return _PRECISIONS[key]


#: What ``precision=auto`` runs on OpenVINO, per kind of CPU, and the measurement behind it. A precision below
#: float32 is chosen only where a benchmark showed Dice >= 0.999 on every label against float32 on real data:
#: bfloat16 in ``benchmarks/bench_precision.py`` (a SegResNet trained on TotalSegmentator's example CT, 41
#: structures), int8 (NNCF post-training quantization, calibrated on the other real volumes) in
#: ``benchmarks/bench_int8.py`` (brain-mri and liver, real weights). Neither passed, so float32 everywhere.
_INT8 = ("int8 (NNCF) ran 1.4-1.5x (brain-mri) and 2.1-2.4x (liver) float32 on AMX but gave Dice 0.934-0.997 "
         "and 0.919-0.977 against float32 on held-out real volumes (bench_int8.py)")
AUTO_PRECISION: dict[str, tuple[str, str]] = {
    "bf16": ("float32", "native bfloat16 (AVX512-BF16/AMX): OpenVINO bfloat16 is 1.22x float32 but kept Dice >= "
                        f"0.999 on 0 of 6 labels (min 0.943) on real data (bench_precision.py); {_INT8}"),
    "avx512": ("float32", f"AVX-512 without bfloat16: OpenVINO would emulate bfloat16 (slower than float32); {_INT8}"),
    "avx2": ("float32", f"AVX2: no native bfloat16; {_INT8}"),
}


def cpu_kind(ov: Any = None) -> str:
    """``bf16`` (native bfloat16: AVX512-BF16 or AMX), ``avx512`` or ``avx2`` (anything else), from OpenVINO's
    ``OPTIMIZATION_CAPABILITIES`` and ``/proc/cpuinfo``."""
    if ov is None:
        ov = _import_openvino()
    if _cpu_has_bf16(ov):
        return "bf16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "avx512" if "avx512f" in flags else "avx2"


def auto_precision(kind: str | None = None) -> tuple[str, str]:
    """What ``precision=auto`` runs on OpenVINO on this CPU (or on ``kind``, a key of :data:`AUTO_PRECISION`),
    and why: ``('float32', reason)`` on every CPU measured so far."""
    if kind is None:
        kind = cpu_kind()
    if kind not in AUTO_PRECISION:
        raise ValueError(f"kind must be one of {', '.join(AUTO_PRECISION)}, got {kind!r}.")
    return AUTO_PRECISION[kind]


def cache_key(fingerprint: str, weights_sha256: str | None, input_shape: Sequence[int], version: str | None = None) -> str:
    """The cache folder name of one converted network (32 hex digits).

    Args:
        fingerprint: what identifies the network's architecture and settings (e.g. the predictor's fingerprint
            or the spec's digest); a different network must never share a key.
        weights_sha256: the weights' digest (``None`` for seeded/untrained weights: then the fingerprint must
            carry a seed or another identity).
        input_shape: the example input's shape used for the conversion.
        version: OpenVINO's version (default: the installed one).
    """
    payload = {
        "fingerprint": str(fingerprint),
        "weights": weights_sha256,
        "shape": [int(s) for s in input_shape],
        "openvino": version if version is not None else openvino_version(),
        "format": CACHE_FORMAT,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _read_cached(ov: Any, folder: Path) -> Any | None:
    """The cached IR in ``folder`` or ``None`` (absent or unreadable: then it is converted again)."""
    xml, bin_ = folder / "model.xml", folder / "model.bin"
    if not (xml.is_file() and bin_.is_file()):
        return None
    try:
        return ov.Core().read_model(str(xml), str(bin_))
    except RuntimeError:
        return None


def _write_cache(ov: Any, model: Any, folder: Path, meta: dict[str, Any]) -> None:
    """Save ``model`` as IR into ``folder`` atomically (temporary sibling folder, then one rename).

    A concurrent writer that renamed first wins; the loser's copy is discarded. Failing to write the cache
    (read-only disk, full disk) costs a conversion next time, never the run: it is silently skipped.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        try:
            os.replace(tmp, folder)
        except OSError:  # the folder exists (another process wrote it first): keep theirs
            pass
    except OSError:
        pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class OpenVINONetwork:
    """A converted network compiled for the CPU, called like the torch module it came from.

    Args:
        model: the converted ``openvino.Model`` (dynamic or static input shape).
        threads: ``INFERENCE_NUM_THREADS`` (``None``: OpenVINO's default, all cores).
        precision: ``auto``/``float32`` (``f32``, default) or ``bfloat16``.
        cache_hit: whether ``model`` was read from the disk cache (reported in provenance).
        cache_path: the cache folder (``None`` when the cache is off).
        convert_seconds: time spent converting or reading the IR.
        source: where the model came from: ``torch`` (converted by :func:`convert_network`) or ``onnx``
            (an ONNX spec's graph, :func:`medseg.infer.onnx_net.load_onnx_network`).

    Attributes:
        compile_seconds: total time spent compiling (one compile per input shape seen).
        infer_seconds: total time spent in forward passes (OpenVINO's inference and the copy of its output).
    """

    name = "openvino"

    def __init__(
        self,
        model: Any,
        *,
        threads: int | None = None,
        precision: str = "float32",
        cache_hit: bool = False,
        cache_path: Path | None = None,
        convert_seconds: float = 0.0,
        source: str = "torch",
    ) -> None:
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}.")
        self._ov = _import_openvino()
        self.hint = ov_precision(precision)
        if self.hint == "bf16" and not _cpu_has_bf16(self._ov):
            raise RuntimeUnavailableError("this CPU has no native bfloat16 support: use precision float32")
        self.model = model
        self.threads = threads
        self.cache_hit = bool(cache_hit)
        self.cache_path = cache_path
        self.convert_seconds = float(convert_seconds)
        self.source = source
        self.source_path: str | None = None
        self.compile_seconds = 0.0
        self.infer_seconds = 0.0
        self._core = self._ov.Core()
        self._compiled: dict[tuple[int, ...], tuple[Any, Any]] = {}

    # torch-module surface used by medseg's engine -------------------------------------------------------
    def eval(self) -> OpenVINONetwork:
        return self

    def to(self, *_: Any, **__: Any) -> OpenVINONetwork:
        return self

    def parameters(self):  # noqa: D401 - no torch parameters
        return iter(())

    def set_threads(self, threads: int | None) -> None:
        """Use ``threads`` from now on (models compiled with other settings are dropped, compiled again on use)."""
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}.")
        if threads != self.threads:
            self.threads = threads
            self._compiled.clear()

    @property
    def config(self) -> dict[str, Any]:
        """The compile configuration (threads, precision hint, latency mode)."""
        cfg: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.hint, "PERFORMANCE_HINT": "LATENCY"}
        if self.threads is not None:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        return cfg

    def describe(self) -> dict[str, Any]:
        """The provenance ``runtime`` object: name, version, precision, device, cache hit/miss, threads."""
        return {
            "name": "openvino",
            "version": openvino_version(),
            "precision": "float32" if self.hint == "f32" else "bfloat16",
            "device": "cpu",
            "threads": self.threads,
            "cache": "hit" if self.cache_hit else "miss",
        }

    def compiled_for(self, shape: Sequence[int]) -> tuple[Any, Any]:
        """The compiled model and its infer request for one concrete input shape (compiled on first use).

        Raises:
            ConversionError: the network cannot take this shape (a static model, or sizes it rejects).
        """
        key = tuple(int(s) for s in shape)
        hit = self._compiled.get(key)
        if hit is not None:
            return hit
        t0 = time.perf_counter()
        model = self.model
        if model.inputs[0].get_partial_shape().is_dynamic:
            model = model.clone()
            try:
                model.reshape({model.inputs[0]: self._ov.PartialShape(list(key))})
            except RuntimeError as err:
                raise ConversionError(f"the converted network does not take input shape {list(key)}: {_first_line(err)}") from None
        try:
            compiled = self._core.compile_model(model, "CPU", self.config)
        except RuntimeError as err:
            raise ConversionError(f"OpenVINO cannot compile the network for input {list(key)}: {_first_line(err)}") from None
        pair = (compiled, compiled.create_infer_request())
        self._compiled[key] = pair
        self.compile_seconds += time.perf_counter() - t0
        return pair

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, C, *spatial)`` torch tensor → the first output, float32 torch tensor on the CPU."""
        import numpy as np
        import torch

        if x.device.type != "cpu":
            raise RuntimeUnavailableError(f"the OpenVINO runtime runs on the CPU; got a tensor on {x.device}")
        arr = np.ascontiguousarray(x.detach().to(torch.float32).numpy())
        n = arr.shape[0]
        # a smaller last batch of windows reuses a model compiled for a larger batch (zero-padded), not a new compile
        bigger = [k for k in self._compiled if k[1:] == arr.shape[1:] and k[0] > n]
        if arr.shape not in self._compiled and bigger:
            pad = np.zeros((min(bigger)[0] - n, *arr.shape[1:]), dtype=np.float32)
            arr = np.concatenate([arr, pad])
        compiled, request = self.compiled_for(arr.shape)
        t0 = time.perf_counter()
        try:
            # the input is read in place and the output is a view of the request's buffer (overwritten by the
            # next call): one copy into torch below, instead of OpenVINO's copy plus ours (105 classes x 96^3
            # is 370 MB per window)
            out = request.infer({0: arr}, share_inputs=True, share_outputs=True)
        except RuntimeError as err:
            raise ConversionError(f"OpenVINO inference failed on input {list(arr.shape)}: {_first_line(err)}") from None
        view = out[compiled.output(0)][:n]
        if view.dtype == np.float32 and view.flags.c_contiguous and view.flags.writeable:
            # torch's threaded copy: numpy's single-threaded one runs while OpenVINO's workers still spin
            # after the inference and took 0.5-1.0 s for a 105-class 96^3 window (torch: 0.1 s)
            y = torch.empty(view.shape, dtype=torch.float32).copy_(torch.from_numpy(view))
        else:
            y = torch.from_numpy(np.array(view, dtype=np.float32, copy=True))
        self.infer_seconds += time.perf_counter() - t0
        return y

    def __repr__(self) -> str:
        shape = self.model.inputs[0].get_partial_shape()
        return f"OpenVINONetwork(source={self.source}, input={shape}, precision={self.hint}, threads={self.threads}, cache={'hit' if self.cache_hit else 'miss'})"


def _cpu_has_bf16(ov: Any) -> bool:
    try:
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except RuntimeError:  # pragma: no cover - property missing in an old OpenVINO
        return False


def read_onnx(path: str | os.PathLike[str]) -> Any:
    """An ONNX file read by OpenVINO, its instance/group norms rewritten (:mod:`medseg.engine.ov_norm`).

    Raises:
        RuntimeUnavailableError: OpenVINO is not installed.
        RuntimeError: OpenVINO cannot read the file (its message).
    """
    ov = _import_openvino()
    model = ov.Core().read_model(str(path))
    rewrite_normalizations(model)
    return model


def convert_module(module: Any, example_shape: Sequence[int]) -> Any:
    """``openvino.convert_model`` on a torch module (``nn.Module`` or TorchScript) with a zero example input,
    its instance/group norms rewritten for torch's float32 accuracy (:mod:`medseg.engine.ov_norm`).

    Raises:
        RuntimeUnavailableError: OpenVINO is not installed.
        ConversionError: the frontend cannot convert it (one line: OpenVINO's reason).
    """
    import warnings

    import torch

    ov = _import_openvino()
    example = torch.zeros(tuple(int(s) for s in example_shape), dtype=torch.float32)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about data-dependent control flow
            model = ov.convert_model(module, example_input=example)
    except Exception as err:  # noqa: BLE001 - the frontends raise many types (tracing, op support)
        raise ConversionError(f"OpenVINO cannot convert {type(module).__name__}: {_first_line(err)}") from None
    rewrite_normalizations(model)
    return model


def trace_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """The smaller input a 3D network is traced on: batch 1, each spatial size that is a multiple of 32 cut to 32.

    The converted model keeps every input dimension dynamic, so the trace's size only bounds the memory tracing
    takes; :func:`convert_network` verifies the result at the real shape and traces at the real shape when the
    small trace disagrees. 2D inputs (the SAM encoder) and other sizes are traced as they are.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 5:
        return shape
    return (1, shape[1], *(32 if s > 32 and s % 32 == 0 else s for s in shape[2:]))


def convert_network(
    module: Any,
    example_shape: Sequence[int],
    *,
    fingerprint: str,
    weights_sha256: str | None,
    threads: int | None = None,
    precision: str = "float32",
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    verify: bool = True,
) -> OpenVINONetwork:
    """Convert ``module`` (or read it from the on-disk cache) and return it as an :class:`OpenVINONetwork`.

    Args:
        module: the torch network in eval mode, on the CPU (``nn.Module`` or ``torch.jit.ScriptModule``).
        example_shape: ``(N, C, *spatial)`` of a representative input (the sliding window's
            ``(sw_batch_size, C, *roi_size)``, the whole-volume input, ``(1, 3, 256, 256)`` for the SAM encoder).
        fingerprint: identity of the network and its settings (part of the cache key).
        weights_sha256: digest of the weights (part of the cache key).
        threads: inference threads (``None``: OpenVINO's default).
        precision: ``auto``/``float32`` (default) or ``bfloat16``.
        cache: read and write the on-disk cache.
        cache_dir: cache root (default :func:`openvino_cache_dir`).
        verify: on a cache miss, run torch and OpenVINO once on a seeded random input of ``example_shape``
            and refuse a conversion that disagrees (:func:`check_agreement`) before caching it. Tracing
            can bake data-dependent Python code into constants; this catches it.

    Raises:
        RuntimeUnavailableError: OpenVINO missing.
        ConversionError: the network does not convert.
        ValueError: a bad ``example_shape``, ``threads`` or ``precision``.
    """
    shape = tuple(int(s) for s in example_shape)
    if len(shape) < 3 or any(s < 1 for s in shape):
        raise ValueError(f"example_shape must be (N, C, *spatial) with positive sizes, got {tuple(example_shape)}.")
    ov_precision(precision)
    ov = _import_openvino()
    folder = None
    t0 = time.perf_counter()
    model = None
    if cache:
        root = Path(cache_dir) if cache_dir is not None else openvino_cache_dir()
        folder = root / cache_key(fingerprint, weights_sha256, shape)
        model = _read_cached(ov, folder)
    hit = model is not None
    small = trace_shape(shape) if verify else shape
    if model is None and small != shape:
        # tracing holds every activation of the example pass (6.4 GB for the whole-body SegResNet at 96^3,
        # 1.3 GB at 32^3): trace a small volume, then verify the dynamic model at the real shape below
        try:
            model = convert_module(module, small)
            net = OpenVINONetwork(model, threads=threads, precision=precision, cache_hit=False, cache_path=folder)
            net.compiled_for(shape)
            check_agreement(module, net, shape)
        except ConversionError:
            model = None  # the small trace baked a size in (or does not convert): trace at the real shape
        else:
            verify = False  # verified just now
    if model is None:
        model = convert_module(module, shape)
    net = OpenVINONetwork(model, threads=threads, precision=precision, cache_hit=hit, cache_path=folder)
    net.compiled_for(shape)  # compiled now: loading, not the first forward pass, pays for it
    if not hit:
        if verify:
            check_agreement(module, net, shape)
        if folder is not None:
            meta = {"fingerprint": fingerprint, "weights_sha256": weights_sha256, "input_shape": list(shape),
                    "openvino": openvino_version(), "format": CACHE_FORMAT, "module": type(module).__name__}
            _write_cache(ov, model, folder, meta)
            cached = _read_cached(ov, folder)
            if cached is not None:  # compile what later runs read: the IR read back compiles to other kernels
                net = OpenVINONetwork(cached, threads=threads, precision=precision, cache_hit=False, cache_path=folder)
                net.compiled_for(shape)  # than the converted model, so a miss and a hit give the same labels
    net.convert_seconds = time.perf_counter() - t0
    return net


def check_agreement(module: Any, net: OpenVINONetwork, shape: Sequence[int], seed: int = 0) -> dict[str, float]:
    """Run ``module`` (torch) and ``net`` (OpenVINO) on one seeded ``N(0, 1)`` input of ``shape``; compare.

    Accepted: mean absolute difference <= 1e-3 x (mean absolute torch output + 1e-6) and, for outputs with
    several channels, argmax over channels equal on >= 99.9 % of positions (random inputs make near-ties
    that real images rarely have; the parity tests hold converted networks to 99.99 % on structured input).

    Returns:
        ``{"max_abs": .., "mean_abs": .., "argmax_equal": ..}``.

    Raises:
        ConversionError: the converted network disagrees with torch (shapes or values).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tuple(int(s) for s in shape), generator=gen)
    with torch.no_grad():
        ref = module(x)
    ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).float()
    out = net(x)
    if tuple(out.shape) != tuple(ref.shape):
        raise ConversionError(f"the converted network returns shape {list(out.shape)}, torch {list(ref.shape)}")
    diff = (out - ref).abs()
    mean_abs, scale = float(diff.mean()), float(ref.abs().mean())
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean()) if ref.ndim > 2 and ref.shape[1] > 1 else 1.0
    if not mean_abs <= 1e-3 * (scale + 1e-6) or agree < 0.999:
        raise ConversionError(
            f"the converted network disagrees with torch (mean abs difference {mean_abs:.3g} for outputs of mean "
            f"magnitude {scale:.3g}, argmax equal on {100 * agree:.3f} %)"
        )
    return {"max_abs": float(diff.max()), "mean_abs": mean_abs, "argmax_equal": agree}
