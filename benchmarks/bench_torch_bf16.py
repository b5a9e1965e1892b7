"""torch on the CPU at bf16 (`--runtime torch --precision bf16`) against float32.

    python -m benchmarks.bench_torch_bf16 [--config paper] [--slices 8] [--genes 31793]
                                          [--repeats 3]

One untrained fold model of `--config`, `--slices` random 224x224 slices with the study's
4 channels: the encoder and the top-k head timed at float32 and at bf16 (the transformer
under autocast, the head's products in bf16; GenePredictor.set_precision), interleaved
round by round, median; and how close bf16's gene values are (r, top-50 genes shared).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from RadioGenomicsLib.model import GenePredictor, ModelConfig
from RadioGenomicsLib.runtime import cpu_has_bf16, cpu_name


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="paper")
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--genes", type=int, default=31793)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = GenePredictor(ModelConfig.preset(args.config), 4, args.genes).eval()
    x = torch.randn(1, args.slices, 4, 224, 224)
    mask = torch.ones(1, args.slices, dtype=torch.bool)
    times = {p: {"encoder": [], "head": []} for p in ("float32", "bf16")}
    values = {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for precision in ("float32", "bf16"):
                model.set_precision(precision)
                encoder_s, tokens = timed(lambda: model.encode(x, mask))
                head_s, genes = timed(lambda: model.predict_genes(tokens, mask))
                times[precision]["encoder"].append(encoder_s)
                times[precision]["head"].append(head_s)
                values[precision] = genes[0].numpy()
    full, half = values["float32"], values["bf16"]
    r = float(np.corrcoef(full, half)[0, 1])
    top = len(set(np.argsort(-full)[:50]) & set(np.argsort(-half)[:50]))
    print(f"CPU: {cpu_name()} (AVX-512 BF16 or AMX: {'yes' if cpu_has_bf16() else 'no'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.config}, "
          f"{args.slices} slices, {args.genes:,} genes, {args.repeats} rounds")
    print("| part | float32 s | bf16 s | float32 / bf16 |\n|---|---|---|---|")
    for part in ("encoder", "head"):
        a = statistics.median(times["float32"][part])
        b = statistics.median(times["bf16"][part])
        print(f"| {part} | {a:.2f} | {b:.2f} | {a / b:.2f}x |")
    print(f"gene values at bf16 vs float32: r = {r:.6f}; top-50 genes shared: {top} of 50")


if __name__ == "__main__":
    main()
