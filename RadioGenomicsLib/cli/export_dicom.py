"""`radiogenomics export-dicom`: a prediction run's results as DICOM objects for a PACS."""

from __future__ import annotations

import argparse

from RadioGenomicsLib.cli.common import add_sr_genes_argument


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-dicom", help="a prediction run's results as DICOM (SEG, maps, SR, PDF)",
        description="Write the results of a prediction run whose study was read from DICOM "
                    "into the source study: the tumour as DICOM SEG, each --gene's map as a "
                    "Parametric Map, the gene table as a Comprehensive SR, a one-page PDF "
                    "report and its Secondary Capture. Research use only.")
    parser.add_argument("--run", required=True, metavar="DIR", dest="run_folder",
                        help="a prediction run folder (`radiogenomics predict --run DIR`)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for the DICOM files and report.pdf (replaced whole)")
    parser.add_argument("--gene", action="append", default=[], metavar="SYMBOL",
                        help="a gene (symbol or Ensembl id) whose map to include; repeat "
                             "(the first is shown on the report page)")
    parser.add_argument("--model", metavar="BUNDLE",
                        help="the bundle that made the run, if it moved since")
    add_sr_genes_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.bundle import load_bundle
    from RadioGenomicsLib.dicom_export import export_run
    from RadioGenomicsLib.run import open_run

    from RadioGenomicsLib.outputs import Output, check_outputs

    check_outputs("export-dicom", [Output(args.out, "folder")], [args.run_folder, args.model])
    bundle = load_bundle(args.model, verify_checksums=False) if args.model else None
    result, bundle = open_run(args.run_folder, bundle)
    for path in export_run(result, bundle, args.out, args.gene, args.sr_genes):
        print(f"DICOM -> {path}" if path.suffix == ".dcm" else f"report -> {path}")
    return 0
