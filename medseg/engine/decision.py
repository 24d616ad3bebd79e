"""The one label decision: activated scores ``(C, ...)`` → integer labels (argmax, threshold, channel map).

Used on whole score volumes (:func:`medseg.engine.export.export_labels`), on finished cells
(:mod:`medseg.infer.slab`) and over channels arriving one at a time (nnU-Net's export). Imports no torch at
module level.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.config import Decision as Rule
from medseg.config import OutputSpec
from medseg.labels import label_dtype, torch_label_dtype
from medseg.types import Label

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Decision", "Rule"]


@dataclass(frozen=True)
class Decision:
    """Activated scores ``(C, ...)`` → integer labels ``(...)``: the one argmax/threshold/channel-map rule.

    - ``argmax``: the channel index is the label id (the first maximum wins);
    - ``threshold``: ``channel_labels`` ``((channel, label_id), ...)`` are painted in order where the channel
      is ``> threshold`` (later ones win); without them, with one label, channel 0 (one channel, sigmoid) or
      the last channel (softmax) paints ``default_label``.

    Labels have :func:`medseg.labels.label_dtype` of ``max_id``.

    >>> import torch
    >>> Decision(Rule.ARGMAX, max_id=2)(torch.tensor([[0.1, 0.7], [0.6, 0.2], [0.3, 0.1]])).tolist()
    [1, 0]
    """

    rule: Rule = Rule.ARGMAX
    max_id: int = 1
    threshold: float = 0.5
    channel_labels: tuple[tuple[int, int], ...] = ()
    default_label: int = 1

    @classmethod
    def for_output(cls, output: OutputSpec, labels: tuple[Label, ...]) -> Decision:
        """The decision a model spec's ``output`` section and labels describe."""
        return cls(
            rule=output.decision,
            max_id=max((lab.id for lab in labels), default=1),
            threshold=float(output.threshold),
            channel_labels=tuple(tuple(p) for p in output.channel_labels or ()),
            default_label=labels[0].id if labels else 1,
        )

    @property
    def dtype(self) -> np.dtype:
        """Numpy dtype of the labels."""
        return label_dtype(self.max_id)

    @property
    def torch_dtype(self) -> Any:
        """Torch dtype of the labels."""
        return torch_label_dtype(self.max_id)

    def _pairs(self, n_channels: int) -> tuple[tuple[int, int], ...]:
        return self.channel_labels or ((n_channels - 1 if n_channels > 1 else 0, self.default_label),)

    def labels(self, scores: torch.Tensor) -> torch.Tensor:
        """``(C, ...)`` tensor → ``(...)`` label tensor on the scores' device."""
        import torch

        if self.rule is Rule.ARGMAX:
            return scores.argmax(dim=0).to(self.torch_dtype)
        out = torch.zeros(tuple(scores.shape[1:]), dtype=self.torch_dtype, device=scores.device)
        for ch, lid in self._pairs(scores.shape[0]):
            out[scores[ch] > self.threshold] = lid
        return out

    def __call__(self, scores: torch.Tensor) -> np.ndarray:
        """``(C, ...)`` tensor → ``(...)`` numpy labels."""
        return self.labels(scores).cpu().numpy()

    def over_channels(self, channels: Iterable[tuple[int, np.ndarray]], shape: tuple[int, ...]) -> np.ndarray:
        """The same decision over channels arriving one at a time (``(index, array)`` in index order), holding
        one channel plus the running result: argmax keeps a running maximum (a later channel wins only when
        strictly greater, as ``argmax``); threshold paints each channel's pairs as it arrives (so
        ``channel_labels`` must be in channel order; without them, one channel is channel 0)."""
        seg = np.zeros(shape, dtype=self.dtype)
        if self.rule is Rule.ARGMAX:
            best = None
            for c, ch in channels:
                if best is None:
                    best = np.array(ch, copy=True)
                    continue
                better = ch > best
                best[better] = ch[better]
                seg[better] = c
            return seg
        pairs = self.channel_labels or ((0, self.default_label),)
        if any(p[0] > q[0] for p, q in zip(pairs, pairs[1:])):
            raise ValueError(f"painting channels as they arrive needs channel_labels in channel order, got {pairs}.")
        for c, ch in channels:
            for pc, lid in pairs:
                if pc == c:
                    seg[ch > self.threshold] = lid
        return seg
