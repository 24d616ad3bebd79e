"""Where medseg's shipped configuration lives (model specs, anatomy codes): one rule for every reader."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["config_dirs"]


def config_dirs() -> list[Path]:
    """Directories searched for configuration, highest priority first.

    ``$MEDSEG_CONFIGS`` (``os.pathsep``-separated) first, then ``configs/`` next to the package (a source
    checkout or editable install), then ``medseg/configs/`` (a wheel). Only existing directories are returned.
    """
    dirs = [Path(p) for p in os.environ.get("MEDSEG_CONFIGS", "").split(os.pathsep) if p]
    package = Path(__file__).resolve().parent  # medseg/
    dirs.append(package.parent / "configs")
    dirs.append(package / "configs")
    return [d for d in dirs if d.is_dir()]
