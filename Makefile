# The two commands: `make demo` (the main job) and `make test`. Both create and reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DATA := data/demo
DEMO_REPORT := reports/demo
# A folder of Keras' ImageNet *_notop.h5 files for machines without internet (`make demo WEIGHTS_DIR=DIR`).
WEIGHTS_DIR ?=

.PHONY: demo test lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	@test -f $(DEMO_DATA)/Chest_xray_Corona_Metadata.csv || $(BIN)/xraylib data synth $(DEMO_DATA) --masks
	XRAYLIB_WEIGHTS_DIR=$(WEIGHTS_DIR) $(BIN)/xraylib sweep --data $(DEMO_DATA) --preset demo --out $(DEMO_REPORT) --resume

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(DEMO_DATA) $(DEMO_REPORT)
