"""Per-label statistics of a label map, optionally with the intensities of its scan.

For every label: voxel count, volume (mL), intensity mean/std/median/min/max and percentiles (HU for
CT), bounding box (voxel indices, inclusive) and centroid (voxel indices, RAS mm and DICOM scanner/LPS
mm). Labels listed in ``labels.labels`` but absent from the map get a count of 0 and no geometry.

>>> rows = label_statistics(labels, image)       # doctest: +SKIP
>>> rows[0]["volume_ml"], rows[0]["mean"]        # doctest: +SKIP
(152.3, 54.1)
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

from medseg.types import Volume

__all__ = ["label_statistics", "PERCENTILES", "COLUMNS", "to_csv"]

#: Percentiles reported for intensities.
PERCENTILES = (5, 25, 75, 95)

#: Columns of the CSV form, in order.
COLUMNS = (
    "id", "name", "voxels", "volume_ml", "mean", "std", "median", "min", "max",
    *(f"p{p}" for p in PERCENTILES),
    "bbox_min_ijk", "bbox_max_ijk", "centroid_ijk", "centroid_ras_mm", "centroid_lps_mm",
)


def label_statistics(labels: Volume, image: Volume | None = None) -> list[dict[str, Any]]:
    """One dict per label of ``labels.labels`` (id order); intensities only when ``image`` is given.

    Args:
        labels: 3D label map.
        image: the scan on the same grid (same shape and affine within 1e-3 mm); its 4D channels are
            not supported.

    Raises:
        ValueError: ``image`` is on another grid or is 4D, or ``labels`` is not 3D.
    """
    from scipy import ndimage

    from medseg.geometry import LPS_TO_RAS, voxel_to_world

    arr = np.asarray(labels.array)
    if arr.ndim != 3:
        raise ValueError(f"labels must be 3D, got shape {arr.shape}.")
    values = None
    if image is not None:
        if np.asarray(image.array).ndim != 3:
            raise ValueError(f"image must be 3D for intensity statistics, got shape {image.shape}.")
        if not image.geometry.allclose(labels.geometry, atol=1e-3):
            raise ValueError(f"image grid {image.geometry} differs from the label grid {labels.geometry}.")
        values = np.asarray(image.array)
    ivol = arr.astype(np.int64, copy=False)
    boxes = ndimage.find_objects(ivol) if ivol.max() > 0 else []
    vml = labels.geometry.voxel_volume_ml
    rows = []
    for lab in sorted(labels.labels, key=lambda lab: lab.id):
        row: dict[str, Any] = {"id": lab.id, "name": lab.name, "voxels": 0, "volume_ml": 0.0}
        box = boxes[lab.id - 1] if 0 < lab.id <= len(boxes) else None
        if box is not None:
            mask = ivol[box] == lab.id
            n = int(mask.sum())
            idx = np.argwhere(mask) + np.array([s.start for s in box])
            centroid = idx.mean(axis=0)
            ras = voxel_to_world(labels.affine, centroid)
            row.update(
                voxels=n,
                volume_ml=round(n * vml, 6),
                bbox_min_ijk=[int(v) for v in idx.min(axis=0)],
                bbox_max_ijk=[int(v) for v in idx.max(axis=0)],
                centroid_ijk=[round(float(v), 3) for v in centroid],
                centroid_ras_mm=[round(float(v), 3) for v in ras],
                centroid_lps_mm=[round(float(v), 3) for v in LPS_TO_RAS[:3, :3] @ ras],
            )
            if values is not None:
                v = values[box][mask].astype(np.float64)
                pct = np.percentile(v, PERCENTILES)
                row.update(
                    mean=float(v.mean()), std=float(v.std()), median=float(np.median(v)),
                    min=float(v.min()), max=float(v.max()),
                    **{f"p{p}": float(q) for p, q in zip(PERCENTILES, pct)},
                )
        rows.append(row)
    return rows


def to_csv(rows: list[dict[str, Any]], extra_columns: tuple[str, ...] = ()) -> str:
    """CSV text of statistics rows (lists joined with spaces); ``extra_columns`` come first."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = (*extra_columns, *COLUMNS)
    w.writerow(cols)
    for r in rows:
        w.writerow([" ".join(str(x) for x in r[c]) if isinstance(r.get(c), list) else r.get(c, "") for c in cols])
    return buf.getvalue()
