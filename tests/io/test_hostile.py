"""Hostile inputs (issue 21): headers validated before ITK, reads confined to the header's folder,
memory bounded by the data, impossible geometry refused; checked in-process and through the real CLI
with time and peak-memory bounds."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.errors import GeometryError, ReadError
from medseg.io import read, scan
from tests.io._dicom_synth import write_series

REPO = Path(__file__).resolve().parents[2]
SHAPE = (6, 5, 4)
VOXELS = (np.arange(np.prod(SHAPE)) % 97).astype("<i2")


def _mhd(folder: Path, data_file: str, extra: str = "", name: str = "image.mhd") -> Path:
    text = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "TransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = -10 20 30\nElementSpacing = 0.8 0.9 2.5\n"
        f"DimSize = 6 5 4\n{extra}ElementType = MET_SHORT\nElementDataFile = {data_file}\n"
    )
    path = folder / name
    path.write_text(text)
    return path


def _nhdr(folder: Path, data_file: str, encoding: str = "raw", name: str = "image.nhdr") -> Path:
    text = (
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 6 5 4\n"
        "space directions: (0.8,0,0) (0,0.9,0) (0,0,2.5)\nkinds: domain domain domain\nendian: little\n"
        f"encoding: {encoding}\nspace origin: (-10,20,30)\ndata file: {data_file}\n"
    )
    path = folder / name
    path.write_text(text)
    return path


def _slices(folder: Path) -> None:
    for k in range(SHAPE[2]):
        (folder / f"slice{k:03d}.raw").write_bytes(VOXELS.reshape(SHAPE, order="F")[:, :, k].tobytes(order="F"))


def _expected() -> np.ndarray:
    return VOXELS.reshape(SHAPE, order="F")


# ------------------------------------------------------------------------------ MetaImage / NRRD headers


@pytest.mark.parametrize(
    ("extra_or_dims", "pattern"),
    [
        ("NDims = -1", r"NDims '-1': -1 is outside 1\.\.16"),
        ("NDims = 0", r"NDims '0'"),
        ("NDims = 7", r"7 dimensions"),
        ("DimSize = -1 5 4", r"DimSize '-1 5 4'"),
        ("DimSize = 6 5", r"DimSize '6 5': expected 3 values"),
        ("ElementType = MET_STRING", r"ElementType 'MET_STRING'"),
        ("ElementNumberOfChannels = 99999999", r"ElementNumberOfChannels"),
        ("ElementSpacing = 0.8 -0.9 2.5", r"voxel sizes must be > 0"),
        ("ElementSpacing = 0.8 nan 2.5", r"must be finite"),
        ("TransformMatrix = 1 0 0 1 0 0 0 0 1", r"singular"),
        ("DimSize = 2147483647 2147483647 2147483647", r"limit on one volume.*MEDSEG_MAX_VOXEL_BYTES"),
        ("DimSize = 600 500 400", r"truncated metaimage data"),
    ],
)
def test_metaimage_header_refused_before_itk(tmp_path, extra_or_dims, pattern):
    (tmp_path / "data.raw").write_bytes(VOXELS.tobytes())
    key = extra_or_dims.split(" =")[0]
    path = _mhd(tmp_path, "data.raw")
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith(key + " ")]
    lines.insert(1, extra_or_dims)
    path.write_text("\n".join(lines) + "\n")
    t0 = time.monotonic()
    with pytest.raises(ReadError, match=pattern) as err:
        read(path)
    assert time.monotonic() - t0 < 5
    assert str(err.value).startswith((str(path), str(tmp_path / "data.raw"))) and "\n" not in str(err.value)


def test_attached_mha_ndims_minus_one(tmp_path):
    """The issue's reproducer: ``NDims = -1`` in an attached .mha (hangs or crashes ITK's MetaIO)."""
    path = tmp_path / "x.mha"
    path.write_bytes(b"ObjectType = Image\nNDims = -1\nDimSize = 6 5 4\nElementType = MET_SHORT\n"
                     b"ElementDataFile = LOCAL\n" + VOXELS.tobytes())
    for func in (read, scan):
        with pytest.raises(ReadError, match="NDims"):
            func(path)


@pytest.mark.parametrize(
    ("data_file", "pattern"),
    [
        ("/etc/passwd", "absolute path"),
        ("../outside.raw", r"leaves the header's folder"),
        ("sub/../../outside.raw", r"leaves the header's folder"),
        ("link.raw", "resolves outside the header's folder"),
        ("slice%03d%s.raw 0 3 1", "exactly one integer conversion"),
        ("%n%n%n 0 3 1", "exactly one integer conversion"),
        ("slice%03d.raw 0 999999999 1", "names 1000000000 files"),
        ("slice%03d.raw 0 3 0", "step 0 never reaches"),
        ("missing.raw", "not found next to the header"),
    ],
)
@pytest.mark.parametrize("fmt", ["mhd", "nhdr"])
def test_detached_header_reads_only_inside_its_folder(tmp_path, fmt, data_file, pattern):
    case = tmp_path / "case"
    case.mkdir()
    (tmp_path / "outside.raw").write_bytes(VOXELS.tobytes())
    (case / "link.raw").symlink_to(tmp_path / "outside.raw")
    _slices(case)
    path = _mhd(case, data_file) if fmt == "mhd" else _nhdr(case, data_file)
    for func in (read, scan):
        with pytest.raises(ReadError, match=pattern):
            func(path)


@pytest.mark.parametrize("fmt", ["mhd", "nhdr"])
def test_detached_list_outside_folder_refused(tmp_path, fmt):
    case = tmp_path / "case"
    case.mkdir()
    _slices(case)
    (tmp_path / "evil.raw").write_bytes(b"\0" * 60)
    names = "slice000.raw\nslice001.raw\n../evil.raw\nslice003.raw\n"
    path = _mhd(case, "LIST 2D" if fmt == "mhd" else "LIST 2") if fmt == "mhd" else _nhdr(case, "LIST 2")
    path.write_text(path.read_text() + names)
    with pytest.raises(ReadError, match="leaves the header's folder"):
        read(path)


@pytest.mark.parametrize("fmt", ["mhd", "nhdr"])
@pytest.mark.parametrize("form", ["single", "list", "pattern"])
def test_detached_forms_inside_folder_still_read(tmp_path, fmt, form):
    """LIST and pattern forms with files next to the header keep working (same voxels as one file)."""
    _slices(tmp_path)
    (tmp_path / "data.raw").write_bytes(VOXELS.tobytes())
    listing = "".join(f"slice{k:03d}.raw\n" for k in range(4))
    if fmt == "mhd":
        spec = {"single": "data.raw", "list": "LIST 2D", "pattern": "slice%03d.raw 0 3 1"}[form]
        path = _mhd(tmp_path, spec)
    else:
        spec = {"single": "data.raw", "list": "LIST 2", "pattern": "slice%03d.raw 0 3 1 2"}[form]
        path = _nhdr(tmp_path, spec)
    if form == "list":
        path.write_text(path.read_text() + listing)
    vol = read(path)
    np.testing.assert_array_equal(vol.array, _expected())
    assert vol.spacing == pytest.approx((0.8, 0.9, 2.5))


def test_nrrd_pattern_with_format_attack_refused(tmp_path):
    path = tmp_path / "x.nrrd"
    path.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 6 5 4\nendian: little\nencoding: raw\n"
                     b"data file: %s%s%s%s 0 3 1\n\n")
    with pytest.raises(ReadError, match="one integer conversion"):
        read(path)


# ------------------------------------------------------------------------------------- memory bounds


def _gzip_members(block: bytes, n: int, head: bytes = b"") -> bytes:
    """``head + block * n`` as concatenated gzip members (``block`` compressed once): a large
    payload written in milliseconds."""
    one = gzip.compress(block, 6, mtime=0)
    return gzip.compress(head, 6, mtime=0) + one * n if head else one * n


def _sparse_block(size: int = 4 << 20) -> bytes:
    """Mostly zeros (about 230:1 under gzip): a plausible, physically possible compression ratio."""
    b = bytearray(size)
    b[::512] = b"\x01" * len(b[::512])
    return bytes(b)


def _nrrd_bomb(path: Path, sizes=(1024, 1024, 1024), block: bytes | None = None) -> Path:
    """A valid gzip NRRD whose payload really inflates to the size its header states."""
    head = (f"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: {' '.join(map(str, sizes))}\n"
            "space directions: (1,0,0) (0,1,0) (0,0,1)\nendian: little\nencoding: gzip\nspace origin: (0,0,0)\n\n")
    block = _sparse_block() if block is None else block
    n = int(np.prod(sizes)) * 2 // len(block)
    path.write_bytes(head.encode() + _gzip_members(block, n))
    return path


def test_nrrd_gzip_bomb_refused_before_inflating(tmp_path):
    path = _nrrd_bomb(tmp_path / "bomb.nrrd")
    t0 = time.monotonic()
    with pytest.raises(ReadError, match="MEDSEG_MAX_VOXEL_BYTES"):
        read(path)
    assert time.monotonic() - t0 < 5
    (info,) = scan(path)  # header-only: reported, with the limit as a warning
    assert info.shape == (1024, 1024, 1024)
    assert any("MEDSEG_MAX_VOXEL_BYTES" in w for w in info.warnings)


def test_inflate_ratio_limit_and_env_override(tmp_path, monkeypatch):
    # 128 MiB of zeros in 130 KiB: about 1000:1, physically possible for deflate but beyond 500:1
    path = _nrrd_bomb(tmp_path / "ratio.nrrd", sizes=(512, 512, 256), block=bytes(8 << 20))
    with pytest.raises(ReadError, match=r"ratio 10\d\d:1, limit 500:1.*MEDSEG_MAX_INFLATE_RATIO"):
        read(path)
    monkeypatch.setenv("MEDSEG_MAX_INFLATE_RATIO", "5000")
    vol = read(path)  # raised on purpose: the payload is real
    assert vol.shape == (512, 512, 256) and not vol.array.any()


def test_voxel_limit_env_names_and_raises(tmp_path, monkeypatch):
    (tmp_path / "data.raw").write_bytes(VOXELS.tobytes())
    path = _mhd(tmp_path, "data.raw")
    monkeypatch.setenv("MEDSEG_MAX_VOXEL_BYTES", "100")
    with pytest.raises(ReadError, match=r"more than the 100 bytes limit.*set MEDSEG_MAX_VOXEL_BYTES"):
        read(path)
    monkeypatch.setenv("MEDSEG_MAX_VOXEL_BYTES", "1e6")
    np.testing.assert_array_equal(read(path).array, _expected())


def _multiframe(path: Path, frames: str = "99999999") -> Path:
    write_series(path.parent / "src", [0.0], size=16)
    ds = pydicom.dcmread(next((path.parent / "src").iterdir()))
    ds.NumberOfFrames = frames
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_frame_count_bounded_by_pixel_bytes(tmp_path):
    """The issue's reproducer: 99,999,999 frames over 512 bytes of pixel data (11.6 GB in `info` before)."""
    path = _multiframe(tmp_path / "frames.dcm")
    t0 = time.monotonic()
    (info,) = scan(path)
    assert time.monotonic() - t0 < 5
    assert not info.extra["readable"]
    assert any("NumberOfFrames is 99999999" in w for w in info.warnings)
    with pytest.raises(ReadError, match="NumberOfFrames is 99999999 but .* hold at most 1 frames"):
        read(path)


def test_zip_bomb_member_refused(tmp_path):
    write_series(tmp_path / "s", [0.0, 2.5], size=16)
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted((tmp_path / "s").iterdir()):
            zf.write(f, f.name)
        with zf.open("zeros.dcm", "w", force_zip64=True) as fh:
            for _ in range(16):
                fh.write(bytes(8 << 20))  # 128 MiB of zeros, about 1000:1
    with pytest.raises(ReadError, match=r"zip member 'zeros.dcm'.*MEDSEG_MAX_INFLATE_RATIO"):
        read(path)


# ----------------------------------------------------------------------------- impossible geometry


def _series_with(tmp_path: Path, **attrs) -> Path:
    folder = tmp_path / "series"
    write_series(folder, [0.0, 2.5, 5.0], size=16)
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        for k, v in attrs.items():
            setattr(ds, k, v)
        ds.save_as(f, enforce_file_format=True)
    return folder


@pytest.mark.parametrize(
    ("attrs", "pattern"),
    [
        ({"PixelSpacing": ["-0.7", "0.7"]}, r"impossible PixelSpacing '-0.7\\\\0.7'"),
        ({"PixelSpacing": ["0", "0"]}, "impossible PixelSpacing"),
        ({"PixelSpacing": ["nan", "0.7"]}, "invalid PixelSpacing"),
        ({"ImageOrientationPatient": ["2", "0", "0", "0", "2", "0"]}, "impossible ImageOrientationPatient.*lengths 2 and 2"),
        ({"ImageOrientationPatient": ["1", "0", "0", "0.2", "1", "0"]}, "impossible ImageOrientationPatient"),
        ({"RescaleSlope": "nan"}, "invalid RescaleSlope 'nan'"),
        ({"RescaleSlope": "inf"}, "invalid RescaleSlope 'inf'"),
        ({"RescaleIntercept": "-inf"}, "invalid RescaleIntercept"),
        ({"RescaleSlope": "0"}, "RescaleSlope is 0"),
    ],
)
def test_impossible_dicom_geometry_and_scaling_are_errors(tmp_path, attrs, pattern):
    folder = _series_with(tmp_path, **attrs)
    with pytest.raises(ReadError, match=pattern) as err:
        read(folder)
    assert not isinstance(err.value, GeometryError) or "ImageOrientation" in pattern
    (info,) = scan(folder)
    assert not info.extra["readable"] and any(pattern.split(" ")[0] in w for w in info.warnings)


def test_tiny_orientation_deviation_normalised_with_warning(tmp_path):
    """Like dcm2niix, rounding in the stored cosines is accepted: normalised, with a warning."""
    ref = read(_series_with(tmp_path / "a"))
    folder = _series_with(tmp_path / "b", ImageOrientationPatient=["1.004", "0", "0", "0", "0.997", "0"])
    vol = read(folder)
    assert any("normalised" in w for w in vol.source.warnings)
    col = vol.affine[:3, :3] / np.linalg.norm(vol.affine[:3, :3], axis=0)
    np.testing.assert_allclose(col.T @ col, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(vol.spacing, ref.spacing, atol=1e-3)  # voxel size not scaled by the long vector
    np.testing.assert_array_equal(vol.array, ref.array)


# ------------------------------------------------------------------------- default bounds, real CLI


_MEASURED = (
    "import atexit, sys\n"
    "def _hwm():\n"
    "    with open('/proc/self/status') as fh, open(sys.argv[1], 'w') as out:\n"
    "        out.write(next(ln for ln in fh if ln.startswith('VmHWM')).split()[1])\n"
    "atexit.register(_hwm)\n"
    "from medseg.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


def _run_measured(args: list[str], tmp_path: Path, timeout: float = 60.0) -> tuple[int, str, float, int]:
    """``medseg ARGS`` in a fresh interpreter: (exit code, stderr, seconds, peak RSS in bytes).

    The peak is the process's own ``VmHWM`` read at exit (``wait4``'s ``ru_maxrss`` would include the
    forking parent's memory).
    """
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    hwm = tmp_path / "hwm.txt"
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", _MEASURED, str(hwm), *args], capture_output=True, text=True,
                              env=env, cwd=str(REPO), timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"medseg {' '.join(args)} ran over {timeout} s")
    seconds = time.monotonic() - t0
    peak = int(hwm.read_text()) * 1024 if hwm.exists() else 0
    assert peak, f"no peak memory recorded: {proc.stderr}"
    return proc.returncode, proc.stderr, seconds, peak


def _one_line_error(code: int, stderr: str) -> None:
    assert code != 0
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in stderr, stderr


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    files = {}
    files["nrrd_bomb"] = _nrrd_bomb(tmp / "bomb.nrrd")
    nii = bytearray(352)
    struct.pack_into("<i", nii, 0, 348)
    struct.pack_into("<8h", nii, 40, 3, 1024, 1024, 1024, 1, 1, 1, 1)  # 2 GiB of int16
    struct.pack_into("<hh", nii, 70, 4, 16)  # int16
    struct.pack_into("<8f", nii, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", nii, 108, 352)
    struct.pack_into("<f", nii, 112, 1)
    nii[344:348] = b"n+1\x00"
    files["nifti_bomb"] = tmp / "bomb.nii.gz"
    block = _sparse_block()
    files["nifti_bomb"].write_bytes(_gzip_members(block, (2 << 30) // len(block), head=bytes(nii)))
    (tmp / "frames").mkdir()
    files["frames"] = _multiframe(tmp / "frames" / "frames.dcm")
    write_series(tmp / "zs", [0.0, 2.5], size=16)
    files["zip_bomb"] = tmp / "bomb.zip"
    with zipfile.ZipFile(files["zip_bomb"], "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted((tmp / "zs").iterdir()):
            zf.write(f, f.name)
        with zf.open("zeros.dcm", "w", force_zip64=True) as fh:
            for _ in range(32):
                fh.write(bytes(8 << 20))
    (tmp / "case").mkdir()
    (tmp / "secret.raw").write_bytes(VOXELS.tobytes())
    files["traversal"] = _nhdr(tmp / "case", "../secret.raw")
    mha = tmp / "ndims.mha"
    mha.write_bytes(b"ObjectType = Image\nNDims = -1\nDimSize = 6 5 4\nElementType = MET_SHORT\nElementDataFile = LOCAL\n")
    files["ndims"] = mha
    return files


@pytest.mark.parametrize("case", ["nrrd_bomb", "nifti_bomb", "frames"])
def test_cli_info_reports_header_of_huge_payload(hostile, case, tmp_path):
    """A valid header over a huge (compressed or claimed) payload: reported from the header, exit 0, < 800 MB."""
    code, stderr, seconds, peak = _run_measured(["info", str(hostile[case])], tmp_path)
    assert code == 0, stderr
    assert seconds < 60 and peak < 800 << 20, (seconds, peak >> 20)


@pytest.mark.parametrize("case", ["nrrd_bomb", "nifti_bomb", "frames", "ndims", "zip_bomb", "traversal"])
def test_cli_convert_hostile_one_line_error_bounded(hostile, case, tmp_path):
    code, stderr, seconds, peak = _run_measured(["convert", str(hostile[case]), "-o", str(tmp_path / "out.nii.gz")],
                                                tmp_path)
    _one_line_error(code, stderr)
    assert seconds < 60 and peak < 1536 << 20, (seconds, peak >> 20)
    assert not (tmp_path / "out.nii.gz").exists()


def test_cli_info_invalid_header_is_error(hostile, tmp_path):
    code, stderr, seconds, peak = _run_measured(["info", str(hostile["ndims"])], tmp_path)
    _one_line_error(code, stderr)
    assert "NDims" in stderr and peak < 800 << 20


# ------------------------------------------------------------------- isolated reads (unvalidated fields)


def test_unvalidated_header_field_is_read_in_a_bounded_child(tmp_path, monkeypatch):
    path = tmp_path / "odd.mha"
    path.write_bytes(b"ObjectType = Image\nNDims = 3\nColor = 1 0 0 1\nDimSize = 6 5 4\nElementSpacing = 0.8 0.9 2.5\n"
                     b"ElementType = MET_SHORT\nElementDataFile = LOCAL\n" + VOXELS.tobytes())
    vol = read(path)
    np.testing.assert_array_equal(vol.array, _expected())
    assert vol.spacing == pytest.approx((0.8, 0.9, 2.5))
    assert any("isolated process" in w and "color" in w for w in vol.source.warnings)
    monkeypatch.setenv("MEDSEG_READ_TIMEOUT", "0.01")
    with pytest.raises(ReadError, match=r"longer than 0.01 s.*MEDSEG_READ_TIMEOUT"):
        read(path)


def test_isolate_env_gives_same_volume(shared_data, monkeypatch):
    src = shared_data / "pyradiomics/data/breast1_label.nrrd"
    direct = read(src)
    monkeypatch.setenv("MEDSEG_ISOLATE_READS", "1")
    isolated = read(src)
    np.testing.assert_array_equal(isolated.array, direct.array)
    np.testing.assert_array_equal(isolated.affine, direct.affine)
