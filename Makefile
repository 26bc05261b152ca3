# The two commands: `make demo` (the main job) and `make test`; `make docs` builds the documentation. All create
# and reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DATA := data/demo
DEMO_REPORT := reports/demo
# A folder of Keras' ImageNet *_notop.h5 files for machines without internet (`make demo WEIGHTS_DIR=DIR`).
WEIGHTS_DIR ?=
# Runs at once: one per core (on Ray when above 1); `make demo JOBS=1` runs them one after another without Ray.
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
# pytest workers (pytest-xdist): one per core, at most 4 (each imports TensorFlow); `make test TEST_JOBS=0` runs the
# tests in one process. A test module stays on one worker, so its module-scoped fixtures run once.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: demo test docs browser lint format clean lock

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)
	@test -f $(DEMO_DATA)/Chest_xray_Corona_Metadata.csv || $(BIN)/xraylib data synth $(DEMO_DATA) --masks
	XRAYLIB_WEIGHTS_DIR=$(WEIGHTS_DIR) $(BIN)/xraylib sweep --data $(DEMO_DATA) --preset demo --out $(DEMO_REPORT) --jobs $(JOBS) --resume

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@$(MAKE) --no-print-directory browser
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile

# The documentation site (docs/, mkdocs.yml) into site/, in strict mode: a broken link or a page left out fails.
# NO_MKDOCS_2_WARNING silences Material's end-of-life notice (it is about the theme, not the docs).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# Debian's Chromium and its driver, for the prediction page's browser tests: installed when chromedriver is missing
# and make runs as root (CI); otherwise those tests skip, naming the packages.
browser:
	@if ! command -v chromedriver >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium and chromium-driver for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
			|| echo "make: could not install chromium chromium-driver; the browser tests will skip"; \
	fi

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Upgrade the tested stack: a fresh venv with the newest releases pyproject.toml allows, frozen into constraints.txt
# (then run `make test` and commit constraints.txt if it passes).
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet -e '.[all,dev]'
	( head -2 constraints.txt; .venv-lock/bin/pip freeze --exclude-editable | grep -v '^-e' ) > constraints.new
	mv constraints.new constraints.txt
	rm -rf .venv-lock $(STAMP)

clean:
	rm -rf $(VENV) $(DEMO_DATA) $(DEMO_REPORT)
