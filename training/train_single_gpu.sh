#!/usr/bin/env bash
# Train one cohort on one GPU: training/train_single_gpu.sh RECIPE MANIFEST EXPRESSION SHEET OUT [extra args]
#   e.g. training/train_single_gpu.sh training/tcga-gbm.json gbm/cohort.csv gbm/star gbm/gdc_sample_sheet.tsv models/tcga-gbm
# Re-run with --resume after a crash: it continues from OUT.work and ends with the same bundle.
set -euo pipefail
recipe=$1 manifest=$2 expression=$3 sheet=$4 out=$5
shift 5
exec radiogenomics train --config "$recipe" --manifest "$manifest" --expression "$expression" \
    --sample-sheet "$sheet" --out "$out" --device cuda "$@"
