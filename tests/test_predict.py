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
from xraylib.predict import find_images, format_predictions, gradcam_names, load_predictor, predict_files

SIZE = 32


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory as `xraylib train` leaves it: model.keras, config.json, metrics.json (threshold 0.4)."""
    from xraylib.config import resolve_config
    from xraylib.models import build_model

    cfg = resolve_config("resnet34", "smoke", {"image_size": str(SIZE)})
    out = tmp_path_factory.mktemp("run")
    build_model(cfg).save(out / "model.keras")
    (out / "config.json").write_text(json.dumps({"run": cfg.to_json()}))
    (out / "metrics.json").write_text(json.dumps({"threshold": {"value": 0.4}}))
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


def test_real_samples_and_odd_files(run_dir, odd_dir, shared_data, tmp_path):
    samples = shared_data / "samples" / "coronahack-test"
    real = sorted(samples.glob("*.jp*g"))
    assert len(real) >= 5
    twin = odd_dir / "deeper" / real[0].name  # same file name as a real sample: Grad-CAM names must differ
    shutil.copy(real[0], twin)
    out, cams = tmp_path / "pred.csv", tmp_path / "cams"

    table = predict_files(run_dir / "model.keras", [samples, odd_dir], out=out, gradcam_dir=cams)

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
    assert f"{len(table)} images:" in text and "2 unreadable" in text and "threshold 0.4" in text
    assert "empty.jpeg" in text and "error" in text


def test_threshold_sources_and_size_without_config(run_dir, odd_dir, tmp_path):
    image = odd_dir / "sixteen.png"
    given = predict_files(run_dir / "model.keras", [image], threshold=0.0)
    assert given.loc[0, "predicted"] == "pneumonia" and given.attrs["threshold_source"] == "--threshold"

    bare = tmp_path / "bare"  # a model alone: size from its input shape, threshold 0.5
    bare.mkdir()
    shutil.copy(run_dir / "model.keras", bare / "model.keras")
    predictor = load_predictor(bare / "model.keras")
    assert predictor.image_size == SIZE and predictor.threshold == 0.5 and predictor.config is None
    table = predict_files(predictor, [image])
    assert table.loc[0, "error"] == "" and 0.0 <= table.loc[0, "p_pneumonia"] <= 1.0
    assert "default" in format_predictions(table)

    with pytest.raises(InputError, match="threshold"):
        load_predictor(run_dir / "model.keras", threshold=1.5)


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


def test_cli_predict(run_dir, odd_dir, tmp_path, capsys):
    out = tmp_path / "cli.csv"
    code = main(["predict", str(run_dir / "model.keras"), str(odd_dir / "deeper"), "--out", str(out)])
    assert code == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert "images:" in printed and "threshold 0.4" in printed


def test_cli_missing_image_is_a_row(run_dir, tmp_path, capsys):
    code = main(["predict", str(run_dir / "model.keras"), str(tmp_path / "nowhere.png")])
    assert code == 0
    assert "not found" in capsys.readouterr().out


def _one_line_error(argv: list[str], capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("xraylib: error:") and "\n" not in err
    return err


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
