"""The `xraylib` command: parses, calls, prints; no logic of its own."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import NoReturn

from xraylib.adapt import MIN_IMAGES
from xraylib.errors import InputError


def _data_synth(a: argparse.Namespace) -> None:
    from xraylib.fileio import output_dir
    from xraylib.synth import write_synthetic_set

    output_dir(a.dir, "DIR")
    if not 0 <= a.seed < 2**32:
        raise InputError(f"--seed {a.seed}: must be in [0, 2**32)")
    root = write_synthetic_set(a.dir, n_train=a.train, n_test=a.test, seed=a.seed, masks=a.masks)
    print(f"synthetic dataset written to {root}")


def _data_fetch(a: argparse.Namespace) -> None:
    from xraylib.download import fetch

    print(f"dataset ready in {fetch(a.dir)}")


def _data_index(a: argparse.Namespace) -> None:
    from xraylib.data import COLUMNS, build_index, summarize
    from xraylib.fileio import output_file, write_csv

    if a.out:
        output_file(a.out, reads=[a.dir])
    index = build_index(a.dir, missing=a.missing)
    if a.out:  # the folder given may be inside the dataset: its metadata and images lie around it
        output_file(a.out, reads=[a.dir, index.attrs["dataset_root"]], header=tuple(COLUMNS[:2]))
    print(summarize(index))
    if a.out:
        write_csv(a.out, index)
        print(f"index written to {a.out}")


def _train(a: argparse.Namespace) -> None:
    from xraylib.config import parse_overrides, resolve_config
    from xraylib.train import train

    cfg = resolve_config(a.backbone, a.preset, parse_overrides(a.set))
    run = train(a.data, cfg, a.out)
    print(f"run written to {run}")


def _sweep(a: argparse.Namespace) -> int:
    from xraylib.backbones import resolve_backbones
    from xraylib.config import parse_overrides
    from xraylib.sweep import parse_seeds, sweep

    seeds = parse_seeds(a.seeds) if a.seeds else None
    backbones, overrides = resolve_backbones(a.backbones), parse_overrides(a.set)
    failed = sweep(
        a.data, backbones, a.preset, overrides, a.out, a.resume, seeds, a.folds, jobs=a.jobs, address=a.address
    )
    return 1 if failed else 0  # the count is printed; 2 stays the status of bad input


def _probe(a: argparse.Namespace) -> None:
    from xraylib.config import parse_overrides, resolve_config
    from xraylib.fileio import output_file, write_csv
    from xraylib.probe import PROBES, format_probe

    if a.shift not in PROBES:
        raise InputError(f"--shift {a.shift}: expected {' or '.join(PROBES)}")
    if a.out:
        output_file(a.out, reads=[a.data], header=("file", "split"))
    cfg = resolve_config(a.backbone, a.preset, parse_overrides(a.set))
    result, scores = PROBES[a.shift](a.data, cfg)
    if a.out:
        write_csv(a.out, scores)
    print(json.dumps(_finite(result), indent=2, allow_nan=False) if a.json else format_probe(result))


def _report(a: argparse.Namespace) -> None:
    from xraylib.leaderboard import build_report

    print(build_report(a.report_dir, references=a.versus or []))


def _evaluate(a: argparse.Namespace) -> None:
    from xraylib.prediction_files import evaluate_file, format_report, sensitivity_by_kind_of_file
    from xraylib.run_evaluation import evaluate_on

    if not 0 <= a.seed < 2**32:
        raise InputError(f"--seed {a.seed}: must be in [0, 2**32)")
    chosen = [flag for flag in ("versus", "thresholds", "calibrations", "acquisition") if getattr(a, flag)]
    if len(chosen) > 1:
        raise InputError(f"--{chosen[0]} and --{chosen[1]}: one of them at a time")
    if a.acquisition and (not a.run or a.data or a.out or a.adapt):
        raise InputError("--acquisition goes with --run RUN_DIR alone: the run's own validation images")
    if bool(a.predictions) == bool(a.run):
        raise InputError("evaluate needs --predictions FILE, or --run RUN_DIR with --data DIR (not both)")
    if a.adapt and not a.run:
        raise InputError("--adapt goes with --run RUN_DIR: it aligns the run's model to the images it scores")
    if a.prevalence != "none" and not a.thresholds:
        raise InputError("--prevalence goes with --run RUN_DIR --thresholds: it re-weights the run's probabilities")
    if a.versus:
        _versus(a)
        return
    if a.thresholds:
        _thresholds(a)
        return
    if a.calibrations:
        _calibrations(a)
        return
    if a.acquisition:
        _acquisition(a)
        return
    if a.run and a.adapt and not a.data:
        _adapted(a)
        return
    if a.run:
        if not a.data:
            raise InputError("--run needs --data DIR: the labelled images to score the run on")
        result = evaluate_on(a.run, a.data, a.out, n_boot=a.bootstrap, seed=a.seed, adapt=a.adapt)
    else:
        if a.out:
            raise InputError("--out goes with --run RUN_DIR (a predictions file is scored as it is)")
        result = evaluate_file(a.predictions, n_boot=a.bootstrap, seed=a.seed)
        if a.data and result["format"] == "three_class":
            raise InputError(f"--data with {a.predictions}: a three-class file's labels already give the kind")
        if a.data:
            result["sensitivity_by_kind"] = sensitivity_by_kind_of_file(a.predictions, a.data, a.bootstrap, a.seed)
    print(json.dumps(_finite(result), indent=2, allow_nan=False) if a.json else format_report(result))


def _thresholds(a: argparse.Namespace) -> None:
    from xraylib.run_evaluation import format_threshold_rules, threshold_rules_of_run

    if not a.run or a.data or a.out or a.adapt:
        raise InputError("--thresholds goes with --run RUN_DIR alone: the run's own validation and test predictions")
    result = threshold_rules_of_run(a.run, n_boot=a.bootstrap, seed=a.seed, prevalence=a.prevalence)
    print(json.dumps(_finite(result), indent=2, allow_nan=False) if a.json else format_threshold_rules(result))


def _calibrations(a: argparse.Namespace) -> None:
    from xraylib.run_evaluation import calibrations_of_run, format_calibrations

    if not a.run or a.data or a.out or a.adapt:
        raise InputError("--calibrations goes with --run RUN_DIR alone: the run's own validation predictions")
    result = calibrations_of_run(a.run, seed=a.seed)
    print(json.dumps(_finite(result), indent=2, allow_nan=False) if a.json else format_calibrations(result))


def _acquisition(a: argparse.Namespace) -> None:
    from xraylib.run_evaluation import acquisition_of_run, format_acquisition

    result = acquisition_of_run(a.run, n_boot=a.bootstrap, seed=a.seed)
    print(json.dumps(_finite(result), indent=2, allow_nan=False) if a.json else format_acquisition(result))


def _adapted(a: argparse.Namespace) -> None:
    from xraylib.run_evaluation import evaluate_adapted, format_adapted

    result = evaluate_adapted(a.run, a.out)
    print(json.dumps(_finite(result), indent=2, allow_nan=False) if a.json else format_adapted(result))


def _versus(a: argparse.Namespace) -> None:
    from xraylib.prediction_files import compare_files, format_comparisons

    if a.run or a.data or a.out:
        raise InputError("--versus compares --predictions FILE with another file, without --run, --data or --out")
    results = [compare_files(a.predictions, other, n_boot=a.bootstrap, seed=a.seed) for other in a.versus]
    if a.json:
        print(json.dumps(_finite({"comparisons": results}), indent=2, allow_nan=False))
    else:
        print(format_comparisons(results))


def _finite(obj):
    """The same structure with NaN and infinities as None: strict JSON (null), which every parser reads."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _predict(a: argparse.Namespace) -> int:
    from xraylib.fileio import output_dir, output_file
    from xraylib.predict import format_predictions, predict_files

    if a.out:
        output_file(
            a.out, reads=[a.model, *a.inputs], owner=os.path.dirname(os.path.abspath(a.model)), header=("path",)
        )
    if a.gradcam:
        output_dir(a.gradcam, "--gradcam")
    table = predict_files(a.model, a.inputs, out=a.out, gradcam_dir=a.gradcam, threshold=a.threshold, adapt=a.adapt)
    if (table["error"] != "").all():  # nothing predicted: bad input, as for the other verbs (no --out written)
        more = f" (and {len(table) - 1} more unreadable)" if len(table) > 1 else ""
        raise InputError(f"{table['path'].iloc[0]}: {table['error'].iloc[0]}{more}")
    print(format_predictions(table))
    if a.adapt:
        from xraylib.adapt import format_entry

        print("\n".join(format_entry(table.attrs["adaptation"])))
    unreadable = table[table["error"] != ""]
    if len(unreadable):  # the rows are kept; the status says not every image was predicted (2 stays bad input)
        first = f"{unreadable['path'].iloc[0]}: {unreadable['error'].iloc[0]}"
        print(f"xraylib: {len(unreadable)} of {len(table)} images could not be read, first {first}", file=sys.stderr)
    return 1 if len(unreadable) else 0


def _app(a: argparse.Namespace) -> None:
    from xraylib.app import build_app, serve

    if a.port is not None and not 0 < a.port < 65536:
        raise InputError(f"--port {a.port}: expected a port number in 1..65535")
    page = build_app(a.run_dir)
    share = True if a.share else None  # None: Gradio's choice (it needs a public link on a hosted notebook)
    serve(page, port=a.port, share=share, prevent_thread_lock=True, quiet=True)
    public = f" and {page.share_url}" if page.share_url else ""
    print(f"prediction page for {a.run_dir} on {page.local_url}{public} (Ctrl-C stops it)", flush=True)
    page.block_thread()


def _export(a: argparse.Namespace) -> None:
    from xraylib.export import export_run, format_export

    print(format_export(export_run(a.run_dir, a.format, out=a.out, quiet=not a.verbose)))


def _bench_pipeline(a: argparse.Namespace) -> None:
    from xraylib.bench import bench_pipeline, format_bench

    if a.limit < 0:
        raise InputError(f"--limit {a.limit}: must not be negative (0 = all images)")
    result = bench_pipeline(a.data, backbone=a.backbone, image_size=a.image_size, limit=a.limit)
    print(json.dumps(result, indent=2) if a.json else format_bench(result))


def _quiet_tensorflow() -> None:
    """Import TensorFlow and probe its devices with file descriptor 2 on /dev/null: its C++ start-up lines
    (oneDNN, `failed call to cuInit` on a machine without a GPU) are not failures and stay out of the way."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


SETTINGS_HELP = "override a preset value, e.g. --set epochs=5 --set weights=none (repeatable)"
PRESET_HELP = "study | sound (default) | cpu | demo | smoke (seed: the former name of study)"
TENSORFLOW_VERBS = ("train", "predict", "bench", "probe", "app", "export")


def _run_settings(parser: argparse.ArgumentParser, preset: str, preset_help: str) -> None:
    """The arguments that make one run's settings: --data, --backbone, --preset, --set."""
    parser.add_argument("--data", required=True, help="dataset directory")
    parser.add_argument("--backbone", required=True, help="backbone name (docs/recipes.md lists them)")
    parser.add_argument("--preset", default=preset, help=preset_help)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help=SETTINGS_HELP)


def _bench_train(a: argparse.Namespace) -> None:
    from xraylib.bench import bench_train, format_bench_train
    from xraylib.config import parse_overrides

    precisions = tuple(a.precision.split(","))
    result = bench_train(a.backbone, a.preset, parse_overrides(a.set), precisions, batches=a.batches)
    print(json.dumps(result, indent=2) if a.json else format_bench_train(result))


def _bench_predict(a: argparse.Namespace) -> None:
    from xraylib.bench import bench_predict, format_bench_predict

    result = bench_predict(a.model, a.inputs, repeats=a.repeats)
    print(json.dumps(result, indent=2) if a.json else format_bench_predict(result))


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, as xraylib's own (argparse prints its usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_data_verbs(verbs, common: argparse.ArgumentParser) -> None:
    """`data synth`, `data fetch`, `data index`."""
    data = verbs.add_parser("data", help="make, fetch or index a dataset").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    s = data.add_parser("synth", parents=[common], help="write a synthetic dataset in the Kaggle CoronaHack layout")
    s.add_argument("dir", help="output directory (created; must not hold a dataset already)")
    s.add_argument("--train", type=int, default=400, help="number of TRAIN images (default 400)")
    s.add_argument("--test", type=int, default=120, help="number of TEST images (default 120)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--masks", action="store_true", help="also write lung-field and opacity masks")
    s.set_defaults(func=_data_synth)
    s = data.add_parser(
        "fetch", parents=[common], help="download the CoronaHack dataset from Kaggle (internet + credentials)"
    )
    s.add_argument("dir", help="where to put the dataset")
    s.set_defaults(func=_data_fetch)
    s = data.add_parser("index", parents=[common], help="index a dataset (any layout) and print a summary")
    s.add_argument("dir", help="dataset directory (zip root, inner folder, or /kaggle/input/...)")
    s.add_argument("--out", help="write the index as CSV to this file")
    s.add_argument(
        "--missing",
        choices=("error", "drop", "keep"),
        default="error",
        help="files listed in the metadata but absent: error (default), drop them, or keep the rows",
    )
    s.set_defaults(func=_data_index)


def _add_training_verbs(verbs, common: argparse.ArgumentParser) -> None:
    """`train`, `sweep`, `probe`, `report`."""
    s = verbs.add_parser("train", parents=[common], help="train one backbone and evaluate it on the test set")
    _run_settings(s, "sound", PRESET_HELP)
    s.add_argument("--out", required=True, help="run directory (an interrupted run there is resumed)")
    s.set_defaults(func=_train)

    s = verbs.add_parser(
        "sweep", parents=[common], help="run the training notebook for several backbones and compare them"
    )
    s.add_argument("--data", required=True, help="dataset directory")
    s.add_argument("--backbones", default="all", help="all (default) or names separated by commas")
    s.add_argument("--preset", default="sound", help=PRESET_HELP)
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help=SETTINGS_HELP)
    s.add_argument("--out", required=True, help="report directory")
    s.add_argument("--resume", action="store_true", help="skip finished runs, continue interrupted or failed ones")
    s.add_argument("--seeds", metavar="S,S,...", help="one run per seed and backbone, e.g. 0,1,2")
    s.add_argument("--folds", type=int, default=0, metavar="K", help="one run per fold of K patient-grouped folds")
    s.add_argument("--jobs", type=int, default=1, help="runs at once, on Ray when above 1 (default 1: no Ray)")
    s.add_argument("--address", help="send the runs to the Ray cluster at this address (auto, ray://HOST:PORT)")
    s.set_defaults(func=_sweep)

    s = verbs.add_parser(
        "probe",
        parents=[common],
        help="can a backbone's frozen features tell the non-Kermany images apart, or the test images?",
    )
    _run_settings(s, "demo", "settings to start from (default demo: frozen, 80 px)")
    s.add_argument(
        "--shift",
        default="source",
        help="source (default): non-Kermany vs Kermany training images; train-test: training vs test images",
    )
    s.add_argument("--out", metavar="FILE.csv", help="write every image's out-of-fold probe score as CSV")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=_probe)

    s = verbs.add_parser(
        "report", parents=[common], help="rebuild the comparison report from the finished runs of a sweep"
    )
    s.add_argument("report_dir", help="the sweep's report directory")
    s.add_argument(
        "--versus",
        action="append",
        metavar="FILE.csv",
        help="also compare each backbone with this predictions file image by image, e.g. the study's "
        "`VGG19 results.csv` (repeatable)",
    )
    s.set_defaults(func=_report)


def _add_evaluate_verb(verbs, common: argparse.ArgumentParser) -> None:
    """`evaluate`: a predictions file, or a run on new data, with its options."""
    s = verbs.add_parser(
        "evaluate", parents=[common], help="metrics with 95%% CIs of a predictions file (the study's or ours)"
    )
    s.add_argument("--predictions", help="CSV: Filename,real,Predictions or predictions.csv")
    s.add_argument("--run", metavar="RUN_DIR", help="a trained run to score on --data (external validation)")
    s.add_argument(
        "--data",
        help="with --run: a labelled dataset to score it on (a CoronaHack or Kermany layout, NORMAL/ and PNEUMONIA/ "
        "folders, also in test/ or chest_xray/test/, or images with a CSV of file,label[,patient]); with "
        "--predictions: the dataset whose metadata gives each image's pneumonia kind (sensitivity for bacterial and "
        "viral pneumonia)",
    )
    s.add_argument("--out", help="with --run: where its predictions, metrics and figures go (RUN_DIR/external/NAME)")
    s.add_argument(
        "--versus",
        action="append",
        metavar="FILE.csv",
        help="with --predictions: compare it image by image with this predictions file (accuracy difference with "
        "its CI, McNemar's test, paired ROC-AUC difference); repeatable",
    )
    s.add_argument(
        "--thresholds",
        action="store_true",
        help="with --run: the rules youden, balanced, sensitivity:0.95 and 0.5, each chosen on the run's validation "
        "predictions, with validation and test sensitivity and specificity",
    )
    s.add_argument(
        "--calibrations",
        action="store_true",
        help="with --run: each calibration method (none, platt, temperature) fitted on some of the run's validation "
        "patients and scored on the others (5 folds, 20 shuffles): Brier, ECE and log loss; the test set is not read",
    )
    s.add_argument(
        "--acquisition",
        action="store_true",
        help="with --run: the run's validation images scored again through each of a fixed catalogue of acquisition "
        "changes (gamma, contrast, blur, noise, resolution, field of view): ROC-AUC, and sensitivity and "
        "specificity at the run's threshold, into RUN_DIR/acquisition.json; the test set is not scored",
    )
    s.add_argument(
        "--prevalence",
        default="none",
        metavar="P|estimate",
        help="with --thresholds: first re-weight the run's calibrated probabilities to the pneumonia prevalence P "
        "(0 < P < 1), or to the one EM estimates from the unlabelled test predictions, by Bayes' rule",
    )
    s.add_argument(
        "--adapt",
        action="store_true",
        help="with --run: first align the run's trained BatchNormalization layers to the images scored, without "
        "their labels (fine_tune=N runs): those of --data, or without --data the run's own test images (written "
        "to RUN_DIR/adapted, beside the run's unadapted files)",
    )
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    s.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    s.set_defaults(func=_evaluate)


def _add_serving_verbs(verbs, common: argparse.ArgumentParser) -> None:
    """`predict`, `app`, `export`."""
    s = verbs.add_parser("predict", parents=[common], help="P(pneumonia) for images with a trained model")
    s.add_argument("model", help="model.keras written by `xraylib train`")
    s.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (recursive)")
    s.add_argument("--out", help="write the predictions as CSV")
    s.add_argument("--gradcam", metavar="DIR", help="write a Grad-CAM PNG per image into DIR")
    s.add_argument("--threshold", type=float, help="decision threshold (default: the run's own)")
    s.add_argument(
        "--adapt",
        action="store_true",
        help="first align the model's trained BatchNormalization layers to the images given, a new site's, without "
        f"labels (fine_tune=N runs; at least {MIN_IMAGES} images)",
    )
    s.set_defaults(func=_predict)

    s = verbs.add_parser("app", parents=[common], help="a prediction page in the browser for a finished run (Gradio)")
    s.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `xraylib train` (or a sweep)")
    s.add_argument("--port", type=int, help="port to listen on (default: Gradio's, 7860 or the next free one)")
    s.add_argument("--share", action="store_true", help="also open a temporary public link (needs internet)")
    s.set_defaults(func=_app)

    s = verbs.add_parser(
        "export", parents=[common], help="export a run's model as a SavedModel, ONNX or LiteRT file for serving"
    )
    s.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `xraylib train` (holds model.keras)")
    s.add_argument("--format", required=True, choices=("saved_model", "onnx", "tflite"), help="the export format")
    s.add_argument(
        "--out",
        metavar="DIR",
        help="folder for the model and export.json (default RUN_DIR/export/FORMAT; replaced if it is an earlier "
        "export holding nothing else, else it must be new or empty)",
    )
    s.set_defaults(func=_export)


def _add_bench_verbs(verbs, common: argparse.ArgumentParser) -> None:
    """`bench pipeline`, `bench train`, `bench predict`."""
    bench = verbs.add_parser("bench", help="benchmarks that print figures").add_subparsers(
        dest="what", required=True, metavar="WHAT"
    )
    s = bench.add_parser("pipeline", parents=[common], help="input-pipeline vs model-only training throughput")
    s.add_argument("--data", required=True, help="dataset directory")
    s.add_argument("--backbone", default="resnet34", help="backbone for the model-only figure")
    s.add_argument("--image-size", type=int, default=150, help="image size in pixels (default 150)")
    s.add_argument("--limit", type=int, default=0, help="use at most this many images (0 = all)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=_bench_pipeline)
    s = bench.add_parser(
        "train",
        parents=[common],
        help="a recipe's training throughput: the frozen trunk once, the top on its outputs, the whole model",
    )
    s.add_argument("--backbone", default="xception", help="backbone name (default xception)")
    s.add_argument("--preset", default="sound", help=PRESET_HELP)
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help=f"{SETTINGS_HELP}; weights=none unless set")
    s.add_argument("--precision", default="float32", help="float32 (default), bfloat16, or both: float32,bfloat16")
    s.add_argument("--batches", type=int, default=3, help="timed batches of each figure, after a warm-up (default 3)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=_bench_train)
    s = bench.add_parser("predict", parents=[common], help="decode + prediction throughput of xraylib predict")
    s.add_argument("model", help="model.keras written by `xraylib train`")
    s.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (recursive)")
    s.add_argument("--repeats", type=int, default=3, help="timed passes after one warm-up (default 3)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=_bench_predict)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb."""
    common = OneLineParser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="also show TensorFlow's own start-up log lines")
    p = OneLineParser(
        prog="xraylib",
        description="Train, evaluate and compare CNN classifiers of chest X-rays (Normal vs Pneumonia).",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in (_add_data_verbs, _add_training_verbs, _add_evaluate_verb, _add_serving_verbs, _add_bench_verbs):
        add(verbs, common)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if args.verb in TENSORFLOW_VERBS or (getattr(args, "run", None) and not args.thresholds):  # loads a model
            _quiet_tensorflow()
    try:
        code = args.func(args)
    except InputError as exc:
        print(f"xraylib: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the system refuses (a special file system, a full disk): say which, in one line
        where = f": {exc.filename}" if exc.filename else ""
        print(f"xraylib: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xraylib: interrupted; finished work is kept (run the same command again to resume)", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
