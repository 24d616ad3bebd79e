"""Hostile model files built by the tests: a TorchScript module whose ``__setstate__`` writes a file."""

from __future__ import annotations

import warnings
from pathlib import Path


def evil_torchscript(path: Path, target: Path) -> Path:
    """Save a real segmentation TorchScript (1 -> 2 channels, softmax) whose ``__setstate__`` creates
    ``target`` (8 bytes ``A``) when the module is loaded with ``torch.jit.load``."""
    import torch
    from typing import Tuple  # noqa: UP035 - TorchScript needs typing.Tuple

    class Evil(torch.nn.Module):
        def __init__(self, target: str) -> None:
            super().__init__()
            self.target = target
            self.weight = torch.nn.Parameter(torch.tensor([-1.0, 1.0]).reshape(2, 1, 1, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(torch.nn.functional.conv3d(x, self.weight), 1)

        @torch.jit.export
        def __getstate__(self) -> Tuple[str, torch.Tensor, bool]:
            return (self.target, self.weight, self.training)

        @torch.jit.export
        def __setstate__(self, state: Tuple[str, torch.Tensor, bool]) -> None:
            self.target = state[0]
            self.weight = state[1]
            t = torch.from_file(self.target, shared=True, size=8, dtype=torch.uint8)
            t.fill_(65)
            self.training = bool(t.sum().item() < 0) or state[2]  # uses t: not optimised away

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(Evil(str(target))).save(str(path))
    return path


def tiny_volume(path: Path) -> Path:
    """A 12^3 NIfTI with a bright cube (what the evil network 'segments')."""
    import nibabel as nib
    import numpy as np

    arr = np.zeros((12, 12, 12), np.float32)
    arr[3:9, 3:9, 3:9] = 5.0
    nib.save(nib.Nifti1Image(arr, np.diag([1.0, 1.0, 1.0, 1.0])), str(path))
    return path


def spec_text(weights: Path, sha256: str | None = None) -> str:
    pin = f"  sha256: '{sha256}'\n" if sha256 else ""
    return (
        "name: evil\nnetwork: {torchscript: true}\n"
        f"weights:\n  source: {weights}\n{pin}"
        "input: {modality: any, orientation: null}\n"
        "output: {activation: none}\n"
        "labels: [{id: 1, name: cube}]\n"
    )


def hanging_torchscript(path: Path) -> Path:
    """A real TorchScript segmentation network (1 -> 2 channels) that never returns on inputs whose last
    spatial size is 7: a hostile model, or a bug, that hangs one case."""
    import torch

    class Hang(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.tensor([-1.0, 1.0]).reshape(2, 1, 1, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-1] == 7:
                n = 0
                while n >= 0:
                    n = n + 1
            return torch.softmax(torch.nn.functional.conv3d(x, self.weight), 1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(Hang()).save(str(path))
    return path
