# Two commands for readers: `make run` and `make test`. See README.
PYTHON   ?= python3
# The torch requirement: `make test TORCH=torch==2.13.0` takes a CPU build where one is on disk;
# for a GPU see README.
TORCH    ?= torch
VENV     := .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

# notebooks executed by make never show progress bars (they would land in the outputs)
export PRESIDENTIAL_PROGRESS := 0

.PHONY: setup run test unit refresh bench images clean

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" -r requirements.txt
	touch $(STAMP)

# Execute every notebook, in order, into build/ (.ipynb and .html); the committed ones stay untouched.
run: $(STAMP)
	mkdir -p build
	for nb in $(NOTEBOOKS); do \
	  $(PY) -m jupyter nbconvert --to notebook --execute --output-dir build "$$nb" || exit 1; \
	  $(PY) -m jupyter nbconvert --to html --output-dir build "build/$$(basename $$nb)" || exit 1; \
	done

# Unit tests, then every notebook under nbval.
test: $(STAMP)
	$(PY) -m pytest

unit: $(STAMP)
	$(PY) -m pytest tests

# Re-execute the notebooks in place, updating their stored outputs.
refresh: $(STAMP)
	for nb in $(NOTEBOOKS); do \
	  $(PY) -m jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.record_timing=False "$$nb" || exit 1; \
	done

bench: $(STAMP)
	$(PY) tests/benchmarks.py

images: $(STAMP)
	$(PY) images/draw_diagrams.py

clean:
	rm -rf build
