"""The command line explains itself: a fast --help (no heavy library loaded) and help text
on every option of every subcommand."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from RadioGenomicsLib.cli import SUBCOMMANDS, build_parser

HEAVY = ("torch", "monai", "pandas", "scipy", "SimpleITK", "numpy", "matplotlib")

# prints every help page (as `radiogenomics [COMMAND] --help` does), then what was loaded
SHOW_ALL_HELP = """
import json, sys
from RadioGenomicsLib.cli import SUBCOMMANDS, build_parser
for command in [[]] + [[name.replace("_", "-")] for name in SUBCOMMANDS]:
    try:
        build_parser().parse_args(command + ["--help"])
    except SystemExit:
        pass
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})), file=sys.stderr)
"""


def test_help_loads_no_heavy_library():
    done = subprocess.run([sys.executable, "-c", SHOW_ALL_HELP], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120, check=True)
    assert "usage: radiogenomics predict" in done.stdout  # the pages were printed
    assert "usage: radiogenomics manifest" in done.stdout
    loaded = set(json.loads(done.stderr.strip().splitlines()[-1]))
    assert "RadioGenomicsLib" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def _parsers(parser: argparse.ArgumentParser, path: str):
    """(command path, parser) for the parser and every subparser under it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def silent_options(parser: argparse.ArgumentParser, name: str) -> list[str]:
    """Every option, argument and subcommand (but -h) of the parser tree without help text."""
    silent = []
    for path, each in _parsers(parser, name):
        for action in each._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {c.dest for c in action._choices_actions if (c.help or "").strip()}
                silent += [f"{path} {name}" for name in action.choices if name not in helped]
            elif not isinstance(action, argparse._HelpAction) and not (action.help or "").strip():
                silent.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return silent


def test_every_option_and_subcommand_has_help():
    parser = build_parser()
    assert len(list(_parsers(parser, "radiogenomics"))) > len(SUBCOMMANDS)  # all walked
    assert silent_options(parser, "radiogenomics") == []


def test_options_without_help_are_found():
    parser = argparse.ArgumentParser(prog="x")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("y", help="a command").add_argument("--quiet", metavar="N")
    commands.add_parser("z").add_argument("path", help="a file")
    assert silent_options(parser, "x") == ["x z", "x y --quiet"]
