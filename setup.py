"""Package discovery only: the napari plugin lives in ``napari_plugin/`` but imports as ``medseg_napari``."""
from setuptools import find_packages, setup

napari_subpackages = ["medseg_napari." + p for p in find_packages(where="napari_plugin")]
setup(
    packages=find_packages(include=["medseg", "medseg.*"]) + ["medseg_napari", *napari_subpackages],
    package_dir={"medseg_napari": "napari_plugin"},
)
