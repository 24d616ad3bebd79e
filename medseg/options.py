"""The one resolver for enumerated string options, with "did you mean" (after MONAI's ``look_up_option``).

Pure standard library. Every string option medseg accepts from a user (a spec key, a CLI choice, a model
name) is resolved here, so each wrong value gets the same kind of message: the valid choices and the
closest ones.

>>> from enum import Enum
>>> class Blend(str, Enum):
...     CONSTANT = "constant"
...     GAUSSIAN = "gaussian"
>>> look_up_option("gaussian", Blend, "blend")
<Blend.GAUSSIAN: 'gaussian'>
>>> look_up_option("gausian", Blend, "blend")
Traceback (most recent call last):
...
ValueError: blend must be one of 'constant', 'gaussian', got 'gausian' (did you mean 'gaussian'?)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from enum import Enum
from typing import Any

__all__ = ["choice_values", "close_matches", "did_you_mean", "look_up_option"]


def choice_values(supported: type[Enum] | Iterable[str]) -> list[str]:
    """The accepted spellings of ``supported`` (an Enum's values, or the strings themselves), in order."""
    if isinstance(supported, type) and issubclass(supported, Enum):
        return [str(e.value) for e in supported]
    return [str(s) for s in supported]


def close_matches(value: Any, supported: type[Enum] | Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` choices that look like ``value`` (``difflib`` ratio >= 0.6), best first."""
    if not isinstance(value, str):
        return []
    return difflib.get_close_matches(value, choice_values(supported), n=n)


def did_you_mean(value: Any, supported: type[Enum] | Iterable[str], quote: bool = True) -> str:
    """``" (did you mean 'a', 'b'?)"`` for the closest choices, or ``""`` when none is close."""
    close = close_matches(value, supported)
    if not close:
        return ""
    return f" (did you mean {', '.join(repr(c) if quote else c for c in close)}?)"


def look_up_option(
    value: Any,
    supported: type[Enum] | Iterable[str],
    name: str,
    *,
    error: type[Exception] = ValueError,
    sep: str = " ",
) -> Any:
    """``value`` resolved against ``supported``: the Enum member, or the matching string.

    Args:
        value: what the user gave (an Enum member of ``supported`` is returned as is).
        supported: an Enum class (matched on its values) or a sequence of accepted strings.
        name: what the option is called in the message (``"inferer.blend"``, ``"--device"``).
        error: the exception type raised (``ValueError``; :class:`~medseg.errors.ModelError` for specs).
        sep: between ``name`` and ``must be one of`` (``": "`` for key paths in specs).

    Raises:
        error: ``"{name}{sep}must be one of 'a', 'b', got 'x' (did you mean 'a'?)"``.
    """
    is_enum = isinstance(supported, type) and issubclass(supported, Enum)
    if is_enum:
        if isinstance(value, supported):
            return value
        try:
            return supported(value)  # type: ignore[call-arg,operator]
        except (ValueError, TypeError):
            pass
    else:
        supported = tuple(supported)
        if isinstance(value, str) and value in supported:
            return value
    choices = ", ".join(repr(c) for c in choice_values(supported))
    raise error(f"{name}{sep}must be one of {choices}, got {value!r}{did_you_mean(value, supported)}")
