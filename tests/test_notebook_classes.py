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
