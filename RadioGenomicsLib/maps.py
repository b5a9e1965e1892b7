"""Per-slice value grids (a gene's token predictions) carried back onto the study's grid.

Each slice's grid (any resolution over the same square, e.g. 14 x 14 tokens or 224 x
224 pixels) becomes a one-voxel-thick image with that slice's geometry, and SimpleITK
resamples it onto the part of the study grid that its slab covers. The slab is as thick
as the study's own slices when those are thicker than the model's 1 mm, so that thick
CT or MRI slices get a value too. Voxels outside every slab stay zero.
"""

from __future__ import annotations

import errno
import os

import numpy as np
import SimpleITK as sitk

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.preprocess import Slices, image_on_grid

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha")


def _slab_mm(slices: Slices, reference: sitk.Image) -> float:
    """Slab thickness: the model's slices, or the study's own along that normal if thicker."""
    normal = slices.pixel_to_lps[0][:3, 2]
    normal = normal / np.linalg.norm(normal)
    direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    along = int(np.argmax(np.abs(direction.T @ normal)))
    return max(slices.thickness_mm, float(reference.GetSpacing()[along]))


def slice_image(values: np.ndarray, pixel_to_lps: np.ndarray, size: int,
                thickness_mm: float) -> sitk.Image:
    """A (h, w) grid over the square of a `size` x `size` slice, as a 1-voxel-thick image."""
    rows, columns = values.shape
    axes = pixel_to_lps[:3, :3]
    pixel = np.linalg.norm(axes, axis=0)
    unit = axes / pixel
    spacing = [pixel[0] * size / columns, pixel[1] * size / rows, thickness_mm]
    # the first cell's centre: the square's corner plus half a (coarser) cell
    corner = pixel_to_lps[:3, 3] - unit[:, 0] * pixel[0] / 2 - unit[:, 1] * pixel[1] / 2
    origin = corner + unit[:, 0] * spacing[0] / 2 + unit[:, 1] * spacing[1] / 2
    image = sitk.GetImageFromArray(values.astype(np.float32)[None])
    image.SetOrigin(origin.tolist())
    image.SetSpacing(spacing)
    image.SetDirection(unit.flatten().tolist())
    return image


def _covered_region(image: sitk.Image, reference: sitk.Image) -> tuple[list[int], list[int]]:
    """Index box (low, high exclusive) of the reference grid around `image`'s extent."""
    size = np.array(image.GetSize())
    corners = [[a, b, c] for a in (-0.5, size[0] - 0.5) for b in (-0.5, size[1] - 0.5)
               for c in (-0.5, size[2] - 0.5)]
    indices = np.array([reference.TransformPhysicalPointToContinuousIndex(
        image.TransformContinuousIndexToPhysicalPoint(c)) for c in corners])
    low = np.clip(np.floor(indices.min(axis=0)).astype(int), 0, reference.GetSize())
    high = np.clip(np.ceil(indices.max(axis=0)).astype(int) + 1, 0, reference.GetSize())
    return low.tolist(), high.tolist()


def values_to_volume(values: np.ndarray, slices: Slices,
                     interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """(S, h, w) values, one grid per slice, as a float32 volume on the study's grid."""
    if values.ndim != 3 or len(values) != len(slices.images):
        raise ValueError(f"values {values.shape} do not match {len(slices.images)} slices")
    grid = slices.reference
    size_zyx = grid["size"][::-1]
    reference = image_on_grid(np.zeros(size_zyx, np.uint8), grid)
    total = np.zeros(size_zyx, np.float64)
    count = np.zeros(size_zyx, np.uint16)
    slab = _slab_mm(slices, reference)
    for value_grid, affine in zip(values, slices.pixel_to_lps):
        image = slice_image(value_grid, affine, slices.images.shape[-1], slab)
        low, high = _covered_region(image, reference)
        if any(h <= l for l, h in zip(low, high)):
            continue
        part = reference[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
        sampled = sitk.GetArrayFromImage(sitk.Resample(
            image, part, sitk.Transform(), interpolator, np.nan, sitk.sitkFloat32))
        window = (slice(low[2], high[2]), slice(low[1], high[1]), slice(low[0], high[0]))
        hit = ~np.isnan(sampled)
        total[window][hit] += sampled[hit]
        count[window][hit] += 1
    volume = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return image_on_grid(volume.astype(np.float32), grid)


def write_volume(image: sitk.Image, path: str | os.PathLike) -> None:
    """NRRD or NIfTI by the name, written atomically."""
    if not os.fspath(path).lower().endswith(VOLUME_SUFFIXES):
        raise InputError(path, f"unknown volume format; use one of {', '.join(VOLUME_SUFFIXES)}")
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=True)
        except RuntimeError as error:  # ITK's word for a full disk or a folder it cannot write
            reason = [line for line in str(error).splitlines() if line.strip()][-1:] or ["?"]
            raise OSError(errno.EIO, f"cannot write the volume ({reason[0].strip()[:160]})",
                          os.fspath(path)) from None
