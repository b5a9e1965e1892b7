"""Training throughput of a recipe: patients and slices per second through the real loop.

    python -m benchmarks.bench_train [--device cpu|cuda] [--recipes small paper]
                                     [--patients 8] [--genes 2000] [--epochs 2]

Writes random 4-channel slices for `--patients` patients into a slice cache (as
`train` does) and times whole epochs of `training.loop._train_epoch`: the recipe's
batches (patients per step, slices drawn per patient), forward, MSE, backward and
AdamW, with bf16 autocast on CUDA. The first epoch (warm-up, allocator, kernels) is
reported apart. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from RadioGenomicsLib.training.cache import SliceCache
from RadioGenomicsLib.training.data import PatientSlices
from RadioGenomicsLib.training.loop import Runtime, _train_epoch, epoch_rng, start_model
from RadioGenomicsLib.training.recipe import load_recipe
from benchmarks.bench_encoder import seconds

CHANNELS = 4
SLICES_PER_PATIENT = 16


def synthetic_patients(folder: Path, patients: int, genes: int, size: int) -> PatientSlices:
    cache, rng = SliceCache(folder), np.random.default_rng(0)
    keys = {}
    for index in range(patients):
        key = f"patient{index:04d}"
        slices = rng.standard_normal((SLICES_PER_PATIENT, CHANNELS, size, size), np.float32)
        cache.store(key, slices.astype(np.float16), rng.standard_normal(4).astype(np.float32))
        keys[key] = key
    targets = rng.standard_normal((patients, genes)).astype(np.float32)
    return PatientSlices(cache, keys, targets, list(keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--recipes", nargs="+", default=["small", "paper"])
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after the warm-up")
    args = parser.parse_args([] if __name__ != "__main__" else None)
    device = torch.device(args.device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    print(f"device: {name}; torch {torch.__version__}; {args.patients} patients x "
          f"{SLICES_PER_PATIENT} slices, {args.genes} genes; load avg {os.getloadavg()[0]:.1f}")
    print("\n| recipe | patients/step x slices drawn | first epoch s | epoch s (timed) "
          "| training patients/s | slices/s | peak GPU memory GB |")
    print("|---|---|---|---|---|---|---|")
    runtime = Runtime(device)
    for recipe_name in args.recipes:
        recipe = load_recipe(recipe_name)
        settings = recipe.training
        with tempfile.TemporaryDirectory() as tmp:
            data = synthetic_patients(Path(tmp), args.patients, args.genes, recipe.model.image_size)
            torch.manual_seed(0)
            model, optimizer = start_model(recipe, data, device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = [seconds(lambda: _train_epoch(model, optimizer, data, recipe,
                                                  epoch_rng(0, 0, epoch), runtime), device)
                     for epoch in range(args.epochs + 1)]
            per_epoch = float(np.median(times[1:]))
            slices = args.patients * min(settings.train_slices, SLICES_PER_PATIENT)
            memory = (f"{torch.cuda.max_memory_allocated(device) / 1e9:.2f}"
                      if device.type == "cuda" else "–")
            print(f"| {recipe_name} | {settings.batch_patients} x {settings.train_slices} | "
                  f"{times[0]:.1f} | {per_epoch:.1f} | {args.patients / per_epoch:.2f} | "
                  f"{slices / per_epoch:.1f} | {memory} |", flush=True)


if __name__ == "__main__":
    main()
