"""The one CT test (DICOM Modality first, then intensities) on real scans."""

from __future__ import annotations

import numpy as np
import pytest

import medseg.io
from medseg.modality import looks_like_ct, resolve_modality


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("TotalSegmentator/tests/reference_files/example_ct_sm.nii.gz", "CT"),
        ("TotalSegmentator/tests/reference_files/example_ct.nii.gz", "CT"),
        ("TotalSegmentator/tests/reference_files/example_mr_sm.nii.gz", "MR"),
        ("MONAI/tests/testing_data/anatomical.nii", "MR"),
        ("pyradiomics/data/brain1_image.nrrd", "MR"),
    ],
)
def test_intensity_rule_on_real_scans(shared_data, rel, expected):
    path = shared_data / rel
    if not path.exists():
        pytest.skip(f"{path} is absent")
    vol = medseg.io.read(path)
    decision = resolve_modality(vol)
    assert decision.modality == expected
    assert decision.how == "intensity"


def test_dicom_modality_wins(shared_data):
    vol = medseg.io.read(shared_data / "TotalSegmentator/tests/reference_files/example_ct_dicom")
    assert resolve_modality(vol).as_dict() == {"modality": "CT", "decided_by": "dicom"}
    assert resolve_modality(vol, "mr").as_dict() == {"modality": "MR", "decided_by": "user"}


def test_rule_edges():
    air_and_bone = np.r_[np.full(100, -1000.0), np.full(100, 40.0), np.full(10, 1500.0)]
    assert looks_like_ct(air_and_bone)
    assert not looks_like_ct(air_and_bone.clip(max=250))  # no bone: not CT
    assert not looks_like_ct(air_and_bone + 1000)  # shifted (CT stored without the intercept): not HU
    assert not looks_like_ct(np.array([], dtype=np.float32))
    assert not looks_like_ct(np.full(10, np.nan))
    with pytest.raises(ValueError, match="auto, ct, mr"):
        resolve_modality(None, "pet")  # type: ignore[arg-type]  # the choice is checked first


def test_ct_crop_inside_the_body_is_not_refused_as_non_hu(shared_data):
    """A CT cropped inside the body has no air (not recognised as CT) but is still HU; an MR is not HU."""
    from medseg.modality import clearly_not_hu

    ref = shared_data / "TotalSegmentator/tests/reference_files"
    ct = medseg.io.read(ref / "example_ct.nii.gz").array
    body = ct[30:90, 20:70, :]
    assert not looks_like_ct(body) and not clearly_not_hu(body)
    assert not clearly_not_hu(ct)
    assert clearly_not_hu(medseg.io.read(ref / "example_mr_sm.nii.gz").array)
    assert clearly_not_hu(medseg.io.read(shared_data / "MONAI/tests/testing_data/anatomical.nii").array)
