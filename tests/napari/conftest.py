"""napari tests: load torch's optional compiler stack before any OpenGL context exists.

MONAI, torchvision and segment-anything import ``torch._dynamo``, which imports ``triton``; loading triton
after Mesa's software OpenGL (llvmpipe, as under Xvfb) has loaded its own LLVM crashes the process. Loading
it first is safe (see ``medseg_napari._workers.avoid_llvm_clash`` for what the plugin does at run time).
"""

from __future__ import annotations

try:
    import torch._dynamo  # noqa: F401
except ImportError:  # pragma: no cover - torch is a core dependency
    pass


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _private_save_folder(tmp_path, monkeypatch):
    """The Save widget remembers its folder in $XDG_CONFIG_HOME and falls back to ~/medseg-labels: keep both
    inside the test's tmp_path (never the user's home)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    return home
