# Two commands for readers: `make run` and `make test`. See README.md and CONTRIBUTING.md.
PYTHON   ?= python3
# The torch requirement: `make test TORCH=torch==2.13.0` takes a CPU build where one is on disk.
# TORCH_INDEX: where torch alone comes from, e.g. PyTorch's CPU wheels (README, "Quick start").
TORCH    ?= torch
TORCH_INDEX ?=
VENV     := .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

# notebooks executed by make never show progress bars (they would land in the outputs)
export PRESIDENTIAL_PROGRESS := 0

.PHONY: setup run offline tiny tiny-offline test unit refresh bench mutate images docs clean full-lstm full-gru full-tiny

setup: $(STAMP)

# Pinned versions (constraints.txt), so that a new release cannot change a checked output;
# CONSTRAINTS= for the newest versions requirements.txt allows.
CONSTRAINTS ?= constraints.txt

$(STAMP): requirements.txt $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install -q "$(TORCH)" --index-url "$(TORCH_INDEX)")
	$(PY) -m pip install -q "$(TORCH)" -r requirements.txt $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
	touch $(STAMP)

# Execute every notebook, in order, into $(BUILD) (.ipynb and .html); the committed ones stay untouched.
# JOBS=2 runs two notebooks at a time with one thread each (CI does, for its extra passes): two
# processes with two threads each on two cores would fight over them.
BUILD ?= build
JOBS ?= 1
run: $(STAMP)
	mkdir -p $(BUILD)
	printf '%s\n' $(NOTEBOOKS) | $(if $(filter-out 1,$(JOBS)),OMP_NUM_THREADS=1 MKL_NUM_THREADS=1) \
	  xargs -P $(JOBS) -I{} sh -c '$(PY) -m jupyter nbconvert --to notebook --execute --output-dir $(BUILD) "{}" && \
	    $(PY) -m jupyter nbconvert --to html --output-dir $(BUILD) "$(BUILD)/$$(basename "{}")"'

# The notebooks that load speeches (load_speeches, or page_corpus around it): only they change on the offline fallback (02 and 05 load
# no corpus, so a second pass over them would repeat the first exactly).
CORPUS_NOTEBOOKS := $(shell grep -lE 'load_speeches|page_corpus' $(NOTEBOOKS))

# Those notebooks on the offline fallback, as a reader without a network gets them: an empty
# data folder and a corpus address where nothing answers (port 9 on this machine), into build/offline.
OFFLINE_BUILD ?= build/offline
OFFLINE_NOTEBOOKS ?= $(CORPUS_NOTEBOOKS)
offline: $(STAMP)
	data=$$(mktemp -d) && \
	PRESIDENTIAL_CORPUS_URL=http://127.0.0.1:9/presidential_speeches.zip PRESIDENTIAL_DATA_DIR=$$data \
	  $(MAKE) run BUILD=$(OFFLINE_BUILD) NOTEBOOKS="$(OFFLINE_NOTEBOOKS)"; status=$$?; rm -rf $$data; exit $$status

# The notebooks with a full (GPU) configuration, run as a GPU reader would run them but at a
# tiny size (PRESIDENTIAL_FULL_CONFIG=tiny, see utils.configuration), into build/tiny, so that no
# line of the full configuration goes untested.
FULL_CONFIG_NOTEBOOKS := $(shell grep -l 'configuration()' $(NOTEBOOKS))
tiny: $(STAMP)
	PRESIDENTIAL_FULL_CONFIG=tiny $(MAKE) run BUILD=build/tiny NOTEBOOKS="$(FULL_CONFIG_NOTEBOOKS)"

# What CI runs instead of offline and tiny (one pass instead of two): the tiny size on the
# offline fallback, so that every notebook that loads speeches runs to its end on the fallback and
# every line of the full configuration runs, into build/tiny-offline. It skips the checks that need
# the reduced CPU size on the fallback (e.g. the LSTM below the stateful RNN): `make offline` runs those.
tiny-offline: $(STAMP)
	PRESIDENTIAL_FULL_CONFIG=tiny $(MAKE) offline OFFLINE_BUILD=build/tiny-offline \
	  OFFLINE_NOTEBOOKS="$(sort $(CORPUS_NOTEBOOKS) $(FULL_CONFIG_NOTEBOOKS))"

# The original's 3 x 512 LSTM (and the GRU) of notebook 03, 31 epochs, resumable: see docs/full_runs.md.
full-lstm: $(STAMP)
	$(PY) train_full.py lstm
full-gru: $(STAMP)
	$(PY) train_full.py gru
# The same code path at a tiny size (CI runs it).
full-tiny: $(STAMP)
	$(PY) train_full.py lstm --tiny && $(PY) train_full.py gru --tiny && \
	  $(PY) train_full.py lstm --tiny --order 1 --vary-bptt --seed 3 && $(PY) train_full.py awd --tiny

# Unit tests, then every notebook under nbval, one after another with torch's threads. TEST_JOBS=2
# runs two test files or notebooks at a time (pytest-xdist, one thread each: conftest.py), as CI
# does (CONTRIBUTING.md, "CI").
TEST_JOBS ?= 0
test: $(STAMP)
	$(PY) -m pytest $(if $(filter-out 0,$(TEST_JOBS)),-n $(TEST_JOBS) --dist loadscope)

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

# Mutation testing (not in CI: it takes more than half an hour on two cores). mutmut (a dev tool, installed here, not in
# requirements.txt) copies utils.py, checkpoints.py, train_full.py and awd_lstm.py into mutants/, makes one small change at a
# time (a + for a -, another constant, a dropped argument) and runs the unit tests that cover the
# changed function; a change no test notices is a gap in the tests, or an equivalent listed with
# its reason in tests/mutmut-equivalents.md. MUTANTS: the functions the notebooks and the full
# run rely on (CONTRIBUTING.md gives the score); `make mutate MUTANTS=` mutates every function.
# One thread per test process (torch's thread pool does not survive mutmut's fork).
MUTMUT := mutmut==3.8.1
MUTANTS ?= 'utils.xǁCharVocabǁ*' 'utils.xǁBatchLoaderǁ*' 'utils.xǁArraysDataǁ*' \
  'utils.xǁLanguageModelLoaderǁ*' 'utils.xǁLanguageModelDataǁ*' 'utils.x_fit__*' 'utils.x_evaluate__*' \
  'utils.x_seq_nll__*' 'utils.x_unigram_loss__*' 'utils.x__reset_state__*' 'utils.x__autocast__*' \
  'utils.x_original_sgdr_factor__*' 'utils.x_original_sgdr_schedule__*' 'utils.x_set_lrs__*' \
  'checkpoints.x_save_checkpoint__*' 'checkpoints.x_load_checkpoint__*' 'checkpoints.x__unreadable__*' \
  'utils.x_get_next__*' 'utils.x_generate__*' \
  'utils.x_beam_search__*' 'utils.x__check_temperature__*' 'utils.x__check_output_size__*' \
  'utils.x__check_index__*' 'utils.x__validation_mask__*' 'utils.x__check_search__*' \
  'train_full.x_train__*' 'train_full.x__train__*' 'train_full.x_ship__*' 'awd_lstm.*'
mutate: $(STAMP)
	$(PY) -m pip install -q "$(MUTMUT)"
	rm -rf mutants
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 2 $(MUTANTS)
	$(VENV)/bin/mutmut results --all true | $(PY) tests/mutation_score.py $(MUTANTS)

images: $(STAMP)
	$(PY) images/draw_diagrams.py

# The tables in docs/full_runs.md and CONTRIBUTING.md, and the README's picture, from
# models/runs/*.json and the stored notebooks (tests/test_docs.py checks them by regenerating).
docs: $(STAMP)
	$(PY) docs/generate.py

clean:
	rm -rf build mutants
