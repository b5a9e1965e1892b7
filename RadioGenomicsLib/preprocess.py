"""A study turned into model-ready tumour slices, the paper's way.

Resample to 1 mm, find the brain (MRI) or body (CT), z-score inside it, choose the
axial slices with the most tumour, crop each to a square around the tumour with a
margin and sample it at 224 x 224. Every slice keeps the affine from its pixels to LPS
millimetres, so that per-pixel (or per-token) values can be carried back onto the
study's own grid.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from RadioGenomicsLib import masks
from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.choices import REGIONS
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.imaging import Study, resample_isotropic

SLICE_CHOICES = ("largest", "spread")
# what the mask says of a tumour's size and extent, for a model with `geometry` on:
# log mm per crop pixel (the crops are rescaled to the tumour, so their scale is lost
# otherwise), log(1 + mean tumour area in mm2 of the model's slices), log(1 + tumour
# slices in the study at the model's spacing), log(1 + tumour volume in ml)
GEOMETRY_FEATURES = ("log_mm_per_pixel", "log1p_area_mm2", "log1p_tumour_slices",
                     "log1p_volume_ml")
# with `region_geometry`, per region label after these: log(1 + its volume in ml inside
# the tumour) and its share of the tumour's volume (what the baseline's sub-region
# features measure, and the mean token of 16 slices does not keep)
REGION_GEOMETRY = ("log1p_volume_ml", "share")
# with `shape_geometry`, after GEOMETRY_FEATURES: the tumour's 3-D shape (ITK's label shape
# statistics at the model's spacing): roundness (the surface of a ball of the same volume
# over the tumour's surface, 1 for a ball), log elongation and log flatness (square roots
# of the principal moments' ratios), log(1 + surface in mm2). Irregular, spiculated
# tumours score low roundness; 16 slices' areas do not tell it
SHAPE_GEOMETRY = ("roundness", "log_elongation", "log_flatness", "log1p_surface_mm2")
# with `intensity_geometry`, after the shape: first-order statistics of the tumour's voxels
# in its first channel (HU for a CT, the z-scored values otherwise), as radiomics' first-order
# features have them: a CT window clips a textured tumour's tails, which these keep
INTENSITY_PERCENTILES = (10, 25, 50, 75, 90)
INTENSITY_GEOMETRY = ("intensity_mean", "intensity_sd",
                      *(f"intensity_p{q}" for q in INTENSITY_PERCENTILES))
# with `shell_mm` > 0, after those: the same units' statistics of the voxels within
# shell_mm outside the tumour, what surrounds it (a lung tumour's ground-glass halo, which
# a soft-tissue window clips and the segmentation leaves out)
SHELL_PERCENTILES = (10, 50, 90)
SHELL_GEOMETRY = ("shell_mean", "shell_sd", *(f"shell_p{q}" for q in SHELL_PERCENTILES))
# settings added after bundles and slice caches were written: left out of `to_dict` while
# at their default, so that earlier bundles' settings and cache keys stay the same
LATER_SETTINGS = {"region_geometry": False, "ct_windows": [], "shape_geometry": False,
                  "intensity_geometry": False, "shell_mm": 0.0}


@dataclass(frozen=True)
class PreprocessSettings:
    """Every step is a setting; the defaults follow the paper."""

    spacing_mm: float = 1.0  # isotropic resampling (0: keep the study's spacing)
    region: str = "auto"  # where to z-score: auto = brain for MRI, body for CT
    skull_strip: bool = True  # brain region: strip when the input still has a skull
    zscore: bool = True
    min_tumour_area_mm2: float = 20.0  # slices with less tumour are not used
    max_slices: int = 32
    # which tumour slices: the "largest" (the paper) or "spread" evenly across the lesion
    slice_choice: str = "largest"
    margin_mm: float = 10.0  # around the tumour's box, on every side
    min_crop_mm: float = 40.0  # small tumours are not blown up beyond this field of view
    size: int = 224
    # more input channels after the images: the tumour mask (1 inside), and one mask per
    # listed segmentation label (sub-regions such as BraTS' 1 necrosis, 2 oedema, 4 enhancing)
    tumour_channel: bool = False
    region_labels: tuple[int, ...] = ()
    # the geometry (a model with `geometry`) also gets each region label's volume and share
    region_geometry: bool = False
    # the geometry also gets the tumour's 3-D shape (SHAPE_GEOMETRY)
    shape_geometry: bool = False
    # the geometry also gets first-order statistics of the tumour's intensities
    # (INTENSITY_GEOMETRY)
    intensity_geometry: bool = False
    # > 0: the geometry also gets the statistics of a shell this thick around the tumour
    # (SHELL_GEOMETRY)
    shell_mm: float = 0.0
    # CT only: one more input channel per (centre, width) window in HU, as a radiologist
    # reads CT: the window mapped onto -1..1, HU outside it clipped. Z-scored over the body,
    # the 10-90 HU between a tumour's necrotic core and its rim are a few hundredths of
    # an SD; in a 100 HU window they span most of the range
    ct_windows: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "region_labels", tuple(int(x) for x in self.region_labels))
        object.__setattr__(self, "ct_windows",
                           tuple((float(c), float(w)) for c, w in self.ct_windows))
        if self.region not in REGIONS:
            raise InputError(None, f"region {self.region!r}: choose one of {', '.join(REGIONS)}")
        if self.slice_choice not in SLICE_CHOICES:
            raise InputError(None, f"slice_choice {self.slice_choice!r}: choose one of "
                                   f"{', '.join(SLICE_CHOICES)}")
        if any(width <= 0 for _, width in self.ct_windows):
            raise InputError(None, f"ct_windows {list(self.ct_windows)}: every width must be "
                                   "positive")
        if self.size < 16 or self.max_slices < 1 or self.spacing_mm < 0 or self.shell_mm < 0:
            raise InputError(None, "preprocessing settings out of range "
                                   f"(size {self.size}, max_slices {self.max_slices}, "
                                   f"spacing {self.spacing_mm}, shell {self.shell_mm})")

    def to_dict(self) -> dict:
        values = asdict(self)
        values["ct_windows"] = [list(window) for window in self.ct_windows]  # as JSON has it
        return {k: v for k, v in values.items()
                if k not in LATER_SETTINGS or v != LATER_SETTINGS[k]}

    @classmethod
    def from_dict(cls, values: dict, source: str | os.PathLike | None = None) -> PreprocessSettings:
        """Settings checked against schemas.PREPROCESSING; `source` names the file in errors."""
        from RadioGenomicsLib.schemas import PREPROCESSING, validate

        if not isinstance(values, dict):
            raise InputError(source, "preprocessing settings must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(source, f"unknown preprocessing setting {unknown[0]!r}")
        validate(values, PREPROCESSING, source, prefix="preprocessing")
        return cls(**values)


def mask_channel_names(settings: dict) -> list[str]:
    """The input channels that preprocessing adds after the images: CT windows, then masks
    (settings as a dict, as a bundle keeps them)."""
    return ([f"CT window {c:g}/{w:g}" for c, w in settings.get("ct_windows", ())]
            + (["tumour"] if settings.get("tumour_channel") else [])
            + [f"label {label}" for label in settings.get("region_labels", ())])


def geometry_names(settings: dict | PreprocessSettings) -> list[str]:
    """The geometry values a model with `geometry` reads, in order (settings as a dict, as a
    bundle keeps them; a bundle without either setting has the 4 GEOMETRY_FEATURES)."""
    if isinstance(settings, PreprocessSettings):
        settings = settings.to_dict()
    shape = SHAPE_GEOMETRY if settings.get("shape_geometry") else ()
    regions = settings.get("region_labels", ()) if settings.get("region_geometry") else ()
    return [*GEOMETRY_FEATURES, *shape, *intensity_names(settings)] + [
        f"label {label} {name}" for label in regions for name in REGION_GEOMETRY]


def intensity_names(settings: dict) -> tuple[str, ...]:
    """The geometry's intensity values (Slices.intensity): the tumour's, then its shell's."""
    return ((INTENSITY_GEOMETRY if settings.get("intensity_geometry") else ())
            + (SHELL_GEOMETRY if settings.get("shell_mm") else ()))


def model_channels(channels: Sequence[str], settings: dict) -> int:
    """How many channels the model reads: the images and the masks added to them."""
    return len(channels) + len(mask_channel_names(settings))


def tumour_channel_index(in_channels: int, settings: dict | PreprocessSettings) -> int | None:
    """Which of a model's `in_channels` inputs is the tumour mask (None: not an input)."""
    if isinstance(settings, PreprocessSettings):
        settings = settings.to_dict()
    added = mask_channel_names(settings)
    if "tumour" not in added:
        return None
    return in_channels - len(added) + added.index("tumour")


@dataclass
class Slices:
    """Model-ready tumour slices of one study and where each pixel lies."""

    images: np.ndarray  # (S, C, H, W) float32: `channels`, then mask_channel_names(settings)
    tumour: np.ndarray  # (S, H, W) uint8
    pixel_to_lps: np.ndarray  # (S, 4, 4): (column, row, 0, 1) -> LPS mm
    tumour_area_mm2: np.ndarray  # (S,)
    thickness_mm: float  # along the slice normal
    channels: tuple[str, ...]
    reference: dict  # the study's own grid: size, origin, spacing, direction
    settings: dict = field(default_factory=dict)
    region: str = ""  # what intensities were normalised in, for the record
    tumour_slices: int = 0  # slices of the study (at the model's spacing) holding tumour
    tumour_volume_ml: float = 0.0
    # per settings' region label: its volume inside the tumour (ml, at the model's spacing)
    region_volumes_ml: tuple[float, ...] = ()
    # tumour_shape(): roundness, elongation, flatness, surface in mm2
    shape: tuple[float, ...] = ()
    # tumour_intensity(): the values of INTENSITY_GEOMETRY [, then SHELL_GEOMETRY's]
    intensity: tuple[float, ...] = ()

    def geometry(self) -> np.ndarray:
        """This tumour's values of geometry_names(settings) (float32)."""
        mm_per_pixel = np.linalg.norm(self.pixel_to_lps[:, :3, 0], axis=1).mean()
        values = [np.log(mm_per_pixel), np.log1p(self.tumour_area_mm2.mean()),
                  np.log1p(self.tumour_slices), np.log1p(self.tumour_volume_ml)]
        if self.settings.get("shape_geometry"):
            if len(self.shape) != len(SHAPE_GEOMETRY):
                raise ValueError("these slices have no tumour shape (written before "
                                 "shape_geometry): preprocess the study again")
            roundness, elongation, flatness, surface = self.shape
            values += [roundness, np.log(elongation), np.log(flatness), np.log1p(surface)]
        intensity = intensity_names(self.settings)
        if intensity:
            if len(self.intensity) != len(intensity):
                raise ValueError("these slices have no tumour or shell intensities (written "
                                 "before intensity_geometry or shell_mm): preprocess the "
                                 "study again")
            values += list(self.intensity)
        if self.settings.get("region_geometry") and self.settings.get("region_labels"):
            if len(self.region_volumes_ml) != len(self.settings["region_labels"]):
                raise ValueError("these slices have no sub-region volumes (written before "
                                 "region_geometry): preprocess the study again")
            for volume in self.region_volumes_ml:
                values += [np.log1p(volume), volume / max(self.tumour_volume_ml, 1e-9)]
        return np.array(values, dtype=np.float32)

    def to_lps(self, index: int, column: float, row: float) -> np.ndarray:
        """LPS mm of a (continuous) pixel position in slice `index`."""
        return (self.pixel_to_lps[index] @ np.array([column, row, 0.0, 1.0]))[:3]

    def from_lps(self, index: int, point: np.ndarray) -> np.ndarray:
        """(column, row, normal offset in slice thicknesses) of an LPS point in slice `index`."""
        local = np.linalg.solve(self.pixel_to_lps[index], np.append(point, 1.0))[:3]
        return local

    def save(self, path: str | os.PathLike) -> None:
        # uncompressed: zlib shrank the z-scored floats by ~20 % for ~1 s per study
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(
                    handle, images=self.images, tumour=self.tumour,
                    pixel_to_lps=self.pixel_to_lps, tumour_area_mm2=self.tumour_area_mm2,
                    thickness_mm=np.float64(self.thickness_mm),
                    channels=np.array(self.channels), meta=np.array(json.dumps(
                        {"reference": self.reference, "settings": self.settings,
                         "region": self.region, "tumour_slices": self.tumour_slices,
                         "tumour_volume_ml": self.tumour_volume_ml,
                         "region_volumes_ml": list(self.region_volumes_ml),
                         "shape": list(self.shape), "intensity": list(self.intensity)})))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Slices:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                return cls(data["images"], data["tumour"], data["pixel_to_lps"],
                           data["tumour_area_mm2"], float(data["thickness_mm"]),
                           tuple(str(c) for c in data["channels"]), meta["reference"],
                           meta["settings"], meta["region"], int(meta.get("tumour_slices", 0)),
                           float(meta.get("tumour_volume_ml", 0.0)),
                           tuple(float(v) for v in meta.get("region_volumes_ml", ())),
                           tuple(float(v) for v in meta.get("shape", ())),
                           tuple(float(v) for v in meta.get("intensity", ())))
        except (OSError, KeyError, ValueError) as error:
            raise InputError(path, f"not a slices file written by preprocess ({error})") from None


def grid_of(image: sitk.Image) -> dict:
    return {"size": list(image.GetSize()), "origin": list(image.GetOrigin()),
            "spacing": list(image.GetSpacing()), "direction": list(image.GetDirection())}


def image_on_grid(array: np.ndarray, grid: dict) -> sitk.Image:
    """A (z, y, x) array as an image on a grid recorded by `grid_of`."""
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(grid["origin"])
    image.SetSpacing(grid["spacing"])
    image.SetDirection(grid["direction"])
    return image


# ---------------------------------------------------------------- volume steps


def normalisation_region(study: Study, channels: dict[str, sitk.Image],
                         brain_mask: sitk.Image | None, settings: PreprocessSettings
                         ) -> tuple[sitk.Image | None, str]:
    """The mask that intensities are z-scored in, and how it was found."""
    region = settings.region
    if region == "auto":
        region = "body" if study.modality == "ct" else "brain"
    first = next(iter(channels.values()))
    if region == "none":
        return None, "none"
    if region == "body":
        if study.modality == "ct":
            return masks.body_mask(first), "body (CT above -400 HU)"
        return masks.foreground(first), "body (foreground)"
    if brain_mask is not None:
        return brain_mask, "brain (given mask)"
    if masks.is_skull_stripped(first):
        return masks.nonzero_region(first), "brain (input already skull-stripped)"
    if not settings.skull_strip:
        return masks.foreground(first), "head (skull stripping off)"
    t1_like = channels.get("t1", channels.get("t1gd", first))
    return masks.strip_skull(t1_like), "brain (skull stripped)"


def zscore(image: sitk.Image, region: sitk.Image | None) -> sitk.Image:
    """(x - mean) / sd inside the region; zero outside it."""
    values = sitk.GetArrayFromImage(image).astype(np.float32)
    inside = np.ones(values.shape, bool) if region is None else \
        sitk.GetArrayViewFromImage(region) > 0
    mean, sd = values[inside].mean(), values[inside].std()
    values = (values - mean) / (sd if sd > 0 else 1.0)
    values[~inside] = 0.0
    out = sitk.GetImageFromArray(values)
    out.CopyInformation(image)
    return out


# ---------------------------------------------------------------- slices


def axial_axis(image: sitk.Image) -> int:
    """The index axis closest to the body's superior-inferior direction."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return int(np.argmax(np.abs(direction[2, :])))


def choose_slices(tumour: np.ndarray, axis_zyx: int, pixel_area_mm2: float,
                  settings: PreprocessSettings) -> list[int]:
    """Slice indices with enough tumour, the largest first, at most `max_slices`."""
    other = tuple(a for a in range(3) if a != axis_zyx)
    areas = tumour.sum(axis=other) * pixel_area_mm2
    candidates = np.flatnonzero(areas >= settings.min_tumour_area_mm2)
    if candidates.size == 0:  # a tiny tumour: still use its largest slice
        candidates = np.array([int(np.argmax(areas))])
    if settings.slice_choice == "spread" and candidates.size > settings.max_slices:
        # evenly across the lesion, from one end to the other, in position order
        picks = np.unique(np.round(np.linspace(0, candidates.size - 1, settings.max_slices)))
        return candidates[picks.astype(int)].tolist()
    if settings.slice_choice == "spread":
        return candidates.tolist()
    ranked = candidates[np.argsort(-areas[candidates], kind="stable")]
    return ranked[: settings.max_slices].tolist()


def slice_grid(volume: sitk.Image, axis: int, index: int, box: tuple[np.ndarray, np.ndarray],
               settings: PreprocessSettings) -> sitk.Image:
    """A size x size x 1 image grid covering a square around `box` in slice `index`.

    `axis` and `box` are in ITK index order (x, y, z); `box` = (low, high) voxel indices
    of the tumour in the two in-plane axes.
    """
    plane = [a for a in range(3) if a != axis]
    spacing = np.asarray(volume.GetSpacing())
    low, high = box
    centre = (low + high) / 2.0  # continuous index, in-plane
    extent_mm = (high - low + 1) * spacing[plane]
    side_mm = max(float(extent_mm.max()) + 2 * settings.margin_mm, settings.min_crop_mm)
    pixel_mm = side_mm / settings.size
    first = np.zeros(3)
    first[plane] = centre - (side_mm / 2 - pixel_mm / 2) / spacing[plane]
    first[axis] = index
    direction = np.asarray(volume.GetDirection()).reshape(3, 3)
    grid = sitk.Image([settings.size, settings.size, 1], sitk.sitkUInt8)
    grid.SetOrigin(volume.TransformContinuousIndexToPhysicalPoint(first.tolist()))
    grid.SetSpacing([pixel_mm, pixel_mm, float(spacing[axis])])
    grid.SetDirection(direction[:, plane + [axis]].flatten().tolist())
    return grid


def pixel_to_lps(grid: sitk.Image) -> np.ndarray:
    """4 x 4 affine from (column, row, 0, 1) of a slice grid to LPS mm."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(grid.GetDirection()).reshape(3, 3) @ np.diag(grid.GetSpacing())
    affine[:3, 3] = grid.GetOrigin()
    return affine


def _sample(volume: sitk.Image, grid: sitk.Image, interpolator: int) -> np.ndarray:
    sampled = sitk.Resample(volume, grid, sitk.Transform(), interpolator, 0.0,
                            volume.GetPixelID())
    return sitk.GetArrayFromImage(sampled)[0]


def _mask_channels(study: Study, settings: PreprocessSettings) -> list[sitk.Image]:
    """The extra input channels (float32 0/1 volumes at the model's spacing)."""
    nearest = sitk.sitkNearestNeighbor
    masks = [study.tumour] if settings.tumour_channel else []
    if settings.region_labels:
        if study.labels is None:
            raise InputError(study.sources.get("segmentation"),
                             "the model reads sub-region channels; load the study with its "
                             "labels (keep_labels)")
        masks += [study.labels == label for label in settings.region_labels]
    return [sitk.Cast(resample_isotropic(mask, settings.spacing_mm, nearest), sitk.sitkFloat32)
            for mask in masks]


def _ct_windows(hu: np.ndarray, settings: PreprocessSettings) -> list[np.ndarray]:
    """One slice per CT window of a slice of HU: the window mapped onto -1..1, clipped."""
    return [np.clip((hu - (centre - width / 2)) * (2 / width) - 1.0, -1.0, 1.0)
            for centre, width in settings.ct_windows]


# a one-slice (or one-row) tumour has a zero principal moment: its elongation or flatness
# is capped here rather than infinite
MAX_AXIS_RATIO = 100.0


def tumour_shape(tumour: sitk.Image) -> tuple[float, float, float, float]:
    """Roundness, elongation, flatness and surface (mm2) of a tumour mask's voxels > 0."""
    label = sitk.Cast(tumour > 0, sitk.sitkUInt8)
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(label)
    if not statistics.HasLabel(1):
        raise ValueError("the tumour mask is empty")

    def ratio(value: float) -> float:
        return float(np.clip(np.nan_to_num(value, nan=MAX_AXIS_RATIO, posinf=MAX_AXIS_RATIO),
                             1.0, MAX_AXIS_RATIO))

    return (float(statistics.GetRoundness(1)), ratio(statistics.GetElongation(1)),
            ratio(statistics.GetFlatness(1)), float(statistics.GetPerimeter(1)))


def _first_order(values: np.ndarray, percentiles: tuple[int, ...], what: str
                 ) -> tuple[float, ...]:
    """Mean, SD and the percentiles of some voxels' values."""
    if values.size == 0:
        raise ValueError(f"{what} holds no voxel")
    values = values.astype(np.float64)
    return (float(values.mean()), float(values.std()),
            *(float(v) for v in np.percentile(values, percentiles)))


def tumour_intensity(image: sitk.Image, tumour: sitk.Image) -> tuple[float, ...]:
    """INTENSITY_GEOMETRY of an image's voxels where the tumour mask (same grid) is > 0."""
    inside = sitk.GetArrayViewFromImage(tumour) > 0
    return _first_order(sitk.GetArrayViewFromImage(image)[inside], INTENSITY_PERCENTILES,
                        "the tumour mask")


def shell_intensity(image: sitk.Image, tumour: sitk.Image, mm: float) -> tuple[float, ...]:
    """SHELL_GEOMETRY of an image's voxels within `mm` outside the tumour mask: the mask
    dilated by a ball of that radius (at least one voxel along each axis), less the mask."""
    mask = sitk.Cast(tumour > 0, sitk.sitkUInt8)
    # a copy, not a view: a view of the temporary dilated image would outlive its buffer
    grown = sitk.GetArrayFromImage(sitk.BinaryDilate(mask, masks.radius_voxels(mask, mm),
                                                     sitk.sitkBall)) > 0
    shell = grown & (sitk.GetArrayViewFromImage(mask) == 0)
    return _first_order(sitk.GetArrayViewFromImage(image)[shell], SHELL_PERCENTILES,
                        f"the {mm:g} mm shell around the tumour")


def _intensity(study: Study, hu: sitk.Image, channels: dict[str, sitk.Image],
               tumour: sitk.Image, settings: PreprocessSettings) -> tuple[float, ...]:
    """A CT's tumour [and shell] intensities in HU (physical units, as the windows read
    them); another study's in its first channel as the model reads it (z-scored: raw MR
    units are arbitrary)."""
    first = hu if study.modality == "ct" else next(iter(channels.values()))
    inside = tumour_intensity(first, tumour) if settings.intensity_geometry else ()
    around = shell_intensity(first, tumour, settings.shell_mm) if settings.shell_mm else ()
    return inside + around


def preprocess(study: Study, settings: PreprocessSettings | None = None) -> Slices:
    settings = settings or PreprocessSettings()
    linear, nearest = sitk.sitkLinear, sitk.sitkNearestNeighbor
    channels = {name: resample_isotropic(image, settings.spacing_mm, linear)
                for name, image in study.channels.items()}
    if settings.ct_windows and study.modality != "ct":
        raise InputError(next(iter(study.sources.values()), None),
                         "the model reads CT windows (ct_windows); this study is not a CT")
    hu = next(iter(channels.values()))  # before z-scoring: the windows read HU
    tumour = resample_isotropic(study.tumour, settings.spacing_mm, nearest)
    brain = None if study.brain_mask is None else \
        resample_isotropic(study.brain_mask, settings.spacing_mm, nearest)
    region, region_note = normalisation_region(study, channels, brain, settings)
    if region is not None:  # the tumour always counts as inside
        region = sitk.Cast((region > 0) | (tumour > 0), sitk.sitkUInt8)
    if settings.zscore:
        channels = {name: zscore(image, region) for name, image in channels.items()}

    axis = axial_axis(tumour)
    tumour_zyx = sitk.GetArrayViewFromImage(tumour) > 0
    spacing = np.asarray(tumour.GetSpacing())
    plane = [a for a in range(3) if a != axis]
    chosen = choose_slices(tumour_zyx, 2 - axis, float(np.prod(spacing[plane])), settings)

    masks = _mask_channels(study, settings)
    images, tumours, affines, areas = [], [], [], []
    for index in chosen:
        in_plane = np.take(tumour_zyx, index, axis=2 - axis)  # 2-D, (plane[1], plane[0])
        rows, cols = np.nonzero(in_plane)
        box = (np.array([cols.min(), rows.min()], float), np.array([cols.max(), rows.max()], float))
        grid = slice_grid(tumour, axis, index, box, settings)
        windows = _ct_windows(_sample(hu, grid, linear), settings) if settings.ct_windows else []
        images.append(np.stack([_sample(image, grid, linear) for image in channels.values()]
                               + windows + [_sample(mask, grid, nearest) for mask in masks]))
        tumours.append(_sample(tumour, grid, nearest))
        affines.append(pixel_to_lps(grid))
        areas.append(in_plane.sum() * float(np.prod(spacing[plane])))
    other = tuple(a for a in range(3) if a != 2 - axis)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    regions = masks[len(masks) - len(settings.region_labels):]  # the label masks come last
    return Slices(np.asarray(images, np.float32), np.asarray(tumours, np.uint8),
                  np.asarray(affines), np.asarray(areas, float), float(spacing[axis]),
                  tuple(study.channels), grid_of(study.reference), settings.to_dict(),
                  region_note, int(tumour_zyx.any(axis=other).sum()),
                  float(tumour_zyx.sum() * voxel_ml),
                  tuple(float((tumour_zyx & (sitk.GetArrayViewFromImage(region) > 0)).sum()
                              * voxel_ml) for region in regions),
                  tumour_shape(tumour) if settings.shape_geometry else (),
                  _intensity(study, hu, channels, tumour, settings))
