"""Encoder throughput against the machine's matrix-product ceiling.

    python -m benchmarks.bench_encoder [--device cpu|cuda] [--configs paper small]
                                       [--batch 8] [--repeats 5] [--compile]

The ceiling is a large square matrix product (float32 on the CPU, bf16 on CUDA where
the encoder runs under bf16 autocast). The encoder runs in eval mode without grad on a
batch of 4-channel 224x224 slices, plain and channels-last (and compiled with
--compile); its FLOPs are counted by torch.utils.flop_counter (2 per multiply-add).
The machine may be shared, so every timed encoder run is paired with a ceiling run
just before it and the ratio is taken per pair (median and best of `--repeats`).
Also times the gene head for one patient (default 31,793 genes, 32 slices). Prints
Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from contextlib import nullcontext
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from RadioGenomicsLib.model import GenePredictor, ModelConfig

CHANNELS = 4
Runner = Callable[[], None]


def seconds(run: Runner, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def matmul_runner(device: torch.device, dtype: torch.dtype, size: int) -> tuple[Runner, int]:
    """(size x size) @ (size x size), repeated on a GPU to outlast launch overheads."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    inner = 1 if device.type == "cpu" else 20

    def run() -> None:
        for _ in range(inner):
            a @ b

    return run, 2 * size**3 * inner


def encoder_flops(config: ModelConfig, batch: int) -> int:
    with torch.device("meta"):
        model = GenePredictor(config, CHANNELS, 1).eval()
    with FlopCounterMode(display=False) as counter:
        model.encoder(torch.zeros(batch, CHANNELS, config.image_size, config.image_size, device="meta"))
    return counter.get_total_flops()


def encoder_runner(config: ModelConfig, device: torch.device, batch: int, channels_last: bool,
                   compile: bool) -> Runner:
    model = GenePredictor(config, CHANNELS, 1).to(device)
    model.prepare_inference(channels_last=channels_last, compile=compile)
    images = torch.randn(batch, CHANNELS, config.image_size, config.image_size, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def run() -> None:
        with torch.no_grad(), autocast:
            model.encoder(images)

    return run


def head_seconds(config: ModelConfig, device: torch.device, genes: int, n_slices: int,
                 repeats: int) -> tuple[list[float], float]:
    """Time of the gene head (values, masking, top-k means, all k) for one patient, and its GFLOP."""
    model = GenePredictor(config, CHANNELS, genes).to(device).eval()
    tokens = torch.randn(1, n_slices, config.tokens_per_slice, config.hidden_size, device=device)
    mask = torch.ones(1, n_slices, dtype=torch.bool, device=device)

    def run() -> None:
        with torch.no_grad():
            model.predict_genes(tokens, mask)

    run()
    flops = 2 * genes * config.hidden_size * n_slices * config.tokens_per_slice
    return [seconds(run, device) for _ in range(repeats)], flops / 1e9


def spread(values: list[float], digits: int = 0) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=["paper", "small"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--genes", type=int, default=31793, help="gene count for the head timing")
    parser.add_argument("--head-slices", type=int, default=32, help="slices for the head timing")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    ceiling_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ceiling, ceiling_flops = matmul_runner(device, ceiling_dtype, args.matmul_size)
    ceiling()
    print(f"device: {name}; torch {torch.__version__}; ceiling: {args.matmul_size}^2 matmul "
          f"{str(ceiling_dtype).removeprefix('torch.')}")
    print("\n| setting | variant | GFLOP/slice | encoder GFLOP/s median (min-max) | matmul GFLOP/s "
          "median (min-max) | ratio median (best) | slices/s | first call s | load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    variants = [("plain", False, False), ("channels_last", True, False)]
    if args.compile:
        variants += [("compiled", False, True), ("channels_last+compiled", True, True)]
    for config_name in args.configs:
        config = ModelConfig.load(config_name)
        flops = encoder_flops(config, args.batch)
        per_slice = flops / args.batch / 1e9
        for label, channels_last, compile in variants:
            run = encoder_runner(config, device, args.batch, channels_last, compile)
            first = seconds(run, device)
            ceilings, rates = [], []
            for _ in range(args.repeats):
                ceilings.append(ceiling_flops / seconds(ceiling, device) / 1e9)
                rates.append(flops / seconds(run, device) / 1e9)
            ratios = [r / c for r, c in zip(rates, ceilings)]
            print(f"| {config.name}, batch {args.batch} | {label} | {per_slice:.1f} | {spread(rates)} | "
                  f"{spread(ceilings)} | {statistics.median(ratios):.2f} ({max(ratios):.2f}) | "
                  f"{statistics.median(rates) / per_slice:.1f} | {first:.1f} | "
                  f"{os.getloadavg()[0]:.1f} |", flush=True)


    print(f"\n| setting | gene head: {args.genes} genes, {args.head_slices} slices | GFLOP | "
          f"seconds median (min-max) | load avg |")
    print("|---|---|---|---|---|")
    for config_name in args.configs:
        config = ModelConfig.load(config_name)
        times, gflop = head_seconds(config, device, args.genes, args.head_slices, args.repeats)
        print(f"| {config.name} | {args.head_slices * config.tokens_per_slice} tokens, chunks of "
              f"{config.head_memory_mb:.0f} MB | {gflop:.0f} | {spread(times, 2)} | "
              f"{os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
