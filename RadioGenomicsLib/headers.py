"""Image files checked against what their headers claim, before any voxel is allocated.

ITK reads a truncated NIfTI or NRRD as if whole (the missing voxels become zeros), takes
a zero NIfTI pixel spacing as 1 mm, allocates whatever size a header claims, and reads a
DICOM series with a missing slice or mixed spacing at an averaged spacing. Here:

- the voxel count a header claims is below a ceiling (`max_voxels`, a setting);
- the bytes it promises are in the file (for `.gz`, counted by streaming, never held);
- the spacing is positive and finite;
- a DICOM series' slices are evenly spaced along the slice normal: a gap, a duplicate
  or a change of spacing is refused naming the series and the position, unless the
  caller asks for regularisation onto a uniform grid (`regularize_series`), as Slicer's
  acquisition-geometry regularisation does.
"""

from __future__ import annotations

import bz2
import gzip
import io
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from RadioGenomicsLib.errors import InputError

# a generous default: 1024^3 voxels (a 512 x 512 CT of 4096 slices), 4 GiB as float32
DEFAULT_MAX_VOXELS = 1 << 30
MAX_VOXELS_ENV = "RADIOGENOMICS_MAX_VOXELS"
NRRD_HEADER_LIMIT = 1 << 20  # bytes: a longer "header" is not one
CHUNK = 1 << 20  # bytes read at a time
OUT_CHUNK = 1 << 24  # bytes decompressed at a time, at most
# slice positions closer than this share a position; spacings within it are equal
POSITION_TOLERANCE_MM = 0.01
SPACING_TOLERANCE = 0.01  # relative


def max_voxels() -> int:
    """The voxel-count ceiling: RADIOGENOMICS_MAX_VOXELS, else DEFAULT_MAX_VOXELS."""
    text = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(float(text))
    except (ValueError, OverflowError):
        raise InputError(None, f"{MAX_VOXELS_ENV}={text!r}: expected a voxel count") from None
    if value < 1:
        raise InputError(None, f"{MAX_VOXELS_ENV}={text!r}: expected a positive voxel count")
    return value


def check_voxel_count(path: str | os.PathLike, sizes: list[int]) -> int:
    count = math.prod(int(s) for s in sizes)
    if any(int(s) < 0 for s in sizes):
        raise InputError(path, f"header gives a negative size {sizes}")
    ceiling = max_voxels()
    if count > ceiling:
        raise InputError(path, f"header claims {'x'.join(map(str, sizes))} = {count:,} voxels, "
                               f"above the ceiling of {ceiling:,} ({MAX_VOXELS_ENV} raises it)")
    return count


def check_spacing(path: str | os.PathLike, spacing, what: str = "spacing") -> None:
    values = [float(s) for s in spacing]
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise InputError(path, f"{what} {', '.join(f'{s:g}' for s in values)} mm: every "
                               "spacing must be positive and finite")


def _stream_length(handle: BinaryIO, needed: int, opener: Callable[[], object] | None,
                   path: Path, sink: Callable[[bytes], None] | None = None) -> int:
    """Bytes readable from `handle` (decompressed by `opener`'s object when given), counted
    in chunks and stopping once `needed` are seen: nothing is held. `sink` sees each chunk
    of (decompressed) bytes in order."""
    seen = 0

    def take(block: bytes) -> int:
        if sink is not None:
            sink(block)
        return len(block)

    try:
        if opener is None:
            while seen < needed and (block := handle.read(CHUNK)):
                seen += take(block)
            return seen
        decompressor = opener()
        while seen < needed:
            block = handle.read(CHUNK)
            if not block:
                break
            # at most OUT_CHUNK out per call: zeros inflate a thousandfold
            seen += take(decompressor.decompress(block, OUT_CHUNK))
            while seen < needed and getattr(decompressor, "unconsumed_tail", b""):
                seen += take(decompressor.decompress(decompressor.unconsumed_tail, OUT_CHUNK))
            while seen < needed and not getattr(decompressor, "needs_input", True):
                seen += take(decompressor.decompress(b"", OUT_CHUNK))  # bz2 keeps its own tail
            if getattr(decompressor, "eof", False):
                break
    except (OSError, EOFError, zlib.error, ValueError) as error:
        raise InputError(path, f"damaged compressed data ({error})") from None
    return seen


class NonFiniteCounter:
    """Counts the NaN and infinite values of `dtype` in bytes [start, end) of a stream fed
    in chunks (a `_stream_length` sink): the header check's one pass over the voxels also
    finds what ITK's NIfTI reader silently turns into 0."""

    def __init__(self, dtype: np.dtype, start: int, end: int):
        self.dtype, self.start, self.end = np.dtype(dtype), start, end
        self.position, self.carry, self.count = 0, b"", 0

    def __call__(self, block: bytes) -> None:
        low = max(self.start - self.position, 0)
        high = min(self.end - self.position, len(block))
        self.position += len(block)
        if high <= low:
            return
        data = self.carry + block[low:high] if self.carry else block[low:high]
        usable = len(data) - len(data) % self.dtype.itemsize
        values = np.frombuffer(data, self.dtype, usable // self.dtype.itemsize)
        self.count += int(values.size - np.count_nonzero(np.isfinite(values)))
        self.carry = data[usable:]


def _check_bytes(path: Path, needed: int, available: int) -> None:
    if available < needed:
        raise InputError(path, f"truncated: the header promises {needed:,} bytes of voxels, "
                               f"the file holds {available:,}")


# ---------------------------------------------------------------- NIfTI

def read_nifti_header(path: str | os.PathLike):
    """The header as written (nibabel's loader silently turns a zero pixdim into 1)."""
    from nibabel import Nifti1Header, Nifti2Header

    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")) as file:
            raw = file.read(540)
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(path, f"cannot read as an image (not a NIfTI file: {error})") from None
    sizes = {int.from_bytes(raw[:4], order) for order in ("little", "big")}
    klass = Nifti1Header if 348 in sizes else Nifti2Header if 540 in sizes else None
    if klass is None or len(raw) < klass.template_dtype.itemsize:
        raise InputError(path, "cannot read as an image (no NIfTI header)")
    magic = raw[344:348] if klass is Nifti1Header else raw[4:8]
    if magic not in (b"n+1\0", b"n+2\0"):
        raise InputError(path, f"cannot read as an image (NIfTI magic {magic!r}: not a "
                               "single-file NIfTI)")
    try:
        return klass.from_fileobj(io.BytesIO(raw[:klass.template_dtype.itemsize]), check=False)
    except Exception as error:  # nibabel raises many types for damaged headers
        raise InputError(path, f"cannot read as an image (NIfTI header: {type(error).__name__}: "
                               f"{str(error)[:120]})") from None


def check_nifti(path: str | os.PathLike) -> int:
    """Size, spacing and bytes of a `.nii` / `.nii.gz` against its header; the number of
    NaN or infinite voxels (float data only), counted in the same pass."""
    path = Path(path)
    header = read_nifti_header(path)
    try:
        shape = [int(n) for n in header.get_data_shape()]
        offset = float(header["vox_offset"])
        dtype = header.get_data_dtype()
        itemsize = dtype.itemsize
        pixdim = [float(v) for v in header["pixdim"][1:4]]
    except Exception as error:  # an unknown data type, ...
        raise InputError(path, f"cannot read as an image (NIfTI header: {type(error).__name__}: "
                               f"{str(error)[:120]})") from None
    count = check_voxel_count(path, shape)
    if offset < header.sizeof_hdr + 4 or not math.isfinite(offset):
        raise InputError(path, f"cannot read as an image (vox_offset {offset} lies inside the "
                               "NIfTI header)")
    # ITK takes the magnitude (and reads 0 as 1 mm: refused here)
    check_spacing(path, [abs(v) for v in pixdim[:min(3, len(shape))]], "pixel spacing")
    needed = int(offset) + count * itemsize
    counter = (NonFiniteCounter(dtype, int(offset), needed)
               if np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating)
               else None)
    with open(path, "rb") as handle:
        if path.name.lower().endswith(".gz"):
            available = _stream_length(handle, needed,
                                       lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), path,
                                       counter)
        elif counter is not None:
            available = _stream_length(handle, needed, None, path, counter)
        else:
            available = os.fstat(handle.fileno()).st_size
    _check_bytes(path, needed, available)
    return 0 if counter is None else counter.count


# ---------------------------------------------------------------- NRRD

@dataclass
class NrrdHeader:
    fields: dict
    offset: int  # bytes of the attached header


def read_nrrd_header(path: str | os.PathLike) -> NrrdHeader:
    """The header fields (pynrrd's parser) and where the attached data starts."""
    import nrrd

    path = Path(path)
    lines, offset = [], 0
    with open(path, "rb") as handle:
        while True:
            line = handle.readline(NRRD_HEADER_LIMIT - offset + 1)
            offset += len(line)
            if offset > NRRD_HEADER_LIMIT:
                raise InputError(path, "cannot read as an image (no end of the NRRD header in its first MiB)")
            lines.append(line)
            if not line or not line.strip():
                break
    try:
        fields = dict(nrrd.read_header(lines))
        for key in ("sizes", "type", "dimension"):
            if key not in fields:
                raise ValueError(f"header is missing required field: {key}")
    except InputError:
        raise
    except Exception as error:  # pynrrd raises NRRDError, ValueError, ... for bad headers
        raise InputError(path, f"cannot read as an image (NRRD header: {str(error)[:160]})") from None
    return NrrdHeader(fields, offset)


def check_nrrd(path: str | os.PathLike) -> None:
    """Size, spacing and bytes of a `.nrrd` / `.nhdr` (and its data file) against its header."""
    from nrrd.reader import _determine_datatype

    path = Path(path)
    header = read_nrrd_header(path)
    fields = header.fields
    sizes = [int(s) for s in np.atleast_1d(fields["sizes"])]
    if len(sizes) != int(fields["dimension"]):
        raise InputError(path, f"dimension {fields['dimension']} but {len(sizes)} sizes")
    count = check_voxel_count(path, sizes)
    _check_nrrd_spacing(path, fields)
    try:
        itemsize = _determine_datatype(fields).itemsize
    except Exception as error:
        raise InputError(path, f"unknown voxel type ({str(error)[:120]})") from None
    encoding = str(fields.get("encoding", "raw")).lower()
    if encoding in ("ascii", "text", "txt"):
        return  # numbers as text: ITK's reader counts them itself
    data_file = fields.get("datafile", fields.get("data file"))
    data_path, start = (path, header.offset) if data_file is None else \
        (path.parent / str(data_file), 0)
    if not data_path.is_file():
        raise InputError(path, f"its data file {data_path} is missing")
    skip = int(fields.get("byteskip", fields.get("byte skip", 0)))
    needed = count * itemsize + max(skip, 0)
    openers = {"raw": None, "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
               "gz": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
               "bzip2": bz2.BZ2Decompressor, "bz2": bz2.BZ2Decompressor}
    if encoding not in openers:
        raise InputError(path, f"unknown NRRD encoding {encoding!r}")
    with open(data_path, "rb") as handle:
        handle.seek(start)
        available = _stream_length(handle, needed, openers[encoding], data_path)
    _check_bytes(data_path, needed, available)


def _check_nrrd_spacing(path: Path, fields: dict) -> None:
    directions = fields.get("space directions")
    if directions is not None:
        rows = np.atleast_2d(np.asarray(directions, dtype=float))
        for row in rows:
            if np.isnan(row).all():
                continue  # "none": a non-spatial axis (a list of segments, ...)
            norm = float(np.linalg.norm(row))
            if not (np.isfinite(row).all() and norm > 0):
                raise InputError(path, f"space direction {row.tolist()}: every spacing must be "
                                       "positive and finite")
    spacings = fields.get("spacings")
    if spacings is not None:
        values = [float(s) for s in np.atleast_1d(spacings) if not math.isnan(float(s))]
        check_spacing(path, values)


# ---------------------------------------------------------------- any file

def check_image_file(path: str | os.PathLike) -> int:
    """The header checks of whatever format `path` is in (NIfTI and NRRD byte-exact, others
    through ITK's header reader: size ceiling and spacing). Returns the NaN or infinite
    voxels that a float NIfTI holds (ITK would read them as 0; other formats keep them)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return check_nifti(path)
    if name.endswith((".nrrd", ".nhdr")):
        check_nrrd(path)
    else:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return 0  # not an image ITK knows: reading it says why
        check_voxel_count(path, [*reader.GetSize(), reader.GetNumberOfComponents()])
        check_spacing(path, reader.GetSpacing())
    return 0


# ---------------------------------------------------------------- DICOM series

@dataclass
class SeriesGeometry:
    """A DICOM series' slices sorted along the normal, and how they are spaced."""

    files: list[str]  # sorted by position along the normal
    positions: np.ndarray  # mm along the normal
    origin_of: list[np.ndarray]  # ImagePositionPatient per sorted file (LPS mm)
    row: np.ndarray  # direction of increasing column index
    column: np.ndarray  # direction of increasing row index
    normal: np.ndarray
    pixel_spacing: tuple[float, float]  # (between columns, between rows) = ITK's x, y
    size: tuple[int, int]  # (columns, rows)

    @property
    def steps(self) -> np.ndarray:
        return np.diff(self.positions)

    @property
    def spacing(self) -> float:
        steps = self.steps[self.steps > POSITION_TOLERANCE_MM]
        return float(np.median(steps)) if steps.size else 0.0

    def problem(self) -> str | None:
        """What is wrong with the slice positions, or None when they are evenly spaced."""
        steps, spacing = self.steps, self.spacing
        for index, step in enumerate(steps):
            at = self.positions[index]
            if step <= POSITION_TOLERANCE_MM:
                return f"two slices at position {at:.2f} mm ({Path(self.files[index]).name}, " \
                       f"{Path(self.files[index + 1]).name})"
            if abs(step - spacing) > max(SPACING_TOLERANCE * spacing, POSITION_TOLERANCE_MM):
                missing = round(step / spacing) - 1
                if missing >= 1 and abs(step - (missing + 1) * spacing) <= SPACING_TOLERANCE * spacing:
                    return (f"{missing} slice(s) missing between positions {at:.2f} and "
                            f"{at + step:.2f} mm (spacing elsewhere {spacing:.3g} mm)")
                return (f"uneven slice spacing: {step:.3g} mm between positions {at:.2f} and "
                        f"{at + step:.2f} mm, {spacing:.3g} mm elsewhere")
        return None


def _float_list(dataset, keyword: str, count: int, file: str) -> np.ndarray:
    value = dataset.get(keyword)
    try:
        values = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        values = np.array([])
    if values.size != count or not np.isfinite(values).all():
        raise InputError(file, f"{keyword} missing or not {count} finite numbers")
    return values


def _check_pixel_bytes(dataset, handle: BinaryIO, file: str) -> None:
    """The pixel data the header promises is in the file (uncompressed transfer syntaxes)."""
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_compressed:
        return  # the decoder checks compressed frames
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    needed = (int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("SamplesPerPixel", 1))
              * int(dataset.get("BitsAllocated", 16)) * frames + 7) // 8
    available = os.fstat(handle.fileno()).st_size - handle.tell() - 8  # 8: the element header
    _check_bytes(Path(file), needed, available)


def check_skipped_files(folder: Path, listed: set[str], uid: str) -> None:
    """GDCM's series reader silently leaves out DICOM files it cannot parse (a truncated
    slice): such a file of the series, or any unreadable DICOM file, is refused."""
    import pydicom

    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        if str(path) in listed or not _has_dicom_magic(path):
            continue
        try:
            with open(path, "rb") as handle:
                dataset = pydicom.dcmread(handle, stop_before_pixels=True)
                if dataset.get("SeriesInstanceUID") == uid:
                    _check_pixel_bytes(dataset, handle, str(path))
        except InputError:
            raise
        except Exception as error:  # pydicom raises many types for damaged files
            raise InputError(path, f"unreadable DICOM file ({str(error)[:120]})") from None
        if dataset.get("SeriesInstanceUID") == uid:
            raise InputError(path, f"a file of series {uid} that the series reader skips "
                                   "(damaged?)")


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def series_geometry(files: list[str], where: str) -> SeriesGeometry:
    """Read every slice's header (not its pixels) and sort the slices along the normal."""
    import pydicom

    headers = []
    for file in files:
        try:
            with open(file, "rb") as handle:
                dataset = pydicom.dcmread(handle, stop_before_pixels=True)
                _check_pixel_bytes(dataset, handle, file)
        except InputError:
            raise
        except Exception as error:  # pydicom raises many types for damaged files
            raise InputError(file, f"unreadable DICOM header ({str(error)[:120]})") from None
        headers.append(dataset)
    first = headers[0]
    orientation = _float_list(first, "ImageOrientationPatient", 6, files[0])
    row, column = orientation[:3], orientation[3:]
    normal = np.cross(row, column)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise InputError(files[0], f"ImageOrientationPatient {orientation.tolist()} is not two "
                                   "perpendicular unit vectors")
    spacing = _float_list(first, "PixelSpacing", 2, files[0])
    check_spacing(files[0], spacing, "PixelSpacing")
    size = (int(first.Columns), int(first.Rows))
    check_voxel_count(where, [size[0], size[1], len(files)])
    origins = []
    for file, dataset in zip(files, headers):
        if not np.allclose(_float_list(dataset, "ImageOrientationPatient", 6, file),
                           orientation, atol=1e-4):
            raise InputError(file, f"series {where}: slices of different orientations")
        if (int(dataset.Columns), int(dataset.Rows)) != size:
            raise InputError(file, f"series {where}: slices of different sizes")
        origins.append(_float_list(dataset, "ImagePositionPatient", 3, file))
    positions = np.array([float(origin @ normal) for origin in origins])
    order = np.argsort(positions, kind="stable")
    return SeriesGeometry([files[i] for i in order], positions[order],
                          [origins[i] for i in order], row, column, normal,
                          (float(spacing[1]), float(spacing[0])), size)


def regularize_series(geometry: SeriesGeometry, read_slice: Callable[[str], np.ndarray]):
    """The series resampled onto evenly spaced slices along its normal (linear between
    neighbouring slices; slices at one position averaged), as a SimpleITK image, and a
    sentence saying what was done."""
    import SimpleITK as sitk

    positions, unique_positions, planes = geometry.positions, [], []
    for index, file in enumerate(geometry.files):
        plane = read_slice(file).astype(np.float32)
        if unique_positions and positions[index] - unique_positions[-1][0] <= POSITION_TOLERANCE_MM:
            unique_positions[-1][1].append(plane)
        else:
            unique_positions.append((positions[index], [plane]))
    where = np.array([p for p, _ in unique_positions])
    stack = [np.mean(p, axis=0) for _, p in unique_positions]
    spacing = geometry.spacing
    count = int(round((where[-1] - where[0]) / spacing)) + 1
    check_voxel_count(geometry.files[0], [*geometry.size, count])
    targets = where[0] + spacing * np.arange(count)
    volume = np.empty((count, geometry.size[1], geometry.size[0]), dtype=np.float32)
    for k, target in enumerate(targets):
        upper = int(np.clip(np.searchsorted(where, target), 1, len(where) - 1))
        lower = upper - 1
        weight = float(np.clip((target - where[lower]) / (where[upper] - where[lower]), 0, 1))
        volume[k] = (1 - weight) * stack[lower] + weight * stack[upper]
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing([*geometry.pixel_spacing, spacing])
    image.SetOrigin(geometry.origin_of[0].tolist())
    image.SetDirection(np.column_stack([geometry.row, geometry.column, geometry.normal])
                       .flatten().tolist())
    note = (f"{len(geometry.files)} slices at uneven positions regularised onto {count} "
            f"slices {spacing:.3g} mm apart ({geometry.problem()})")
    return image, note
