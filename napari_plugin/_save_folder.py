"""Where the Save widget proposes to write: never inside the installed package, never into a read-only
input folder, and the folder of the last save is remembered (also across sessions).

Order: the remembered folder (if it still exists and is writable) → the scan's folder (the folder holding
a file, the parent of a DICOM folder) when it is writable and outside the Python installation →
:func:`fallback_dir` (``~/medseg-labels``, created on the first save). Qt-free.

The remembered folder is stored in ``$XDG_CONFIG_HOME/medseg/napari.json`` (``~/.config/medseg/...``).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import sysconfig
from pathlib import Path

__all__ = ["state_file", "remembered_dir", "remember_dir", "is_writable_dir", "is_install_dir", "fallback_dir", "choose_dir"]


def state_file() -> Path:
    """``$XDG_CONFIG_HOME/medseg/napari.json`` (default ``~/.config/medseg/napari.json``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "medseg" / "napari.json"


def remembered_dir() -> Path | None:
    """The folder of the last successful save, or ``None`` (missing, unreadable or gone)."""
    try:
        doc = json.loads(state_file().read_text(encoding="utf-8"))
        folder = Path(str(doc["save_dir"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return folder if is_writable_dir(folder) else None


def remember_dir(folder: str | os.PathLike[str]) -> None:
    """Remember ``folder`` for the next save (best effort: a read-only home is not an error)."""
    path = state_file()
    try:
        doc = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if not isinstance(doc, dict):
            doc = {}
    except (OSError, ValueError):
        doc = {}
    doc["save_dir"] = str(Path(folder).resolve())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def is_writable_dir(folder: Path) -> bool:
    """An existing folder that we may write to and that is not marked read-only (no write bit at all, as
    for read-only data shares, counts as read-only even for root)."""
    try:
        st = folder.stat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and bool(st.st_mode & 0o222) and os.access(folder, os.W_OK | os.X_OK)


def is_install_dir(folder: Path) -> bool:
    """``True`` inside the Python installation (site-packages, the interpreter's prefix) or medseg's package."""
    import medseg

    roots = {Path(medseg.__file__).resolve().parent}
    for key in ("purelib", "platlib", "stdlib", "data"):
        try:
            roots.add(Path(sysconfig.get_paths()[key]).resolve())
        except (KeyError, OSError):
            continue
    roots.add(Path(sys.prefix).resolve())
    try:
        resolved = folder.resolve()
    except OSError:
        return True
    return any(resolved == r or r in resolved.parents for r in roots)


def fallback_dir() -> Path:
    """``~/medseg-labels``: the default when neither a remembered nor the scan's folder can be used."""
    return Path.home() / "medseg-labels"


def choose_dir(scan_dir: Path | None) -> Path:
    """The folder to propose for a save (see the module docstring for the order)."""
    remembered = remembered_dir()
    if remembered is not None:
        return remembered
    if scan_dir is not None and is_writable_dir(scan_dir) and not is_install_dir(scan_dir):
        return scan_dir
    return fallback_dir()
