"""DICOM input: DICOMs written from a real radiograph in each form read as the JPEG's pixels (or their stated
inversion); `predict` and the prediction page's reading function on a .dcm; one-line errors for what cannot be read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    MPEG2MPML,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from xraylib.cli import main
from xraylib.errors import InputError
from xraylib.images import IMAGE_SUFFIXES, is_image_file, load_gray

SAMPLE = "person1685_virus_2903.jpeg"  # the smallest real radiograph of the shared samples (792 x 560, grayscale)


@pytest.fixture(scope="module")
def jpeg(shared_data):
    return shared_data / "samples" / "coronahack-test" / SAMPLE


@pytest.fixture(scope="module")
def gray(jpeg) -> np.ndarray:
    """The real radiograph's pixels as xraylib reads the JPEG."""
    return load_gray(jpeg)


def dicom(pixels, path, bits: int = 8, photometric: str = "MONOCHROME2", syntax=ExplicitVRLittleEndian, **elements):
    """Write a single-frame grayscale DICOM of `pixels` (an array, or encapsulated bytes with `syntax`)."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (8 if bits == 8 else 16), bits, bits - 1, 0
    if isinstance(pixels, np.ndarray):
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = pixels.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
    else:
        ds.Rows, ds.Columns = elements.pop("shape")
        ds.PixelData = pixels
    for name, value in elements.items():
        setattr(ds, name, value)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_suffixes_are_image_suffixes():
    assert {".dcm", ".dicom"} <= set(IMAGE_SUFFIXES)


def test_monochrome2_8bit_reads_the_jpegs_pixels(gray, tmp_path):
    path = dicom(gray, tmp_path / "m2.dcm")
    np.testing.assert_array_equal(load_gray(path), gray)
    expected = np.asarray(Image.fromarray(gray).resize((64, 64), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(load_gray(path, 64), expected)


def test_monochrome1_is_inverted(gray, tmp_path):
    path = dicom(255 - gray, tmp_path / "m1.dicom", photometric="MONOCHROME1")
    np.testing.assert_array_equal(load_gray(path), gray)


def test_12_bit_data_is_scaled_to_8_bits_as_the_window_says(gray, tmp_path):
    stored = 1000 + 8 * gray.astype(np.uint16)  # 1000..3040 of 0..4095: the window 1000..3040 is the image
    path = dicom(stored, tmp_path / "w12.dcm", bits=12, WindowCenter=2020, WindowWidth=2041)
    assert np.abs(load_gray(path).astype(int) - gray).max() <= 1
    unwindowed = dicom(stored, tmp_path / "full12.dcm", bits=12)  # no window: the full 12-bit range, 0..4095
    expected = np.rint(stored * 255.0 / 4095).astype(np.uint8)
    np.testing.assert_array_equal(load_gray(unwindowed), expected)
    assert np.abs(load_gray(unwindowed).astype(int) - gray).max() > 50, "the window makes a difference"


def test_rescale_slope_and_intercept_are_applied_before_the_window(gray, tmp_path):
    stored = 2 * gray.astype(np.uint16) + 100  # modality values: stored * 0.5 - 50 = the JPEG's gray
    window = {"WindowCenter": 128, "WindowWidth": 256}  # 0..255 of the modality values
    path = dicom(stored, tmp_path / "rescaled.dcm", bits=12, RescaleSlope=0.5, RescaleIntercept=-50, **window)
    assert np.abs(load_gray(path).astype(int) - gray).max() <= 1


def test_a_voi_lut_table_is_applied(gray, tmp_path):
    stored = 1000 + 8 * gray.astype(np.uint16)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 16])
    table = (np.clip((np.arange(4096) - 1000) / 8, 0, 255) * 256).astype("<u2")  # 1000..3040 onto 0..65280
    item.add_new("LUTData", "OW", table.tobytes())
    path = dicom(stored, tmp_path / "lut.dcm", bits=12, VOILUTSequence=Sequence([item]))
    assert np.abs(load_gray(path).astype(int) - gray).max() <= 1


def test_jpeg_baseline_dicom_holding_the_radiographs_jpeg(jpeg, gray, tmp_path):
    data = encapsulate([jpeg.read_bytes()])
    path = dicom(data, tmp_path / "baseline.dcm", syntax=JPEGBaseline8Bit, shape=gray.shape)
    assert np.abs(load_gray(path).astype(int) - gray).max() <= 1


def test_rle_lossless_12_bit(gray, tmp_path):
    stored = 1000 + 8 * gray.astype(np.uint16)
    plain = dicom(stored, tmp_path / "plain.dcm", bits=12, WindowCenter=2020, WindowWidth=2041)
    ds = pydicom.dcmread(plain)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    assert pydicom.dcmread(tmp_path / "rle.dcm").file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(load_gray(tmp_path / "rle.dcm"), load_gray(plain))


def test_jpeg_lossless_12_bit_through_gdcm(gray, tmp_path):
    """JPEG Lossless (process 14), the usual compression of CR/DX images, written and then read through GDCM."""
    gdcm = pytest.importorskip("gdcm")
    stored = 1000 + 8 * gray.astype(np.uint16)
    plain = dicom(stored, tmp_path / "plain.dcm", bits=12, WindowCenter=2020, WindowWidth=2041)
    reader = gdcm.ImageReader()
    reader.SetFileName(str(plain))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(tmp_path / "lossless.dcm"))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    assert pydicom.dcmread(tmp_path / "lossless.dcm").file_meta.TransferSyntaxUID == JPEGLosslessSV1
    np.testing.assert_array_equal(load_gray(tmp_path / "lossless.dcm"), load_gray(plain))


def test_an_rgb_dicom_becomes_luma(gray, tmp_path):
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgb[:, : gray.shape[1] // 2] = (200, 0, 0)  # left half pure red: luma 0.299 * 200 = 60
    path = tmp_path / "rgb.dcm"
    dicom(gray, path)
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = rgb.tobytes()
    ds.save_as(path)
    out = load_gray(path)
    assert (out[:, : gray.shape[1] // 2] == 60).all()
    np.testing.assert_array_equal(out[:, gray.shape[1] // 2 :], gray[:, gray.shape[1] // 2 :])


def test_a_dicom_without_a_suffix_is_found_by_its_marker(gray, tmp_path):
    dicom(gray, tmp_path / "IM00001")
    (tmp_path / "NOTES").write_text("not an image")
    np.testing.assert_array_equal(load_gray(tmp_path / "IM00001"), gray)
    assert is_image_file(tmp_path / "IM00001") and not is_image_file(tmp_path / "NOTES")


def test_a_kermany_layout_of_dicoms_is_indexed_and_decoded_for_training(gray, tmp_path):
    from xraylib.data import build_index
    from xraylib.pipeline import cached_images

    for split in ("train", "test"):
        dicom(gray, tmp_path / "chest_xray" / split / "NORMAL" / "IM-0001-0001.dcm")
        dicom(255 - gray, tmp_path / "chest_xray" / split / "PNEUMONIA" / "person1_virus_6", photometric="MONOCHROME1")
    index = build_index(tmp_path)
    assert index.attrs["layout"] == "kermany" and len(index) == 4
    assert set(index["file"]) == {"IM-0001-0001.dcm", "person1_virus_6"}
    images = cached_images(list(index["path"]), 32, cache_dir="none")
    assert images.shape == (4, 32, 32, 1) and (images == images[:1]).all(), "the same radiograph in all four"


def _one_line(path) -> str:
    with pytest.raises(InputError) as info:
        load_gray(path, 32)
    message = str(info.value)
    assert "\n" not in message and path.name in message
    return message


def test_what_cannot_be_read_is_one_line_naming_the_file(gray, tmp_path):
    path = dicom(gray, tmp_path / "nopixels.dcm")
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    assert "without pixel data" in _one_line(path)
    video = dicom(encapsulate([b"\x00" * 64]), tmp_path / "video.dcm", syntax=MPEG2MPML, shape=gray.shape)
    assert "MPEG2" in _one_line(video)
    (tmp_path / "notdicom.dcm").write_text("a text file named .dcm")
    _one_line(tmp_path / "notdicom.dcm")
    frames = dicom(np.concatenate([gray, gray]), tmp_path / "frames.dcm", NumberOfFrames=2)
    frames_ds = pydicom.dcmread(frames)
    frames_ds.Rows = gray.shape[0]
    frames_ds.save_as(frames)
    assert "2 frames" in _one_line(frames)


@pytest.fixture(scope="module")
def predictor(untrained_run):
    from xraylib.predict import load_predictor

    return load_predictor(untrained_run / "model.keras")


def test_predict_on_a_dicom_end_to_end(untrained_run, gray, tmp_path, capsys):
    Image.fromarray(gray).save(tmp_path / "radiograph.png")  # the same pixels, decoded without DICOM
    dicom(255 - gray, tmp_path / "radiograph.dcm", photometric="MONOCHROME1")
    out = tmp_path / "predictions.csv"
    argv = ["predict", str(untrained_run / "model.keras"), str(tmp_path), "--out", str(out)]
    assert main(argv) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert (table["error"] == "").all() and len(table) == 2
    p = dict(zip(table["path"].map(lambda path: Path(path).suffix), table["p_pneumonia"], strict=True))
    assert p[".dcm"] == pytest.approx(p[".png"], abs=1e-6), "the inverted MONOCHROME1 DICOM is the PNG's image"
    assert "radiograph.dcm" in capsys.readouterr().out


def test_the_prediction_pages_reading_function_on_a_dicom(predictor, gray, tmp_path):
    from xraylib.app import predict_uploads

    path = dicom(gray, tmp_path / "upload.dcm")
    table, figures, problems = predict_uploads(predictor, [path])
    assert problems == [] and list(table["file"]) == ["upload.dcm"]
    assert table.loc[0, "prediction"] in ("normal", "pneumonia") and len(figures) == 1
    bad = dicom(encapsulate([b"\x00" * 64]), tmp_path / "video.dcm", syntax=MPEG2MPML, shape=gray.shape)
    table, figures, problems = predict_uploads(predictor, [path, bad])
    assert len(figures) == 1 and len(problems) == 1 and "video.dcm" in problems[0]
