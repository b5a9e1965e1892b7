"""Real anatomy for the synthetic cohort, varied per patient.

MRI: the MNI ICBM152 2009a template and its grey / white matter maps, shipped inside
the nilearn wheel (skull-stripped, like the BraTS-TCGA volumes); the four contrasts
are simulated from the tissue classes. CT: slicerio's CTChest4 chest CT (Hounsfield
units). Each patient gets a random smooth deformation (affine + B-spline), and the MR
contrasts a gain, a bias field and Rician noise; the CT an HU offset and noise.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RadioGenomicsLib.errors import InputError
from scipy import ndimage

MRI_SPACING_MM = (1.5, 1.5, 1.5)
CT_SPACING_MM = (2.0, 2.0, 3.0)  # the source CT has 3 mm pixels and 10 mm slices
CROP_MARGIN_MM = 4.0
AIR_HU = -1024.0
LUNG_MAX_HU = -400.0
LUNG_MIN_ML = 100.0

MNI_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
MRI_TISSUES = ("csf", "gm", "wm")

# per-patient variation
ROTATION_MAX_DEG = 4.0
SCALE_SD = 0.04
TRANSLATION_SD_MM = 3.0
BSPLINE_MESH = (3, 3, 3)
BSPLINE_SD_MM = 2.5
DISPLACEMENT_GRID_MM = 6.0  # the deformation is smooth: a coarse field, linearly interpolated
MR_GAIN_SD = 0.15  # log-normal scanner gain
MR_BIAS_AMPLITUDE = 0.12  # log bias field: low-order polynomial coefficients' spread
MR_NOISE_RANGE = (0.015, 0.045)  # Rician noise SD, as a share of white-matter signal
MR_WHITE_MATTER_SIGNAL = 1000.0
CT_OFFSET_SD_HU = 6.0
CT_NOISE_RANGE_HU = (10.0, 25.0)


@dataclass(frozen=True)
class Template:
    """The anatomy on the output grid: MRI tissue probabilities or CT Hounsfield units."""

    modality: str
    maps: dict[str, sitk.Image]  # MRI: csf, gm, wm (0..1); CT: ct (HU), lung (0/1)


@dataclass
class Anatomy:
    """One patient's deformed anatomy as arrays (z, y, x) on the template grid."""

    reference: sitk.Image
    maps: dict[str, np.ndarray]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm, in array (z, y, x) order."""
        return np.array(self.reference.GetSpacing()[::-1])


def _nilearn_data() -> Path:
    # nilearn's package folder without importing nilearn (its import is slow and heavy)
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(None, "a synthetic MRI cohort needs the MNI152 template inside the "
                               "nilearn wheel: pip install 'radiogenomics[synth]'")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def _slicerio_data() -> Path:
    spec = importlib.util.find_spec("slicerio")
    return Path(spec.origin).parent / "data"


def _crop_grid(image: sitk.Image, mask: np.ndarray, spacing: tuple[float, ...]) -> sitk.Image:
    """An empty image on `spacing` covering the mask's bounding box plus a margin."""
    nonzero = np.nonzero(mask)
    low = np.array([a.min() for a in nonzero][::-1], dtype=float)  # x, y, z indices
    high = np.array([a.max() for a in nonzero][::-1], dtype=float)
    margin = CROP_MARGIN_MM / np.array(image.GetSpacing())
    low, high = np.maximum(low - margin, 0), np.minimum(high + margin,
                                                        np.array(image.GetSize()) - 1)
    extent_mm = (high - low) * np.array(image.GetSpacing())
    size = [int(np.ceil(e / s)) + 1 for e, s in zip(extent_mm, spacing)]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(image.TransformContinuousIndexToPhysicalPoint(low.tolist()))
    return grid


def _on_grid(image: sitk.Image, grid: sitk.Image, default: float = 0.0) -> sitk.Image:
    return sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, default,
                         sitk.sitkFloat32)


@lru_cache(maxsize=2)
def load_template(modality: str) -> Template:
    """The modality's template on the output grid (cached per process)."""
    return _mri_template() if modality == "mri" else _ct_template()


def _mri_template() -> Template:
    folder = _nilearn_data()
    images = {name: sitk.Cast(sitk.ReadImage(str(folder / file)), sitk.sitkFloat32) / 255.0
              for name, file in MNI_FILES.items()}
    brain = sitk.GetArrayViewFromImage(images["t1"]) > 0
    grid = _crop_grid(images["t1"], brain, MRI_SPACING_MM)
    gm = sitk.GetArrayFromImage(_on_grid(images["gm"], grid))
    wm = sitk.GetArrayFromImage(_on_grid(images["wm"], grid))
    inside = sitk.GetArrayFromImage(_on_grid(sitk.Cast(images["t1"] > 0, sitk.sitkFloat32),
                                             grid))
    total = np.maximum(gm + wm, 1e-6)
    scale = np.minimum(1.0, inside / total)  # partial volume at the brain's edge
    gm, wm = gm * scale, wm * scale
    csf = np.clip(inside - gm - wm, 0.0, 1.0)
    maps = {}
    for name, values in zip(MRI_TISSUES, (csf, gm, wm)):
        image = sitk.GetImageFromArray(values.astype(np.float32))
        image.CopyInformation(grid)
        maps[name] = image
    return Template("mri", maps)


def _lungs(hu: np.ndarray, spacing_mm: tuple[float, ...]) -> np.ndarray:
    """Air inside the body that forms large components: the lungs (and main airways)."""
    air = hu < LUNG_MAX_HU
    labels, count = ndimage.label(air)
    # outside air touches the in-plane border (lungs may reach the first or last slice)
    border = np.unique(np.concatenate([labels[:, 0].ravel(), labels[:, -1].ravel(),
                                       labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
    sizes_ml = ndimage.sum(air, labels, np.arange(1, count + 1)) * np.prod(spacing_mm) / 1000
    keep = [i + 1 for i, ml in enumerate(sizes_ml) if ml >= LUNG_MIN_ML and i + 1 not in border]
    return np.isin(labels, keep)


def _ct_template() -> Template:
    ct = sitk.Cast(sitk.ReadImage(str(_slicerio_data() / "CTChest4.nrrd")), sitk.sitkFloat32)
    ct = sitk.Clamp(ct, lowerBound=AIR_HU)  # outside the scanner's field of view: air
    hu = sitk.GetArrayViewFromImage(ct)
    lungs = _lungs(hu, ct.GetSpacing())
    # the thorax: the body's largest soft-tissue component (not the table), lung slices only
    labels, _ = ndimage.label(hu > LUNG_MAX_HU)
    body = labels == np.argmax(np.bincount(labels[labels > 0]))
    thorax = np.nonzero(lungs.any(axis=(1, 2)))[0]
    body[:thorax.min()], body[thorax.max() + 1:] = False, False
    grid = _crop_grid(ct, body | lungs, CT_SPACING_MM)
    lung_image = sitk.GetImageFromArray(lungs.astype(np.float32))
    lung_image.CopyInformation(ct)
    maps = {"ct": _on_grid(ct, grid, AIR_HU),
            "lung": sitk.Cast(_on_grid(lung_image, grid) > 0.5, sitk.sitkFloat32)}
    return Template("ct", maps)


def _random_displacement(reference: sitk.Image, rng: np.random.Generator) -> sitk.Image:
    """A smooth random deformation (similarity + B-spline) as a displacement field."""
    centre = reference.TransformContinuousIndexToPhysicalPoint(
        [(s - 1) / 2 for s in reference.GetSize()])
    affine = sitk.Similarity3DTransform()
    affine.SetCenter(centre)
    angles = np.deg2rad(rng.uniform(-ROTATION_MAX_DEG, ROTATION_MAX_DEG, 3))
    axis = rng.normal(size=3)
    affine.SetRotation((axis / np.linalg.norm(axis)).tolist(), float(np.linalg.norm(angles)))
    affine.SetScale(float(np.exp(rng.normal(0, SCALE_SD))))
    affine.SetTranslation(rng.normal(0, TRANSLATION_SD_MM, 3).tolist())
    bspline = sitk.BSplineTransformInitializer(reference, list(BSPLINE_MESH))
    bspline.SetParameters(rng.normal(0, BSPLINE_SD_MM, len(bspline.GetParameters())).tolist())
    # evaluating the B-spline at every voxel is slow: sample it on a coarse grid, then
    # interpolate that to a full field once and warp every map with it
    coarse_size = [int(np.ceil(n * s / DISPLACEMENT_GRID_MM)) + 1
                   for n, s in zip(reference.GetSize(), reference.GetSpacing())]
    coarse = sitk.TransformToDisplacementField(
        sitk.CompositeTransform([affine, bspline]), sitk.sitkVectorFloat64, coarse_size,
        reference.GetOrigin(), [DISPLACEMENT_GRID_MM] * 3, reference.GetDirection())
    return sitk.TransformToDisplacementField(
        sitk.DisplacementFieldTransform(coarse), sitk.sitkVectorFloat32, reference.GetSize(),
        reference.GetOrigin(), reference.GetSpacing(), reference.GetDirection())


def deformed(template: Template, rng: np.random.Generator) -> Anatomy:
    """The template under a random smooth deformation."""
    first = next(iter(template.maps.values()))
    field = _random_displacement(first, rng)
    warp = sitk.WarpImageFilter()
    warp.SetOutputParameteresFromImage(first)
    warp.SetInterpolator(sitk.sitkLinear)
    maps = {}
    for name, image in template.maps.items():
        warp.SetEdgePaddingValue(AIR_HU if name == "ct" else 0.0)
        maps[name] = sitk.GetArrayFromImage(warp.Execute(image, field))
    if "lung" in maps:
        maps["lung"] = maps["lung"] > 0.5
    return Anatomy(first, maps)


def _bias_field(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field: exp of a random quadratic polynomial."""
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    terms = (z, y, x, z * y, z * x, y * x, z * z - 1 / 3, y * y - 1 / 3, x * x - 1 / 3)
    log_field = sum(rng.normal(0, MR_BIAS_AMPLITUDE) * t for t in terms)
    return np.exp(log_field).astype(np.float32)


def mr_acquisition(signal: np.ndarray, brain: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Relative MR signal -> one acquired, skull-stripped volume (int16)."""
    gain = MR_WHITE_MATTER_SIGNAL * np.exp(rng.normal(0, MR_GAIN_SD))
    sigma = rng.uniform(*MR_NOISE_RANGE)
    clean = (signal * _bias_field(signal.shape, rng))[brain]  # outside stays 0, as in BraTS
    real = clean + rng.standard_normal(clean.shape, dtype=np.float32) * sigma
    imaginary = rng.standard_normal(clean.shape, dtype=np.float32) * sigma
    acquired = np.zeros(signal.shape, dtype=np.int16)
    acquired[brain] = np.rint(np.sqrt(real * real + imaginary * imaginary) * gain)  # Rician
    return acquired


def ct_acquisition(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hounsfield units -> one acquired volume (int16): calibration offset and noise."""
    offset = rng.normal(0, CT_OFFSET_SD_HU)
    sigma = rng.uniform(*CT_NOISE_RANGE_HU)
    noisy = hu + offset + rng.standard_normal(hu.shape, dtype=np.float32) * sigma
    return np.clip(np.rint(noisy), -1024, 3071).astype(np.int16)
