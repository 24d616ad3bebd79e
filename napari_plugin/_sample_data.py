"""napari sample data: the scan bundled with medseg (:mod:`medseg.data`), opened like any file."""

from __future__ import annotations

__all__ = ["sample_brain_t1"]


def sample_brain_t1() -> list[tuple]:
    """The bundled T1 brain MRI (256x256x25, 0.78x0.78x6.5 mm) as one image layer."""
    from medseg.data import sample_path
    from medseg.io import read

    from ._layers import volume_to_layer_data

    volume = read(sample_path("brain-t1"))
    return [volume_to_layer_data(volume, name="sample brain T1")]
