"""The region that intensities are normalised in: the brain (MRI) or the body (CT).

Skull stripping needs no downloaded weights: classic morphology on a T1-like image
(Otsu head mask, tissue class, an erosion that cuts the brain from the scalp, the
largest component, then dilation and closing). Measured against Colin27's BET mask in
BENCHMARKS.md.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from RadioGenomicsLib.imaging import resample_isotropic

# brain volumes of adults are about 1.0-1.8 L; a head with skull and scalp is 3 L or more
STRIPPED_MAX_LITRES = 2.5
STRIPPED_MIN_LITRES = 0.3
# a stripped brain is well under this share of the head it came from
BRAIN_MAX_HEAD_SHARE = 0.6
EROSION_RADII_MM = (4, 5, 6, 7, 8, 10, 12)


def _largest_component(mask: sitk.Image) -> sitk.Image:
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    return sitk.Cast(labels == 1, sitk.sitkUInt8)


def _litres(mask: sitk.Image) -> float:
    voxel_ml = float(np.prod(mask.GetSpacing())) / 1000.0
    return float(sitk.GetArrayViewFromImage(mask).sum()) * voxel_ml / 1000.0


def radius_voxels(image: sitk.Image, mm: float) -> list[int]:
    """A structuring element's radius of `mm` in voxels along each axis, at least one."""
    return [max(1, round(mm / s)) for s in image.GetSpacing()]


def _fill_axial_holes(mask: sitk.Image) -> sitk.Image:
    """Fill holes slice by slice (lungs and bowel gas connect to the outside in 3-D)."""
    from scipy import ndimage  # here: 0.3 s to import, needed by this step only

    array = sitk.GetArrayFromImage(mask).astype(bool)
    filled = np.stack([ndimage.binary_fill_holes(plane) for plane in array])
    out = sitk.GetImageFromArray(filled.astype(np.uint8))
    out.CopyInformation(mask)
    return out


def foreground(image: sitk.Image) -> sitk.Image:
    """Everything that is not air: Otsu on a smoothed image, largest part, holes filled."""
    smooth = sitk.SmoothingRecursiveGaussian(image, 1.0)
    mask = _largest_component(sitk.OtsuThreshold(smooth, 0, 1))
    return _fill_axial_holes(sitk.BinaryFillhole(mask))


def body_mask(ct: sitk.Image) -> sitk.Image:
    """The patient's body on CT: above -400 HU, the largest part, axial holes filled."""
    smooth = sitk.SmoothingRecursiveGaussian(ct, 1.0)
    mask = _largest_component(sitk.Cast(smooth > -400.0, sitk.sitkUInt8))
    return _fill_axial_holes(mask)


def nonzero_region(image: sitk.Image) -> sitk.Image:
    mask = _largest_component(sitk.Cast(sitk.Abs(image) > 1e-6, sitk.sitkUInt8))
    return sitk.BinaryFillhole(mask)


def is_skull_stripped(image: sitk.Image) -> bool:
    """Skull-stripped input (BraTS-TCGA is) is zero outside a brain-sized region."""
    return STRIPPED_MIN_LITRES <= _litres(nonzero_region(image)) <= STRIPPED_MAX_LITRES


def strip_skull(t1: sitk.Image, working_mm: float = 2.0) -> sitk.Image:
    """Brain mask of a head MRI (best on T1), on t1's grid.

    The morphology runs at `working_mm` (8x fewer voxels at 2 mm than at 1 mm) and the
    mask is brought back with linear interpolation, which also smooths its edge.
    """
    coarse = resample_isotropic(t1, working_mm, sitk.sitkLinear)
    brain = _strip_skull_on_grid(coarse)
    smooth = sitk.Resample(sitk.Cast(brain, sitk.sitkFloat32), t1, sitk.Transform(),
                           sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.Cast(smooth >= 0.5, sitk.sitkUInt8)


def _strip_skull_on_grid(t1: sitk.Image) -> sitk.Image:
    """The smallest erosion that frees the brain from the scalp, then back out."""
    smooth = sitk.SmoothingRecursiveGaussian(t1, 1.0)
    head = sitk.BinaryFillhole(_largest_component(sitk.OtsuThreshold(smooth, 0, 1)))
    # two Otsu thresholds: dark (air, bone, CSF) | grey matter | white matter and fat
    classes = sitk.OtsuMultipleThresholds(smooth, numberOfThresholds=2, numberOfHistogramBins=128)
    tissue = sitk.Cast(classes >= 1, sitk.sitkUInt8) * head
    head_litres = _litres(head)
    brain = head
    tissue_distance = _squared_distance_inside(tissue)  # once for every erosion radius
    for mm in EROSION_RADII_MM:
        core = _largest_component(_ball_erode(tissue_distance, tissue, radius_voxels(t1, mm)))
        brain = sitk.BinaryDilate(core, radius_voxels(t1, mm), sitk.sitkBall) * tissue
        if _litres(brain) <= BRAIN_MAX_HEAD_SHARE * head_litres:
            break
    brain = sitk.BinaryMorphologicalClosing(brain, radius_voxels(t1, 6), sitk.sitkBall)
    return sitk.Cast(sitk.BinaryFillhole(brain), sitk.sitkUInt8)


def _squared_distance_inside(mask: sitk.Image) -> np.ndarray:
    """Squared distance in voxels from each voxel of `mask` to the nearest voxel outside
    it (outside the image counts as inside, as for ITK's erosion)."""
    from scipy import ndimage

    inside = sitk.GetArrayViewFromImage(mask) > 0
    return np.rint(ndimage.distance_transform_edt(inside) ** 2)


def _ball_erode(squared_distance: np.ndarray, like: sitk.Image, radius: list[int]) -> sitk.Image:
    """sitk.BinaryErode with a ball of `radius` voxels, the same voxels (ITK's ball holds
    the offsets within radius + 0.5, i.e. squared length <= r^2 + r), from one distance
    map for every radius: six ITK erosions took ~1 s of every prediction."""
    if len(set(radius)) != 1:
        return sitk.BinaryErode(like, radius, sitk.sitkBall)
    r = radius[0]
    out = sitk.GetImageFromArray((squared_distance > r * r + r).astype(np.uint8))
    out.CopyInformation(like)
    return out


def dice(a: sitk.Image, b: sitk.Image) -> float:
    x = sitk.GetArrayViewFromImage(a) > 0
    y = sitk.GetArrayViewFromImage(b) > 0
    return float(2.0 * (x & y).sum() / max(x.sum() + y.sum(), 1))
