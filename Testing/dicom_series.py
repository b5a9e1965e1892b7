"""Test helpers: a volume written as a real single-frame CT DICOM series (pydicom), a
spherical tumour on its grid, a DICOM SEG of it as a workstation would write one
(highdicom), and dciodvfy's verdict on a DICOM file."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

PATIENT = {"PatientName": "Test^Patient", "PatientID": "RG-TEST-0001",
           "PatientBirthDate": "19700101", "PatientSex": "O"}


def write_ct_series(image: sitk.Image, folder: Path, description: str = "chest",
                    study_uid: str | None = None) -> dict[str, str]:
    """One DICOM file per plane of `image` (int16 HU); returns the UIDs it used."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = sitk.GetArrayFromImage(sitk.Cast(image, sitk.sitkInt16))
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    uids = {"study": study_uid or generate_uid(), "series": generate_uid(),
            "frame_of_reference": generate_uid()}
    now = datetime.datetime(2026, 1, 2, 3, 4, 5)
    for k, plane in enumerate(pixels):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        for key, value in PATIENT.items():
            setattr(ds, key, value)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = uids["frame_of_reference"], ""
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "ACC-42", "1", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.SeriesDescription, ds.Manufacturer = description, "test"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientPosition, ds.KVP, ds.AcquisitionNumber = "HFS", 120, 1
        ds.ImagePositionPatient = [round(float(v), 6) for v in
                                   image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = [round(float(v), 6) for v in
                                      (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [round(image.GetSpacing()[1], 6), round(image.GetSpacing()[0], 6)]
        ds.SliceThickness = round(image.GetSpacing()[2], 6)
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.PixelData = plane.astype("<i2").tobytes()
        ds.save_as(folder / f"{description}_{k:03d}.dcm", enforce_file_format=True)
    return uids


def sphere(reference: sitk.Image, radius_mm: float, centre_index=None) -> sitk.Image:
    """A 0/1 uint8 ball on `reference`'s grid, centred on its middle voxel by default."""
    size = np.array(reference.GetSize())
    index = (size - 1) / 2 if centre_index is None else np.asarray(centre_index, float)
    centre = np.asarray(reference.TransformContinuousIndexToPhysicalPoint(index.tolist()))
    z, y, x = np.indices(size[::-1])
    index = np.stack([x, y, z], axis=-1).reshape(-1, 3).astype(float)
    affine = np.asarray(reference.GetDirection()).reshape(3, 3) * np.asarray(reference.GetSpacing())
    points = index @ affine.T + np.asarray(reference.GetOrigin())
    inside = (np.linalg.norm(points - centre, axis=1) <= radius_mm).reshape(size[::-1])
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(reference)
    return mask


def dciodvfy_errors(path: Path) -> list[str]:
    """The "Error" lines of Debian's dciodvfy (dicom3tools) on one DICOM file."""
    program = shutil.which("dciodvfy")
    assert program, "dciodvfy is missing: `make testdata` installs Debian's dicom3tools"
    result = subprocess.run([program, str(path)], capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines()
            if line.startswith("Error")]


def write_workstation_seg(series: Path, mask: sitk.Image, path: Path,
                          label: str = "GTV") -> None:
    """`mask` (on the series' grid) as a DICOM SEG by some other software."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = sorted((pydicom.dcmread(f) for f in series.iterdir()),
                     key=lambda d: int(d.InstanceNumber))
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=sitk.GetArrayFromImage(mask).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment], series_instance_uid=hd.UID(), series_number=50,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="Workstation",
        manufacturer_model_name="contouring", software_versions="1",
        device_serial_number="1", series_description="tumour contour")
    seg.save_as(path, enforce_file_format=True)
