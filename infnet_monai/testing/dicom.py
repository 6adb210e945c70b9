"""A small synthetic DICOM CT series written from a volume, for tests (TorchIO ships such a fixture too).

:func:`write_dicom_series` writes a ``(X, Y, Z)`` RAS volume in Hounsfield units as one uncompressed CT file per axial
slice, stored as scanners store it (int16 with RescaleIntercept -1024), so that discovery, the loader, DICOM-SEG and
SR see a usual series; the fuzz cohort (:mod:`infnet_monai.testing.fuzz`) and the tests of the pipeline and of the
DICOM node build on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

__all__ = ["write_dicom_series"]


def write_dicom_series(hu: np.ndarray, affine: np.ndarray, folder: Path, patient_id: str = "FUZZ") -> Path:
    """Write ``hu`` (``(X, Y, Z)`` RAS, ``affine`` voxel -> RAS mm, axial) as an uncompressed CT series, one file
    per slice, int16 with RescaleIntercept -1024 (stored values >= 0) as scanners store it."""
    folder.mkdir(parents=True, exist_ok=True)
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    lps = np.diag([-1.0, -1.0, 1.0])
    # rows run along -Y (anterior to posterior is +y in LPS), columns along -X (right to left is +x in LPS)
    data = np.asarray(hu)[::-1, ::-1, :]  # (X, Y, Z) from patient right-anterior... to left-posterior
    origin_ras = np.asarray(affine)[:3, :3] @ np.array([data.shape[0] - 1, data.shape[1] - 1, 0]) + np.asarray(affine)[:3, 3]
    for k in range(data.shape[2]):
        ds = pydicom.Dataset()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "CT", patient_id, "Fuzz^Test"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20200401", 1, k + 1
        position = lps @ (origin_ras + np.array([0.0, 0.0, k * spacing[2]]))
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [f"{spacing[1]:.4f}", f"{spacing[0]:.4f}"]
        ds.SliceThickness = f"{spacing[2]:.4f}"
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.ascontiguousarray((data[:, :, k].T + 1024).astype(np.int16)).tobytes()
        ds.save_as(folder / f"IM{k + 1:04d}.dcm", enforce_file_format=True)
    return folder
