"""The child side of :mod:`medseg.io.isolate`: ``python -m medseg.io.isolate_child PATH OUT.npy`` reads one
NRRD/MetaImage file with SimpleITK under memory and CPU limits, saves its voxels to ``OUT.npy`` and prints
the geometry as one JSON line (or ``{"error": ...}``). Kept apart from the parent so that :mod:`medseg.io.itk`
(which calls the parent) and this reader (which calls :func:`medseg.io.itk.read_itk`) import no cycle."""

from __future__ import annotations

import json
import os
import resource
import signal
import sys

import numpy as np

from medseg.errors import MedsegError
from medseg.io.limits import human_bytes


def _die_with_parent() -> None:
    """Linux: ask the kernel to kill this process when its parent dies (best effort)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _child(path: str, out: str) -> int:
    _die_with_parent()
    limit = int(os.environ.get("MEDSEG_CHILD_AS_BYTES", "0") or 0)
    cpu = int(os.environ.get("MEDSEG_CHILD_CPU_SECONDS", "0") or 0)
    for res, value in ((resource.RLIMIT_AS, limit), (resource.RLIMIT_CPU, cpu)):
        if value > 0:
            try:
                resource.setrlimit(res, (value, value))
            except (OSError, ValueError):
                pass
    from medseg.io.itk import read_itk

    try:
        vol = read_itk(path, isolate=False)
    except MedsegError as err:
        print(json.dumps({"error": err.message}))
        return 3
    except MemoryError:
        print(json.dumps({"error": f"not enough memory to read this file (limit {human_bytes(limit)})"}))
        return 3
    np.save(out, np.asarray(vol.array), allow_pickle=False)
    print(json.dumps({
        "affine": vol.affine.tolist(),
        "format": vol.source.format,
        "warnings": list(vol.source.warnings),
        "metadata": vol.source.extra.get("metadata", {}),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2]))
