"""medseg: segment organs and tumours in 3D medical volumes.

The package root imports no torch: ``import medseg`` is fast, heavy parts load on use.
"""

from medseg.errors import MedsegError, ReadError, WriteError
from medseg.types import Geometry, Label, SourceInfo, Volume

__version__ = "0.1.0"

__all__ = ["Geometry", "Label", "MedsegError", "ReadError", "SourceInfo", "Volume", "WriteError", "__version__"]
