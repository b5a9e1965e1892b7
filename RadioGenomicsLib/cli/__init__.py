"""The `radiogenomics` command line.

One module per subcommand in this package, each with `register(subparsers)` that adds
its parser and sets `run=function(args) -> int`. Exit codes: 0 done; 2 bad input (one
line on stderr naming the file and the problem); 1 an internal error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from RadioGenomicsLib import __version__
from RadioGenomicsLib.errors import InputError

# in the order `radiogenomics --help` lists them
SUBCOMMANDS = ("preprocess", "expression", "manifest", "synth", "train", "baseline", "evaluate",
               "predict", "map", "export", "info")


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except InputError as error:
        print(f"radiogenomics {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"radiogenomics {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
