"""Small seeded SAM / SAM 2 networks (the real architectures, few layers) and synthetic volumes."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.types import Geometry, SourceInfo, Volume

pytest.importorskip("segment_anything")

SAM2_TINY_OVERRIDES = (
    "++model.image_size=128",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.memory_attention.num_layers=1",
)


def tiny_sam_network(seed: int = 0):
    from medseg.sam import build_sam_network

    return build_sam_network(
        encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
        image_size=256, window_size=4, decoder_mlp_dim=256, seed=seed,
    )


@pytest.fixture(scope="session")
def tiny_sam():
    from medseg.sam import wrap_network

    return wrap_network(tiny_sam_network(0), "tiny-sam-seed0")


@pytest.fixture(scope="session")
def tiny_sam2():
    pytest.importorskip("sam2")
    from medseg.sam import build_sam2_network, wrap_network

    net = build_sam2_network("configs/sam2.1/sam2.1_hiera_t.yaml", hydra_overrides=SAM2_TINY_OVERRIDES, seed=0)
    return wrap_network(net, "tiny-sam2-seed0")


def ellipsoid_volume(shape=(40, 28, 14), spacing=(0.6, 0.9, 2.5), centre=None, radii_mm=(8.0, 7.0, 11.0)):
    """CT-like volume (HU) with a bright ellipsoid ("organ", +60 HU on a -100 HU background) and its mask."""
    centre = np.array(shape, dtype=float) / 2 - 0.5 if centre is None else np.asarray(centre, float)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    d = ((grid - centre) * np.asarray(spacing)) / np.asarray(radii_mm)
    obj = (d**2).sum(-1) <= 1.0
    rng = np.random.default_rng(1)
    img = np.where(obj, 60.0, -100.0) + rng.normal(0, 5, shape)
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = (-10.0, 5.0, 30.0)
    vol = Volume(img.astype(np.float32), Geometry(aff, shape), SourceInfo(modality="CT"))
    return vol, obj


@pytest.fixture(scope="session")
def ellipsoid():
    return ellipsoid_volume()
