"""``medseg batch`` argument and setup errors: clear one-line messages, exit code 2, nothing loaded in vain."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from medseg.cli import main
from medseg.errors import MedsegError


def test_missing_input_folder_fails_before_loading_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["batch", str(tmp_path / "nope"), "-o", str(tmp_path / "out"), "--model", "no-such-model"])
    assert code == 2
    assert f"{tmp_path / 'nope'}: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_option_values_are_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["batch", str(tmp_path), "-o", str(tmp_path / "o"), "--overlap", "1.5"])
    assert "overlap must be >= 0 and < 1, got 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["batch", str(tmp_path), "-o", str(tmp_path / "o"), "--threads", "0"])
    assert "expected a positive integer, got 0" in capsys.readouterr().err


def test_ray_missing_gives_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from medseg.batch.ray_backend import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(MedsegError, match=r"pip install 'medseg\[distributed\]'"):
        import_ray()
