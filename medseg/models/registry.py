"""Model registry: model name → spec file. Pure data: imports neither torch nor MONAI (``medseg models list``
answers before any model loads).

Specs are the ``*.yaml`` files in the ``configs/`` directory next to the package (and in every directory
listed in ``$MEDSEG_CONFIGS``, separated by ``os.pathsep``; those take precedence).

>>> [m.name for m in list_models()][:1]  # doctest: +SKIP
['brain-mri']
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import ModelError
from medseg.options import did_you_mean
from medseg.paths import config_dirs

__all__ = ["DEFAULT_MODEL", "ModelEntry", "list_models", "resolve_model"]

#: The embedded default model (deepbet's trained brain-extraction U-Nets, offline).
DEFAULT_MODEL = "brain-mri"


@dataclass(frozen=True)
class ModelEntry:
    """One registered model, as ``medseg models list`` shows it."""

    name: str
    path: Path
    description: str
    modality: str
    n_labels: int
    weights: str  # "embedded" (inside an installed package / next to the spec), "cached", "download", "missing"
    source: str | None


def _spec_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in config_dirs():
        for p in sorted(d.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def _weights_state(weights: dict | None, spec_dir: Path) -> tuple[str, str | None]:
    if not weights or not weights.get("source"):
        return "none", None
    from medseg.models.sources import is_remote, locate_weights

    src = str(weights["source"])
    try:
        locate_weights(src, str(spec_dir), weights.get("archive_member"))
    except ModelError:
        return ("download" if is_remote(src) else "missing"), src
    return ("cached" if is_remote(src) else "embedded"), src


def list_models() -> list[ModelEntry]:
    """All registered models, sorted by name (the default first)."""
    import yaml

    entries = []
    for name, path in _spec_files().items():
        try:
            with open(path, encoding="utf-8") as f:
                d = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ModelError(f"cannot read model spec: {err}", path) from err
        state, source = _weights_state(d.get("weights"), path.parent)
        entries.append(
            ModelEntry(
                name=str(d.get("name", name)),
                path=path,
                description=str(d.get("description", "")).strip().split("\n")[0],
                modality=str((d.get("input") or {}).get("modality", "any")),
                n_labels=len(d.get("labels") or []),
                weights=state,
                source=source,
            )
        )
    entries.sort(key=lambda e: (e.name != DEFAULT_MODEL, e.name))
    return entries


def resolve_model(name_or_path: str | os.PathLike[str] = DEFAULT_MODEL) -> Path:
    """Spec file for a registry name, or the path itself for a spec file / MONAI bundle directory.

    Raises:
        ModelError: unknown name (with the closest registered names) or missing path.
    """
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.is_dir() or (p.is_file() and p.suffix.lower() in (".yaml", ".yml")):  # bundle / nnU-Net folder / spec
        return p
    specs = _spec_files()
    if s in specs:
        return specs[s]
    if any(c in s for c in "/\\") or s.endswith((".yaml", ".yml")):
        raise ModelError("no such model spec file or bundle directory", s)
    raise ModelError(f"unknown model {s!r}{did_you_mean(s, specs, quote=False)}; known: {', '.join(sorted(specs))}")
