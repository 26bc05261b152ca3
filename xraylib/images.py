"""Decoding any chest X-ray file (JPEG, PNG or DICOM of any kind) to one 8-bit grayscale array.

A DICOM file (named .dcm or .dicom, or holding the `DICM` marker after its 128-byte preamble, whatever its name) is
decoded by `xraylib.dicom` (pydicom: MONOCHROME1 inverted, modality and VOI LUT applied); everything else by Pillow.

Colour handling, in order:
- EXIF orientation is applied (a phone photo of a film is shown upright).
- 16-bit grayscale (PNG `I;16`, `I`) is scaled to 8 bits as round(v * 255 / 65535): the full 16-bit range maps
  onto the full 8-bit range; nothing is clipped and nothing is stretched per image.
- Alpha (RGBA, LA, palette with transparency) is composited on **black**: a transparent pixel becomes black, the
  colour of air on a radiograph; opaque pixels are unchanged (most such files have an all-opaque alpha channel).
- RGB, CMYK (Adobe-inverted CMYK JPEGs included), YCbCr and palette images become luma (ITU-R 601), as Pillow's
  `convert("L")` computes it; bilevel images become 0/255.
- With `size`, the whole image is resized to (size, size) without cropping: JPEGs are first downscaled in the DCT
  domain by Pillow's `draft()` (to no less than `size` on either side, a large saving in decode time), then
  resampled with an antialiasing Lanczos filter.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from xraylib.errors import InputError
from xraylib.jpeg_scan import scan_is_short

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".dcm", ".dicom")
DICOM_SUFFIXES = (".dcm", ".dicom")
DICOM_MARKER = (128, b"DICM")  # offset and bytes of the DICOM file marker, after the preamble
RESAMPLE = Image.Resampling.LANCZOS


class ImageDecodeError(InputError):
    """A file that cannot be decoded as an image; `.path` and `.reason` kept for batch reports."""

    def __init__(self, path: str | os.PathLike, reason: str, message: str | None = None):
        self.path = os.fspath(path)
        self.reason = " ".join(str(reason).split()) or "unknown error"
        super().__init__(message or f"cannot decode image {self.path}: {self.reason}")


def is_dicom(path: str | os.PathLike) -> bool:
    """Whether a file is DICOM: by its suffix, else by the `DICM` marker after the 128-byte preamble."""
    if Path(path).suffix.lower() in DICOM_SUFFIXES:
        return True
    offset, marker = DICOM_MARKER
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(len(marker)) == marker
    except OSError:
        return False


def is_image_file(path: Path) -> bool:
    """Whether a file found in a folder is an image xraylib reads: an image suffix (any case), or no suffix and the
    DICOM marker (DICOM files from a PACS often have no extension)."""
    if path.name.startswith(".") or not path.is_file():
        return False
    suffix = path.suffix.lower()
    return suffix in IMAGE_SUFFIXES or (not suffix and is_dicom(path))


def _fail(path: str | os.PathLike, reason: str) -> ImageDecodeError:
    """One-line error naming the file."""
    return ImageDecodeError(path, reason)


def _to_gray(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 (H, W) gray (16-bit scaled, alpha composited on black); see the module docstring."""
    mode = im.mode
    if mode == "L":
        return np.array(im, dtype=np.uint8)
    if mode.startswith("I") or mode == "F":  # I;16, I;16B, I;16L, I (16-bit PNG) and 32-bit float
        return _to_8bit(_wide_values(im))
    if (mode == "P" and "transparency" in im.info) or mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "La", "RGBa"):
        if im.mode in ("La", "RGBa"):  # premultiplied alpha: already composited on black
            return np.array(im.convert(im.mode[:-1]).convert("L"), dtype=np.uint8)
        alpha = np.asarray(im.getchannel("A"), dtype=np.uint16)
        luma = np.asarray(im.convert("RGB" if im.mode == "RGBA" else "L").convert("L"), dtype=np.uint16)
        return ((luma * alpha + 127) // 255).astype(np.uint8)
    return np.array(im.convert("L"), dtype=np.uint8)


def _resize(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize a gray image to (size, size) with the antialiasing filter."""
    if gray.shape == (size, size):
        return gray
    return np.array(Image.fromarray(gray).resize((size, size), RESAMPLE), dtype=np.uint8)


def _wide_values(im: Image.Image) -> np.ndarray:
    """A 16-bit (or 32-bit int/float) image as float32 values on the 16-bit scale 0..65535."""
    values = np.asarray(im).astype(np.float32)
    if im.mode == "F" and values.size and values.min() >= 0.0 and values.max() <= 1.0:
        values = values * 65535.0  # float images in [0, 1]
    return np.clip(values, 0.0, 65535.0)


def _to_8bit(values: np.ndarray) -> np.ndarray:
    """16-bit scale -> 8 bits, the full range onto the full range: round(v * 255 / 65535)."""
    return np.rint(np.clip(values, 0.0, 65535.0) * (255.0 / 65535.0)).astype(np.uint8)


def _resize_16(im: Image.Image, size: int) -> np.ndarray:
    """Resize a 16-bit/float image in float precision, then scale it to 8 bits."""
    small = Image.fromarray(_wide_values(im)).resize((size, size), RESAMPLE)
    return _to_8bit(np.asarray(small))


def _check_scan_complete(path: Path, im: Image.Image) -> None:
    """Refuse a JPEG whose entropy-coded data ends before the blocks its frame declares (cut short and closed with
    an end-of-image marker, or a header declaring more rows than its scan holds): libjpeg only warns and pads the
    missing blocks with mid-grey. The scans are walked (`jpeg_scan`) when the last decoded pixel, which a missing
    block always covers, is that grey: a valid image ending in grey 128 costs one walk, not a refusal."""
    last = im.getpixel((im.width - 1, im.height - 1))
    if any(value != 128 for value in (last if isinstance(last, tuple) else (last,))):
        return
    if scan_is_short(path.read_bytes()):
        raise _fail(path, "its data ends before the image's declared size (corrupt header or truncated scan)")


def load_gray(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Decode a JPEG/PNG of any mode or a DICOM to uint8 (H, W), or (size, size) resized; InputError naming a bad
    file."""
    if size is not None and (int(size) != size or size < 1):
        raise InputError(f"image size {size!r}: expected a positive integer")
    path = Path(path)
    try:
        nbytes = path.stat().st_size
    except FileNotFoundError:
        raise ImageDecodeError(path, "file not found", f"image file not found: {path}") from None
    except OSError as exc:
        raise _fail(path, exc.strerror or exc) from None
    if path.is_dir():
        raise _fail(path, "is a directory")
    if nbytes == 0:
        raise _fail(path, "the file is empty (0 bytes)")
    if is_dicom(path):
        from xraylib.dicom import UnreadableDicom, dicom_gray

        try:
            gray = dicom_gray(path)
        except UnreadableDicom as exc:
            raise _fail(path, str(exc)) from exc
        return _resize(gray, size) if size is not None else gray
    try:
        with Image.open(path) as im:
            if im.format not in ("JPEG", "PNG", "MPO"):
                raise _fail(path, f"{im.format} is not a supported format (JPEG, PNG or DICOM)")
            drafted = None
            if size is not None and im.format in ("JPEG", "MPO"):
                # DCT-domain downscale (1/2, 1/4, 1/8), never below `size` on either side; luma straight from Y
                drafted = im.draft("L" if im.mode in ("L", "RGB", "YCbCr") else None, (size, size))
            im.load()
            if im.format in ("JPEG", "MPO"):
                _check_scan_complete(path, im)
            if drafted is not None:
                # a partial 8x8 block at the right/bottom edge becomes a last column/row that is mostly the
                # encoder's padding (visibly dark): keep only whole scaled pixels (< 1 px of geometry)
                box = drafted[1]
                keep = (max(1, int(box[2])), max(1, int(box[3])))
                if keep != im.size:
                    im = im.crop((0, 0, *keep))
            im = ImageOps.exif_transpose(im) if im.getexif().get(0x0112, 1) != 1 else im
            if size is not None and (im.mode.startswith("I") or im.mode == "F"):
                return _resize_16(im, size)
            if im.mode == "L" and size is not None:  # the common case: resize in place, no extra copy
                return np.array(im.resize((size, size), RESAMPLE) if im.size != (size, size) else im)
            gray = _to_gray(im)
    except InputError:
        raise
    except Image.UnidentifiedImageError:
        raise _fail(path, "not an image file (unknown format)") from None
    except Image.DecompressionBombError as exc:
        raise _fail(path, exc) from None
    except (OSError, SyntaxError, ValueError, EOFError, KeyError, IndexError, TypeError) as exc:
        # truncated data ("image file is truncated"), broken PNG chunks/CRCs, corrupt headers...
        raise _fail(path, f"corrupt or truncated file ({type(exc).__name__}: {exc})") from exc
    if gray.ndim != 2 or gray.size == 0:
        raise _fail(path, f"unexpected decoded shape {gray.shape}")
    return _resize(gray, size) if size is not None else gray
