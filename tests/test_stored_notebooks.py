"""The committed notebooks are read on the web: they must carry a full run's outputs, and no
progress bar may have landed in them."""
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / 'notebooks').glob('*.ipynb'))


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_are_a_clean_full_run(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb['cells'] if c['cell_type'] == 'code' and ''.join(c['source']).strip()]
    counts = [c['execution_count'] for c in code]
    assert None not in counts, 'a code cell was never executed: run make refresh'
    assert counts == list(range(1, len(code) + 1)), 'cells were not run top to bottom in one go'
    for cell in code:
        for out in cell.get('outputs', []):
            assert out['output_type'] != 'error', ''.join(cell['source'])[:80]
            assert 'application/vnd.jupyter.widget-view+json' not in out.get('data', {})
            text = ''.join(out.get('text', ''))
            assert '%|' not in text and 'it/s]' not in text, 'a progress bar was stored'
            assert '/tmp/ipykernel_' not in text


def test_the_series_is_complete():
    assert [p.name[:3] for p in NOTEBOOKS] == ['01_', '02_', '03_', '04_']
