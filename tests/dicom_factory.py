"""Generated DICOM files for tests (pydicom): known pixels, known header, planted PHI.

Every identifying value a test may search for afterwards is a parameter, so a test plants a
canary (e.g. ``CANARYNAME^ZEBULON``) and then checks it is nowhere in the outputs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)


@dataclasses.dataclass
class Identity:
    """The identifying header values of one generated study (all planted verbatim)."""

    patient_name: str = "Doe^Jane"
    patient_id: str = "PID-42"
    birth_date: str = "19700101"
    accession: str = "ACC0001"
    institution: str = "General Hospital"
    study_date: str = "20240315"
    study_uid: str = dataclasses.field(default_factory=generate_uid)
    series_uid: str = dataclasses.field(default_factory=generate_uid)


def make_dataset(
    pixels: np.ndarray,
    identity: Identity | None = None,
    *,
    bits_stored: int | None = None,
    signed: bool = False,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    modality: str = "CT",
    sop_class: str = CTImageStorage,
    burned_in: str | None = None,
    private: bool = True,
    study_description: str = "CHEST",
    instance_number: int = 1,
) -> Dataset:
    """A complete image dataset holding ``pixels``: (H, W), (frames, H, W), (H, W, 3) or
    (frames, H, W, 3), dtype uint8/uint16/int16 (stored values as given)."""
    identity = identity or Identity()
    arr = np.ascontiguousarray(pixels)
    colour = arr.shape[-1] == 3 and arr.ndim in (3, 4) and photometric == "RGB"
    frames = arr.shape[0] if arr.ndim == (4 if colour else 3) else 1
    rows, cols = (arr.shape[-3], arr.shape[-2]) if colour else arr.shape[-2:]
    bits_alloc = arr.dtype.itemsize * 8

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    sop_uid = generate_uid()
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = identity.study_uid
    ds.SeriesInstanceUID = identity.series_uid
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = "F"
    ds.AccessionNumber = identity.accession
    ds.InstitutionName = identity.institution
    ds.InstitutionAddress = f"1 Main Street, {identity.institution} town"
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.StudyDate = identity.study_date
    ds.SeriesDate = identity.study_date
    ds.ContentDate = identity.study_date
    ds.StudyTime = "101500"
    ds.StudyID = "S1"
    ds.StudyDescription = study_description
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.Modality = modality
    ds.OtherPatientIDsSequence = Sequence([Dataset()])
    ds.OtherPatientIDsSequence[0].PatientID = identity.patient_id + "-OTHER"
    ds.OtherPatientIDsSequence[0].IssuerOfPatientID = identity.institution
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    if private:
        block = ds.private_block(0x0009, "MEDSEC TEST", create=True)
        block.add_new(0x10, "LO", f"private copy of {identity.patient_name}")

    ds.Rows, ds.Columns = int(rows), int(cols)
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = bits_alloc
    ds.BitsStored = bits_stored or bits_alloc
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None or intercept is not None:
        ds.RescaleSlope = slope if slope is not None else 1
        ds.RescaleIntercept = intercept if intercept is not None else 0
        ds.RescaleType = "HU"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = arr.tobytes()
    return ds


def write(ds: Dataset, path: str | Path) -> Path:
    """Save ``ds`` as a DICOM Part 10 file (with preamble and file meta)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def phantom_pixels(label: int, seed: int, size: int = 32) -> np.ndarray:
    """A 12-bit (H, W) uint16 image: noise, plus a bright disc when ``label`` is 1."""
    rng = np.random.default_rng(seed)
    img = rng.normal(1000, 120, (size, size))
    if label:
        yy, xx = np.mgrid[:size, :size]
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 6) ** 2] += 1500
    return np.clip(img, 0, 4095).astype(np.uint16)


def write_study_tree(root: Path, identities: list[Identity], per_study: int = 4,
                     size: int = 32, name_in_paths: bool = True) -> list[Path]:
    """Write one study per identity under ``root``: ``<PatientName>_<PatientID>/<Accession>/
    img<i>.dcm`` when ``name_in_paths`` (as some exports name them; PHI in file AND folder
    names), labels alternate 0/1 by study (StudyDescription ``LESION`` or ``NORMAL``)."""
    paths = []
    for s, ident in enumerate(identities):
        label = s % 2
        folder = root / (f"{ident.patient_name.replace('^', '_')}_{ident.patient_id}"
                         if name_in_paths else f"study{s}") / ident.accession
        for i in range(per_study):
            ds = make_dataset(phantom_pixels(label, seed=100 * s + i, size=size), ident,
                              bits_stored=12, window=(1500, 3000),
                              study_description="LESION" if label else "NORMAL",
                              instance_number=i + 1, burned_in="NO")
            stem = f"{ident.patient_name.split('^')[0]}_img{i}" if name_in_paths else f"img{i}"
            paths.append(write(ds, folder / f"{stem}.dcm"))
    return paths


def reread(path: str | Path) -> Dataset:
    return pydicom.dcmread(path)


__all__ = ["Identity", "SecondaryCaptureImageStorage", "make_dataset", "phantom_pixels",
           "reread", "write", "write_study_tree"]
