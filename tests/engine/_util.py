"""Helpers for the engine tests: volumes from files without depending on medseg.io internals."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.types import Geometry, SourceInfo, Volume
from tests.conftest import SHARED_DATA as SHARED


def nifti_volume(path: Path) -> Volume:
    import nibabel as nib

    img = nib.load(str(path))
    arr = np.asarray(img.get_fdata(dtype=np.float32))
    return Volume(arr, Geometry(img.affine, arr.shape[:3]), SourceInfo(path=str(path), format="nifti"))


def itk_volume(path: Path) -> Volume:
    import SimpleITK as sitk

    from medseg.geometry import sitk_affine, sitk_array_to_ijk

    im = sitk.ReadImage(str(path))
    arr = np.ascontiguousarray(sitk_array_to_ijk(sitk.GetArrayFromImage(im)).astype(np.float32))
    aff = sitk_affine(im.GetOrigin(), im.GetSpacing(), im.GetDirection())
    return Volume(arr, Geometry(aff, arr.shape), SourceInfo(path=str(path), format="nrrd"))


