"""xraylib: train, evaluate and compare CNN classifiers of chest X-rays (Normal vs Pneumonia).

The public names below import without TensorFlow. Modules (README "Layout"): backbones, config, data, splits,
download, synth, images, pipeline, layers, models, prepare, inference, features, train, strategy, checkpoint,
calibration, tracking, runs, metrics, multiclass, prediction_files, run_evaluation, three_class, explain, plots,
gradcam_plots, compare_plots, multiclass_plots, data_plots, plot_style, leaderboard, report, sweep, workers,
notebook, predict, app, export, export_formats, probe, adapt, bench, errors, fileio, cli (the training and model
functions load TensorFlow when called).
"""

from xraylib.backbones import BACKBONES, get_backbone
from xraylib.config import PRESETS, RunConfig, resolve_config
from xraylib.data import build_index, summarize
from xraylib.errors import InputError
from xraylib.prediction_files import evaluate_file
from xraylib.run_evaluation import evaluate_on
from xraylib.splits import assign_subsets
from xraylib.synth import write_synthetic_set

__version__ = "0.1.0"
__all__ = [
    "BACKBONES",
    "PRESETS",
    "InputError",
    "RunConfig",
    "assign_subsets",
    "build_index",
    "evaluate_file",
    "evaluate_on",
    "get_backbone",
    "write_synthetic_set",
    "resolve_config",
    "summarize",
]
