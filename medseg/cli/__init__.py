"""``medseg`` command line. Each subcommand lives in its own module with ``add_parser`` and ``run``.

Subcommand modules import only the standard library at module level; torch, MONAI and friends load
inside ``run`` so that ``medseg --help`` and ``medseg models list`` answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from medseg import __version__
from medseg.errors import MedsegError

#: subcommand name -> module (under medseg.cli) defining add_parser(subparsers) and run(args) -> int
SUBCOMMANDS: dict[str, str] = {
    "info": "info",
    "convert": "convert",
    "segment": "segment",
    "models": "models",
    "batch": "batch",
    "stats": "stats",
    "prompt": "prompt",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg", description="Segment organs and tumours in 3D medical volumes.")
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(f"medseg.cli.{module}")
        except ModuleNotFoundError as err:  # a subcommand not built yet in this checkout
            if err.name != f"medseg.cli.{module}":
                raise
            continue
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medseg`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Third-party libraries log at WARNING; medseg's own messages at INFO (DEBUG with -v).
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("medseg").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.run(args) or 0)
    except MedsegError as err:
        if args.verbose:
            raise
        print(f"medseg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and friends
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except KeyboardInterrupt:
        print(f"medseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
