"""Output names for batch cases: mirror the input tree, unique, readable, always inside OUTPUT_DIR.

Rules:
    * a file ``INPUT_DIR/a/b/scan.nrrd`` → ``OUTPUT_DIR/a/b/scan_seg.nii.gz``;
    * a DICOM series whose files sit in ``INPUT_DIR/p1/ct`` → ``OUTPUT_DIR/p1/ct/s003_Abdomen_seg.nii.gz``
      (series number and description; the UID's hash when neither is known);
    * every path component is sanitised (letters, digits, ``._-+`` only; no leading dot, no ``..``,
      at most :data:`MAX_COMPONENT` characters), so no input name can escape OUTPUT_DIR;
    * names that would still collide (``a.nii`` and ``a.nii.gz``; names equal up to case) get a short,
      stable hash of the case key, so the mapping depends only on each case, never on discovery order;
    * the final path is resolved (following any symlink already in OUTPUT_DIR) and must lie inside it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from os import PathLike
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from medseg.errors import WriteError

if TYPE_CHECKING:  # pragma: no cover
    from medseg.types import Volume

__all__ = [
    "OUTPUT_SUFFIX", "MAX_COMPONENT", "sanitize_component", "short_hash", "series_label", "case_name", "output_paths",
    "ensure_inside", "is_folder_output", "folder_output",
]

#: every batch output ends with this; sidecars become ``<stem>_seg.json`` / ``.ctbl``
OUTPUT_SUFFIX = "_seg.nii.gz"
#: longest sanitised path component, in characters (file systems allow 255 bytes)
MAX_COMPONENT = 96

_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]+")
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".ima", ".gz")


def short_hash(text: str, n: int = 8) -> str:
    """First ``n`` hex digits of the SHA-256 of ``text`` (stable across runs and machines)."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:n]


def sanitize_component(name: str) -> str:
    """One safe, readable path component: ``"My scan (2).nii"`` → ``"My_scan_2_.nii"``.

    Never empty, never ``.``/``..``, never starting with a dot (hidden files and traversal), at most
    :data:`MAX_COMPONENT` characters (long names keep their start plus a hash of the whole).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}.")
    safe = _UNSAFE.sub("_", name).strip("._ ") or "_"
    if safe.startswith("-"):  # would read as an option on a command line
        safe = "_" + safe
    if len(safe) > MAX_COMPONENT:
        safe = safe[: MAX_COMPONENT - 9].rstrip("._") + "-" + short_hash(name)
    return safe


def _strip_image_suffix(name: str) -> str:
    low = name.lower()
    for suffix in _IMAGE_SUFFIXES:
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def series_label(number: int | None, description: str | None, series_id: str) -> str:
    """Readable name of a DICOM series: ``"s003_Abdomen"`` (number, description, sub-series), else a UID hash."""
    parts = []
    if number is not None:
        parts.append(f"s{number:03d}")
    if description:
        parts.append(description.strip())
    last = series_id.rsplit(".", 1)[-1] if series_id and "." in series_id else ""
    if last.startswith("s") and last[1:].isdigit():
        parts.append(last)  # sub-series of a split UID
    if not parts:
        parts.append(f"series-{short_hash(series_id or 'none')}")
    return "_".join(parts)


def case_name(path: str | Path, dicom_series: tuple[int | None, str | None, str] | None = None) -> str:
    """The sanitised case name batch gives one input: the file stem, or the series label for DICOM.

    Args:
        path: the input file or folder.
        dicom_series: ``(series number, description, series UID)`` when the input is a DICOM series.

    >>> case_name("/data/sub-01/t1.nii.gz")
    't1'
    >>> case_name("/data/p7/ct", (3, "Abdomen", "1.2.3"))
    's003_Abdomen'
    """
    if dicom_series is not None:
        return sanitize_component(series_label(*dicom_series))
    return sanitize_component(_strip_image_suffix(Path(path).name))


def _base_name(rel: PurePosixPath, series_label: str | None) -> PurePosixPath:
    """Sanitised relative output path (without collision handling) for one case."""
    parts = [p for p in rel.parts if p not in ("", ".", "/")]
    if series_label is None:  # a file: its folders, then its name without the image suffix
        if not parts:
            raise ValueError(f"a file case needs a relative path, got {str(rel)!r}.")
        dirs, stem = parts[:-1], _strip_image_suffix(parts[-1])
    else:  # a DICOM series: the folder holding its files, then the series label
        dirs, stem = parts, series_label
    safe_dirs = [sanitize_component(d) for d in dirs]
    stem = sanitize_component(stem)[: MAX_COMPONENT - len(OUTPUT_SUFFIX) - 9]
    return PurePosixPath(*safe_dirs, stem + OUTPUT_SUFFIX)


def _with_hash(path: PurePosixPath, key: str) -> PurePosixPath:
    stem = path.name[: -len(OUTPUT_SUFFIX)]
    return path.with_name(f"{stem}-{short_hash(key)}{OUTPUT_SUFFIX}")


def ensure_inside(root: Path, rel: PurePosixPath) -> Path:
    """``root / rel`` resolved; raises :class:`WriteError` unless it lies strictly inside ``root``."""
    root_resolved = Path(root).resolve()
    target = (root_resolved / Path(*rel.parts)).resolve()
    if target == root_resolved or root_resolved not in target.parents:
        raise WriteError(f"output path {str(rel)!r} resolves to {target}, outside the output folder", root)
    return target


def output_paths(cases: Iterable[tuple[str, PurePosixPath, str | None]], output_dir: Path) -> dict[str, Path]:
    """Map each case to its output file inside ``output_dir``.

    Args:
        cases: ``(key, rel, series_label)`` per case: a unique, stable ``key``; ``rel`` the file's path
            relative to INPUT_DIR (a file) or the folder holding the series (DICOM, then ``series_label``
            is e.g. ``"s003_Abdomen"``; ``None`` for files).
        output_dir: OUTPUT_DIR (need not exist yet).

    Returns:
        ``{key: absolute resolved output path}``; all distinct (also case-insensitively), all inside
        ``output_dir``.

    Raises:
        ValueError: duplicate keys.
        WriteError: a path would land outside ``output_dir`` (e.g. through a symlink placed in it).
    """
    base: dict[str, PurePosixPath] = {}
    for key, rel, series_label in cases:
        if key in base:
            raise ValueError(f"duplicate case key {key!r}.")
        base[key] = _base_name(PurePosixPath(rel), series_label)
    groups: dict[str, list[str]] = defaultdict(list)
    for key, path in base.items():
        groups[str(path).lower()].append(key)
    final: dict[str, PurePosixPath] = {}
    for keys in groups.values():
        for key in keys:
            final[key] = base[key] if len(keys) == 1 else _with_hash(base[key], key)
    # a hashed name could in theory hit another plain name: hash again until every name is unique
    seen: dict[str, str] = {}
    for key in sorted(final):
        path = final[key]
        while str(path).lower() in seen:
            path = _with_hash(path, key + "#")
        seen[str(path).lower()] = key
        final[key] = path
    return {key: ensure_inside(output_dir, rel) for key, rel in final.items()}


def is_folder_output(output: str | PathLike[str]) -> bool:
    """``-o`` names a folder: it ends with a path separator or is an existing directory."""
    text = os.fspath(output)
    return text.endswith(("/", os.sep)) or Path(text).expanduser().is_dir()


def folder_output(folder: str | PathLike[str], volume: Volume, sample: bool = False) -> Path:
    """``-o FOLDER``: ``FOLDER/<name>_seg.nii.gz``, ``<name>`` being the case name ``medseg batch`` gives the input.

    The name is the file stem (``t1.nii.gz`` → ``t1``), the series number and description for DICOM
    (``s003_Abdomen``), the case of an nnU-Net file set (``case7_0000.nii.gz`` → ``case7``), or ``sample``
    for the bundled sample.
    """
    src = volume.source
    if sample:
        name = "sample"
    elif src.format == "dicom":
        name = case_name(src.path or "", (src.series_number, src.series_description, src.series_uid or ""))
    else:
        name = case_name(src.path or "input")
        if "channels" in src.extra:  # an nnU-Net case read from CASE_0000.nii.gz ...: the case is CASE
            from medseg.channels import NNUNET_CHANNEL

            m = NNUNET_CHANNEL.match(Path(src.path or "").name)
            name = case_name(m.group("case")) if m else name
    return Path(folder).expanduser() / f"{name}{OUTPUT_SUFFIX}"
