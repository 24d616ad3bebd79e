"""SAM-assisted slice prompting: prompt a slice with points/box/mask, propagate through the volume.

No Qt, and no torch at import time: the heavy parts load when a model is built or a slice is encoded.

LiteMedSAM (the default, offline) with the CVPR 2024 challenge's box protocol::

    from medseg.sam import LiteMedSAM, BoxSession
    session = BoxSession(LiteMedSAM.load(), volume)               # uint8 intensities, SimpleITK planes
    mask2d = session.slice2d(2, 40, box=(60, 70, 120, 140))       # (J, I) plane mask, box = (i0, j0, i1, j1)
    mask3d = session.box3d(2, (60, 70, 30, 120, 140, 50))         # (I, J, K) mask, 3D box i0 j0 k0 i1 j1 k1

Interactive annotation (what the napari SAM widget drives), no Qt::

    from medseg.sam import AnnotationSession
    session = AnnotationSession(LiteSession(LiteMedSAM.load(), volume), volume.shape)
    session.set_box(2, 40, [(60, 70, 40), (120, 140, 40)])    # voxel (i, j, k) corners
    session.segment(2, 40)                                    # the pending candidate
    session.accept(labels, label_id=3).apply(labels)          # the changed voxels; undo() reverts them

Other SAM models::

    from medseg.sam import load_model, SamSession, SlicePrompt, propagate, write_label
    model = load_model("sam_vit_b")                       # registry name; downloads + verifies
    session = SamSession(model, volume, window="ct_soft_tissue")
    job = session.precompute(axis=2, index=40, radius=5)  # background embeddings
    res = session.segment(2, 40, SlicePrompt(points=[(120, 88)], labels=[1]))
    obj = propagate(session, 2, {40: SlicePrompt(points=[(120, 88)], labels=[1])})
    labels = write_label(label_map, obj.mask, label_id=3)
"""

from medseg.sam.annotate import AnnotationSession, Candidate, LabelChange
from medseg.sam.lite_session import LiteSession
from medseg.sam.protocol import BoxSession, LiteMedSAM
from medseg.sam.embed import Embedding, EmbeddingCache, EmbeddingKey, PrecomputeJob, SliceEncoder, volume_fingerprint
from medseg.sam.image import SliceFrame, Window, WindowPreset, frame_for, resolve_axis, slice_image, window_for
from medseg.sam.models import SamModel, build_sam2_network, build_sam_network, load_model, wrap_network
from medseg.sam.propagate import (
    CarryPrompt,
    PropagationResult,
    StopReason,
    StopRule,
    prompt_from_mask,
    propagate,
    propagate_sam2,
    write_label,
    write_label_array,
    write_slice_label,
)
from medseg.sam.registry import CHECKPOINTS, CheckpointSpec, Family, PixelNorm, get_checkpoint, list_checkpoints, resolve_checkpoint
from medseg.sam.segment import SamSession, decode
from medseg.sam.slices import SlicePrompt, SliceResult

__all__ = [
    "AnnotationSession", "BoxSession", "Candidate", "LabelChange", "LiteMedSAM", "LiteSession",
    "CHECKPOINTS", "CarryPrompt", "CheckpointSpec", "Embedding", "EmbeddingCache", "EmbeddingKey", "Family",
    "PixelNorm", "PrecomputeJob", "PropagationResult", "SamModel", "SamSession", "SliceEncoder", "SliceFrame",
    "SlicePrompt", "SliceResult", "StopReason", "StopRule", "Window", "WindowPreset", "build_sam2_network",
    "build_sam_network", "decode", "frame_for", "get_checkpoint", "list_checkpoints", "load_model",
    "prompt_from_mask", "propagate", "propagate_sam2", "resolve_axis", "resolve_checkpoint", "slice_image",
    "volume_fingerprint", "window_for", "wrap_network", "write_label", "write_label_array",
    "write_slice_label",
]
