"""Read a NRRD/MetaImage file in a child process with a time limit and a memory limit.

Used when a header holds fields that :mod:`medseg.io.itk_headers` does not validate (ITK's readers
trust their headers; see ITK issue #6853), or always with ``MEDSEG_ISOLATE_READS=1``. The child
(``python -m medseg.io.isolate_child PATH OUT.npy``, :mod:`medseg.io.isolate_child`) reads with SimpleITK, saves the array to a temporary
``.npy`` and prints the geometry as JSON; a crash (signal), a run past ``MEDSEG_READ_TIMEOUT`` seconds
(default 45) or an error in the child becomes one :class:`~medseg.errors.ReadError` in the parent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from medseg.errors import ReadError
from medseg.io.limits import max_voxel_bytes
from medseg.types import Geometry, SourceInfo, Volume

__all__ = ["TIMEOUT_ENV", "ISOLATE_ENV", "read_timeout", "isolate_always", "read_itk_isolated"]

TIMEOUT_ENV = "MEDSEG_READ_TIMEOUT"
ISOLATE_ENV = "MEDSEG_ISOLATE_READS"
_DEFAULT_TIMEOUT = 45.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def read_timeout() -> float:
    """Seconds an isolated read may take (``MEDSEG_READ_TIMEOUT``, default 45)."""
    from medseg.io.limits import _env_number

    value = _env_number(TIMEOUT_ENV)
    return _DEFAULT_TIMEOUT if value is None else value


def isolate_always() -> bool:
    """``MEDSEG_ISOLATE_READS=1``: read every NRRD/MetaImage file in a child process."""
    return os.environ.get(ISOLATE_ENV, "").strip().lower() in ("1", "true", "yes")


def read_itk_isolated(path: Path, reason: str) -> Volume:
    """:func:`medseg.io.itk.read_itk` in a bounded child process.

    Args:
        path: the NRRD/MetaImage file (its header already validated as far as medseg can).
        reason: why the read is isolated (kept in the volume's warnings).

    Raises:
        ReadError: the child failed, crashed or ran out of time, naming the file and the limit.
    """
    timeout = read_timeout()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([_PACKAGE_ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    # the child may hold the voxels twice (ITK buffer + numpy copy) plus the interpreter
    env["MEDSEG_CHILD_AS_BYTES"] = str(3 * max_voxel_bytes() + (2 << 30))
    env["MEDSEG_CHILD_CPU_SECONDS"] = str(int(timeout) + 5)  # a hang dies even if this process is killed
    with tempfile.TemporaryDirectory(prefix="medseg-read-") as tmp:
        out = Path(tmp) / "voxels.npy"
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "medseg.io.isolate_child", str(path), str(out)],
                capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise ReadError(
                f"reading took longer than {timeout:g} s ({reason}); the file is corrupt or hostile, or set "
                f"{TIMEOUT_ENV} to allow more time",
                path,
            ) from None
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            raise ReadError(f"the ITK reader crashed ({name}) on this file ({reason}): corrupt or hostile data", path)
        try:
            report = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
        except ValueError:
            report = None
        if not isinstance(report, dict):
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
            raise ReadError(f"the isolated reader failed (exit {proc.returncode}): {tail}", path)
        if "error" in report:
            raise ReadError(str(report["error"]), path)
        array = np.load(out, allow_pickle=False)
    affine = np.asarray(report["affine"], dtype=np.float64)
    try:
        geometry = Geometry(affine, array.shape[:3])
    except ValueError as err:
        raise ReadError(f"invalid geometry: {err}", path) from err
    warnings = tuple(report.get("warnings", ())) + (f"read in an isolated process: {reason}",)
    source = SourceInfo(path=str(path), format=report["format"], warnings=warnings,
                        extra={"metadata": report.get("metadata", {})})
    return Volume(array, geometry, source=source)
