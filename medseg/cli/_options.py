"""Argument types and the model/runtime options shared by ``medseg segment`` and ``medseg batch``."""

from __future__ import annotations

import argparse

PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0 (e.g. seconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def overlap(text: str) -> float:
    """argparse type: a sliding-window overlap, checked by the engine's one rule
    (:func:`medseg.engine.options.check_overlap`) at parse time."""
    from medseg.engine.options import check_overlap

    try:
        return check_overlap(float(text))
    except ValueError as err:
        if "overlap must" in str(err):
            raise argparse.ArgumentTypeError(str(err).rstrip(".")) from None
        raise argparse.ArgumentTypeError(f"overlap must be a number in [0, 1), got {text!r}") from None


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--model --device --precision --overlap --tta/--no-tta --threads``, as ``load_predictor`` takes them."""
    p.add_argument("-m", "--model", default="brain-mri",
                   help="registry name (see `medseg models list`), spec YAML, MONAI bundle folder or nnU-Net "
                   "results folder (default: brain-mri)")
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="autocast precision (default: auto = float16 on CUDA, float32 elsewhere; bfloat16 is "
                   "opt-in, fast only on CPUs with AVX512-BF16/AMX)")
    p.add_argument("--overlap", type=overlap, default=None, help="sliding-window overlap in [0, 1) (default: the model's)")
    tta = p.add_mutually_exclusive_group()
    tta.add_argument("--tta", dest="tta", action="store_const", const=True, default=None, help="test-time flips on (slower)")
    tta.add_argument("--no-tta", dest="tta", action="store_const", const=False, help="test-time flips off")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for inference")
    add_runtime_option(p)
    add_trust_option(p)


def add_runtime_option(p: argparse.ArgumentParser) -> None:
    """``--runtime auto|torch|openvino`` (default ``$MEDSEG_RUNTIME``, else ``auto``)."""
    import os

    p.add_argument("--runtime", default=os.environ.get("MEDSEG_RUNTIME", "auto"), choices=["auto", "torch", "openvino"],
                   help="network runtime: auto = OpenVINO on the CPU when the network converts, else torch (one line "
                   "says which); openvino = OpenVINO or a clear error; torch (default: $MEDSEG_RUNTIME, else auto)")


def model_kwargs(args: argparse.Namespace) -> dict[str, object]:
    """The :func:`medseg.predictor.load_predictor` keywords of :func:`add_model_options`' options
    (:data:`medseg.pipeline.PREDICTOR_OPTIONS`)."""
    from medseg.pipeline import PREDICTOR_OPTIONS

    return {name: getattr(args, name) for name in PREDICTOR_OPTIONS}


def add_output_options(p: argparse.ArgumentParser, dicomweb: bool = True) -> None:
    """``--format --seg-type --roi --split --stats`` (and, for single inputs, the DICOMweb options)."""
    p.add_argument("--format", dest="formats", default="nifti", metavar="FMT[,FMT]",
                   help="outputs besides the NIfTI label map (always written): nifti, dicom-seg (OUT.seg.dcm), "
                   "rtstruct (OUT.rtstruct.dcm); comma-separated. DICOM formats need a DICOM input")
    p.add_argument("--seg-type", choices=["binary", "fractional"], default="binary",
                   help="DICOM SEG segmentation type (default: binary)")
    p.add_argument("--roi", nargs="+", metavar="NAME", default=None,
                   help="keep only these labels (names as `medseg models list` shows them)")
    p.add_argument("--split", action="store_true", help="also write one NIfTI per label: OUT/<label>.nii.gz")
    p.add_argument("--stats", action="store_true",
                   help="also write per-label statistics (volume, intensities, bounding box, centroid)")
    if dicomweb:
        p.add_argument("--store", action="store_true",
                       help="DICOMweb input: send the DICOM SEG (and RTSTRUCT) back to the server (STOW-RS)")
        p.add_argument("--dicomweb-user", default=None, help="DICOMweb HTTP basic-auth user")
        p.add_argument("--dicomweb-password", default=None,
                       help="DICOMweb password (default: $MEDSEG_DICOMWEB_PASSWORD)")
        p.add_argument("--dicomweb-token", default=None, help="DICOMweb bearer token (default: $MEDSEG_DICOMWEB_TOKEN)")
        p.add_argument("--dicomweb-ca", default=None, help="CA bundle for https DICOMweb servers")


def volume_choice(text: str) -> int | str:
    """argparse type for ``--volume``: a 0-based volume number or ``mean``."""
    from medseg.input_checks import parse_volume_choice

    try:
        return parse_volume_choice(text)  # type: ignore[return-value]
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_input_options(p: argparse.ArgumentParser, *, checks: bool = True) -> None:
    """``--series --irregular --volume`` (which volume of the input), plus ``--modality --force`` with ``checks``."""
    p.add_argument("--series", default=None,
                   help="DICOM series when the input holds several: a SeriesInstanceUID, a unique UID prefix or a series number")
    p.add_argument("--irregular", choices=["error", "resample"], default="error",
                   help="irregular DICOM slice spacing (missing slice, tilt): error (default) or resample onto a regular grid")
    p.add_argument("--volume", type=volume_choice, default=None, metavar="N|mean",
                   help="volume of a 4D scan (0-based, as `medseg info` numbers them) or mean")
    if checks:
        p.add_argument("--modality", choices=["auto", "ct", "mr"], default="auto",
                       help="the scan's modality: auto = DICOM Modality, else an intensity test for Hounsfield units")
        p.add_argument("--force", action="store_true",
                       help="run even when the scan's modality is not the model's (the mismatch is reported as a warning)")


def add_trust_option(p: argparse.ArgumentParser) -> None:
    """``--trust-model-code``: the explicit opt-in to load model files that run code (TorchScript)."""
    p.add_argument(
        "--trust-model-code",
        action="store_true",
        help="load TorchScript model files whose sha256 is not pinned (by medseg, your spec, or `medseg models "
        "pull NAME --trust-model-code`). TorchScript is code and runs when loaded: only for authors you trust",
    )
