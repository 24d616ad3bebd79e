"""Package discovery only.

* The napari plugin lives in ``napari_plugin/`` but imports as ``medseg_napari``.
* Model specs live in ``configs/`` at the top level and install as ``medseg/configs`` in wheels
  (the registry also reads the top-level folder directly in a source checkout).
"""
from setuptools import find_packages, setup

napari_subpackages = ["medseg_napari." + p for p in find_packages(where="napari_plugin")]
setup(
    packages=find_packages(include=["medseg", "medseg.*"]) + ["medseg_napari", *napari_subpackages, "medseg.configs"],
    package_dir={"medseg_napari": "napari_plugin", "medseg.configs": "configs"},
)
