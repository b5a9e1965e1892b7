"""`radiogenomics viewer`: the web viewer (RadioGenomics/Web, a trame-slicer app).

The viewer is a Slicer face that lives beside the Slicer module in the source tree and
needs Slicer's libraries (trame-slicer, slicer-core): it is imported only here, on use,
so that the library and the other subcommands never need them.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from RadioGenomicsLib.errors import InputError

# the Slicer module's folder: RadioGenomics/Web (the app) and RadioGenomics/RadioGenomicsLogic
MODULE_FOLDER = Path(__file__).resolve().parents[2] / "RadioGenomics"
VIEWER_PACKAGES = ("trame_slicer", "slicer", "trame_vuetify")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "viewer", help="the web viewer: studies, models, Predict and gene maps in a browser",
        description="Serve the RadioGenomics viewer (slice views, 3D, the gene table and "
                    "maps) to a web browser. It listens on 127.0.0.1 unless --host says "
                    "otherwise; any other address needs the access token it prints.")
    parser.add_argument("--models", metavar="DIR", action="append", default=[],
                        help="a folder of model bundles (or one bundle); repeat")
    parser.add_argument("--study", metavar="PATH", action="append", default=[],
                        help="a study folder (or file) the page may open; repeat")
    parser.add_argument("--port", type=int, default=8080,
                        help="port to listen on (default 8080; 0: any free port)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1, this machine only)")
    parser.add_argument("--token", default=None,
                        help="access token for a non-loopback --host (default: generated)")
    parser.add_argument("--work", metavar="DIR", default=None,
                        help="the session's folder for uploads and runs (default: a new "
                             "temporary folder, removed on exit)")
    parser.add_argument("--upload-limit-mb", type=int, default=2048, metavar="MB",
                        help="largest file the page accepts, in MB (default 2048)")
    parser.add_argument("--demo", metavar="DIR", default="demo-out",
                        help="`make demo` output for \"Load sample\" (default demo-out); "
                             "without it the sample's model is untrained")
    parser.add_argument("--pacs", metavar="URL",
                        help="a DICOMweb server (e.g. http://pacs:8042/dicom-web) whose studies "
                             "the page lists and opens, and where it sends DICOM results; "
                             "credentials only from RADIOGENOMICS_PACS_USER and "
                             "RADIOGENOMICS_PACS_PASSWORD or RADIOGENOMICS_PACS_CREDENTIALS")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    missing = [name for name in VIEWER_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(None, f"the viewer needs {', '.join(missing)} (Slicer's libraries): "
                               "`make viewer` installs them in .venv-slicer and starts it")
    if not (MODULE_FOLDER / "Web" / "app.py").is_file():
        raise InputError(MODULE_FOLDER, "the viewer's source (RadioGenomics/Web) is not here: "
                                        "run it from a source checkout")
    sys.path.insert(0, str(MODULE_FOLDER))
    from Web import app  # noqa: PLC0415  (the viewer environment only)

    return app.main(args)
