"""The inference engine: the predictor contract, run options, runtime, inference plan and export.

- :mod:`medseg.engine.protocol`: the :class:`Predictor` protocol and the label volume all predictors return;
- :mod:`medseg.engine.options`: :class:`RunOptions` (device, precision, threads, overlap, TTA, memory budget);
- :mod:`medseg.engine.runtime`: device, precision, threads and autocast;
- :mod:`medseg.engine.plan`: the frozen inference plan (stitching, way back, what is resampled);
- :mod:`medseg.engine.decision`: the one label :class:`Decision` (argmax, threshold, channel map);
- :mod:`medseg.engine.export`: the one export step back to the source grid.

Importing the package imports no torch.
"""

from medseg.engine.options import RunOptions
from medseg.engine.protocol import Predictor

__all__ = ["Predictor", "RunOptions"]
