"""pytest at the repository root: the notebooks under nbval and the unit tests.

Progress bars are off unless asked for, however pytest is started (plain ``pytest``, ``make
test``, an IDE): the notebook kernels inherit this variable, and bars would otherwise swamp
nbval's output channel ("Timeout of 5 seconds exceeded waiting for output").
"""
import os

os.environ.setdefault('PRESIDENTIAL_PROGRESS', '0')
