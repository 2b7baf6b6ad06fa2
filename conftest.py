"""pytest at the repository root: the notebooks under nbval and the unit tests.

Progress bars are off unless asked for, however pytest is started (plain ``pytest``, ``make
test``, an IDE): the notebook kernels inherit this variable, and bars would otherwise swamp
nbval's output channel ("Timeout of 5 seconds exceeded waiting for output").

Under pytest-xdist (``pytest -n 2``, which ``make test TEST_JOBS=2`` uses) every worker and the notebook
kernels it starts use one thread: two workers with two threads each would fight over two cores
(NOTES: 141 s instead of 3 s for one small model). A plain ``pytest`` keeps torch's default.
"""
import os

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
    # seconds per notebook and per test file: where make test's time goes (README cites them)
    if _seconds_per_file:
        terminalreporter.section('seconds per file')
        for path, seconds in sorted(_seconds_per_file.items()):
            terminalreporter.write_line(f'{seconds:8.1f}  {path}')
