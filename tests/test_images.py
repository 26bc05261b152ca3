"""load_gray: every odd image kind decodes to 8-bit gray; every bad file is a one-line InputError naming it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xraylib.errors import InputError
from xraylib.images import IMAGE_SUFFIXES, ImageDecodeError, load_gray

H, W = 48, 64

# (width, height) of the 10 real test-set JPEGs, recorded once by opening them with Pillow
SAMPLE_SIZES = {
    "IM-0001-0001.jpg": (1857, 1317),
    "IM-0003-0001.jpg": (2111, 1509),
    "IM-0005-0001.jpg": (2031, 1837),
    "IM-0006-0001.jpg": (1663, 1326),
    "IM-0007-0001.jpg": (2053, 1818),
    "IM-0021-0001.jpeg": (2624, 1893),
    "IM-0109-0001.jpeg": (1802, 1110),
    "NORMAL2-IM-0030-0001.jpeg": (2517, 2713),
    "person1682_virus_2899.jpeg": (1712, 1392),
    "person1685_virus_2903.jpeg": (792, 560),
}


@pytest.fixture()
def gray() -> np.ndarray:
    """A smooth 8-bit gray test pattern (JPEG-friendly)."""
    y, x = np.mgrid[0:H, 0:W]
    return (40 + 2 * x + y).astype(np.uint8)


def test_suffixes():
    assert IMAGE_SUFFIXES == (".jpeg", ".jpg", ".png", ".dcm", ".dicom")


def test_gray_png_exact(tmp_path, gray):
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = load_gray(tmp_path / "g.png")
    assert out.dtype == np.uint8 and out.shape == (H, W)
    np.testing.assert_array_equal(out, gray)


def test_gray_jpeg(tmp_path, gray):
    Image.fromarray(gray).save(tmp_path / "g.jpeg", quality=95)
    out = load_gray(tmp_path / "g.jpeg")
    assert out.dtype == np.uint8 and out.shape == (H, W)
    assert np.abs(out.astype(int) - gray).max() <= 3


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_rgb_becomes_luma(tmp_path, gray, suffix):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 200  # pure red plane: luma 0.299 * 200 = 60 where green/blue are 0
    rgb[:, W // 2 :] = gray[:, W // 2 :, None]  # right half gray: luma equals the gray value
    Image.fromarray(rgb).save(tmp_path / f"c{suffix}", **({"quality": 95} if suffix == ".jpg" else {}))
    out = load_gray(tmp_path / f"c{suffix}")
    assert out.shape == (H, W) and out.dtype == np.uint8
    tol = 0 if suffix == ".png" else 6
    assert abs(int(out[H // 2, 5]) - 60) <= tol
    assert np.abs(out[:, W // 2 + 4 :].astype(int) - gray[:, W // 2 + 4 :]).max() <= max(tol, 0)


def test_rgba_composited_on_black(tmp_path, gray):
    alpha = np.full((H, W), 255, np.uint8)
    alpha[:, : W // 4] = 0  # transparent strip -> black
    alpha[:, W // 4 : W // 2] = 128  # half transparent -> half the value
    rgba = np.dstack([gray, gray, gray, alpha])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    out = load_gray(tmp_path / "a.png")
    assert out.shape == (H, W)
    assert (out[:, : W // 4] == 0).all()
    half = np.rint(gray[:, W // 4 : W // 2].astype(float) * 128 / 255)
    assert np.abs(out[:, W // 4 : W // 2] - half).max() <= 1
    np.testing.assert_array_equal(out[:, W // 2 :], gray[:, W // 2 :])


def test_gray_alpha_la(tmp_path, gray):
    Image.fromarray(np.dstack([gray, np.full_like(gray, 255)]), mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_gray(tmp_path / "la.png"), gray)


def test_cmyk_jpeg(tmp_path, gray):
    rgb = Image.fromarray(np.dstack([gray, gray, gray]))
    rgb.convert("CMYK").save(tmp_path / "k.jpg", quality=95)
    assert Image.open(tmp_path / "k.jpg").mode == "CMYK"
    out = load_gray(tmp_path / "k.jpg")
    assert out.shape == (H, W) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - gray).mean() < 4  # not inverted, not garbled
    assert load_gray(tmp_path / "k.jpg", 16).shape == (16, 16)


def test_palette_png(tmp_path, gray):
    levels = (gray // 32 * 32).astype(np.uint8)  # 8 gray levels: exact in a palette
    im = Image.fromarray(levels).convert("P")
    im.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(load_gray(tmp_path / "p.png"), levels)


def test_palette_png_with_transparency(tmp_path):
    im = Image.new("P", (W, H), 1)
    im.putpalette([0, 0, 0, 200, 200, 200] + [0, 0, 0] * 254)
    im.paste(0, (0, 0, 10, H))  # palette entry 0 on the left ...
    im.info["transparency"] = 0  # ... is transparent -> black
    im.save(tmp_path / "pt.png", transparency=0)
    out = load_gray(tmp_path / "pt.png")
    assert (out[:, :10] == 0).all() and (out[:, 10:] == 200).all()


def test_16bit_png_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, H * W).reshape(H, W).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "w.png")
    assert Image.open(tmp_path / "w.png").mode.startswith("I")
    out = load_gray(tmp_path / "w.png")
    assert out.dtype == np.uint8 and out.shape == (H, W)
    np.testing.assert_array_equal(out, np.rint(values / 257.0).astype(np.uint8))
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) == 256  # full range, not clipped at 255
    small = load_gray(tmp_path / "w.png", 24)
    assert small.shape == (24, 24) and small.dtype == np.uint8
    assert small[:, 0].mean() < small[:, -1].mean()


def test_bilevel_png(tmp_path, gray):
    Image.fromarray(gray > 100).save(tmp_path / "b.png")
    out = load_gray(tmp_path / "b.png")
    assert set(np.unique(out)) <= {0, 255}


def test_exif_orientation_applied(tmp_path, gray):
    im = Image.fromarray(gray)
    exif = im.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: width and height swap when displayed upright
    im.save(tmp_path / "o.jpg", exif=exif, quality=95)
    assert load_gray(tmp_path / "o.jpg").shape == (W, H)


@pytest.mark.parametrize("size", [1, 20, 150])
def test_resize_whole_image_no_crop(tmp_path, size):
    left_dark = np.full((H, W), 220, np.uint8)
    left_dark[:, : W // 2] = 20
    Image.fromarray(left_dark).save(tmp_path / "r.png")
    Image.fromarray(left_dark).save(tmp_path / "r.jpg", quality=95)
    for name in ("r.png", "r.jpg"):
        out = load_gray(tmp_path / name, size)
        assert out.shape == (size, size) and out.dtype == np.uint8
        if size >= 20:  # the dark half stays the left half: squeezed, not cropped
            assert out[:, : size // 2 - 2].mean() < 40 and out[:, size // 2 + 2 :].mean() > 200


def test_png_named_jpeg_decodes_by_content(tmp_path, gray):
    Image.fromarray(gray).save(tmp_path / "actually_png.jpeg", format="PNG")
    np.testing.assert_array_equal(load_gray(tmp_path / "actually_png.jpeg"), gray)


# ------------------------------------------------------------------------------------------------ bad files


def _bad(path, size=None) -> str:
    with pytest.raises(InputError) as info:
        load_gray(path, size)
    message = str(info.value)
    assert "\n" not in message and path.name in message
    return message


@pytest.mark.parametrize("size", [None, 64])
def test_zero_byte(tmp_path, size):
    (tmp_path / "empty.jpeg").write_bytes(b"")
    assert "empty" in _bad(tmp_path / "empty.jpeg", size)


@pytest.mark.parametrize("size", [None, 64])
def test_text_file_named_jpeg(tmp_path, size):
    (tmp_path / "notes.jpeg").write_text("patient list, not an image\n")
    assert "not an image" in _bad(tmp_path / "notes.jpeg", size)


@pytest.mark.parametrize("size", [None, 64])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(tmp_path, gray, fmt, size):
    noisy = np.random.default_rng(0).integers(0, 256, (200, 300), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp_path / "full.img", format=fmt)
    data = (tmp_path / "full.img").read_bytes()
    (tmp_path / "cut.img").write_bytes(data[: len(data) // 2])
    assert "truncated" in _bad(tmp_path / "cut.img", size)


def test_truncated_real_jpeg(tmp_path, shared_data):
    data = (shared_data / "samples" / "coronahack-test" / "IM-0001-0001.jpg").read_bytes()
    (tmp_path / "IM-0001-0001.jpg").write_bytes(data[: len(data) * 2 // 3])
    _bad(tmp_path / "IM-0001-0001.jpg", 150)


def test_missing(tmp_path):
    assert "not found" in _bad(tmp_path / "nowhere.png")


def test_directory(tmp_path):
    (tmp_path / "folder.png").mkdir()
    _bad(tmp_path / "folder.png")


def test_unsupported_format(tmp_path, gray):
    Image.fromarray(gray).save(tmp_path / "g.bmp.png", format="BMP")
    assert "BMP" in _bad(tmp_path / "g.bmp.png")


def test_bad_size(tmp_path, gray):
    Image.fromarray(gray).save(tmp_path / "g.png")
    with pytest.raises(InputError):
        load_gray(tmp_path / "g.png", 0)


# ------------------------------------------------------------------------------------------- real samples


def test_real_samples_decode_to_expected_sizes(shared_data):
    folder = shared_data / "samples" / "coronahack-test"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    assert {p.name for p in files} == set(SAMPLE_SIZES)
    for path in files:
        width, height = SAMPLE_SIZES[path.name]
        with Image.open(path) as im:
            assert im.size == (width, height), path.name
        out = load_gray(path)
        assert out.shape == (height, width) and out.dtype == np.uint8, path.name
        assert 20 < out.mean() < 235 and out.std() > 20, path.name  # a real radiograph, not a blank
        small = load_gray(path, 150)
        assert small.shape == (150, 150) and small.dtype == np.uint8
        # the fast path (1/8 DCT-domain draft, then Lanczos) agrees with a full decode + Lanczos within a few gray
        # levels (measured 0.2-3.1 on these ten: the 8x8 DCT average is a slightly softer prefilter), no edge artefact
        reference = np.asarray(Image.fromarray(out).resize((150, 150), Image.Resampling.LANCZOS), dtype=float)
        diff = np.abs(small - reference)
        assert diff.mean() < 4.0, path.name
        assert np.corrcoef(small.ravel(), reference.ravel())[0, 1] > 0.99, path.name
        assert diff[:, -1].mean() < 16 and diff[-1, :].mean() < 16, path.name


def test_a_jpeg_whose_header_claims_more_rows_than_its_scan_holds_is_refused(tmp_path):
    """libjpeg pads the missing rows with grey and only warns: without a check it decodes as a flat image."""
    import io

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 48), dtype=np.uint8)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 7] = (900).to_bytes(2, "big")  # the frame header's height: 900 rows instead of 64
    path = tmp_path / "lying.jpeg"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageDecodeError, match="ends before the image's declared size"):
        load_gray(path, 32)
    (tmp_path / "fine.jpeg").write_bytes(buffer.getvalue())
    assert load_gray(tmp_path / "fine.jpeg", 32).shape == (32, 32)


def _noise_over_grey(rows: int, **save) -> bytes:
    """A JPEG of noise whose bottom `rows` are exactly grey 128 (a padded radiograph can be), as decoded."""
    import io

    pixels = np.random.default_rng(1).integers(0, 255, (96, 80), dtype=np.uint8)
    pixels[-rows:] = 128
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(save.pop("mode", "L")).save(buffer, "JPEG", quality=95, **save)
    return buffer.getvalue()


@pytest.mark.parametrize("save", [{}, {"mode": "RGB"}, {"mode": "RGB", "subsampling": 0}, {"restart_marker_blocks": 3}])
@pytest.mark.parametrize("size", [None, 32])
def test_a_valid_jpeg_whose_bottom_rows_are_grey_128_is_read(tmp_path, size, save):
    path = tmp_path / "padded.jpeg"
    path.write_bytes(_noise_over_grey(32, **save))
    gray = load_gray(path, size)
    assert (load_gray(path)[-16:] == 128).all(), "the test needs the bottom rows exactly 128"
    assert gray.shape == ((96, 80) if size is None else (32, 32))


@pytest.mark.parametrize("save", [{}, {"mode": "RGB"}, {"mode": "RGB", "restart_marker_blocks": 3}])
@pytest.mark.parametrize("size", [None, 32])
def test_a_jpeg_cut_short_and_closed_with_an_end_marker_is_refused(tmp_path, size, save):
    data = _noise_over_grey(8, **save)
    path = tmp_path / "cut.jpeg"
    path.write_bytes(data[: len(data) * 2 // 3] + b"\xff\xd9")  # the decoder only warns: premature end of data
    assert "ends before the image's declared size" in _bad(path, size)
    path.write_bytes(data[:-3] + b"\xff\xd9")  # only the last block or two missing
    assert "ends before the image's declared size" in _bad(path, size)
