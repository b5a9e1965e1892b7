"""Reports on a synthetic cohort side by side: significant genes against the known links.

    python -m benchmarks.compare_reports COHORT/truth.json LABEL=REPORT_DIR [LABEL=REPORT_DIR ...]

REPORT_DIR is a `report/` folder (`train`'s `BUNDLE/report` or `baseline`'s
`OUT/report`). Prints a Markdown table: genes evaluated, significant genes at
alpha = 0.05 (Holm-Sidak, r > 0), how many of them truth.json links to a tumour factor,
how many linked genes were found, how many null genes came out significant, and the
mean out-of-fold r of the linked and of the null genes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from RadioGenomicsLib.synth import score_against_truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("truth", type=Path)
    parser.add_argument("reports", nargs="+", metavar="LABEL=REPORT_DIR")
    args = parser.parse_args()
    print("| | genes | significant at 0.05 | of them truly linked | linked genes found "
          "| null genes significant | mean r, linked / null |")
    print("|---|---|---|---|---|---|---|")
    for item in args.reports:
        label, _, folder = item.partition("=")
        row = score_against_truth(args.truth, folder)
        print(f"| {label} | {row['genes']:,} | {row['significant']} | "
              f"{row['significant_linked']} | {row['significant_linked']} of {row['linked']} | "
              f"{row['null_significant']} of {row['null']:,} | "
              f"{row['r_linked']:.3f} / {row['r_null']:.3f} |")


if __name__ == "__main__":
    main()
