"""Vocabulary, batching, the training loop and generation (utils' other sections)."""
import math
import numpy as np
import pytest
import torch
from torch import nn
import torch.nn.functional as F

import utils
from helpers import Tiny, rows, tiny_data


# --- CharVocab -------------------------------------------------------------------------

def test_vocab_round_trip():
    v = utils.CharVocab('hello, world')
    assert v.itos == sorted(set('hello, world')) and len(v) == 9
    ids = v.encode('world, hello')
    assert ids.dtype == np.int64 and ids.tolist() == [v.stoi[c] for c in 'world, hello']
    assert v.decode(ids) == 'world, hello'
    assert v.decode(torch.tensor(ids)) == 'world, hello'


def test_vocab_unknown_character_is_named():
    v = utils.CharVocab('abc')
    with pytest.raises(KeyError, match=r"\['z'\].*'abc'"):
        v.encode('abz')
    with pytest.raises(KeyError, match='é'):
        v.encode('é')


# --- batching --------------------------------------------------------------------------

def test_last_rows():
    assert utils.last_rows(10, 3).tolist() == [7, 8, 9]
    with pytest.raises(ValueError, match='between 1 and 9, got 10'):
        utils.last_rows(10, 10)
    with pytest.raises(ValueError, match='got 0'):
        utils.last_rows(10, 0)


def test_from_arrays_negative_index_is_one_row():
    xs, y = rows()
    md = utils.ArraysData.from_arrays([-5], xs, y, bs=4, seed=0)
    assert [int(t) for _, ys in md.valid for t in ys] == [15]   # what the original's [-100_000] meant
    assert len(md.train.x) == 19


def test_from_arrays_last_rows_and_loaders():
    xs, y = rows()
    md = utils.ArraysData.from_arrays(utils.last_rows(20, 10), xs, y, bs=4, seed=0)
    valid = list(md.valid)
    assert [len(b[0]) for b in valid] == [8, 2]                # valid batches are 2*bs
    assert torch.cat([b[1] for b in valid]).tolist() == list(range(10, 20))  # in order
    assert md.valid.x.dtype == torch.int64
    train = list(md.train)
    assert [len(x) for x, _ in train] == [4, 4, 2] and len(md.train) == 3
    seen = torch.cat([yb for _, yb in train]).tolist()
    assert sorted(seen) == list(range(10)) and seen != list(range(10))  # shuffled, complete
    for xb, yb in train:                                       # rows stay paired
        assert torch.equal(xb[:, 0], yb * 3)
    assert torch.cat([yb for _, yb in md.train]).tolist() != seen  # new order each epoch


def test_from_arrays_is_seeded():
    xs, y = rows()
    orders = [[b[1].tolist() for b in utils.ArraysData.from_arrays([-1], xs, y, 4, seed=3).train]
              for _ in range(2)]
    assert orders[0] == orders[1]
    utils.seed_everything(1)
    a = [b[1].tolist() for b in utils.ArraysData.from_arrays([-1], xs, y, 4).train]
    utils.seed_everything(1)
    b = [b[1].tolist() for b in utils.ArraysData.from_arrays([-1], xs, y, 4).train]
    assert a == b


def test_from_arrays_float_and_2d_targets():
    xs, _ = rows()
    md = utils.ArraysData.from_arrays([-2, -1], xs, np.ones((20, 1), dtype=np.float64), bs=4)
    assert md.valid.y.dtype == torch.float32 and md.valid.y.shape == (2, 1)
    md = utils.ArraysData.from_arrays([0], xs, xs, bs=4)
    assert md.train.y.shape == (19, 3)


@pytest.mark.parametrize('val, error, message', [
    ([20], IndexError, r'must lie in \[-20, 19\]'), ([-21], IndexError, r'must lie in \[-20, 19\]'),
    ([], ValueError, 'got 0 valid of 20'), (list(range(20)), ValueError, 'got 20 valid of 20')])
def test_from_arrays_rejects_bad_splits(val, error, message):
    xs, y = rows()
    with pytest.raises(error, match=message):
        utils.ArraysData.from_arrays(val, xs, y, bs=4)


def test_from_arrays_rejects_mismatched_lengths():
    xs, y = rows()
    with pytest.raises(ValueError, match='20 rows but y has 19'):
        utils.ArraysData.from_arrays([-1], xs, y[:-1], bs=4)


# --- training --------------------------------------------------------------------------

def test_fit_lowers_loss_and_reports(capsys):
    utils.seed_everything(0)
    md, model = tiny_data(), Tiny()
    before = utils.evaluate(model, md.valid, F.nll_loss)
    opt = torch.optim.Adam(model.parameters(), 1e-1)
    h = utils.fit(model, md, 3, opt, F.nll_loss)
    utils.set_lrs(opt, 1e-2)
    assert all(g['lr'] == 1e-2 for g in opt.param_groups)
    h = utils.fit(model, md, 1, opt, F.nll_loss, history=h)
    assert h.epoch == [0, 1, 2, 3] and len(h.batch_loss) == 4 * len(md.train)
    assert h.valid_loss[-1] < 0.3 < before
    assert h.valid_loss[-1] == pytest.approx(utils.evaluate(model, md.valid, F.nll_loss))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['epoch', 'train_loss', 'valid_loss', 'time']
    assert lines[1].split()[0] == '0' and lines[-1].split()[0] == '3'
    assert len(lines) == 1 + 3 + 1        # no second header when a history continues


class Echo(nn.Module):
    """Outputs its input's first column, so the loss of every batch is known in advance."""
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x[:, 0].float() + 0 * self.p


def test_train_loss_is_debiased_moving_average():
    xs = np.arange(200).reshape(200, 1)                         # batch losses rise: 0.5, 2.5, ...
    loader = utils.BatchLoader(torch.tensor(xs), torch.zeros(200), bs=2)
    data = utils.ArraysData(loader, loader)
    model = Echo()
    h = utils.fit(model, data, 1, torch.optim.SGD(model.parameters(), 0.0),
                  lambda out, y: out.mean(), verbose=False)
    batch = [float(np.mean(xs[i:i + 2])) for i in range(0, 200, 2)]
    assert h.batch_loss == pytest.approx(batch)
    avg = 0.0
    for v in batch:                                             # the definition, by hand
        avg = 0.98 * avg + 0.02 * v
    expected = avg / (1 - 0.98 ** len(batch))
    assert h.train_loss == [pytest.approx(expected)]
    assert abs(expected - np.mean(batch)) > 10                  # a plain mean would fail this
    assert abs(expected - batch[-1]) > 10                       # and so would the last batch


def test_valid_loss_weights_by_batch_size():
    class Echo(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return x[:, 0].float()

    xs = np.array([[0]] * 8 + [[10]] * 2)                 # batches of 8 zeros, then 2 tens
    loader = utils.BatchLoader(torch.tensor(xs), torch.zeros(10), bs=8)
    assert utils.evaluate(Echo(), loader, lambda out, y: out.mean()) == pytest.approx(2.0)


def test_progress_bar_goes_to_stderr_and_is_cleared(capsys, monkeypatch):
    monkeypatch.setenv('PRESIDENTIAL_PROGRESS', '1')
    utils.seed_everything(0)
    model = Tiny()
    utils.fit(model, tiny_data(), 1, torch.optim.Adam(model.parameters()), F.nll_loss)
    out, err = capsys.readouterr()
    assert 'epoch 0' in err and 'it/s' not in out and 'epoch 0:' not in out
    monkeypatch.setenv('PRESIDENTIAL_PROGRESS', '0')
    utils.fit(model, tiny_data(), 1, torch.optim.Adam(model.parameters()), F.nll_loss)
    assert capsys.readouterr().err == ''


def test_device_env(monkeypatch):
    monkeypatch.setenv('PRESIDENTIAL_DEVICE', 'cpu')
    assert utils._pick_device() == torch.device('cpu')
    if not torch.cuda.is_available():
        monkeypatch.setenv('PRESIDENTIAL_DEVICE', 'cuda')
        with pytest.raises(RuntimeError, match='PRESIDENTIAL_DEVICE=cuda: the device cuda is not '
                                               'available here; this machine has: cpu'):
            utils._pick_device()


def test_plot_losses_draws_each_history():
    import matplotlib
    matplotlib.use('Agg')
    h = utils.History(epoch=[0, 1], train_loss=[2.0, 1.5], valid_loss=[2.1, 1.7])
    ax = utils.plot_losses({'a': h, 'b': h})
    assert len(ax.lines) == 4 and ax.lines[1].get_ydata().tolist() == [2.1, 1.7]
    h.batch_loss = [3.0, 2.0, 1.0, 1.0]
    line = utils.plot_losses(h).lines[0]
    assert line.get_xdata().tolist() == [0.5, 1.0, 1.5, 2.0]
    assert line.get_ydata().tolist() == pytest.approx(utils.smooth(h.batch_loss))


def test_the_original_sgdr_is_torchs_warm_restarts_once_the_warm_up_is_over():
    # fastai 0.7's CosAnneal after its warm-up: PyTorch's CosineAnnealingWarmRestarts with a first
    # cycle of one epoch, each next twice as long and a floor of zero, at every batch of 7 epochs
    nb = 174
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    restarts = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=nb, T_mult=2)
    theirs = []
    for _ in range(7 * nb):
        theirs.append(opt.param_groups[0]['lr'])
        opt.step()
        restarts.step()
    ours = [utils.original_sgdr_factor(step, nb) for step in range(7 * nb)]
    warm = math.ceil(nb / 20)                                 # 9 batches at 1/100 first
    assert ours[:warm] == [0.01] * warm and theirs[:warm] != ours[:warm]
    assert ours[warm:] == pytest.approx(theirs[warm:], rel=0, abs=1e-15)


def test_smooth_matches_fit_train_loss():
    assert utils.smooth([0.0, 1.0], beta=0.5) == pytest.approx([0.0, 2 / 3])   # by hand, debiased
    model = Tiny()
    h = utils.fit(model, tiny_data(), 2, torch.optim.Adam(model.parameters(), 1e-2), F.nll_loss,
                  verbose=False)
    smoothed = utils.smooth(h.batch_loss)       # one average over both epochs of this call
    per_epoch = len(h.batch_loss) // 2
    assert h.train_loss == pytest.approx([smoothed[per_epoch - 1], smoothed[-1]])


# --- generation ------------------------------------------------------------------------

class Fixed(nn.Module):
    """Always predicts 'b' with probability 0.9, 'a' with 0.1 (vocab 'ab')."""
    def __init__(self, seq_out=False):
        super().__init__()
        self.p, self.seq_out = nn.Parameter(torch.zeros(())), seq_out

    def forward(self, x):
        logp = torch.log(torch.tensor([0.1, 0.9])).expand(len(x), 2)
        return logp.unsqueeze(1).expand(len(x), x.shape[1], 2) if self.seq_out else logp


@pytest.mark.parametrize('seq_out', [False, True])
def test_get_next_and_generate(seq_out):
    v, m = utils.CharVocab('ab'), Fixed(seq_out)
    char, p = utils.get_next(m, v, 'ab', torch.Generator().manual_seed(0), temperature=1e-3)
    assert (char, round(p, 3)) == ('b', 1.0)
    a = utils.generate(m, v, 'a', 50, 3, torch.Generator().manual_seed(0))
    b = utils.generate(m, v, 'a', 50, 3, torch.Generator().manual_seed(0))
    assert a == b and len(a) == 51 and a.startswith('a')
    assert 38 <= a[1:].count('b') <= 49                     # 50 draws at 0.9: mean 45, sd 2.1


class FirstOfWindow(nn.Module):
    """Predicts, with probability 0.999, the first character of the window it is shown."""
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.log(F.one_hot(x[:, 0], 2).float() * 0.998 + 0.001)


@pytest.mark.parametrize('context', [1, 2, 3, 5])
def test_generate_shows_the_model_the_last_context_characters(context):
    # each new character repeats the one `context` places back: the text has period `context`
    text = utils.generate(FirstOfWindow(), utils.CharVocab('ab'), 'abbab', 30, context,
                          torch.Generator().manual_seed(0))
    assert len(text) == 35 and all(text[i] == text[i - context] for i in range(5, 35))


def test_generate_unknown_prompt_character():
    with pytest.raises(KeyError, match="'z'"):
        utils.generate(Fixed(), utils.CharVocab('ab'), 'az', 5)


def test_fit_steps_scheduler_per_batch_and_can_be_quiet(capsys):
    model = Tiny()
    md = tiny_data()
    opt = torch.optim.SGD(model.parameters(), 1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 / (1 + step))
    utils.fit(model, md, 2, opt, F.nll_loss, scheduler=sched, verbose=False)
    assert sched.last_epoch == 2 * len(md.train)
    assert opt.param_groups[0]['lr'] == pytest.approx(1 / (1 + 2 * len(md.train)))
    assert capsys.readouterr().out == ''


# --- language-model loader --------------------------------------------------------------

def test_lm_loader_columns_continue_across_batches():
    ids = np.arange(103)
    loader = utils.LanguageModelLoader(ids, bs=4, bptt=8)
    assert loader.data.shape == (4, 25)                        # 103 // 4 = 25, 3 ids dropped
    assert loader.data[1, 0] == 25 and loader.data[3, -1] == 99
    batches = list(loader)
    assert len(batches) == len(loader) == 3                    # 24 targets: 8 + 8 + 8
    for x, y in batches:
        assert x.shape == y.shape and torch.equal(y[:, :-1], x[:, 1:])
        assert torch.equal(y, x + 1)                           # y is x shifted by one
    for (x0, y0), (x1, _) in zip(batches, batches[1:]):
        assert torch.equal(x1[:, 0], y0[:, -1])                # each column goes on
    assert [x.shape[1] for x, _ in batches] == [8, 8, 8]


def test_lm_loader_last_partial_batch():
    batches = list(utils.LanguageModelLoader(np.arange(40), bs=2, bptt=8))
    assert [x.shape for x, _ in batches] == [(2, 8), (2, 8), (2, 3)]   # 19 targets per column
    assert batches[-1][1][0].tolist() == [17, 18, 19]


def test_lm_loader_varied_bptt_is_seeded_and_reads_the_original_count_of_batches():
    ids = np.arange(4000)
    loaders = [utils.LanguageModelLoader(ids, 4, 20, True, seed=1) for _ in range(2)]
    lens = [[x.shape[1] for x, _ in loader] for loader in loaders]
    assert lens[0] == lens[1] and len(set(lens[0])) > 3 and min(lens[0]) >= 1
    assert len(loaders[0]) == len(lens[0]) == 1000 // 20 - 1          # the original library's count
    xs = torch.cat([x for x, _ in utils.LanguageModelLoader(ids, 4, 20, True, seed=1)], dim=1)
    assert torch.equal(xs[0], torch.arange(sum(lens[0])))              # contiguous from the start
    assert 900 < sum(lens[0]) < 999                                    # so the end of a column goes unread
    two = utils.LanguageModelLoader(np.arange(4 * 21), 4, 20, True, seed=1)  # 21 per column: 1 batch
    assert len(two) == 1 and [x.shape[1] for x, _ in two][0] <= 20    # and never past the text


def test_lm_loader_varied_bptt_takes_half_now_and_then_and_never_below_5():
    loader = utils.LanguageModelLoader(np.arange(400_000), 4, 40, True, seed=3)
    lens = np.array([x.shape[1] for x, _ in loader])[:-1]    # the last batch takes what is left
    assert lens.min() >= 5                                   # the floor
    short = (lens < 30).mean()                               # drawn around 20: the 5% branch
    assert 0.02 < short < 0.09 and abs(np.median(lens) - 40) <= 1
    tiny = utils.LanguageModelLoader(np.arange(40_000), 4, 6, True, seed=0)
    assert min(x.shape[1] for x, _ in list(tiny)[:-1]) == 5  # 3 and N(6, 5) draws are raised to 5
    with pytest.raises(ValueError, match='5 ids are too few for 4 columns'):
        utils.LanguageModelLoader(np.arange(5), bs=4, bptt=8)


def test_fit_resets_stateful_models_and_clips():
    class Stateful(Tiny):
        resets = 0

        def reset(self):
            self.resets += 1

    model = Stateful()
    md = tiny_data()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    utils.fit(model, md, 2, opt, F.nll_loss, clip=1e-6, verbose=False)
    assert model.resets == 4                                   # train + valid, per epoch
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
    assert norm <= 1e-6 * 1.01


def test_unigram_loss_is_the_entropy_of_character_frequencies():
    assert utils.unigram_loss(np.array([0, 1, 0, 1])) == pytest.approx(np.log(2))
    assert utils.unigram_loss(np.array([3, 3, 3])) == pytest.approx(0.0)
    # unused indices (a larger vocabulary) change nothing; a skewed text costs less than uniform
    skewed = np.array([0] * 90 + [5] * 10)
    expected = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))
    assert utils.unigram_loss(skewed) == pytest.approx(expected)
    # the loss of the best constant predictor: a model outputting the frequencies scores it
    ids = torch.tensor(np.random.default_rng(0).integers(0, 6, 500))
    freqs = torch.bincount(ids, minlength=6).double() / len(ids)
    nll = F.nll_loss(freqs.log().expand(len(ids), 6), ids).item()
    assert utils.unigram_loss(ids.numpy()) == pytest.approx(nll)


def test_seq_nll_averages_every_position():
    torch.manual_seed(0)
    log_probs = torch.randn(3, 5, 7).log_softmax(-1)
    targets = torch.randint(0, 7, (3, 5))
    by_hand = -log_probs.gather(2, targets[..., None]).mean()
    assert utils.seq_nll(log_probs, targets).item() == pytest.approx(by_hand.item())
    with pytest.raises(RuntimeError, match=r'Expected target size \[3, 5\], got \[3, 4\]'):
        utils.seq_nll(log_probs, targets[:, :4])           # a shape mismatch is an error


def test_calculator_with_nonlinearities_reads_left_to_right():
    torch.manual_seed(0)
    model = utils.CalculatorWithNonlinearities(vocab_size=11, n_fac=1, n_hidden=20)
    x = torch.tensor([[3, 0, 4], [4, 0, 3]])                # '2+3' and '3+2' as indices
    out = model(x)
    assert out.shape == (2, 1)
    assert not torch.allclose(out[0], out[1])               # order matters before training
    with torch.no_grad():                                   # the recurrence, written out left to right
        step = lambda h, c: torch.tanh(model.l_hidden(h + model.l_in(model.e(c))))
        h = torch.zeros(2, 20)
        for column in (0, 1, 2):
            h = step(h, x[:, column])
        assert torch.allclose(out, model.l_out(h), atol=1e-6)
        h = torch.zeros(2, 20)
        for column in (2, 1, 0):                            # right to left gives another result
            h = step(h, x[:, column])
        assert not torch.allclose(out, model.l_out(h), atol=1e-3)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_reseed_gives_the_same_batches_again():
    data = utils.ArraysData.from_arrays(utils.last_rows(40, 8), np.arange(40).reshape(40, 1),
                                        np.arange(40), bs=4, seed=0)
    order = lambda: torch.cat([x[:, 0] for x, _ in data.train]).tolist()
    first = order()
    assert order() != first                              # a second pass continues the sequence
    assert data.reseed(0) is data and order() == first   # reseeded: the first pass again
    assert data.reseed(1) and order() != first
    assert sorted(order()) == sorted(first)              # every train row, once per epoch


def test_target_losses_are_the_per_character_terms_of_seq_nll():
    torch.manual_seed(0)
    log_probs, targets = F.log_softmax(torch.randn(3, 5, 7), -1), torch.randint(0, 7, (3, 5))
    losses = utils.target_losses(log_probs, targets)
    assert losses.shape == (3, 5) and losses.dtype == torch.float32
    assert losses[1, 2].item() == -log_probs[1, 2, targets[1, 2]].item()
    assert torch.isclose(losses.mean(), utils.seq_nll(log_probs, targets))
    assert utils.target_losses(log_probs.bfloat16(), targets).dtype == torch.float32


def test_loss_by_position_averages_each_position_over_every_window():
    torch.manual_seed(0)
    table = F.log_softmax(torch.randn(4, 6), -1)         # position t predicts from table[t]

    def log_probs_of(x):
        return table[:x.shape[1]].expand(len(x), -1, -1)

    y = torch.randint(0, 6, (10, 4))
    batches = [(torch.zeros(7, 4, dtype=torch.long), y[:7]), (torch.zeros(3, 4, dtype=torch.long), y[7:])]
    by_position = utils.loss_by_position(log_probs_of, batches)
    expected = [-table[t, y[:, t]].mean().item() for t in range(4)]   # every window counts once
    assert np.allclose(by_position, expected, atol=1e-6)


def test_gradient_by_distance_reaches_only_as_far_back_as_the_model_reads():
    torch.manual_seed(0)
    embed, out = nn.Embedding(5, 3), nn.Linear(6, 5)

    def reads_two(emb):       # each position sees itself and the one before: nothing further back
        before = torch.cat([torch.zeros_like(emb[:, :1]), emb[:, :-1]], 1)
        return F.log_softmax(out(torch.cat([emb, before], -1)), -1)

    x, y = torch.randint(0, 5, (4, 6)), torch.randint(0, 5, (4, 6))
    g = utils.gradient_by_distance(embed, reads_two, x, y)
    assert g.shape == (6,) and g[0] > 0 and g[1] > 0 and np.all(g[2:] == 0)   # index k: k characters back


def test_models_dir_is_the_repositorys_whatever_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert utils.MODELS_DIR.is_absolute() and (utils.MODELS_DIR / 'lstm_3x512.pt').is_file()


def test_the_stateful_model_carries_its_state_and_starts_afresh_on_another_batch_size():
    torch.manual_seed(0)
    model = utils.CharLSTM(6, 3, 8, 2, 0.0)
    x = torch.randint(0, 6, (2, 5))
    first, second = model(x), model(x)
    assert [tuple(t.shape) for t in model.h] == [(2, 2, 8)] * 2 and not model.h[0].requires_grad
    assert not torch.allclose(first, second)                  # the carried state changes the prediction
    assert torch.equal(second, model.run(x, model.run(x, None)[1])[0])
    assert torch.equal(model(x[:1]), model.run(x[:1], None)[0])   # another batch size: a fresh state
