"""Everything a user can name as a model → a :class:`~medseg.config.ModelSpec` (or an nnU-Net folder).

* a registry name or a spec YAML (:func:`medseg.config.load_spec`);
* a MONAI bundle directory (:func:`medseg.models.bundle.spec_from_bundle`, read, never executed);
* an nnU-Net results folder, or a spec whose weights are such a folder / a ``.zip`` of one
  (:func:`resolve_nnunet_folder`: extracted safely, every extracted file's sha256 recorded).

No torch import.

>>> load_model_spec("brain-mri").name  # doctest: +SKIP
'brain-mri'
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from medseg.config import ModelSpec, load_spec
from medseg.errors import ModelError
from medseg.models.cache import sha256_file

__all__ = ["is_nnunet_folder", "load_model_spec", "resolve_nnunet_folder", "safe_extract_results_folder"]


def load_model_spec(model: str | Path) -> ModelSpec:
    """Spec for a registry name, a spec YAML path or a MONAI bundle directory.

    Raises:
        ModelError: unknown name (with the closest registered names), missing path, or a bad spec/bundle.
    """
    from medseg.models.registry import resolve_model

    path = resolve_model(model)
    if path.is_dir():
        from medseg.models.bundle import spec_from_bundle

        return spec_from_bundle(path)
    return load_spec(path)


def is_nnunet_folder(path: str | Path) -> bool:
    """``True`` for a directory holding an nnU-Net v2 results folder (``plans.json`` + ``dataset.json``)."""
    try:
        from medseg.nnunet.plans import is_nnunet_folder as _is_folder
    except ImportError:  # the nnU-Net extra is optional
        return False
    return bool(_is_folder(path))


def safe_extract_results_folder(archive: Path, dest: Path, record_source: str | None = None) -> Path:
    """Extract the nnU-Net results folder(s) of a ``.zip`` into ``dest`` (once); return the results folder.

    Only regular files below a folder holding ``plans.json`` + ``dataset.json`` are extracted; absolute
    paths and ``..`` are refused. Exactly one results folder must be present. With ``record_source``, the
    sha256 of every extracted file is recorded (:mod:`medseg.models.trust`, outside the cache) and checked
    on every later call: a file changed after extraction is an error, never loaded.
    """
    import hashlib

    from medseg.models.trust import DigestRecord, member_records, put_records

    try:
        z = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as e:
        raise ModelError(f"not a readable zip archive: {e}", archive) from None
    with z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        roots = sorted({n[: -len("plans.json")] for n in names if n.endswith("plans.json")
                        and n[: -len("plans.json")] + "dataset.json" in names})
        if len(roots) != 1:
            raise ModelError(f"expected one nnU-Net results folder (plans.json + dataset.json) in the archive, "
                             f"found {len(roots)}: {roots[:5]}", archive)
        root = roots[0]
        folder = (dest / root).resolve()
        marker = folder / ".medseg-extracted"
        recorded = member_records(record_source, "nnunet:") if record_source else {}
        if marker.is_file() and (record_source is None or recorded):
            for rel, digest in recorded.items():
                f = dest / rel
                if not f.is_file() or sha256_file(f) != digest:
                    raise ModelError("changed since it was extracted from the verified archive; delete "
                                     f"{dest} and run again to extract it afresh", f)
            return folder
        base = dest.resolve()
        records = []
        for n in names:
            if not n.startswith(root):
                continue
            target = (dest / n).resolve()
            if n.startswith("/") or ".." in Path(n).parts or not str(target).startswith(str(base) + "/"):
                raise ModelError(f"archive member {n!r} escapes the cache directory", archive)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            h = hashlib.sha256()
            try:
                with z.open(n) as src, open(tmp, "wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
                        h.update(block)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                tmp.unlink(missing_ok=True)
                raise ModelError(f"cannot extract {n!r}: {e}", archive) from None
            tmp.replace(target)
            if record_source:
                records.append(DigestRecord(record_source, f"nnunet:{n}", h.hexdigest(), True, False,
                                            "extracted from the checked archive"))
        put_records(records)
        marker.write_text(str(archive) + "\n")
    return folder


def resolve_nnunet_folder(spec: ModelSpec) -> Path:
    """The nnU-Net results folder a spec's ``weights.source`` names (folder, ``.zip`` or downloaded URL).

    Raises:
        ModelError: no source, a missing folder/archive, an archive whose sha256 differs from the pin or the
            pull's record, or an unsafe / changed extraction.
    """
    from medseg.models.sources import expected_sha256, locate_weights

    w = spec.weights
    if w.source is None:
        raise ModelError(f"{spec.name}: weights.source must name an nnU-Net results folder or a .zip of one")
    if w.kind in ("url", "package"):
        archive = locate_weights(w.source, w.base_dir)
    else:
        p = Path(w.source).expanduser()
        if not p.is_absolute() and w.base_dir is not None:
            p = Path(w.base_dir) / p
        if p.is_dir():
            return p
        if not p.is_file():
            raise ModelError("nnU-Net results folder or archive not found", p)
        archive = p
    # The archive itself is hashed (a ``.sha256`` file next to it is never a source of trust): against the
    # spec's pin, or the digest recorded outside the cache when it was pulled.
    expected = expected_sha256(w)
    if expected is not None:
        digest = sha256_file(archive)
        if digest != expected:
            raise ModelError(f"sha256 {digest} does not match the expected {expected} "
                             "(run `medseg models pull <model>` to fetch it again)", archive)
    source = w.source if w.kind in ("url", "package") else str(archive.resolve())
    return safe_extract_results_folder(archive, archive.with_name(archive.name + ".d"), source)
