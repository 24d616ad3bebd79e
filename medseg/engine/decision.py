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

__all__ = ["Decision", "Rule", "Margins"]

#: voxels per chunk when summing margins (bounds the temporaries: top-2 scores, int64 labels, float64 weights)
_TALLY_CHUNK = 1 << 22


class Margins:
    """Running per-label sums of the decision margin: the quality score's accumulator (see README
    "Quality score").

    The margin of a voxel is how clearly the decision chose its label, in ``[0, 1]``: for ``argmax`` the
    top-1 minus the top-2 probability; for ``threshold`` ``(p - t) / (1 - t)`` of the channel that painted
    it (``|p - 0.5| * 2`` at ``t = 0.5``). :meth:`Decision.tally` adds scores as they are decided (a whole
    volume or one finished cell at a time), so no full-size array is kept. Scores that are not probabilities
    (a value outside ``[0, 1]``, e.g. logits of ``activation: none``) make the score undefined
    (:meth:`mean` returns ``{}``).

    >>> m = Margins(); m.add(np.array([1, 1, 2]), np.array([0.5, 1.0, 0.2])); m.mean()
    {1: 0.75, 2: 0.2}
    """

    def __init__(self) -> None:
        self.sums: dict[int, float] = {}
        self.counts: dict[int, int] = {}
        self.valid = True

    def add(self, labels: Any, margins: Any) -> None:
        """Add ``margins`` (same shape as ``labels``, numpy or torch) to the sums of their voxels' labels
        (background 0 excluded)."""
        lab = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).reshape(-1)
        mar = np.asarray(margins.cpu() if hasattr(margins, "cpu") else margins).reshape(-1)
        for start in range(0, lab.size, _TALLY_CHUNK):
            lc = lab[start:start + _TALLY_CHUNK].astype(np.int64)
            counts = np.bincount(lc)
            sums = np.bincount(lc, weights=mar[start:start + _TALLY_CHUNK].astype(np.float64))
            for lid in np.nonzero(counts[1:])[0] + 1:
                self.sums[int(lid)] = self.sums.get(int(lid), 0.0) + float(sums[lid])
                self.counts[int(lid)] = self.counts.get(int(lid), 0) + int(counts[lid])

    def mean(self) -> dict[int, float]:
        """Mean margin of every label decided at least once, ``{label id: score in [0, 1]}``."""
        if not self.valid:
            return {}
        return {lid: round(min(1.0, max(0.0, self.sums[lid] / n)), 6) for lid, n in sorted(self.counts.items()) if n}


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

    def margins(self, scores: torch.Tensor) -> torch.Tensor:
        """``(C, ...)`` probabilities → ``(...)`` float32 margin of the label each voxel gets (see
        :class:`Margins`; background voxels of a threshold decision get 0)."""
        import torch

        p = scores.float()
        if self.rule is Rule.ARGMAX:
            if p.shape[0] < 2:
                return (p[0] - 0.5).abs() * 2
            top = p.topk(2, dim=0).values
            return top[0] - top[1]
        out = torch.zeros(tuple(p.shape[1:]), dtype=torch.float32, device=p.device)
        span = max(1.0 - self.threshold, 1e-6)
        for ch, _ in self._pairs(p.shape[0]):
            hit = p[ch] > self.threshold
            out[hit] = (p[ch][hit] - self.threshold) / span
        return out

    def tally(self, scores: torch.Tensor, margins: Margins | None, labels: torch.Tensor | None = None) -> None:
        """Add the margins of ``scores`` ``(C, ...)`` (decided here, or ``labels`` when already decided from
        them) to ``margins``; nothing when ``margins`` is ``None``. Scores outside ``[0, 1]`` invalidate it."""
        if margins is None or not margins.valid:
            return
        if scores.numel() and (float(scores.min()) < -1e-4 or float(scores.max()) > 1 + 1e-4):
            margins.valid = False
            return
        step = max(1, _TALLY_CHUNK // max(1, int(np.prod(scores.shape[2:])) * scores.shape[0]))
        for i in range(0, scores.shape[1], step):  # chunks along the first spatial axis
            part = scores[:, i:i + step]
            lab = self.labels(part) if labels is None else labels[i:i + step]
            margins.add(lab, self.margins(part))

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
