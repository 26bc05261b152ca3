"""External validation: `xraylib evaluate --run RUN_DIR --data DIR` on real radiographs and other layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xraylib.cli import main
from xraylib.data import build_index
from xraylib.errors import InputError
from xraylib.predict import load_predictor, predict_files
from xraylib.run_evaluation import evaluate_on
from xraylib.run_figures import RUN_FIGURES


def labelled_folders(images: list[Path], labels: list[str], root: Path) -> Path:
    """A plain folder of labelled images: NORMAL/ and PNEUMONIA/."""
    for image, label in zip(images, labels, strict=True):
        (root / label.upper()).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, root / label.upper() / image.name)
    return root


@pytest.fixture(scope="module")
def real_radiographs(shared_data, tmp_path_factory) -> Path:
    """The 10 real test radiographs in ../shared (8 normal, 2 viral pneumonia), labelled by folder."""
    samples = sorted((shared_data / "samples" / "coronahack-test").iterdir())
    labels = ["pneumonia" if "virus" in p.name else "normal" for p in samples]  # Kermany names carry the label
    return labelled_folders(samples, labels, tmp_path_factory.mktemp("external") / "outside")


def test_a_run_is_scored_on_real_radiographs_labelled_by_folder(untrained_run, real_radiographs, tmp_path):
    out = tmp_path / "scored"
    result = evaluate_on(untrained_run, real_radiographs, out, n_boot=200)
    assert result["layout"] == "folders" and result["n_images"] == 10
    assert (result["n_pneumonia"], result["n_normal"]) == (2, 8)
    assert result["threshold"] == 0.4 and "validation" in result["threshold_source"], "the run's own threshold"
    frame = pd.read_csv(out / "predictions.csv")
    direct = predict_files(load_predictor(untrained_run / "model.keras"), list(frame["path"]))
    assert np.allclose(frame["p_pneumonia"], direct["p_pneumonia"], atol=1e-6), "the same model, the same inputs"
    assert (frame["predicted"] == np.where(frame["p_pneumonia"] >= 0.4, "pneumonia", "normal")).all()
    assert (frame["label"] == np.where(frame["file"].str.startswith("person"), "pneumonia", "normal")).all()
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["threshold"]["value"] == 0.4 and stored["data"] == str(real_radiographs.resolve())
    y, pred = (frame["label"] == "pneumonia").to_numpy(), (frame["predicted"] == "pneumonia").to_numpy()
    assert stored["at_threshold"]["sensitivity"]["value"] == pytest.approx((y & pred).sum() / y.sum())
    assert stored["at_threshold"]["roc_auc"]["low"] is not None, "with a confidence interval"
    for name in RUN_FIGURES["binary"][1:]:
        assert (out / "figures" / f"{name}.png").stat().st_size > 5_000, name


def test_cli_scores_a_coronahack_layout_into_the_run_folder(untrained_run, synth_data, capsys):
    code = main(["evaluate", "--run", str(untrained_run), "--data", str(synth_data), "--bootstrap", "50"])
    printed = capsys.readouterr().out
    assert code == 0 and f"on {synth_data.resolve()} (coronahack layout)" in printed
    out = untrained_run / "external" / synth_data.name
    frame = pd.read_csv(out / "predictions.csv")
    assert len(frame) == 220, "every labelled image of another dataset, train and test splits alike"
    assert "run threshold 0.4000" in printed


def test_external_sets_as_they_come_test_folders_without_train_and_a_flat_csv(
    untrained_run, synth_data, tmp_path, capsys
):
    index = build_index(synth_data).groupby("label").head(4)
    images, labels = [Path(p) for p in index["path"]], list(index["label"])
    kermany = labelled_folders(images, labels, tmp_path / "kaggle" / "chest_xray" / "test").parents[1]
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, image in enumerate(images):  # anonymised names: no patient in them
        shutil.copy(image, flat / f"scan{i}.jpeg")
    codes = {"normal": 0, "pneumonia": 1}  # the CSV's labels as 0/1
    (flat / "labels.csv").write_text(
        "\n".join(["file,label"] + [f"scan{i}.jpeg,{codes[y]}" for i, y in enumerate(labels)])
    )
    scored = {}
    for name, data, layout, patients, note in (
        ("kermany", kermany, "folders", 5, "every image has a patient id"),  # the Kermany names of the synthetic set
        ("flat", flat, "csv", 8, "8 of 8 images have no patient id (no patient column, no Kermany file name): each"),
    ):
        argv = ["evaluate", "--run", str(untrained_run), "--data", str(data), "--bootstrap", "20"]
        assert main([*argv, "--out", str(tmp_path / f"out-{name}")]) == 0
        printed = capsys.readouterr().out
        assert f"({layout} layout)" in printed and "images: 8 (pneumonia 4, normal 4)" in printed
        assert f"patients: {patients}" in printed and f"patient ids: {note}" in printed
        stored = json.loads((tmp_path / f"out-{name}" / "metrics.json").read_text())
        assert stored["layout"] == layout and stored["patients"].startswith(note)
        assert stored["n_test_patients"] == patients
        scored[name] = pd.read_csv(tmp_path / f"out-{name}" / "predictions.csv")
    by_path = scored["kermany"].set_index(scored["kermany"]["file"])
    expected = by_path.loc[[image.name for image in images]]
    assert list(scored["flat"]["label"]) == list(expected["label"])
    assert np.allclose(scored["flat"]["p_pneumonia"], expected["p_pneumonia"], atol=1e-6), "the same images"
    with open(flat / "labels.csv", "a") as labels_csv:  # an image the labels list but the folder lacks
        labels_csv.write("\nghost.jpeg,1")
    assert main([*argv[:4], str(flat), "--out", str(tmp_path / "out-ghost")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 image(s) its labels list are missing" in err and "ghost.jpeg" in err
    assert not (tmp_path / "out-ghost").exists()


def test_an_unreadable_image_is_one_line_naming_it(untrained_run, synth_data, tmp_path):
    index = build_index(synth_data).groupby("label").head(3)
    data = labelled_folders([Path(p) for p in index["path"]], list(index["label"]), tmp_path / "folders")
    (data / "NORMAL" / "broken.png").write_text("not an image")
    with pytest.raises(InputError, match=r"broken\.png: .*remove it from"):
        evaluate_on(untrained_run, data, tmp_path / "out", n_boot=10)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--run", "RUN"], "--run needs --data"),
        (["--run", "RUN", "--predictions", "x.csv"], "not both"),
        (
            ["--run", "RUN", "--data", "DATA", "--out", "DATA/inside"],
            "must not be the run folder or lie in the dataset",
        ),
        (["--run", "DATA", "--data", "DATA"], "model.keras is missing"),
    ],
)
def test_bad_evaluate_arguments_are_one_line_errors(untrained_run, synth_data, args, message, capsys):
    args = [a.replace("RUN", str(untrained_run)).replace("DATA", str(synth_data)) for a in args]
    assert main(["evaluate", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_the_studys_predictions_break_down_by_pneumonia_kind_with_the_real_metadata(shared_data, capsys):
    study = shared_data / "reference-predictions" / "VGG19 results.csv"
    assert main(["evaluate", "--predictions", str(study), "--data", str(shared_data / "coronahack")]) == 0
    printed = capsys.readouterr().out
    frame = pd.read_csv(study)
    index = build_index(shared_data / "coronahack", missing="keep")
    test = index[index["split"] == "test"].set_index("file")
    for kind, subtypes, n in (("bacterial", {"bacteria"}, 242), ("viral", {"virus", "covid-19", "sars"}, 148)):
        rows = frame[frame["Filename"].map(test["subtype"]).isin(subtypes)]
        assert len(rows) == n
        sensitivity = (rows["Predictions"] == "Pnemonia").mean()  # the study spells it so
        line = next(x for x in printed.splitlines() if x.strip().startswith(kind))
        assert f"{sensitivity:.4f} [" in line and f"({n} images)" in line, line
