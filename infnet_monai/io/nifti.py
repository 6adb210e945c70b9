"""Reading a NIfTI CT (``.nii``, ``.nii.gz``) and checking its header before a voxel is decoded.

:func:`load_nifti` is :func:`~infnet_monai.io.volume.load_ct`'s reader for a NIfTI case: the stored header is checked
against the bytes the file holds (gzip checked to its end) and against the limits of :mod:`infnet_monai.io.budget`,
then nibabel's header for its voxel offset, voxel sizes and a qform and sform that disagree; the voxels are read by
:class:`CompactNibabelReader`, MONAI's ``NibabelReader`` with the scaling applied without a float64 copy and nibabel's
own affine.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.data import MetaTensor
from monai.data.image_reader import NibabelReader
from monai.data.utils import affine_to_spacing
from monai.utils import ensure_tuple

from infnet_monai.io.base_reader import CaseError, SourceInfo, check_extent, check_file, check_spacing, read_volume
from infnet_monai.io.budget import nifti_size_refusal
from infnet_monai.io.cases import CTCase

__all__ = ["CompactNibabelReader", "NIFTI1_MIN_VOX_OFFSET", "load_nifti"]

NIFTI1_MIN_VOX_OFFSET = 352
"""A single-file NIfTI-1 (.nii, .nii.gz) keeps its voxels after the 348-byte header and 4 extension bytes."""


class CompactNibabelReader(NibabelReader):
    """MONAI's :class:`~monai.data.NibabelReader` with nibabel's own geometry (see :meth:`read`) and the NIfTI scaling
    (``scl_slope``, ``scl_inter``) applied to the stored integers without nibabel's float64 intermediate: integer
    results stay integers (int32 at most; :func:`~infnet_monai.io.volume.load_ct` makes them int16), others become
    float32. Values equal what nibabel's scaled read gives."""

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any):
        """``nibabel.load`` of each file, without MONAI's ``correct_nifti_header_if_necessary``: that rebuilds the
        affine from ``pixdim`` when the sform's voxel size differs from it, while nibabel (and so the written masks)
        take the sform. The volume is measured in the geometry the masks carry: one geometry per case."""
        names = ensure_tuple(data)
        self.filenames = names
        options = {**self.kwargs, **kwargs}
        images = [nib.load(name, **options) for name in names]
        return images if len(names) > 1 else images[0]

    def _get_array_data(self, img, filename):  # noqa: D102 - see the class docstring
        proxy = img.dataobj
        raw = np.asanyarray(proxy.get_unscaled()) if hasattr(proxy, "get_unscaled") else np.asanyarray(proxy)
        if not raw.dtype.isnative:  # a big-endian file: torch takes native byte order only
            raw = raw.astype(raw.dtype.newbyteorder("="))
        slope = float(getattr(proxy, "slope", 1.0) if getattr(proxy, "slope", None) is not None else 1.0)
        inter = float(getattr(proxy, "inter", 0.0) if getattr(proxy, "inter", None) is not None else 0.0)
        if not np.isfinite(slope) or slope == 0.0:
            slope = 1.0  # nibabel's rule: no scaling
        if not np.isfinite(inter):
            inter = 0.0
        if slope == 1.0 and inter == 0.0:
            return raw
        if np.issubdtype(raw.dtype, np.integer) and slope == int(slope) and inter == int(inter):
            lo, hi = int(raw.min()) * int(slope), int(raw.max()) * int(slope)
            bounds = sorted((lo, hi))
            if bounds[0] + int(inter) >= -(2**31) and bounds[1] + int(inter) < 2**31:
                out = raw.astype(np.int32)
                if slope != 1.0:
                    out *= int(slope)
                out += int(inter)
                return out
        out = raw.astype(np.float32)
        out *= np.float32(slope)
        out += np.float32(inter)
        return out


def load_nifti(
    case: CTCase, min_slices: int, max_spacing_mm: float, max_slices: int | None
) -> tuple[MetaTensor, SourceInfo]:
    """The voxels of a NIfTI case as stored (scaled, not yet compacted or checked as HU), after its header checks.

    Args:
        case: a case of kind ``"nifti"``.
        min_slices, max_spacing_mm, max_slices: as :func:`~infnet_monai.io.volume.load_ct` takes them.

    Returns:
        ``MetaTensor`` ``(1, X, Y, Z)`` with nibabel's affine, and what the header records of the scaling.

    Raises:
        CaseError: the file or its header cannot be used.
    """
    path = Path(case.files[0]) if case.files else Path(case.source_path)
    check_file(path)
    stored = _check_nifti_stream(path, max_slices)
    try:
        header_image = nib.load(path)
        shape = tuple(int(s) for s in header_image.shape)
        affine = np.asarray(header_image.affine, dtype=np.float64)  # what MONAI's NibabelReader gives the volume
        # nibabel moves scl_slope/scl_inter into the data proxy (1 and 0 when unset); writers store 1/0 for
        # "no scaling", so only a non-zero intercept counts as a recorded rescale
        inter = float(getattr(header_image.dataobj, "inter", 0.0) or 0.0)
        slope = float(getattr(header_image.dataobj, "slope", 1.0) or 1.0)
    except Exception as e:
        raise CaseError(
            f"{path}: not a readable NIfTI image ({type(e).__name__}: {e}). The file is truncated, corrupt or not "
            "NIfTI despite its name: export it again as .nii/.nii.gz."
        ) from e
    if len(shape) < 3:
        raise CaseError(
            f"{path}: 2D image of shape {shape}; a 3D CT volume (X, Y, Z) is needed. Export the whole series."
        )
    _check_nifti_header(path, header_image, stored, shape)
    extra = shape[3:]
    if any(s > 1 for s in extra):
        raise CaseError(
            f"{path}: {len(shape)}D image of shape {shape} holds {int(np.prod(extra))} volumes; one 3D CT volume is "
            "needed. Split it (e.g. nibabel's four_to_three) and give one volume per case."
        )
    check_extent(path, shape[:3], min_slices)
    check_spacing(path, affine, max_spacing_mm)
    image = read_volume(CompactNibabelReader(squeeze_non_spatial_dims=True), path, str(path))
    if tuple(image.shape) != (1, *shape[:3]):
        raise CaseError(
            f"{path}: the voxel data read (shape {tuple(image.shape[1:])}) does not match the header's {shape}. "
            "Export the image again as .nii/.nii.gz."
        )
    scaling = f"scl_slope {slope:g}, scl_inter {inter:g}"
    return image, SourceInfo(rescale_missing=not np.isfinite(inter) or inter == 0.0, scaling=scaling)


def _stream_size(path: Path, needed: int) -> int:
    """Bytes of the (decompressed) file, reading a gzip stream to its end so that its CRC and length are checked; it
    stops once more than ``needed`` bytes came (the file is refused then, without inflating the rest)."""
    if not path.name.lower().endswith(".gz"):
        return path.stat().st_size
    size = 0
    try:
        with gzip.open(path, "rb") as f:
            while size <= needed and (chunk := f.read(1 << 22)):  # bounded memory
                size += len(chunk)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise CaseError(
            f"{path}: the gzip stream is damaged ({type(e).__name__}: {e}); its voxels cannot be trusted. The file "
            "was corrupted in storage or transfer: copy or export it again."
        ) from e
    return size


def _check_nifti_stream(path: Path, max_slices: int | None = None) -> nib.Nifti1Header:
    """Check the stored header's basic fields and the data size before anything is decoded: ``dim[0]``, the
    dimensions, the datatype and ``vox_offset`` must describe exactly the bytes the file (gzip checked to its end)
    holds; a changed header would otherwise read the voxels shifted, in pieces or as another type. Returns the
    header as stored (nibabel's own reading sets a 0 in pixdim to 1)."""
    try:
        with nib.openers.ImageOpener(str(path)) as f:
            head = f.read(4)
        sizeof_hdr = int(np.frombuffer(head, "<i4")[0]) if len(head) == 4 else 0
        if sizeof_hdr not in (348, 540) and len(head) == 4:
            sizeof_hdr = int(np.frombuffer(head, ">i4")[0])
        klass = nib.Nifti2Header if sizeof_hdr == 540 else nib.Nifti1Header
        with nib.openers.ImageOpener(str(path)) as f:
            stored = klass.from_fileobj(f, check=False)
    except Exception as e:  # noqa: BLE001 - random bytes can fail anywhere in the parse
        raise CaseError(
            f"{path}: not a readable NIfTI image ({type(e).__name__}: {e}). The file is truncated, corrupt or not "
            "NIfTI despite its name: export it again as .nii/.nii.gz."
        ) from e
    magic = bytes(stored["magic"]).rstrip(b"\0")
    if magic not in (b"n+1", b"n+2", b"ni1", b"ni2"):
        raise CaseError(
            f"{path}: not a NIfTI image (magic {magic!r}, expected b'n+1'). The file is corrupt or another format "
            "despite its name: export it again as .nii/.nii.gz."
        )
    forms = {k: np.asarray(stored[k], dtype=np.float64) for k in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x",
             "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z")}  # fmt: skip
    broken = [k for k, v in forms.items() if not np.all(np.isfinite(v))]
    if broken:  # even in a form whose code says "unused": a header with NaN in it is damaged
        raise CaseError(
            f"{path}: the header's {', '.join(broken)} hold NaN or infinite numbers, so the volume's position cannot "
            "be trusted. The header is damaged: fix it or export the image again."
        )
    dim = [int(d) for d in stored["dim"]]
    if not 1 <= dim[0] <= 7:
        raise CaseError(
            f"{path}: header field dim[0] is {dim[0]}, but it must give the number of dimensions (1 to 7). The "
            "header is damaged: export the image again."
        )
    if any(d < 1 for d in dim[1 : dim[0] + 1]):
        raise CaseError(f"{path}: header dimensions {dim[1 : dim[0] + 1]} hold a size below 1. The header is damaged.")
    try:
        itemsize = np.dtype(stored.get_data_dtype()).itemsize
    except Exception as e:  # noqa: BLE001 - an unknown datatype code
        raise CaseError(f"{path}: unknown NIfTI datatype code {int(stored['datatype'])} ({e}). The header is damaged.") from e
    refusal = nifti_size_refusal(path, stored, max_slices)  # before a byte is inflated, in Python ints
    if refusal:
        raise CaseError(refusal)
    offset = int(stored["vox_offset"])
    needed = offset + int(np.prod(dim[1 : dim[0] + 1], dtype=np.int64)) * itemsize
    size = _stream_size(path, needed)
    if offset >= int(stored["sizeof_hdr"]) and size != needed:
        state = "is cut short" if size < needed else "holds more data than the header describes"
        raise CaseError(
            f"{path}: the file {state}: {'over ' if size > needed else ''}{size} bytes"
            f"{' uncompressed' if path.name.lower().endswith('.gz') else ''}, "
            f"while the header (dim {dim[1 : dim[0] + 1]}, datatype {stored.get_data_dtype()}, vox_offset {offset}) "
            f"needs {needed}. The file is truncated or its header was changed: export it again."
        )
    return stored


def _check_nifti_header(path: Path, image: nib.Nifti1Image, stored: nib.Nifti1Header, shape: Sequence[int]) -> None:
    """Refuse NIfTI headers that would give wrong voxels or a wrong geometry without any other error: a voxel offset
    inside the header, a zero or undefined pixdim, and a qform and sform that both claim to place the volume but
    disagree by more than half a voxel (the volume would be measured in one and the masks written in the other)."""
    header = image.header
    first = int(getattr(header, "sizeof_hdr", NIFTI1_MIN_VOX_OFFSET - 4)) + 4  # 352 for NIfTI-1, 544 for NIfTI-2
    offset = int(getattr(image.dataobj, "offset", first))
    single_file = path.name.lower().endswith((".nii", ".nii.gz"))
    if single_file and isinstance(header, nib.Nifti1Header) and offset < first:
        raise CaseError(
            f"{path}: vox_offset {offset} lies inside the {first}-byte NIfTI header, so the voxels "
            "would be read from the header bytes. The file is damaged: export it again."
        )
    pixdim = np.asarray(stored["pixdim"][1:4], dtype=np.float64)
    if not np.all(np.isfinite(pixdim)) or np.any(pixdim == 0):
        raise CaseError(
            f"{path}: pixdim {pixdim.tolist()} holds a zero or undefined voxel size, which would be taken as 1 mm. "
            "Fix the header's voxel sizes (pixdim[1:4]) or export the image again."
        )
    try:
        qform, qcode = header.get_qform(coded=True)
        sform, scode = header.get_sform(coded=True)
    except Exception as e:  # nibabel's HeaderDataError on a NaN quaternion, among others
        raise CaseError(f"{path}: the qform or sform cannot be read ({type(e).__name__}: {e}). Fix the header.") from e
    if any(m is not None and not np.all(np.isfinite(m)) for m in (qform, sform)):
        raise CaseError(f"{path}: the qform or sform holds NaN or infinite numbers. Fix the header.")
    if qform is None or sform is None or not (qcode and scode):
        return
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    apart = np.linalg.norm((corners @ qform.T - corners @ sform.T)[:, :3], axis=1).max()
    voxel = float(np.min(affine_to_spacing(np.asarray(sform, dtype=np.float64), r=3)))
    if not np.isfinite(apart) or apart > 0.5 * voxel:
        raise CaseError(
            f"{path}: the qform and the sform place the volume {apart:.1f} mm apart (more than half a voxel). Which "
            "geometry is right cannot be told from the file: fix the header (e.g. set the wrong one's code to 0)."
        )

