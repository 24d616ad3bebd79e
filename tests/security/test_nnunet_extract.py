"""Files extracted from an nnU-Net results archive are hashed as they are written and checked on later loads."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest


def test_extracted_checkpoint_changed_later_is_refused(tmp_path):
    pytest.importorskip("dynamic_network_architectures")
    from medseg.errors import ModelError
    from medseg.models.loaders import safe_extract_results_folder
    from medseg.models.trust import member_records
    from perfkit.nnunet_folder import ct_intensity_properties, make_results_folder

    props = ct_intensity_properties(np.random.default_rng(0).normal(40, 200, 2000))
    folder = make_results_folder(tmp_path / "res", labels={"background": 0, "a": 1}, intensity_properties=props,
                                 folds=(0,))
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, str(f.relative_to(folder.parent.parent)))
    dest = tmp_path / "cache" / "m.zip.d"
    out = safe_extract_results_folder(archive, dest, "https://example.org/m.zip")
    recorded = member_records("https://example.org/m.zip", "nnunet:")
    assert any(k.endswith("fold_0/checkpoint_final.pth") for k in recorded) and len(recorded) >= 3
    assert safe_extract_results_folder(archive, dest, "https://example.org/m.zip") == out  # unchanged: fine
    ckpt = out / "fold_0" / "checkpoint_final.pth"
    ckpt.write_bytes(ckpt.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelError, match="changed since it was extracted"):
        safe_extract_results_folder(archive, dest, "https://example.org/m.zip")
