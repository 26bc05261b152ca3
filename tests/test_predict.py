"""xraylib.predict: a tiny run directory, the real sample radiographs mixed with odd files, the CLI verb."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xraylib.cli import main
from xraylib.errors import InputError
from xraylib.predict import (
    find_images,
    format_predictions,
    gradcam_names,
    load_predictor,
    predict_files,
    resolve_threshold,
)

SIZE = 32


@pytest.fixture(scope="module")
def run_dir(untrained_run) -> Path:
    return untrained_run


@pytest.fixture(scope="module")
def predictor(run_dir):
    """The run's model loaded once for the module (a ResNet-34 takes seconds to load and trace)."""
    return load_predictor(run_dir / "model.keras")


def _tiny_model(path: Path) -> Path:
    """A small gray-input CNN with a Dense head, saved as model.keras: fast to load for the CLI tests."""
    import keras

    image = keras.Input((SIZE, SIZE, 1), name="image")
    x = keras.layers.Rescaling(1 / 255)(image)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    output = keras.layers.Dense(1, activation="sigmoid", name="pneumonia")(x)
    path.mkdir(parents=True, exist_ok=True)
    keras.Model(image, output).save(path / "model.keras")
    return path / "model.keras"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, run_dir) -> Path:
    """A run directory holding the tiny model, with the real run's config.json and metrics.json."""
    out = tmp_path_factory.mktemp("tiny")
    _tiny_model(out)
    for name in ("config.json", "metrics.json"):
        shutil.copy(run_dir / name, out / name)
    return out


@pytest.fixture(scope="module")
def odd_dir(tmp_path_factory) -> Path:
    """Odd files: 16-bit PNG, RGBA PNG, upper-case suffix, zero-byte .jpeg, a text file named .png, a nested folder."""
    root = tmp_path_factory.mktemp("odd")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 65535, (70, 50), dtype=np.uint16)).save(root / "sixteen.png")
    rgba = rng.integers(0, 255, (40, 60, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "alpha.PNG")
    (root / "empty.jpeg").write_bytes(b"")
    (root / "notes.png").write_text("not an image\n")
    (root / "readme.txt").write_text("skipped: not an image suffix\n")
    nested = root / "deeper" / "nested"
    nested.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(nested / "gray.JPG")
    return root


def test_real_samples_and_odd_files(predictor, odd_dir, shared_data, tmp_path):
    samples = shared_data / "samples" / "coronahack-test"
    real = sorted(samples.glob("*.jp*g"))
    assert len(real) >= 5
    twin = tmp_path / "twin" / real[0].name  # same file name as a real sample: Grad-CAM names must differ
    twin.parent.mkdir()
    shutil.copy(real[0], twin)
    out, cams = tmp_path / "pred.csv", tmp_path / "cams"

    table = predict_files(predictor, [samples, odd_dir, twin.parent], out=out, gradcam_dir=cams)

    assert list(table.columns) == ["path", "p_pneumonia", "predicted", "error", "gradcam"]
    assert len(table) == len(real) + 6  # + sixteen, alpha, empty, notes, gray, twin; readme.txt skipped
    bad = table[table["error"] != ""]
    assert sorted(Path(p).name for p in bad["path"]) == ["empty.jpeg", "notes.png"]
    assert "empty" in bad.set_index(bad["path"].map(lambda p: Path(p).name)).loc["empty.jpeg", "error"]
    assert bad["p_pneumonia"].isna().all() and (bad["predicted"] == "").all() and (bad["gradcam"] == "").all()
    good = table[table["error"] == ""]
    assert good["p_pneumonia"].between(0.0, 1.0).all()
    expected = np.where(good["p_pneumonia"] >= 0.4, "pneumonia", "normal")
    assert (good["predicted"].to_numpy() == expected).all()
    assert table.attrs["threshold"] == 0.4 and "metrics.json" in table.attrs["threshold_source"]

    # the CSV: same rows, absolute paths, error column empty for good images
    saved = pd.read_csv(out, keep_default_na=False)
    assert list(saved.columns) == list(table.columns) and len(saved) == len(table)
    assert all(Path(p).is_absolute() for p in saved["path"])

    # one valid PNG per good image, unique names, original + overlay side by side (wider than tall)
    pngs = [Path(p) for p in good["gradcam"]]
    assert len(set(pngs)) == len(good) == len(list(cams.glob("*.png")))
    for png in pngs:
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            assert im.format == "PNG" and im.width > im.height > 200

    text = format_predictions(table)
    assert f"{len(table)} images:" in text and "2 unreadable" in text and "threshold 0.400" in text
    assert "empty.jpeg" in text and "error" in text


def test_threshold_sources(predictor, run_dir, odd_dir, tmp_path):
    assert resolve_threshold(run_dir) == (0.4, f"the run's {run_dir / 'metrics.json'}")
    assert resolve_threshold(run_dir, 0.7) == (0.7, "--threshold")
    assert resolve_threshold(tmp_path) == (0.5, "default; no metrics.json beside the model")
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(InputError, match="threshold"):
            resolve_threshold(run_dir, bad)
    (tmp_path / "metrics.json").write_text(json.dumps({"threshold": {}}))
    with pytest.raises(InputError, match="metrics.json"):
        resolve_threshold(tmp_path)
    with pytest.raises(InputError, match="threshold"):  # refused before the model is loaded
        load_predictor(run_dir / "model.keras", threshold=2.0)

    given = predict_files(predictor, [odd_dir / "sixteen.png"], threshold=0.0)
    assert given.loc[0, "predicted"] == "pneumonia" and given.attrs["threshold_source"] == "--threshold"
    assert predictor.threshold == 0.4  # the override did not change the loaded predictor


def test_model_alone_size_from_input_shape(tmp_path, odd_dir):
    predictor = load_predictor(_tiny_model(tmp_path / "bare"))
    assert predictor.image_size == SIZE and predictor.threshold == 0.5 and predictor.config is None
    table = predict_files(predictor, [odd_dir / "sixteen.png", odd_dir / "alpha.PNG"], gradcam_dir=tmp_path / "cams")
    assert (table["error"] == "").all() and table["p_pneumonia"].between(0.0, 1.0).all()
    assert all(Path(p).is_file() for p in table["gradcam"])
    assert "default" in format_predictions(table)


def test_tta_averages_the_flipped_image(tiny_run, odd_dir):
    import dataclasses

    from xraylib.pipeline import decode_images
    from xraylib.predict import predict_images

    plain = load_predictor(tiny_run / "model.keras")
    assert not plain.tta
    flipped = dataclasses.replace(plain, config=dataclasses.replace(plain.config, tta=True))
    images, errors = decode_images([odd_dir / "sixteen.png", odd_dir / "alpha.PNG"], SIZE, on_error="collect")
    assert errors == ["", ""]
    mirror = predict_images(plain, images[:, :, ::-1, :])
    expected = (predict_images(plain, images) + mirror) / 2
    np.testing.assert_allclose(predict_images(flipped, images), expected, atol=1e-6)


def test_broken_config(tiny_run, tmp_path, odd_dir, capsys):
    shutil.copy(tiny_run / "model.keras", tmp_path / "model.keras")
    (tmp_path / "config.json").write_text("{not json")
    assert "config.json" in _one_line_error(["predict", str(tmp_path / "model.keras"), str(odd_dir)], capsys)


def test_find_images(odd_dir, tmp_path):
    found = find_images([odd_dir, odd_dir / "sixteen.png"])  # repeats dropped
    names = [p.name for p in found]
    assert "readme.txt" not in names and "alpha.PNG" in names and "gray.JPG" in names
    assert len(names) == len(set(found))
    assert find_images([tmp_path / "missing.png"]) == [tmp_path / "missing.png"]  # kept: gets an error row
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match="no .jpeg"):
        find_images([tmp_path / "empty_dir"])


def test_gradcam_names_unique():
    paths = [Path("a/x.jpeg"), Path("b/x.png"), Path("c/y.jpg"), Path("a/X.jpg"), Path("z.png")]
    names = gradcam_names(paths)
    assert len({n.lower() for n in names}) == len(names)
    assert names[2] == "y.png" and names[4] == "z.png" and names[0] == "a_x.png"


def test_cli_predict(tiny_run, odd_dir, tmp_path, capsys):
    out, missing = tmp_path / "cli.csv", tmp_path / "nowhere.png"
    argv = ["predict", str(tiny_run / "model.keras"), str(odd_dir / "deeper"), str(missing), "--out", str(out)]
    assert main(argv) == 1, "one input could not be read: the rows are written, the status says so"
    captured = capsys.readouterr()
    printed = captured.out
    assert "threshold 0.400" in printed and "1 unreadable" in printed and "not found" in printed
    assert "1 of 2 images could not be read" in captured.err
    saved = pd.read_csv(out, keep_default_na=False)
    assert len(saved) == 2 and saved.loc[1, "error"] == "file not found" and saved.loc[1, "predicted"] == ""


def _one_line_error(argv: list[str], capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("xraylib: error:") and "\n" not in err
    return err


def test_cli_predict_names_the_first_unreadable_image(tiny_run, odd_dir, capsys):
    argv = ["predict", str(tiny_run / "model.keras"), str(odd_dir / "sixteen.png"), str(odd_dir / "notes.png")]
    assert main(argv) == 1
    assert "1 of 2 images could not be read, first " + str(odd_dir / "notes.png") in capsys.readouterr().err


@pytest.mark.parametrize("names", [["nowhere.png"], ["empty.jpeg"], ["notes.png", "empty.jpeg"]])
def test_cli_predict_with_no_readable_image_is_bad_input(tiny_run, odd_dir, tmp_path, capsys, names):
    out = tmp_path / "none.csv"
    argv = ["predict", str(tiny_run / "model.keras"), *(str(odd_dir / name) for name in names), "--out", str(out)]
    err = _one_line_error(argv, capsys)
    assert str(odd_dir / names[0]) in err and ("1 more unreadable" in err) == (len(names) == 2)
    assert not out.exists(), "nothing predicted, nothing written"


@pytest.mark.parametrize("inside", ["", "cams", "deeper/cams"])
def test_cli_gradcam_folder_inside_an_input_folder_is_refused(tiny_run, odd_dir, capsys, inside):
    cams = odd_dir / inside
    err = _one_line_error(["predict", str(tiny_run / "model.keras"), str(odd_dir), "--gradcam", str(cams)], capsys)
    assert "inside the input folder" in err and str(odd_dir) in err
    assert not (odd_dir / "cams").exists() and not (odd_dir / "deeper" / "cams").exists()


def test_cli_not_a_model(tmp_path, odd_dir, capsys):
    fake = tmp_path / "model.keras"
    fake.write_text("this is not a zip archive")
    assert "not a loadable Keras model" in _one_line_error(["predict", str(fake), str(odd_dir)], capsys)
    assert "no such model file" in _one_line_error(["predict", str(tmp_path / "no.keras"), str(odd_dir)], capsys)


def test_cli_unsafe_model(tmp_path, odd_dir, capsys):
    import keras

    inputs = keras.Input((SIZE, SIZE, 1))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)  # arbitrary code: safe mode refuses to load it
    keras.Model(inputs, outputs).save(tmp_path / "model.keras")
    assert "safe mode" in _one_line_error(["predict", str(tmp_path / "model.keras"), str(odd_dir)], capsys)


def test_a_config_of_the_wrong_type_is_one_error_naming_the_file_and_key(tiny_run, tmp_path, odd_dir, capsys):
    shutil.copy(tiny_run / "model.keras", tmp_path / "model.keras")
    run = json.loads((tiny_run / "config.json").read_text())["run"]
    (tmp_path / "config.json").write_text(json.dumps({"run": {**run, "weights": 5}}))
    error = _one_line_error(["predict", str(tmp_path / "model.keras"), str(odd_dir)], capsys)
    assert "config.json: setting weights=5: expected str" in error


def test_a_file_name_that_is_not_utf8_is_one_error_naming_it(tiny_run, tmp_path, capsys):
    import os

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(os.fsdecode(os.fsencode(folder) + b"/IM-\xff.jpeg"))
    out = tmp_path / "p.csv"
    error = _one_line_error(["predict", str(tiny_run / "model.keras"), str(folder), "--out", str(out)], capsys)
    assert "IM-\\xff.jpeg: the file name is not valid UTF-8" in error and not out.exists()
