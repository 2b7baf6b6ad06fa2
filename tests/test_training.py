"""Vocabulary, batching, the training loop and its schedule, the loss of each character, and the
shared models: what they compute, the exact defaults the notebooks rely on, and the arguments and
sizes they refuse by name."""
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import utils
from helpers import rows, Tiny, tiny_data


# --- characters: the vocabulary and the frequency baseline ------------------------------------

def test_an_empty_vocabulary_and_bad_ids_are_refused():
    with pytest.raises(ValueError, match='CharVocab needs a text with at least one character'):
        utils.CharVocab('')
    vocab = utils.CharVocab('abc')
    for bad in ([-1], [3], [1.5], np.array([0, 7])):
        with pytest.raises(ValueError, match='decode: .* is not an index of this vocabulary'):
            vocab.decode(bad)
    assert vocab.decode([0, 2.0, np.int64(1)]) == 'acb' and vocab.decode(torch.tensor([2, 0])) == 'ca'


def test_a_vocabulary_shows_its_characters():
    assert repr(utils.CharVocab('banana')) == "CharVocab(3 chars: 'abn')"


def test_decode_refuses_booleans_and_names_the_range():
    vocab = utils.CharVocab('abc')
    for bad in ([True], [False]):                       # bools are ints to Python, not indices here
        with pytest.raises(ValueError, match=r'(True|False) is not an index .*from 0 to 2'):
            vocab.decode(bad)


def test_the_frequency_baseline_counts_characters_seen_once():
    # counts 3, 1: p = 3/4, 1/4
    assert utils.unigram_loss(np.array([0, 0, 0, 1])) == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))


def test_an_empty_text_has_no_vocabulary():
    with pytest.raises(ValueError, match='at least one character'):
        utils.CharVocab('')


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


# --- batching: ArraysData and the language-model loader ---------------------------------------

@pytest.mark.parametrize('kwargs, match', [(dict(bs=4, bptt=0), 'bptt'), (dict(bs=4, bptt=-3), 'bptt'),
                                           (dict(bs=0, bptt=4), 'bs'), (dict(bs=-1, bptt=4), 'bs'),
                                           (dict(bs=4, bptt=2.5), 'bptt')])
def test_lm_loader_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        utils.LanguageModelLoader(np.arange(100), **kwargs)


def test_from_arrays_takes_boolean_masks_and_refuses_float_indices():
    xs, y = np.arange(40).reshape(20, 2), np.arange(20)
    mask = np.zeros(20, dtype=bool)
    mask[[3, 7]] = True
    md = utils.ArraysData.from_arrays(mask, xs, y, bs=4, seed=0)
    assert md.valid.y.tolist() == [3, 7] and len(md.train.x) == 18
    with pytest.raises(IndexError, match='boolean index did not match'):
        utils.ArraysData.from_arrays(mask[:5], xs, y)
    with pytest.raises(IndexError, match='integer'):
        utils.ArraysData.from_arrays([2.7], xs, y)
    with pytest.raises(ValueError, match='at least one train and one valid row'):
        utils.ArraysData.from_arrays(np.ones(20, dtype=bool), xs, y)


def test_from_arrays_batches_by_64_unless_told():
    xs, y = rows(200)
    data = utils.ArraysData.from_arrays([-1], xs, y, seed=0)
    assert [len(x) for x, _ in data.train] == [64, 64, 64, 7]


def test_from_arrays_accepts_the_first_row_by_its_negative_index_and_any_shape_of_indices():
    xs, y = rows()
    data = utils.ArraysData.from_arrays([-20], xs, y, bs=4, seed=0)          # -20 is row 0
    assert next(iter(data.valid))[0].tolist() == [xs[0].tolist()]
    column = utils.ArraysData.from_arrays(np.array([[18], [19]]), xs, y, bs=4, seed=0)
    assert torch.cat([x for x, _ in column.valid]).tolist() == xs[18:].tolist()


def test_from_arrays_shuffles_by_its_seed():
    xs, y = rows(100)

    def order(seed):
        return torch.cat([x[:, 0] for x, _ in utils.ArraysData.from_arrays([-1], xs, y, bs=8, seed=seed).train]).tolist()
    assert order(1) == order(1) and order(1) != order(2)
    torch.manual_seed(0)
    first = order(None)                                 # no seed: drawn from torch's random state
    torch.manual_seed(0)
    assert order(None) == first
    torch.manual_seed(1)
    assert order(None) != first


def test_language_model_data_passes_its_seed_and_varied_lengths_to_the_training_loader():
    ids = np.arange(20_000)

    def lengths(**kwargs):
        return [x.shape[1] for x, _ in utils.LanguageModelData.from_ids(ids, ids[:1000], 4, 20, **kwargs).train]
    assert set(lengths(seed=3)[:-1]) == {20}                          # not varied unless asked, whatever the seed
    varied = lengths(vary_bptt=True, seed=3)
    assert len(set(varied)) > 3 and varied == lengths(vary_bptt=True, seed=3) != lengths(vary_bptt=True, seed=4)
    assert varied == [x.shape[1] for x, _ in utils.LanguageModelLoader(ids, 4, 20, True, seed=3)]


def test_varied_lengths_are_drawn_as_the_original_drew_them():
    # bptt with probability 0.95, else bptt / 2; then normal with a standard deviation of 5, floored at 5
    lens = np.array([x.shape[1] for x, _ in utils.LanguageModelLoader(np.arange(1_000_000), 1, 40, True, seed=0)])[:-1]
    short, usual = lens[lens < 27], lens[lens >= 27]
    assert 0.04 < len(short) / len(lens) < 0.06          # this seed: 0.049 (the half branch, 0.05)
    assert 17 <= np.median(short) <= 20                   # this seed: 19 (drawn around 20)
    assert 4.6 < usual.std() < 5.3 and 39 < usual.mean() < 40.2   # this seed: 4.95 and 39.56


def test_the_language_model_loader_takes_any_integer_ids_and_the_shortest_text():
    batches = list(utils.LanguageModelLoader(np.arange(8, dtype=np.int32), bs=4, bptt=8))
    assert len(batches) == 1 and batches[0][0].shape == (4, 1) and batches[0][0].dtype == torch.int64
    loader = utils.LanguageModelLoader(np.arange(40), bs=4, bptt=8)    # 10 per row: 9 targets, 8 + 1
    assert len(loader) == len(list(loader)) == 2
    for kwargs, message in [(dict(bs=0, bptt=8), 'bs must be an integer of at least 1, got 0'),
                            (dict(bs=4, bptt=0), 'bptt must be an integer of at least 1, got 0')]:
        with pytest.raises(ValueError, match=f'^{message}$'):
            utils.LanguageModelLoader(np.arange(40), **kwargs)


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
    ([20], IndexError, 'index 20 is out of bounds'), ([-21], IndexError, 'index -21 is out of bounds'),
    ([], ValueError, 'got 0 valid of 20'), (list(range(20)), ValueError, 'got 20 valid of 20')])
def test_from_arrays_rejects_bad_splits(val, error, message):
    xs, y = rows()
    with pytest.raises(error, match=message):
        utils.ArraysData.from_arrays(val, xs, y, bs=4)


def test_from_arrays_rejects_mismatched_lengths():
    xs, y = rows()
    with pytest.raises(ValueError, match='20 rows but y has 19'):
        utils.ArraysData.from_arrays([-1], xs, y[:-1], bs=4)


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


def test_reseed_gives_the_same_batches_again():
    data = utils.ArraysData.from_arrays(utils.last_rows(40, 8), np.arange(40).reshape(40, 1),
                                        np.arange(40), bs=4, seed=0)
    order = lambda: torch.cat([x[:, 0] for x, _ in data.train]).tolist()
    first = order()
    assert order() != first                              # a second pass continues the sequence
    assert data.reseed(0) is data and order() == first   # reseeded: the first pass again
    assert data.reseed(1) and order() != first
    assert sorted(order()) == sorted(first)              # every train row, once per epoch


# --- training: fit, evaluate, the schedule and autocast ---------------------------------------

def test_evaluate_on_nothing_and_fit_backwards_are_refused():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match='evaluate: the loader gave no targets'):
        utils.evaluate(model, [], F.mse_loss)
    data = utils.ArraysData.from_arrays([3], np.zeros((4, 2), np.float32), np.zeros((4, 2), np.float32), bs=2)
    with pytest.raises(ValueError, match='epochs must be an integer of at least 0, got -1'):
        utils.fit(model, data, -1, torch.optim.SGD(model.parameters(), 0.1), F.mse_loss, verbose=False)


def test_fit_stops_at_a_non_finite_loss():
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=1e30)          # diverges at once
    with pytest.raises(FloatingPointError, match=r'epoch 0, batch \d+.*lower learning rate'):
        utils.fit(model, tiny_data(), 3, opt, F.nll_loss, verbose=False)


def test_interrupted_fit_keeps_only_completed_epochs():
    data = tiny_data()
    model = Tiny()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    history = utils.fit(model, data, 1, opt, F.nll_loss, verbose=False)
    calls = []

    def interrupted(out, y):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return F.nll_loss(out, y)

    with pytest.raises(KeyboardInterrupt):
        utils.fit(model, data, 2, opt, interrupted, history=history, verbose=False)
    assert history.epoch == [0] and len(history.batch_loss) == len(data.train)
    utils.plot_losses(history)                                  # still plottable
    utils.plot_losses(utils.History())                          # and an empty one too


def test_evaluate_is_the_mean_over_every_predicted_character():
    torch.manual_seed(0)
    model, vocab = utils.CharLSTM(4, 3, 8, 1, 0.0), utils.CharVocab('abcd')
    ids = np.random.default_rng(0).integers(0, len(vocab), 203)
    loader = utils.LanguageModelLoader(ids, bs=4, bptt=8)        # 50 steps: the last batch holds 2
    assert [x.shape[1] for x, _ in loader][-1] == 1
    model.eval()
    nll = []
    h = None
    with torch.inference_mode():
        for x, y in loader:
            logp, h = model.run(x, h)
            nll.append(-logp.gather(-1, y[..., None]).flatten())
    expected = torch.cat(nll).mean().item()
    assert utils.evaluate(model, loader, utils.seq_nll) == pytest.approx(expected, abs=1e-6)


def test_quiet_fit_opens_no_progress_bar(monkeypatch, capsys):
    monkeypatch.setenv('PRESIDENTIAL_PROGRESS', '1')
    model = Tiny()
    utils.fit(model, tiny_data(), 1, torch.optim.Adam(model.parameters()), F.nll_loss, verbose=False)
    captured = capsys.readouterr()
    assert captured.err == '' and captured.out == ''


def test_fit_restarts_the_moving_average_unless_told_to_continue():
    xs = np.random.default_rng(0).integers(0, 5, size=(40, 2))
    data = utils.ArraysData.from_arrays([-1], xs, xs[:, 0], bs=64, seed=0)      # one batch per epoch
    model = nn.Sequential(nn.Embedding(5, 3), nn.Flatten(), nn.Linear(6, 5), nn.LogSoftmax(-1))
    opt = torch.optim.SGD(model.parameters(), 0.5)
    history = utils.fit(model, data, 1, opt, F.nll_loss, verbose=False)
    history = utils.fit(model, data, 1, opt, F.nll_loss, history=history, verbose=False)
    assert history.train_loss[1] == pytest.approx(history.batch_loss[1])     # a new average: its one batch
    history = utils.fit(model, data, 1, opt, F.nll_loss, history=history, verbose=False, continue_average=True)
    assert history.train_loss[2] != pytest.approx(history.batch_loss[2])     # the old one, going on


def test_autocast_runs_in_the_dtype_asked_for():
    layer, x = nn.Linear(4, 4), torch.randn(2, 4)
    for dtype in (torch.float16, torch.bfloat16):
        with utils._autocast(torch.device('cpu'), dtype):
            assert layer(x).dtype == dtype


def test_fit_and_evaluate_measure_under_the_autocast_they_are_given():
    utils.seed_everything(0)
    xs = np.random.default_rng(0).integers(0, 5, size=(200, 2))
    data = utils.ArraysData.from_arrays(utils.last_rows(200, 50), xs, xs[:, 0], bs=32, seed=0)
    model = nn.Sequential(nn.Embedding(5, 8), nn.Flatten(), nn.Linear(16, 5), nn.LogSoftmax(-1))
    start = time.perf_counter()
    history = utils.fit(model, data, 1, torch.optim.SGD(model.parameters(), 0.1), F.nll_loss, verbose=False,
                        amp_dtype=torch.bfloat16)
    assert 0 < history.time[0] <= time.perf_counter() - start            # the epoch's own duration
    in_bf16 = utils.evaluate(model, data.valid, F.nll_loss, torch.bfloat16)
    in_fp32 = utils.evaluate(model, data.valid, F.nll_loss)
    assert history.valid_loss[0] == in_bf16 != in_fp32 and abs(in_bf16 - in_fp32) < 0.05


def test_evaluate_on_nothing_says_what_to_check():
    with pytest.raises(ValueError, match='no targets'):
        utils.evaluate(nn.Linear(2, 2), [], F.mse_loss)


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


def test_the_original_sgdr_warms_up_then_is_torchs_warm_restarts_per_batch():
    # fastai 0.7's CosAnneal: 1/100 of the rate for the first 1/20 of the first cycle, then
    # PyTorch's CosineAnnealingWarmRestarts with a first cycle of one epoch, each next twice as
    # long and a floor of zero, at every batch of 7 epochs
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
    assert ours[nb] == ours[3 * nb] == 1.0 and ours[2 * nb] == pytest.approx(0.5)   # restarts; mid-cycle
    assert utils.original_sgdr_factor(0, 20) == 0.01          # warm-up: step < 20 / 20
    assert utils.original_sgdr_factor(1, 20) == pytest.approx((np.cos(np.pi / 20) + 1) / 2)
    # the schedule applies the factor to the optimiser's rate, batch by batch, with its arguments
    for kwargs in (dict(), dict(cycle_mult=1, warmup=0.2)):         # the defaults: the original's 2 and 1/20
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = utils.original_sgdr_schedule(opt, 10, **kwargs)
        lrs = []
        for _ in range(60):
            lrs.append(opt.param_groups[0]['lr'])
            opt.step()
            sched.step()
        assert lrs == pytest.approx([0.1 * utils.original_sgdr_factor(s, 10, **kwargs) for s in range(60)])


def test_smooth_matches_fit_train_loss():
    assert utils.smooth([0.0, 1.0], beta=0.5) == pytest.approx([0.0, 2 / 3])   # by hand, debiased
    model = Tiny()
    h = utils.fit(model, tiny_data(), 2, torch.optim.Adam(model.parameters(), 1e-2), F.nll_loss,
                  verbose=False)
    smoothed = utils.smooth(h.batch_loss)       # one average over both epochs of this call
    per_epoch = len(h.batch_loss) // 2
    assert h.train_loss == pytest.approx([smoothed[per_epoch - 1], smoothed[-1]])


def test_fit_steps_scheduler_per_batch_and_can_be_quiet(capsys):
    model = Tiny()
    md = tiny_data()
    opt = torch.optim.SGD(model.parameters(), 1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 / (1 + step))
    utils.fit(model, md, 2, opt, F.nll_loss, scheduler=sched, verbose=False)
    assert sched.last_epoch == 2 * len(md.train)
    assert opt.param_groups[0]['lr'] == pytest.approx(1 / (1 + 2 * len(md.train)))
    assert capsys.readouterr().out == ''


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


def test_seq_nll_averages_every_position():
    torch.manual_seed(0)
    log_probs = torch.randn(3, 5, 7).log_softmax(-1)
    targets = torch.randint(0, 7, (3, 5))
    by_hand = -log_probs.gather(2, targets[..., None]).mean()
    assert utils.seq_nll(log_probs, targets).item() == pytest.approx(by_hand.item())
    with pytest.raises(RuntimeError, match=r'Expected target size \[3, 5\], got \[3, 4\]'):
        utils.seq_nll(log_probs, targets[:, :4])           # a shape mismatch is an error


def test_target_losses_are_the_per_character_terms_of_seq_nll():
    torch.manual_seed(0)
    log_probs, targets = F.log_softmax(torch.randn(3, 5, 7), -1), torch.randint(0, 7, (3, 5))
    losses = utils.target_losses(log_probs, targets)
    assert losses.shape == (3, 5) and losses.dtype == torch.float32
    assert losses[1, 2].item() == -log_probs[1, 2, targets[1, 2]].item()
    assert torch.isclose(losses.mean(), utils.seq_nll(log_probs, targets))
    assert utils.target_losses(log_probs.bfloat16(), targets).dtype == torch.float32


# --- what a model learned, and the shared models ----------------------------------------------

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


def test_the_stateful_model_carries_its_state_and_starts_afresh_on_another_batch_size():
    torch.manual_seed(0)
    model = utils.CharLSTM(6, 3, 8, 2, 0.0)
    x = torch.randint(0, 6, (2, 5))
    first, second = model(x), model(x)
    assert [tuple(t.shape) for t in model.h] == [(2, 2, 8)] * 2 and not model.h[0].requires_grad
    assert not torch.allclose(first, second)                  # the carried state changes the prediction
    assert torch.equal(second, model.run(x, model.run(x, None)[1])[0])
    assert torch.equal(model(x[:1]), model.run(x[:1], None)[0])   # another batch size: a fresh state
