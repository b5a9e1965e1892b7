"""The `radiogenomics` command line.

One module per subcommand in this package, each with `register(subparsers)` that adds
its parser and sets `run=function(args) -> int`. Exit codes: 0 done; 2 bad input or an
operating-system error (permissions, disk full, read-only: one line on stderr naming the
file and the problem); 130 interrupted; 1 an internal error (a bug: with a traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from RadioGenomicsLib import __version__
from RadioGenomicsLib.errors import InputError

# in the order `radiogenomics --help` lists them
SUBCOMMANDS = ("preprocess", "expression", "manifest", "synth", "train", "baseline", "evaluate",
               "compare", "predict", "map", "export", "export_dicom", "info", "viewer", "sign")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radiogenomics",
        description="Predict a tumour's RNA-Seq expression profile from CT or MRI.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def os_error_line(error: OSError, args: argparse.Namespace) -> str:
    """`PATH: reason` for an operating-system error; the output named when the error names
    no file (a full disk seen by a writer that does not say which file)."""
    reason = error.strerror or str(error) or type(error).__name__
    path = error.filename or getattr(args, "out", None)
    if error.filename2:
        path = f"{error.filename} -> {error.filename2}"
    return f"{path}: {reason}" if path else reason


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except InputError as error:
        print(f"radiogenomics {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"radiogenomics {args.command}: error: {os_error_line(error, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"radiogenomics {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
