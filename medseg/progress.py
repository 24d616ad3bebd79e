"""Progress reporting: a ``Callable[[int, int], None]`` receiving ``(done, total)``; tqdm adapter for the CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ProgressFn", "no_progress", "TqdmProgress"]

#: ``progress(done, total)``: called as work advances (units are the caller's, e.g. sliding windows).
ProgressFn = Callable[[int, int], None]


def no_progress(done: int, total: int) -> None:
    """The default: ignore progress."""


class TqdmProgress:
    """A progress callback drawing a tqdm bar on stderr (closes itself when ``done == total``)."""

    def __init__(self, desc: str = "", **tqdm_kwargs: Any) -> None:
        self.desc = desc
        self.kwargs = tqdm_kwargs
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self._bar is None or self._bar.total != total:
            self.close()
            self._bar = tqdm(total=total, desc=self.desc, leave=False, **self.kwargs)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
