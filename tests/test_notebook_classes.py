"""Classes defined in the notebooks, run at tiny sizes (cheaper than re-running a notebook), and
the promise train_full.py makes: its models are notebook 03's, parameter for parameter."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import train_full

NB03 = Path(__file__).resolve().parents[1] / 'notebooks' / '03_talk_like_the_president_part_2.ipynb'


def notebook_namespace(path, names):
    """Execute the code cells of ``path`` that define any of ``names`` (classes or functions)."""
    ns = {'torch': torch, 'nn': nn, 'F': F}
    for cell in json.loads(path.read_text())['cells']:
        src = ''.join(cell['source'])
        if cell['cell_type'] == 'code' and any(f'class {n}(' in src or f'def {n}(' in src
                                               for n in names):
            exec(compile(src, f'{path.name}', 'exec'), ns)
    missing = [n for n in names if n not in ns]
    assert not missing, f'{path.name} defines none of {missing}'
    return ns


@pytest.mark.parametrize('cell', ['CharLSTM', 'CharGRU'])
def test_train_full_models_are_notebook_03s(cell):
    ns = notebook_namespace(NB03, ['CharSeqStatefulRNN', '_detach', '_batch_size', cell])
    torch.manual_seed(0)
    ours = ns[cell](11, 3, 8, 2, 0.0)
    script = getattr(train_full, cell)(11, 3, 8, 2, 0.0)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in script.state_dict().items()}
    script.load_state_dict(ours.state_dict())               # strict: the same names
    x = torch.randint(0, 11, (4, 6))
    for _ in range(2):                                       # the state carries over identically
        assert torch.equal(ours(x), script(x))
    assert torch.equal(ours.run(x, None)[0], script.run(x, None)[0])


NB04 = NB03.with_name('04_fun_things_to_try.ipynb')
NB05 = NB03.with_name('05_talk_like_any_president.ipynb')


def test_reset_strings_count_the_ones_after_the_reset():
    ns = notebook_namespace(NB04, ['strings_with_reset', 'bit_strings'])
    x, counts = ns['strings_with_reset'](20, 200, seed=3)
    assert x.shape == (200, 20, 2) and counts.shape == (200,)
    for row, count in zip(x, counts):
        text = ''.join('R' if r else str(int(b)) for b, r in row.tolist())
        assert text.count('R') == 1
        assert text.split('R')[1].count('1') == int(count)
    x, counts = ns['bit_strings'](15, 50, seed=0)
    assert x.shape == (50, 15, 1) and torch.equal(x.sum((1, 2)), counts)


def test_passage_losses_score_each_passage_from_a_fresh_state():
    ns = notebook_namespace(NB05, ['OneLayerCharLSTM', 'passage_losses'])
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
