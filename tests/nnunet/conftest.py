"""The nnU-Net tests' shared case: a tiny, real nnU-Net v2 results folder and a real CT crop for it."""

from __future__ import annotations

import os

import numpy as np
import pytest

from perfkit.nnunet_folder import PLAIN_ARCH, ct_intensity_properties, make_results_folder

CT = "TotalSegmentator/tests/reference_files/example_ct_sm.nii.gz"
LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}


@pytest.fixture(scope="module")
def case(tmp_path_factory, shared_data):
    """(results folder, input NIfTI path, medseg Volume of it)."""
    import nibabel as nib

    from medseg.geometry import reorient
    from medseg.types import Geometry, Volume

    root = tmp_path_factory.mktemp("nnunet")
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # nnunetv2 wants them at import
        os.environ.setdefault(k, str(root / k))
    img = nib.load(shared_data / CT)
    arr = np.asanyarray(img.dataobj)[30:90, 20:70, :].copy()
    aff = img.affine.copy()
    aff[:3, 3] = img.affine[:3, :3] @ [30, 20, 0] + img.affine[:3, 3]
    arr[:4] = 0  # zero border: nnU-Net crops to the nonzero box and pastes back
    arr[:, -3:] = 0
    props = ct_intensity_properties(arr[arr > -300])
    arr, aff = reorient(arr, aff, "ILP")
    arr = np.ascontiguousarray(arr)
    nii = nib.Nifti1Image(arr, aff)
    nii.set_qform(aff, 1)
    nii.set_sform(aff, 1)
    path = root / "case_0000.nii.gz"
    nib.save(nii, path)
    folder = make_results_folder(root / "results", labels=LABELS, intensity_properties=props,
                                 spacing=(3.5, 4.0, 4.0), transpose_forward=(2, 0, 1),
                                 architecture=PLAIN_ARCH((4, 8, 16)))
    back = nib.load(path)
    vol = Volume(np.asanyarray(back.dataobj), Geometry(back.affine, back.shape))
    return folder, path, vol
