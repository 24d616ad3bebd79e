"""Read the config files medseg parses (model specs, bundle configs, nnU-Net plans/dataset.json) safely.

Every file is untrusted: its size is capped before it is read, its nesting depth and node count are capped
after it is parsed (YAML aliases counted each time they are used), and every parser failure comes out as
one :class:`~medseg.errors.ModelError` line naming the file. Standard library + PyYAML; no torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from medseg.errors import ModelError

__all__ = [
    "MALFORMED",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "check_tree",
    "one_line",
    "parse_json_text",
    "parse_yaml_text",
    "read_config_text",
]


#: largest config file read (bytes); env ``MEDSEG_MAX_CONFIG_BYTES``
MAX_CONFIG_BYTES = 16 << 20
#: deepest nesting of lists/mappings accepted in a config
MAX_CONFIG_DEPTH = 40
#: most list items + mapping entries in one config (aliases counted each time they are used)
MAX_CONFIG_NODES = 1_000_000
#: Python exceptions a crafted config can provoke inside a parser; turned into one-line ModelErrors
MALFORMED = (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError, OverflowError,
             RecursionError, MemoryError)


def one_line(text: Any, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs collapsed, control characters escaped), at most ``limit`` chars."""
    flat = " ".join(str(text).split())
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def read_config_text(path: str | PathLike[str], what: str) -> str:
    """The text of a config file, refusing files over :data:`MAX_CONFIG_BYTES`.

    Raises:
        ModelError: missing, unreadable, not UTF-8, or too large (names ``MEDSEG_MAX_CONFIG_BYTES``).
    """
    p = Path(path)
    try:
        limit = int(os.environ.get("MEDSEG_MAX_CONFIG_BYTES") or MAX_CONFIG_BYTES)
    except ValueError:
        limit = MAX_CONFIG_BYTES
    try:
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise ModelError(f"{what} not found", p) from None
    except OSError as err:
        raise ModelError(f"cannot read {what}: {err.strerror or err}", p) from None
    if len(data) > limit:
        raise ModelError(f"{what} is larger than {limit} bytes (raise MEDSEG_MAX_CONFIG_BYTES if it is genuine)", p)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ModelError(f"{what} is not UTF-8 text (byte {err.start})", p) from None


def check_tree(data: Any, file: str | PathLike[str] | None = None, what: str = "config") -> Any:
    """Refuse configs nested deeper than :data:`MAX_CONFIG_DEPTH` or larger than :data:`MAX_CONFIG_NODES`
    (YAML aliases count each time they are used: a 'billion laughs' document is refused). Iterative.

    Raises:
        ModelError: naming the key path where a limit was crossed.
    """
    nodes = 0
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, Mapping):
            items = [(f"{where}.{k}" if where else str(k), v) for k, v in node.items()]
        elif isinstance(node, (list, tuple)):
            items = [(f"{where}[{i}]", v) for i, v in enumerate(node)]
        else:
            continue
        if depth >= MAX_CONFIG_DEPTH:
            raise ModelError(f"{one_line(where or '<root>', 120)}: {what} is nested deeper than {MAX_CONFIG_DEPTH} levels",
                             file)
        nodes += len(items)
        if nodes > MAX_CONFIG_NODES:
            raise ModelError(f"{one_line(where or '<root>', 120)}: {what} has more than {MAX_CONFIG_NODES} "
                             "entries (YAML aliases count each time they are used)", file)
        stack.extend((v, w, depth + 1) for w, v in items if isinstance(v, (Mapping, list, tuple)))
    return data


def parse_json_text(text: str, file: str | PathLike[str], what: str) -> Any:
    """``json.loads`` with medseg's limits: one-line :class:`ModelError` on bad or too-deep JSON."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ModelError(f"{what} is nested too deeply to parse", file) from None
    except ValueError as err:
        raise ModelError(f"cannot read JSON: {one_line(err)}", file) from None
    return check_tree(data, file, what)


def parse_yaml_text(text: str, file: str | PathLike[str], what: str) -> Any:
    """``yaml.safe_load`` with medseg's limits: one-line :class:`ModelError` on bad or too-deep YAML."""
    import yaml

    if text.count("[") + text.count("{") > 4 * MAX_CONFIG_NODES:
        raise ModelError(f"{what} has too many nested collections", file)
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ModelError(f"{what} is nested too deeply to parse", file) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or err
        raise ModelError(f"invalid YAML in {what}{where}: {one_line(problem, 160)}", file) from None
    except MALFORMED as err:
        raise ModelError(f"invalid YAML in {what}: {type(err).__name__}: {one_line(err, 160)}", file) from None
    return check_tree(data, file, what)
