"""Patients in batches: each patient's slices padded to the batch's longest, with a mask."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from RadioGenomicsLib.training.cache import SliceCache


def batch_tensors(stacks: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(S_i, C, H, W) arrays -> x (B, S_max, C, H, W) float32 and slice_mask (B, S_max)."""
    longest = max(len(s) for s in stacks)
    x = torch.zeros((len(stacks), longest, *stacks[0].shape[1:]), dtype=torch.float32)
    mask = torch.zeros((len(stacks), longest), dtype=torch.bool)
    for i, stack in enumerate(stacks):
        x[i, :len(stack)] = torch.from_numpy(np.asarray(stack, dtype=np.float32))
        mask[i, :len(stack)] = True
    return x, mask


class PatientSlices:
    """The cached slices of a set of patients, with their targets."""

    def __init__(self, cache: SliceCache, keys: dict[str, str], targets: np.ndarray,
                 patients: Sequence[str]):
        self.cache, self.keys = cache, keys
        self.patients = list(patients)
        self.targets = np.asarray(targets, dtype=np.float32)  # (patients, genes)

    def __len__(self) -> int:
        return len(self.patients)

    def standardized(self, mean: np.ndarray, std: np.ndarray) -> "PatientSlices":
        """The same patients with each gene's target as (value - mean) / std."""
        return PatientSlices(self.cache, self.keys, (self.targets - mean) / std, self.patients)

    def slices(self, index: int) -> np.ndarray:
        return self.cache.load(self.keys[self.patients[index]])

    def geometry(self, indices) -> torch.Tensor:
        """(len(indices), n_geometry) the patients' tumour geometry."""
        return torch.from_numpy(np.stack([self.cache.geometry(self.keys[self.patients[int(i)]])
                                          for i in indices]))

    def training_batches(self, batch_patients: int, train_slices: int, rng: np.random.Generator,
                         rank: int = 0, world: int = 1
                         ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                             torch.Tensor, int]]:
        """Shuffled batches, `train_slices` slices drawn per patient (HE2RNA draws tiles):
        (x, slice_mask, geometry, targets, patients in the whole batch).

        With several processes every one draws the same batches and takes its share of
        the patients, so the gradient DDP averages is the full batch's. A last batch
        with fewer patients than processes is left out (by every process alike).
        """
        order = rng.permutation(len(self))
        for start in range(0, len(order), batch_patients):
            chosen = order[start:start + batch_patients]
            if len(chosen) < world:
                continue
            picks = []
            for index in chosen:
                stack = self.slices(int(index))
                keep = np.sort(rng.choice(len(stack), min(train_slices, len(stack)),
                                          replace=False))
                picks.append(stack[keep])
            mine = list(range(rank, len(chosen), world))
            x, mask = batch_tensors([picks[i] for i in mine])
            yield (x, mask, self.geometry(chosen[mine]), torch.from_numpy(self.targets[chosen[mine]]),
                   len(chosen))

    def evaluation_batches(self, batch_patients: int
                           ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Every patient with all of its slices, in order: (x, slice_mask, geometry)."""
        for start in range(0, len(self), batch_patients):
            indices = range(start, min(start + batch_patients, len(self)))
            yield (*batch_tensors([self.slices(i) for i in indices]), self.geometry(indices))
