"""Bad input (non-DICOM part): a clear error naming the file, no allocation on lying headers, no output.

Each case is checked through ``medseg.io.read`` and through the CLI (``medseg convert`` / ``info``):
exit code 2, one stderr line naming the file, and the output directory left exactly as it was.
"""

from __future__ import annotations

import gzip
import time
import tracemalloc
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.cli import main
from medseg.errors import ReadError
from medseg.io import read, scan
from medseg.io.nifti import GZIP_TAIL_BYTES

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02\x00\x00\x00\x90\x91h6" + bytes(64)


def _nifti_bytes(shape=(6, 7, 8), dtype=np.int16, seed=0) -> bytes:
    data = np.random.default_rng(seed).integers(0, 100, shape).astype(dtype)
    return nib.Nifti1Image(data, np.eye(4)).to_bytes()


def _huge_header(dims=(32000, 32000, 32000), dtype=np.int16, version=1) -> bytes:
    """A valid single-file NIfTI header (+ the 4 extension bytes) claiming a huge volume, and no data."""
    hdr = nib.Nifti1Header() if version == 1 else nib.Nifti2Header()
    hdr.set_data_shape(dims)
    hdr.set_data_dtype(dtype)
    hdr["vox_offset"] = hdr.sizeof_hdr + 4
    return hdr.binaryblock + b"\x00" * 4


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, regex its error message must match)."""
    good = _nifti_bytes()
    good_gz = _gz(good)
    rng = np.random.default_rng(7)
    files = {
        "garbage_gz": ("garbage.nii.gz", _gz(rng.bytes(4000)), "not a NIfTI file.*gzip-compressed unrecognised binary"),
        "gzip_magic_then_junk": ("junk.nii.gz", b"\x1f\x8b" + rng.bytes(500), "does not decompress"),
        "png_named_nii_gz": ("scan.nii.gz", PNG, "not a NIfTI file.*PNG image"),
        "text_named_nii": ("notes.nii", b"patient notes: all fine\n" * 30, "not a NIfTI file.*plain text"),
        "empty_nii_gz": ("empty.nii.gz", b"", "empty file"),
        "truncated_nii_gz": ("cut.nii.gz", good_gz[: len(good_gz) // 2], "truncated"),
        "gz_missing_trailer": ("trailer.nii.gz", good_gz[:-6], "truncated"),
        "gz_bad_crc": ("crc.nii.gz", good_gz[:-8] + bytes([good_gz[-8] ^ 0xFF]) + good_gz[-7:], "corrupt gzip"),
        "truncated_nii": ("cut.nii", good[: 352 + 100], "truncated NIfTI.*of the .* of voxel data"),
        "header_only_nii": ("hdr_only.nii", good[:352], "header-only"),
        "header_too_short": ("short.nii", good[:200], "too short for a NIfTI header"),
        "huge_nii": ("huge.nii", _huge_header(), r"32000x32000x32000 int16.*more than"),
        "huge_nii2_gz": ("huge2.nii.gz", _gz(_huge_header((60000,) * 3, version=2)), r"60000x60000x60000.*more than"),
        "beyond_gzip_ratio": ("ratio.nii.gz", _gz(_huge_header((1000, 1000, 1000), np.uint8)), "can expand to at most"),
        "png_named_dcm": ("slice.dcm", PNG, "not a DICOM file.*PNG image"),
        "png_without_suffix": ("image", PNG, "not a medical image.*PNG image"),
        "text_named_nrrd": ("vol.nrrd", b"just some text\n", "not a NRRD file.*plain text"),
        "png_named_mha": ("vol.mha", PNG, "not a MetaImage file.*PNG image"),
        "text_named_zip": ("series.zip", b"not a zip\n", "not a zip archive.*plain text"),
        "huge_nrrd": (
            "huge.nrrd",
            b"NRRD0004\ntype: float\ndimension: 3\nsizes: 60000 60000 60000\nendian: little\nencoding: gzip\n\n",
            r"60000x60000x60000.*more than",
        ),
    }
    out = {}
    for key, (name, data, pattern) in files.items():
        path = tmp / name
        path.write_bytes(data)
        out[key] = (path, pattern)
    (tmp / "empty_dir").mkdir()
    out["empty_folder"] = (tmp / "empty_dir", "empty folder")
    out["missing"] = (tmp / "does_not_exist.nii.gz", "no such file")
    (tmp / "loop_a.nii.gz").symlink_to("loop_b.nii.gz")
    (tmp / "loop_b.nii.gz").symlink_to("loop_a.nii.gz")
    out["symlink_loop"] = (tmp / "loop_a.nii.gz", "symbolic link.*loop")
    return out


CASES = [
    "garbage_gz", "gzip_magic_then_junk", "png_named_nii_gz", "text_named_nii", "empty_nii_gz", "truncated_nii_gz",
    "gz_missing_trailer", "gz_bad_crc", "truncated_nii", "header_only_nii", "header_too_short", "huge_nii",
    "huge_nii2_gz", "beyond_gzip_ratio", "png_named_dcm", "png_without_suffix", "text_named_nrrd", "png_named_mha",
    "text_named_zip", "huge_nrrd", "empty_folder", "missing", "symlink_loop",
]  # fmt: skip


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return _bad_files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", CASES)
def test_read_gives_clear_error(bad, case):
    path, pattern = bad[case]
    with pytest.raises(ReadError, match=pattern) as err:
        read(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message


@pytest.mark.parametrize("case", CASES)
def test_cli_convert_fails_cleanly(bad, case, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    path, pattern = bad[case]
    rc = main(["convert", str(path), "-o", str(out_dir / "result.nii.gz")])
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert str(path) in lines[0] and lines[0].startswith("medseg convert: error:")
    assert list(out_dir.iterdir()) == []  # no output, no temporary file


@pytest.mark.parametrize("case", ["png_named_nii_gz", "huge_nii2_gz", "header_only_nii", "text_named_nrrd", "empty_folder"])
def test_cli_info_fails_cleanly(bad, case, capsys):
    path, _ = bad[case]
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0]


@pytest.mark.parametrize("case", ["huge_nii", "huge_nii2_gz", "beyond_gzip_ratio", "huge_nrrd"])
def test_huge_header_refused_before_allocating(bad, case):
    path, _ = bad[case]
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ReadError):
            read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2.0
    assert peak < 2 << 20  # < 2 MiB: nothing of the claimed size was allocated


def test_gzip_stream_longer_than_header_is_not_decompressed_unbounded(tmp_path):
    """A tiny header followed by 64 MiB of compressed zeros: read stops after the voxels + a small tail."""
    good = _nifti_bytes((4, 5, 6), np.uint8)
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip container
    parts = [comp.compress(good)]
    zeros = bytes(1 << 20)
    parts += [comp.compress(zeros) for _ in range(64)]
    parts.append(comp.flush())
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(b"".join(parts))
    tracemalloc.start()
    try:
        vol = read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert vol.shape == (4, 5, 6)
    assert any("continues past the voxels" in w for w in vol.source.warnings)
    assert peak < 8 * GZIP_TAIL_BYTES  # never the 64 MiB the stream would expand to


def test_scan_reads_headers_only(bad):
    """``info`` works on a file whose voxel data is corrupt: it never touches the voxels."""
    path, _ = bad["gz_bad_crc"]
    (info,) = scan(path)
    assert info.shape == (6, 7, 8)
    with pytest.raises(ReadError, match="corrupt gzip"):
        read(path)


def test_folder_without_dicom_fails_cleanly(tmp_path, capsys):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here\n")
    (folder / "picture.png").write_bytes(PNG)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ReadError, match="no DICOM") as err:
        read(folder)
    assert str(folder) in str(err.value)
    assert main(["convert", str(folder), "-o", str(out_dir / "x.nii.gz")]) == 2
    assert str(folder) in capsys.readouterr().err
    assert list(out_dir.iterdir()) == []


def test_series_option_on_single_volume_file_is_an_error(tmp_path):
    path = tmp_path / "a.nii"
    path.write_bytes(_nifti_bytes())
    with pytest.raises(ReadError, match="DICOM only"):
        read(path, series="1.2.3")
