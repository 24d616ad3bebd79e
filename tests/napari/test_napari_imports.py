"""Every ``python_name`` in the npe2 manifest imports and is callable; the plugin is registered by its entry point."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

npe2 = pytest.importorskip("npe2")

MANIFEST = Path(__file__).resolve().parents[2] / "napari_plugin" / "napari.yaml"


def test_every_python_name_imports():
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    names = [cmd.python_name for cmd in manifest.contributions.commands]
    assert len(names) == 7
    for python_name in names:
        module, _, attr = python_name.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        assert callable(obj), python_name


def test_package_import_loads_no_qt():
    import subprocess
    import sys

    code = "import sys, medseg_napari; print(any(m.split('.')[0] in ('qtpy', 'PySide6', 'PyQt5', 'napari') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plugin_is_discovered_through_its_entry_point():
    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("medseg")
    assert {w.display_name for w in manifest.contributions.widgets} == {"Segment", "SAM prompt", "Save labels", "Labels"}
    assert manifest.contributions.writers[0].layer_types == ["labels"]
