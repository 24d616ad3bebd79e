"""Run nnU-Net v2 results folders (and TotalSegmentator's nnU-Net models) with medseg.

``medseg segment --model path/to/nnUNet_results/DatasetXXX_Name/Trainer__Plans__Config`` or
``NnUNetPredictor(folder).predict(volume)``. Plans and labels are read without torch
(:mod:`medseg.nnunet.plans`); checkpoints are loaded weights-only (:mod:`medseg.nnunet.checkpoint` explains
exactly what that allows); inference reproduces nnU-Net's preprocessing, tiling and export
(:mod:`medseg.nnunet.predictor`). Needs the ``nnunet`` extra (``dynamic-network-architectures``), not nnunetv2.
"""

from __future__ import annotations

from typing import Any

from medseg.nnunet.plans import NnUNetModel, is_nnunet_folder, read_model_folder

__all__ = ["NnUNetModel", "NnUNetPredictor", "is_nnunet_folder", "read_model_folder"]


def __getattr__(name: str) -> Any:  # lazy: the predictor imports numpy/scipy/torch machinery
    if name == "NnUNetPredictor":
        from medseg.nnunet.predictor import NnUNetPredictor

        return NnUNetPredictor
    raise AttributeError(f"module 'medseg.nnunet' has no attribute {name!r}")
