"""The package's public surface: a light import, and --help on every verb."""

import subprocess
import sys

import pytest

from xraylib.cli import main


def test_import_is_light_and_modules_are_reachable():
    code = "import sys, xraylib, xraylib.train; assert 'tensorflow' not in sys.modules; print(xraylib.train.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "xraylib.train"


@pytest.mark.parametrize(
    "verb",
    [
        ["data", "synth"],
        ["data", "fetch"],
        ["data", "index"],
        ["train"],
        ["sweep"],
        ["report"],
        ["evaluate"],
        ["predict"],
        ["export"],
        ["bench", "pipeline"],
    ],
)
def test_every_verb_explains_itself(verb, capsys):
    with pytest.raises(SystemExit) as info:
        main([*verb, "--help"])
    assert info.value.code == 0
    assert "usage: xraylib " + " ".join(verb) in capsys.readouterr().out
