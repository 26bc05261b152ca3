"""xraylib: train, evaluate and compare CNN classifiers of chest X-rays (Normal vs Pneumonia).

The public names below import without TensorFlow (the training and model functions load it when called). The
package is flat: one module per concern, listed with what each holds in the module map of docs/development.md.
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
