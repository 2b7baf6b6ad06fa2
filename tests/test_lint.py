"""pyflakes over the code of the series: utils, the scripts, the tests and every notebook's cells,
so that unused imports and undefined names do not come back."""
import json
from pathlib import Path

import pytest
from pyflakes.api import check
from pyflakes.reporter import Reporter

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([ROOT / 'utils.py', ROOT / 'train_full.py', ROOT / 'conftest.py',
                  ROOT / 'images' / 'draw_diagrams.py', *ROOT.glob('tests/*.py')])
NOTEBOOKS = sorted(ROOT.glob('notebooks/*.ipynb'))


def notebook_code(path):
    """A notebook's code cells as one module (IPython magics and shell lines commented out)."""
    cells = json.loads(path.read_text())['cells']
    lines = []
    for cell in cells:
        if cell['cell_type'] == 'code':
            src = ''.join(cell['source'])
            lines += ['# ' + l if l.lstrip().startswith(('%', '!')) else l for l in src.splitlines()]
            lines.append('')
    return '\n'.join(lines) + '\n'


def flakes(code, name):
    import io
    out, err = io.StringIO(), io.StringIO()
    check(code, name, Reporter(out, err))
    return (out.getvalue() + err.getvalue()).strip()


@pytest.mark.parametrize('path', SOURCES + NOTEBOOKS, ids=lambda p: p.name)
def test_pyflakes_is_clean(path):
    code = notebook_code(path) if path.suffix == '.ipynb' else path.read_text()
    assert flakes(code, path.name) == ''


def test_the_linter_finds_what_it_should():
    assert 'imported but unused' in flakes('import os\n', 'x.py')
    assert "undefined name 'nope'" in flakes('print(nope)\n', 'x.py')
