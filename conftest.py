"""pytest at the repository root: the notebooks under nbval and the unit tests.

Progress bars are off unless asked for, however pytest is started (plain ``pytest``, ``make
test``, an IDE): the notebook kernels inherit this variable, and bars would otherwise swamp
nbval's output channel ("Timeout of 5 seconds exceeded waiting for output").

Under pytest-xdist (``pytest -n 2``, which ``make test TEST_JOBS=2`` uses) every worker and the notebook
kernels it starts use one thread: two workers with two threads each would fight over two cores
(NOTES: 141 s instead of 3 s for one small model). A plain ``pytest`` keeps torch's default.

It also holds the unit tests' fixtures (their helpers are in tests/helpers.py): one conftest for
the whole repository.
"""
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault('PRESIDENTIAL_PROGRESS', '0')
if os.environ.get('PYTEST_XDIST_WORKER'):
    os.environ['OMP_NUM_THREADS'] = '1'      # read by torch in each kernel the worker starts
    os.environ['MKL_NUM_THREADS'] = '1'

_seconds_per_file = {}


def pytest_runtest_logreport(report):
    # add up how long each file's tests (each notebook's cells) ran, for the summary below
    path = report.nodeid.split('::')[0]
    _seconds_per_file[path] = _seconds_per_file.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    # seconds per notebook and per test file: where make test's time goes (CONTRIBUTING.md cites them)
    if _seconds_per_file:
        terminalreporter.section('seconds per file')
        for path, seconds in sorted(_seconds_per_file.items()):
            terminalreporter.write_line(f'{seconds:8.1f}  {path}')


# ----------------------------------------------------------------------------- unit-test fixtures
# Their helpers (tests/helpers.py) are imported when a fixture is first used, so that a run of the
# notebooks alone imports neither torch nor utils here.


def _helpers():
    tests = str(Path(__file__).resolve().parent / 'tests')
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import helpers
    return helpers


@pytest.fixture
def server(monkeypatch):
    """A corpus server on 127.0.0.1 (``helpers.Server``), with the corpus's expected file counts
    made as small as the zips it serves."""
    helpers = _helpers()
    import corpus
    monkeypatch.setattr(corpus, 'CORPUS_FILE_COUNTS', helpers.SMALL_CORPUS_COUNTS)
    s = helpers.Server()
    yield s
    s.close()


@pytest.fixture
def refused_url():
    """An address on 127.0.0.1 where nothing listens."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    return f'http://127.0.0.1:{port}/corpus.zip'
