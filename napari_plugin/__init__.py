"""napari plugin for medseg (imported as ``medseg_napari``): readers, writer, sample data and dock widgets.

UI wiring only: every computation is a :mod:`medseg` call. Importing this package loads no Qt or napari;
npe2 imports the modules named in ``napari.yaml`` only when a command runs.
"""

__version__ = "0.1.0"
