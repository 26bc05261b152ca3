"""Decoding a DICOM file's pixels to one 8-bit grayscale array (called by `xraylib.images.load_gray` only).

In order (PS3.3 C.11, with pydicom's functions):
- the pixel data are decoded by pydicom: uncompressed and RLE natively, JPEG (baseline, extended, lossless), JPEG-LS
  and JPEG 2000 through GDCM (python-gdcm), JPEG baseline and JPEG 2000 through Pillow too;
- the modality LUT (rescale slope and intercept, or a Modality LUT Sequence) is applied (`apply_modality_lut`);
- the VOI LUT (a VOI LUT Sequence, else the first window centre/width) is applied (`apply_voi_lut`), and the
  range it maps onto (the window's output range, or the table's lowest to highest entry) becomes 0..255;
- without a VOI LUT, the full range of the stored bits (e.g. 0..4095 for 12 bits), through the modality LUT, becomes
  0..255: nothing is stretched per image (as for a 16-bit PNG);
- MONOCHROME1 (white is low) is inverted to the MONOCHROME2 convention (255 - v); RGB and YBR images of 8 bits
  become luma (ITU-R 601, as Pillow computes it).
Multi-frame files, palette colour and a DICOM without pixel data are refused (`UnreadableDicom`, one line).
"""

from __future__ import annotations

import os

import numpy as np

from xraylib.errors import first_line

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")


class UnreadableDicom(Exception):
    """Why a DICOM file cannot be read, in one line (`load_gray` names the file)."""


def _read(path: str | os.PathLike):
    """The dataset of a DICOM file (a file without the 128-byte preamble is read too)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
        raise UnreadableDicom(f"not a readable DICOM file ({type(exc).__name__}: {first_line(exc)})") from exc


def _pixels(ds) -> np.ndarray:
    """The decoded stored values of the one frame; one-line errors for what pydicom cannot decode."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGBaseline8Bit

    if "PixelData" not in ds:
        raise UnreadableDicom("a DICOM file without pixel data (no PixelData element)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnreadableDicom(f"a DICOM file of {frames} frames (xraylib reads single-frame radiographs)")
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    try:
        if syntax == JPEGBaseline8Bit and "pillow" in get_decoder(syntax).available_plugins:
            ds.pixel_array_options(decoding_plugin="pillow")  # the pixels of the same JPEG read as a file
        return ds.pixel_array
    except Exception as exc:  # pydicom raises RuntimeError, NotImplementedError, ValueError, AttributeError...
        name = syntax.name if syntax is not None else "unknown transfer syntax"
        raise UnreadableDicom(f"cannot decode its {name} pixel data ({first_line(exc)})") from exc


def _stored_range(ds) -> np.ndarray:
    """The lowest and highest value the stored bits can hold."""
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1])
    return np.array([0, 2**bits - 1])


def _has_voi_table(ds) -> bool:
    """Whether a VOI LUT Sequence with a table is present (pydicom's apply_voi_lut then prefers it to a window)."""
    lut = ds.get("VOILUTSequence")
    return bool(lut) and lut[0].get("LUTDescriptor") is not None and lut[0].get("LUTData") is not None


def _output_range(ds) -> tuple[float, float]:
    """The values that become 0 and 255: the VOI LUT table's lowest and highest entry, the window's output range,
    or (no VOI LUT) the stored bits' range through the modality LUT."""
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_voi_lut

    if _has_voi_table(ds):
        entries, first = int(ds.VOILUTSequence[0].LUTDescriptor[0]) or 2**16, int(ds.VOILUTSequence[0].LUTDescriptor[1])
        table = apply_voi(np.arange(first, first + entries), ds)
        return float(table.min()), float(table.max())
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        with np.errstate(over="ignore"):  # a sigmoid window at +-1e300
            low, high = apply_voi_lut(np.array([-1e300, 1e300]), ds)
        return float(low), float(high)
    low, high = sorted(np.asarray(apply_modality_lut(_stored_range(ds), ds), dtype=float))
    return low, high


def _scaled(ds, values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Stored values -> modality LUT -> VOI LUT -> uint8, `low` to 0 and `high` to 255 (MONOCHROME1 inverted)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    out = np.asarray(apply_voi_lut(apply_modality_lut(values, ds), ds), dtype=np.float64)
    scale = 255.0 / (high - low) if high != low else 0.0
    gray = np.rint(np.clip((out - low) * scale, 0.0, 255.0)).astype(np.uint8)
    return 255 - gray if ds.PhotometricInterpretation == "MONOCHROME1" else gray


def _monochrome(ds, stored: np.ndarray) -> np.ndarray:
    """A grayscale image to uint8: integer data through a table of every value between its lowest and highest (the
    same result as the image itself through `_scaled`, at a fraction of the cost on a large image)."""
    try:
        low, high = _output_range(ds)
        if stored.dtype.kind not in "iu" or stored.dtype.itemsize > 2:
            return _scaled(ds, stored, low, high)
        first = int(stored.min())
        table = _scaled(ds, np.arange(first, int(stored.max()) + 1).astype(stored.dtype), low, high)
    except (ValueError, NotImplementedError, AttributeError, IndexError, TypeError) as exc:
        raise UnreadableDicom(f"its modality or VOI LUT cannot be applied ({first_line(exc)})") from exc
    return table[stored if first == 0 else stored.astype(np.int32) - first]


def dicom_gray(path: str | os.PathLike) -> np.ndarray:
    """uint8 (H, W) gray of a single-frame DICOM file, as the module docstring says; UnreadableDicom if it cannot."""
    from PIL import Image

    ds = _read(path)
    stored = _pixels(ds)
    kind = str(ds.get("PhotometricInterpretation", "")).strip()
    if kind in MONOCHROME and stored.ndim == 2:
        return _monochrome(ds, stored)
    if kind in COLOUR and stored.ndim == 3 and stored.shape[2] == 3 and stored.dtype == np.uint8:
        return np.array(Image.fromarray(stored, "RGB").convert("L"), dtype=np.uint8)
    raise UnreadableDicom(
        f"photometric interpretation {kind or '(none)'} of {stored.dtype} pixels shaped {stored.shape} is not "
        "supported (MONOCHROME1, MONOCHROME2, or 8-bit RGB/YBR)"
    )
