"""Reading a study: image channels and the tumour segmentation, on one grid.

Everything here is in ITK's physical space, LPS millimetres (SimpleITK reads NIfTI,
NRRD and DICOM into LPS; slicerio gives `.seg.nrrd` geometry as ijkToLPS). Conversion
to Slicer's RAS happens only at the MRML boundary, in the Slicer module.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.headers import (check_image_file, check_skipped_files, check_spacing,
                                      regularize_series, series_geometry)

MRI_CHANNELS = ("t1", "t1gd", "t2", "flair")
CT_CHANNELS = ("ct",)
KNOWN_CHANNELS = MRI_CHANNELS + CT_CHANNELS

# grids closer than this (mm, and direction cosines) are the same grid
GRID_TOLERANCE = 1e-4
# "1": DICOM series with uneven slice positions are regularised instead of refused
REGULARIZE_ENV = "RADIOGENOMICS_REGULARIZE_DICOM"


def regularize_default() -> bool:
    return os.environ.get(REGULARIZE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Study:
    """One patient's channels and tumour mask, all on the first channel's grid."""

    channels: dict[str, sitk.Image]  # name -> float32 volume, in model order
    tumour: sitk.Image  # uint8 0/1
    brain_mask: sitk.Image | None = None  # uint8 0/1, when the user gave one
    sources: dict[str, str] = field(default_factory=dict)  # name -> path, for messages
    # the segmentation's own label values inside the tumour (sub-regions such as BraTS'
    # 1/2/4), when asked for (load_study's keep_labels) and the format has them
    labels: sitk.Image | None = None

    @property
    def reference(self) -> sitk.Image:
        return next(iter(self.channels.values()))

    @property
    def modality(self) -> str:
        return "ct" if tuple(self.channels) == CT_CHANNELS else "mri"


# ---------------------------------------------------------------- reading images


def read_image(path: str | os.PathLike, series: str | None = None,
               regularize: bool | None = None) -> sitk.Image:
    """Read a NIfTI / NRRD file or a DICOM series folder as a 3-D scalar image, its header
    checked first (headers.py). `regularize`: resample a DICOM series with uneven slice
    positions onto a uniform grid instead of refusing it (default: REGULARIZE_ENV)."""
    return _read_checked(Path(path), series, regularize)[0]


def _read_checked(path: Path, series: str | None, regularize: bool | None
                  ) -> tuple[sitk.Image, int]:
    """The image, and the NaN/Inf voxels the header check counted in a float NIfTI (ITK's
    reader silently turns them into 0)."""
    if not path.exists():
        raise InputError(path, "no such file or folder")
    hidden = 0
    if path.is_dir():
        image = _read_dicom_series(path, series,
                                   regularize_default() if regularize is None else regularize)
    else:
        hidden = check_image_file(path)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise InputError(path, f"cannot read as an image ({_itk_reason(error)})") from None
    _check_volume(image, path)
    check_spacing(path, image.GetSpacing())
    return image, hidden


def read_volume(path: str | os.PathLike, series: str | None = None,
                regularize: bool | None = None) -> sitk.Image:
    """An intensity volume as float32, refusing NaN or infinite voxels."""
    image, hidden = _read_checked(Path(path), series, regularize)
    image = sitk.Cast(image, sitk.sitkFloat32)
    bad = hidden or int((~np.isfinite(sitk.GetArrayViewFromImage(image))).sum())
    if bad:
        raise InputError(path, f"{bad} voxels are NaN or infinite")
    return image


def _itk_reason(error: RuntimeError) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1][:200] if lines else "unknown reason"


def _check_volume(image: sitk.Image, path: Path) -> None:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"has {image.GetNumberOfComponentsPerPixel()} components per "
                               "voxel; expected a scalar volume")
    size = image.GetSize()
    if image.GetDimension() != 3 or min(size) < 2:
        raise InputError(path, f"is not a 3-D volume (size {'x'.join(map(str, size))})")


def dicom_series(folder: Path) -> list[tuple[str, str, list[str]]]:
    """(SeriesInstanceUID, description, files) for every series in a folder."""
    reader = sitk.ImageSeriesReader()
    found = []
    for uid in reader.GetGDCMSeriesIDs(str(folder)):
        files = list(reader.GetGDCMSeriesFileNames(str(folder), uid))
        found.append((uid, _series_description(files[0]), files))
    return found


def _series_description(file: str) -> str:
    header = sitk.ImageFileReader()
    header.SetFileName(file)
    header.ReadImageInformation()
    return header.GetMetaData("0008|103e").strip() if header.HasMetaDataKey("0008|103e") else ""


def choose_dicom_series(folder: str | os.PathLike,
                        series: str | None = None) -> tuple[str, str, list[str]]:
    """(SeriesInstanceUID, description, files) of the one series a folder holds, or of the
    series chosen by UID or description."""
    folder = Path(folder)
    found = dicom_series(folder)
    if not found:
        raise InputError(folder, "folder holds no DICOM series")
    if series is not None:
        found = [s for s in found if series in (s[0], s[1]) or series.lower() == s[1].lower()]
        if not found:
            listed = "; ".join(f"{uid} '{desc}'" for uid, desc, _ in dicom_series(folder))
            raise InputError(folder, f"no series {series!r}; series here: {listed}")
    if len(found) > 1:
        listed = "; ".join(f"{uid} '{desc}'" for uid, desc, _ in found)
        raise InputError(folder, f"holds {len(found)} series, choose one by UID or "
                                 f"description: {listed}")
    return found[0]


def _read_dicom_series(folder: Path, series: str | None, regularize: bool = False) -> sitk.Image:
    uid, _, files = choose_dicom_series(folder, series)
    where = f"{folder} (series {uid})"
    check_skipped_files(folder, set(files), uid)
    geometry = series_geometry(files, where)
    problem = geometry.problem() if len(files) > 1 else None
    if problem and not regularize:
        raise InputError(where, f"{problem}; refused: a volume read from it would be distorted "
                                "(--regularize-dicom resamples it onto a uniform grid)")
    if problem:
        image, note = regularize_series(geometry, _read_dicom_slice)
        print(f"note: {where}: {note}", file=sys.stderr)
        return image
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(geometry.files)
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise InputError(folder, f"cannot read the DICOM series ({_itk_reason(error)})") from None


def _read_dicom_slice(file: str) -> np.ndarray:
    try:
        plane = sitk.GetArrayFromImage(sitk.ReadImage(file))
    except RuntimeError as error:
        raise InputError(file, f"cannot read the DICOM slice ({_itk_reason(error)})") from None
    return plane.reshape(plane.shape[-2:]) if plane.ndim == 3 and plane.shape[0] == 1 else plane


# ---------------------------------------------------------------- grids


def same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = GRID_TOLERANCE) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance)
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance))


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned LPS box (min, max) around the image's voxels, edges included."""
    size = np.array(image.GetSize())
    corners = np.array([[c0, c1, c2] for c0 in (-0.5, size[0] - 0.5)
                        for c1 in (-0.5, size[1] - 0.5) for c2 in (-0.5, size[2] - 0.5)])
    points = np.array([image.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners])
    return points.min(axis=0), points.max(axis=0)


def overlap_fraction(moving: sitk.Image, reference: sitk.Image) -> float:
    """Share of `moving`'s bounding box that lies inside `reference`'s."""
    lo_m, hi_m = physical_bounds(moving)
    lo_r, hi_r = physical_bounds(reference)
    inter = np.clip(np.minimum(hi_m, hi_r) - np.maximum(lo_m, lo_r), 0, None)
    return float(np.prod(inter) / max(np.prod(hi_m - lo_m), 1e-12))


def resample_onto(image: sitk.Image, reference: sitk.Image, interpolator: int,
                  path: str | os.PathLike) -> sitk.Image:
    """`image` on `reference`'s grid; refused when the two do not overlap in space."""
    if same_grid(image, reference):
        copy = sitk.Image(image)
        copy.CopyInformation(reference)
        return copy
    if overlap_fraction(image, reference) <= 0.0:
        raise InputError(path, "does not overlap the reference image in space "
                               f"(bounds {_bounds_text(image)} vs {_bounds_text(reference)})")
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0,
                         image.GetPixelID())


def resample_isotropic(image: sitk.Image, spacing_mm: float, interpolator: int) -> sitk.Image:
    """Same origin and direction, `spacing_mm` voxels covering the same extent."""
    if spacing_mm <= 0 or np.allclose(image.GetSpacing(), spacing_mm):
        return image
    size = [max(1, int(round(n * s / spacing_mm))) for n, s in
            zip(image.GetSize(), image.GetSpacing())]
    return sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(),
                         [spacing_mm] * 3, image.GetDirection(), 0.0, image.GetPixelID())


def _bounds_text(image: sitk.Image) -> str:
    lo, hi = physical_bounds(image)
    return "[" + ", ".join(f"{a:.0f}..{b:.0f}" for a, b in zip(lo, hi)) + "] mm LPS"


# ---------------------------------------------------------------- segmentations


def read_segmentation(path: str | os.PathLike, reference: sitk.Image, label: int | None = None,
                      segment: str | None = None) -> sitk.Image:
    """The tumour as a 0/1 uint8 mask on `reference`'s grid (nearest neighbour)."""
    path = Path(path)
    if path.name.lower().endswith(".seg.nrrd"):
        mask = _mask_from_seg_nrrd(path, segment)
    elif is_dicom_seg(path):
        mask = _mask_from_dicom_seg(path, segment)
    else:
        if segment is not None:
            raise InputError(path, "--segment needs a Slicer .seg.nrrd or a DICOM SEG; use "
                                   "--label for a labelmap")
        mask = _mask_from_labelmap(read_image(path), path, label)
    mask = resample_onto(mask, reference, sitk.sitkNearestNeighbor, path)
    if not sitk.GetArrayViewFromImage(mask).any():
        raise InputError(path, "the segmentation lies outside the image (no tumour voxel "
                               "falls on the image grid)")
    return mask


def _mask_from_labelmap(labels: sitk.Image, path: Path, label: int | None) -> sitk.Image:
    if label is not None and not 0 < label < 2**31:
        raise InputError(path, f"label {label}: expected a label value from 1 to {2**31 - 1}")
    values = sitk.GetArrayViewFromImage(labels)
    present = np.unique(values)
    present = present[present != 0]
    if present.size == 0:
        raise InputError(path, "the segmentation is empty (no non-zero voxel)")
    if label is None:
        mask = labels != 0
    elif label in present:
        mask = labels == label
    else:
        raise InputError(path, f"label {label} is not in the segmentation "
                               f"(labels present: {', '.join(map(str, present[:20].tolist()))})")
    return sitk.Cast(mask, sitk.sitkUInt8)


SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def is_dicom_seg(path: Path) -> bool:
    """A DICOM Part 10 file of the Segmentation Storage SOP class."""
    if not path.is_file():
        return False
    with open(path, "rb") as file:
        if file.read(132)[128:] != b"DICM":
            return False
    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    return header.get("SOPClassUID") == SEGMENTATION_STORAGE


def _mask_from_dicom_seg(path: Path, segment: str | None) -> sitk.Image:
    """The union of a DICOM SEG's segments (or the one labelled `segment`) in LPS."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
    except Exception as error:  # highdicom raises plain exceptions for broken files
        raise InputError(path, f"cannot read as a DICOM SEG ({error})") from None
    labels = {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.SegmentSequence}
    if segment is not None and segment not in labels.values():
        raise InputError(path, f"no segment labelled {segment!r} (segments: "
                               f"{', '.join(labels.values())})")
    numbers = [n for n, label in labels.items() if segment in (None, label)]
    try:
        volume = seg.get_volume(segment_numbers=numbers, combine_segments=True, relabel=True,
                                skip_overlap_checks=True)
    except (ValueError, RuntimeError) as error:
        raise InputError(path, f"its frames do not form a volume ({error})") from None
    mask = sitk.Cast(volume.to_simpleitk() > 0, sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(mask).any():
        raise InputError(path, f"segment {', '.join(labels[n] for n in numbers)} is empty")
    return mask


def _mask_from_seg_nrrd(path: Path, segment: str | None) -> sitk.Image:
    import slicerio

    if not path.is_file():
        raise InputError(path, "no such file")
    check_image_file(path)
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as error:  # slicerio raises plain exceptions for broken files
        raise InputError(path, f"cannot read as a Slicer segmentation ({error})") from None
    names = [s["name"] for s in segmentation["segments"]]
    if not names:
        raise InputError(path, "the segmentation holds no segment")
    if segment is not None and segment not in names:
        raise InputError(path, f"no segment named {segment!r} (segments: {', '.join(names)})")
    chosen = [segment] if segment is not None else names
    extracted = slicerio.extract_segments(segmentation, [(name, 1) for name in chosen])
    voxels = np.asarray(extracted["voxels"])  # indexed [i, j, k]
    if not voxels.any():
        raise InputError(path, f"segment {', '.join(chosen)} is empty")
    mask = sitk.GetImageFromArray(np.ascontiguousarray(voxels.transpose(2, 1, 0)).astype(np.uint8))
    ijk_to_lps = np.asarray(extracted["ijkToLPS"], dtype=float)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    mask.SetSpacing(spacing.tolist())
    mask.SetDirection((ijk_to_lps[:3, :3] / spacing).flatten().tolist())
    mask.SetOrigin(ijk_to_lps[:3, 3].tolist())
    return mask


# ---------------------------------------------------------------- the study


def order_channels(given: list[str] | tuple[str, ...],
                   required: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The channels in model order: `required` when a model names them, else canonical."""
    unknown = [name for name in given if name not in KNOWN_CHANNELS and required is None]
    if unknown:
        raise InputError(None, f"unknown channel {unknown[0]!r}; channels are "
                               f"{', '.join(KNOWN_CHANNELS)}")
    if required is not None:
        missing = [name for name in required if name not in given]
        if missing:
            raise InputError(None, f"channel {missing[0]!r} is missing for the model (it needs "
                                   f"{', '.join(required)}; given {', '.join(given) or 'none'})")
        extra = [name for name in given if name not in required]
        if extra:
            raise InputError(None, f"channel {extra[0]!r} is not used by the model (it needs "
                                   f"{', '.join(required)})")
        return tuple(required)
    if "ct" in given and len(given) > 1:
        raise InputError(None, "a CT study has one channel, 'ct'; MRI channels are "
                               f"{', '.join(MRI_CHANNELS)}")
    return tuple(name for name in KNOWN_CHANNELS if name in given)


def load_study(images: dict[str, str | os.PathLike], segmentation: str | os.PathLike,
               label: int | None = None, segment: str | None = None,
               brain_mask: str | os.PathLike | None = None,
               channels: tuple[str, ...] | None = None,
               series: dict[str, str] | None = None,
               regularize_dicom: bool | None = None, keep_labels: bool = False) -> Study:
    """Read every channel and the tumour, resampled onto the first channel's grid.

    keep_labels: also keep the segmentation's label values inside the tumour (a labelmap's
    values, a DICOM SEG's segment numbers) for sub-region input channels.

    regularize_dicom: resample DICOM series with uneven slice positions onto a uniform
    grid (reported on stderr) instead of refusing them; default REGULARIZE_ENV."""
    order = order_channels(list(images), channels)
    series = series or {}
    # two at a time: one file's header pass (zlib, numpy: no GIL) beside another's ITK read
    with ThreadPoolExecutor(max_workers=2) as pool:
        reads = [pool.submit(read_volume, images[name], series.get(name), regularize_dicom)
                 for name in order]
        read = [future.result() for future in reads]  # the first failing channel in order
    reference = read[0]
    volumes = {order[0]: reference}
    for name, volume in zip(order[1:], read[1:]):
        volumes[name] = resample_onto(volume, reference, sitk.sitkLinear, images[name])
    tumour = read_segmentation(segmentation, reference, label, segment)
    brain = None
    if brain_mask is not None:
        brain = _mask_from_labelmap(read_image(brain_mask), Path(brain_mask), None)
        brain = resample_onto(brain, reference, sitk.sitkNearestNeighbor, brain_mask)
    sources = {name: os.fspath(images[name]) for name in order}
    sources["segmentation"] = os.fspath(segmentation)
    labels = read_labels(segmentation, reference, tumour) if keep_labels else None
    return Study(volumes, tumour, brain, sources, labels)


def read_labels(path: str | os.PathLike, reference: sitk.Image, tumour: sitk.Image) -> sitk.Image:
    """The segmentation's label values (a DICOM SEG's segment numbers) on `reference`'s grid,
    zero outside `tumour`; a Slicer .seg.nrrd is refused (its segments are not numbered)."""
    path = Path(path)
    if path.name.lower().endswith(".seg.nrrd"):
        raise InputError(path, "sub-region channels need a labelmap or a DICOM SEG, not a "
                               ".seg.nrrd (export its segments as a labelmap)")
    if is_dicom_seg(path):
        import highdicom as hd

        volume = hd.seg.segread(path).get_volume(combine_segments=True, relabel=True,
                                                 skip_overlap_checks=True)
        labels = volume.to_simpleitk()
    else:
        labels = read_image(path)
    labels = resample_onto(sitk.Cast(labels, sitk.sitkUInt16), reference,
                           sitk.sitkNearestNeighbor, path)
    return sitk.Mask(labels, tumour)
