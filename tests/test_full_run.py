"""The full run of notebook 03's original LSTM (train_full.py): resume, schedule, shipping."""
import math

import numpy as np
import pytest
import torch

import train_full
import utils

CONFIG = dict(train_full.TINY_CONFIG, n_fac=4, n_hidden=8, n_layers=2, bs=4, bptt=10,
              cycles=2, amp=None)          # 1 + 2 = 3 epochs


def _ids(n, seed=0):
    # a text with structure to learn: a repeated phrase with random letters in between
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.7, np.arange(n) % 7, rng.integers(0, 12, n)).astype(np.int64)


@pytest.mark.parametrize('cell', ['lstm', 'gru'])
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, cell):
    train_ids, valid_ids = _ids(1200), _ids(400, seed=1)
    _, whole, _ = train_full.train(cell, train_ids, valid_ids, 12, CONFIG, tmp_path / 'a.pt',
                                   verbose=False)
    _, first, _ = train_full.train(cell, train_ids, valid_ids, 12, CONFIG, tmp_path / 'b.pt',
                                   stop_after=1, verbose=False)
    assert len(first.epoch) == 1
    model, resumed, _ = train_full.train(cell, train_ids, valid_ids, 12, CONFIG, tmp_path / 'b.pt',
                                         verbose=False)
    assert resumed.epoch == [0, 1, 2]
    assert resumed.batch_loss == whole.batch_loss          # dropout and all, bit for bit
    assert resumed.train_loss == whole.train_loss
    assert resumed.valid_loss == whole.valid_loss
    again, _, _ = train_full.train(cell, train_ids, valid_ids, 12, CONFIG, tmp_path / 'b.pt',
                                   verbose=False)           # finished: nothing more to do
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                 model.state_dict().values()))


def test_resume_refuses_another_configuration(tmp_path):
    ids = _ids(1200)
    train_full.train('lstm', ids, ids[:400], 12, CONFIG, tmp_path / 's.pt', stop_after=1,
                     verbose=False)
    with pytest.raises(ValueError, match='delete it'):
        train_full.train('lstm', ids, ids[:400], 12, dict(CONFIG, lr=1e-3), tmp_path / 's.pt',
                         verbose=False)


def test_shipped_checkpoint_loads_weights_only_and_reproduces_its_loss(tmp_path):
    train_ids, valid_ids = _ids(1200), _ids(400, seed=1)
    vocab = utils.CharVocab('abcdefghijkl')
    model, history, wall = train_full.train('lstm', train_ids, valid_ids, 12, CONFIG,
                                            tmp_path / 's.pt', verbose=False)
    path = tmp_path / 'ship.pt'
    recorded = train_full.ship('lstm', model, history, wall, vocab, valid_ids, CONFIG, path)
    ck = torch.load(path, weights_only=True)
    assert ck['vocab'] == list('abcdefghijkl') and ck['config'] == CONFIG
    assert len(ck['history']['valid_loss']) == 3
    assert ck['model']['rnn.weight_ih_l0'].dtype == torch.float16
    fresh = train_full.build_model('lstm', 12, CONFIG)
    fresh.load_state_dict({k: v.float() for k, v in ck['model'].items()})
    loss = utils.evaluate(fresh, utils.LanguageModelLoader(valid_ids, CONFIG['bs'], CONFIG['bptt']),
                          utils.seq_nll)
    assert loss == pytest.approx(recorded, abs=1e-6) and ck['valid_loss_shipped_weights'] == recorded
    assert abs(recorded - history.valid_loss[-1]) < 0.01     # fp16 rounding costs next to nothing


def test_original_sgdr_schedule_warms_up_then_restarts():
    nb = 174
    f = [utils.original_sgdr_factor(s, nb) for s in range(nb * 7)]
    assert f[:9] == [0.01] * 9 and f[9] == pytest.approx((math.cos(math.pi * 9 / nb) + 1) / 2)
    assert f[nb] == 1.0 and f[3 * nb] == 1.0                 # restarts after 1 and 1 + 2 epochs
    assert f[nb + nb] == pytest.approx(0.5)                  # halfway through the 2-epoch cycle
    assert f[3 * nb - 1] < 1e-3 and f[7 * nb - 1] < 1e-4
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = utils.original_sgdr_schedule(opt, nb)
    lrs = []
    for _ in range(nb + 2):
        lrs.append(opt.param_groups[0]['lr'])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-3) and lrs[nb] == pytest.approx(0.1)
