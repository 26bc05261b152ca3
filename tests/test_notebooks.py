"""The committed notebooks: clean, parameterized, and only calling into xraylib."""

import json

import pytest

from xraylib.runs import NOTEBOOKS as FOLDER

NOTEBOOKS = sorted(p for p in FOLDER.iterdir() if p.name.endswith(".ipynb"))


def test_the_three_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {"train_backbone.ipynb", "explore_dataset.ipynb", "compare_backbones.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    dirty = [i for i, c in enumerate(cells) if c.get("outputs") or c.get("execution_count")]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_parameters_cell_and_thin_code(path):
    cells = json.loads(path.read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    for cell in cells:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            assert len(source.splitlines()) <= 8, f"{path.name}: a long cell belongs in xraylib\n{source}"
            assert "def " not in source and "class " not in source
