"""Helpers for the interoperability tests: a tiny seeded model, reference label maps on real series."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.types import Label, Volume

TS_DICOM = "TotalSegmentator/tests/reference_files/example_ct_dicom"  # 20 Siemens CT slices, JPEG 2000, UIDs blanked
TS_SEG = "TotalSegmentator/tests/reference_files/example_seg_dicom.nii.gz"  # TotalSegmentator's labels of it
DCMQI = "dcmqi/data/segmentations"
ENHANCED = "dcm_qa_enh/In/Siemens/XA10/6_1.dcm"  # enhanced multi-frame MR (per-frame functional groups)



def ts_names() -> dict[int, str]:
    """Label names of TotalSegmentator's "total" task by id, from the registered totalseg-ct-3mm spec."""
    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "totalseg-ct-3mm.yaml").read_text())
    return {int(d["id"]): str(d["name"]) for d in spec["labels"]}


def reference_labels(shared: Path) -> tuple[Volume, Volume]:
    """(CT read from the DICOM series, TotalSegmentator's label map moved onto exactly that grid)."""
    import medseg.io
    from medseg.geometry import reorient

    ct = medseg.io.read(shared / TS_DICOM)
    seg = medseg.io.read(shared / TS_SEG)
    arr, aff = reorient(np.asarray(seg.array), seg.affine, ct.geometry.orientation)
    if not np.allclose(aff, ct.affine, atol=1e-3):
        raise AssertionError("reference labels are not on the DICOM grid")
    ids = [int(i) for i in np.unique(arr) if i > 0]
    names = ts_names()
    labels = tuple(Label(i, names.get(i, f"structure_{i}"), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256))
                   for i in ids)
    return ct, ct.replace(array=np.ascontiguousarray(arr.astype(np.uint8)), is_label=True, labels=labels)


def tiny_model(folder: Path, names: tuple[str, ...] = ("liver", "spleen")) -> Path:
    """A real spec YAML + a seeded MONAI UNet state dict (random weights, deterministic output)."""
    from perfkit.seeded_spec import write_seeded_unet_spec

    labels = [{"id": i + 1, "name": n, "color": [200, 40 * i, 40]} for i, n in enumerate(names)]
    return write_seeded_unet_spec(folder, name="tiny-interop-test", labels=labels)


