"""What a model takes, and reading a scan (or several) into the one volume it takes.

:func:`model_contract` reads a model's input contract (channel count and names, modality) without
building its network, so a wrong input is refused before any model loads. :func:`read_input` turns the
user's input into one volume: a single scan (one volume of a 4D scan with ``--volume``), one file of an
nnU-Net case (``CASE_0000.nii.gz``: all its channel files are read), or named channels (``--channel``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.channels import nnunet_channel_files, order_channels, stack_channels
from medseg.errors import InputError, ModelError, ReadError
from medseg.input_checks import select_volume

if TYPE_CHECKING:  # pragma: no cover
    from medseg.config import ModelSpec
    from medseg.types import Volume

__all__ = ["ModelContract", "model_contract", "read_input"]


@dataclass(frozen=True)
class ModelContract:
    """A model's input contract: channel count and names; the spec when it is known before loading."""

    name: str
    channels: int
    channel_names: tuple[str, ...] = ()
    spec: ModelSpec | None = None


def _unique(names: list[str]) -> tuple[str, ...]:
    low = [n.strip().lower().replace(" ", "_") for n in names]
    if len(set(low)) == len(low):
        return tuple(low)
    return tuple(f"{n}{i}" for i, n in enumerate(low))


def model_contract(model: str | Path) -> ModelContract:
    """The input contract of ``--model`` (registry name, spec, bundle, nnU-Net folder), loading no network.

    An nnU-Net results folder gives its ``dataset.json`` channel names (lower-cased; numbered when they
    repeat); its spec is only built when the model loads (``spec`` is then ``None``).
    """
    folder = Path(str(model)).expanduser()
    dataset = folder / "dataset.json"
    if folder.is_dir() and dataset.is_file() and not (folder / "configs").is_dir():
        try:
            channels: Any = json.loads(dataset.read_text(encoding="utf-8")).get("channel_names")
        except (OSError, ValueError, AttributeError) as err:
            raise ModelError(f"cannot read dataset.json: {err}", dataset) from None
        if not isinstance(channels, dict) or not channels:
            raise ModelError("dataset.json has no 'channel_names'", dataset)
        try:
            ordered = [str(channels[k]) for k in sorted(channels, key=int)]
        except (TypeError, ValueError):
            raise ModelError("dataset.json 'channel_names' keys must be channel numbers", dataset) from None
        return ModelContract(folder.name, len(ordered), _unique(ordered))
    from medseg.models.loaders import load_model_spec

    spec = load_model_spec(model)
    return ModelContract(spec.name, spec.input.channels, tuple(spec.input.channel_names), spec)


def read_input(
    contract: ModelContract,
    input: str | Path | None = None,
    channels: Mapping[str, str] | None = None,
    *,
    series: str | None = None,
    irregular: str = "error",
    volume: int | str | None = None,
) -> Volume:
    """The one volume the model takes, from ``input`` or from named ``channels``.

    Args:
        contract: from :func:`model_contract`.
        input: one scan; for a multi-channel model, a ready 4D stack or one file of an nnU-Net case.
        channels: ``{name: path}`` (``--channel NAME=PATH``), every channel of the model named.
        series: DICOM series of ``input`` (not with ``channels``).
        irregular: ``error`` or ``resample`` for irregular DICOM slice grids.
        volume: volume of a 4D scan (``--volume``), applied to every channel read.

    Raises:
        InputError: both or neither of ``input`` and ``channels``; channels missing or unknown; channels that
            do not overlap in space; an nnU-Net case with another channel count than the model's.
        ReadError: a file cannot be read.
    """
    from medseg.io import read

    if channels and input is not None:
        raise InputError("give INPUT or --channel NAME=PATH, not both")
    if channels:
        if series is not None:
            raise InputError("--series applies to a single INPUT; give each channel's series folder with --channel")
        ordered = order_channels(channels, contract.channel_names, contract.name)
        vols = []
        for name, path in ordered:
            if not Path(path).expanduser().exists():
                raise ReadError(f"no such file or directory (channel {name})", path)
            vols.append((name, select_volume(read(path, irregular=irregular), volume)))
        return stack_channels(vols)
    if input is None:
        raise InputError("missing INPUT (or --channel NAME=PATH for each channel)")
    if not Path(input).expanduser().exists():
        raise ReadError("no such file or directory", input)
    group = nnunet_channel_files(input) if contract.channels > 1 else None
    if group is not None and series is None:
        if len(group) != contract.channels:
            raise InputError(
                f"nnU-Net case has {len(group)} channel file(s) ({', '.join(p.name for p in group)}); model "
                f"{contract.name} takes {contract.channels}",
                Path(input).parent,
            )
        names = contract.channel_names or tuple(f"{i:04d}" for i in range(len(group)))
        return stack_channels([(n, select_volume(read(p, irregular=irregular), volume)) for n, p in zip(names, group)])
    return select_volume(read(input, series=series, irregular=irregular), volume)
