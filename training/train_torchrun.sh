#!/usr/bin/env bash
# Train one cohort with DistributedDataParallel over the GPUs of one machine (NCCL), or
# over CPU processes (gloo) with --device cpu:
#   NPROC=4 training/train_torchrun.sh RECIPE MANIFEST EXPRESSION SHEET OUT [extra args]
# Every process draws the same batches and takes its share, so the result matches a
# single-process run up to float rounding; batch_patients should be a multiple of NPROC.
set -euo pipefail
recipe=$1 manifest=$2 expression=$3 sheet=$4 out=$5
shift 5
nproc=${NPROC:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
exec python -m torch.distributed.run --standalone --nproc_per_node "$nproc" -m RadioGenomicsLib \
    train --config "$recipe" --manifest "$manifest" --expression "$expression" \
    --sample-sheet "$sheet" --out "$out" "$@"
