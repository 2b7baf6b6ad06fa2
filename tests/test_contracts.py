"""Exact contracts of the shared code that `make mutate` (mutation testing, README) found untested:
defaults the notebooks rely on, boundaries, the exact words of errors, and what a stateful model
or a seed changes. Mutants that no test can tell apart are listed in tests/mutmut-equivalents.md."""
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import utils
from helpers import rows


# --- CharVocab ----------------------------------------------------------------------------

def test_a_vocabulary_shows_its_characters():
    assert repr(utils.CharVocab('banana')) == "CharVocab(3 chars: 'abn')"


def test_decode_refuses_booleans_and_names_the_range():
    vocab = utils.CharVocab('abc')
    for bad in ([True], [False]):                       # bools are ints to Python, not indices here
        with pytest.raises(ValueError, match=r'^decode: (True|False) is not an index of this vocabulary '
                                             r'\(whole numbers from 0 to 2\)$'):
            vocab.decode(bad)


def test_the_frequency_baseline_counts_characters_seen_once():
    # counts 3, 1: p = 3/4, 1/4
    assert utils.unigram_loss(np.array([0, 0, 0, 1])) == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))


# --- ArraysData ---------------------------------------------------------------------------

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


def test_the_schedule_follows_the_original_factor_with_its_arguments():
    assert utils.original_sgdr_factor(0, 20) == 0.01          # warm-up: step < 20 / 20
    assert utils.original_sgdr_factor(1, 20) == pytest.approx((np.cos(np.pi / 20) + 1) / 2)
    for kwargs in (dict(), dict(cycle_mult=1, warmup=0.2)):         # the defaults: the original's 2 and 1/20
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = utils.original_sgdr_schedule(opt, 10, **kwargs)
        lrs = []
        for _ in range(60):
            lrs.append(opt.param_groups[0]['lr'])
            opt.step()
            sched.step()
        assert lrs == pytest.approx([utils.original_sgdr_factor(s, 10, **kwargs) for s in range(60)])


def test_the_language_model_loader_takes_any_integer_ids_and_the_shortest_text():
    batches = list(utils.LanguageModelLoader(np.arange(8, dtype=np.int32), bs=4, bptt=8))
    assert len(batches) == 1 and batches[0][0].shape == (4, 1) and batches[0][0].dtype == torch.int64
    loader = utils.LanguageModelLoader(np.arange(40), bs=4, bptt=8)    # 10 per row: 9 targets, 8 + 1
    assert len(loader) == len(list(loader)) == 2
    for kwargs, message in [(dict(bs=0, bptt=8), 'bs must be an integer of at least 1, got 0'),
                            (dict(bs=4, bptt=0), 'bptt must be an integer of at least 1, got 0')]:
        with pytest.raises(ValueError, match=f'^{message}$'):
            utils.LanguageModelLoader(np.arange(40), **kwargs)


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
    with pytest.raises(ValueError, match=r'^evaluate: the loader gave no targets, so there is no loss to '
                                         r'average \(is the validation set empty\?\)$'):
        utils.evaluate(nn.Linear(2, 2), [], F.mse_loss)


# --- get_next and generate ----------------------------------------------------------------

class NextInAlphabet(nn.Module):
    """Predicts the character after the last one it reads (vocab 'abcd') with probability
    0.925; as a stateful model it also counts the calls since its last reset, and a count above
    0 moves the prediction one further."""
    def __init__(self, stateful=False):
        super().__init__()
        self.p, self.stateful, self.calls = nn.Parameter(torch.zeros(())), stateful, 0

    def reset(self):
        self.calls = 0

    def forward(self, x):
        shift = 1 + (self.stateful and self.calls > 0)
        self.calls += 1
        target = (x[:, -1] + shift) % 4
        return torch.log(F.one_hot(target, 4).float() * 0.9 + 0.025)


def test_get_next_reads_the_text_as_one_row_and_returns_the_probability_at_temperature_1():
    vocab = utils.CharVocab('abcd')
    char, p = utils.get_next(NextInAlphabet(), vocab, 'ab', torch.Generator().manual_seed(0))
    assert p == pytest.approx(0.925 if char == 'c' else 0.025)
    draws = [utils.get_next(NextInAlphabet(), vocab, 'ab', torch.Generator().manual_seed(s))[0] for s in range(40)]
    assert draws.count('c') >= 30                        # after 'b' comes 'c' (0.925)


def test_get_next_starts_a_stateful_model_from_a_zero_state():
    vocab, model = utils.CharVocab('abcd'), NextInAlphabet(stateful=True)
    first = utils.get_next(model, vocab, 'a', temperature=1e-3)
    again = utils.get_next(model, vocab, 'a', temperature=1e-3)
    assert first == again == ('b', 1.0)


def test_the_empty_text_error_says_what_to_do():
    with pytest.raises(ValueError, match='^text is empty: give the model at least one character to read$'):
        utils.get_next(NextInAlphabet(), utils.CharVocab('abcd'), '')
    with pytest.raises(ValueError, match='^prompt is empty: give the model at least one character to start from$'):
        utils.generate(NextInAlphabet(), utils.CharVocab('abcd'), '', 5)


def test_the_smallest_temperature_still_picks_the_likeliest():
    # 5e-324 is the smallest float above 0: any log-probability other than 0 divided by it is -inf
    assert utils.get_next(NextInAlphabet(), utils.CharVocab('abcd'), 'a', temperature=5e-324) == ('b', 1.0)


def test_generate_defaults_200_characters_from_the_last_8():
    class Length(nn.Module):           # predicts the character numbered by how many it reads
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return torch.log(F.one_hot(torch.full((len(x),), x.shape[1] % 10), 10).float() * 0.99 + 0.001)
    text = utils.generate(Length(), utils.CharVocab('0123456789'), '0123456789', temperature=1e-3)
    assert len(text) == 210 and set(text[10:]) == {'8'}


def test_generate_checks_n_chars_by_name_and_accepts_none():
    vocab = utils.CharVocab('abcd')
    assert utils.generate(NextInAlphabet(), vocab, 'ab', 0) == 'ab'
    with pytest.raises(ValueError, match='^n_chars must be an integer of at least 0, got -1$'):
        utils.generate(NextInAlphabet(), vocab, 'ab', -1)


def test_generate_samples_at_its_temperature():
    vocab = utils.CharVocab('abcd')
    cold = utils.generate(NextInAlphabet(), vocab, 'a', 40, 1, torch.Generator().manual_seed(0), temperature=1e-3)
    assert cold == 'a' + 'bcda' * 10                    # always the likeliest: at 1.0, 4 in 40 would stray


# --- beam_search --------------------------------------------------------------------------

class Markov(nn.Module):
    """Predicts from the last character only, with the transition table ``T`` (rows: the last
    character); counts its calls. ``run(x, h)`` as the search helpers want it."""
    def __init__(self, T):
        super().__init__()
        self.logT = nn.Parameter(torch.tensor(T).clamp_min(1e-9).log(), requires_grad=False)
        self.calls = 0

    def run(self, x, h):
        self.calls += 1
        h = torch.zeros(1, len(x), 1) if h is None else h
        return self.logT[x], h

    def forward(self, x):
        return self.run(x, None)[0]


# vocab 'abcd', prompt 'd': the likeliest two characters ('ac', 0.5) do not start the likeliest
# three ('bbb', 0.18 against 'aca', 0.17)
TRAP = [[0, 0, 1, 0], [0, 0.6, 0, 0.4], [0.34, 0.33, 0.33, 0], [0.5, 0.5, 0, 0]]


def test_pruning_every_k_steps_prunes_after_steps_k_2k_and_the_last():
    vocab = utils.CharVocab('abcd')
    exact = utils.beam_search(Markov(TRAP), vocab, 'd', 3)[0]                     # breadth-first
    assert exact[0] == 'dbbb' and np.exp(exact[1]) == pytest.approx(0.18)
    assert utils.beam_search(Markov(TRAP), vocab, 'd', 3, beam_size=1, prune_every=3)[0][0] == 'dbbb'
    assert utils.beam_search(Markov(TRAP), vocab, 'd', 3, beam_size=1, prune_every=2)[0][0] == 'daca'
    # the last step always chooses, whatever prune_every says
    assert len(utils.beam_search(Markov(TRAP), vocab, 'd', 3, beam_size=2, prune_every=2)) == 2


def test_beam_search_reads_each_character_once_and_skips_the_last_forward():
    vocab, model = utils.CharVocab('abcd'), Markov(TRAP)
    utils.beam_search(model, vocab, 'dd', 4, beam_size=2)
    assert model.calls == 4                # the prompt, then steps 1-3; step 4 only scores


def test_beam_search_checks_its_arguments_by_name():
    vocab, model = utils.CharVocab('abcd'), Markov(TRAP)
    assert utils.beam_search(model, vocab, 'd', 0, beam_size=2) == [('d', 0.0)]     # no steps: the prompt
    for kwargs, message in [(dict(steps=-1), 'steps must be an integer of at least 0, got -1'),
                            (dict(steps=2, beam_size=0), 'beam_size must be an integer of at least 1, got 0'),
                            (dict(steps=2, prune_every=0), 'prune_every must be an integer of at least 1, got 0')]:
        with pytest.raises(ValueError, match=f'^{message}$'):
            utils.beam_search(model, vocab, 'd', **kwargs)
    with pytest.raises(ValueError, match='^prompt is empty: give the model at least one character to start from$'):
        utils.beam_search(model, vocab, '', 2)


# --- checkpoints --------------------------------------------------------------------------

def test_an_empty_text_has_no_vocabulary():
    with pytest.raises(ValueError, match='^CharVocab needs a text with at least one character, got an empty one$'):
        utils.CharVocab('')


def test_save_checkpoint_makes_the_folders_and_writes_beside_the_file(tmp_path, monkeypatch):
    # the temporary file is <name>.<random>.tmp in the same folder: one rename on one disk, and
    # the pattern train_full.remove_unfinished_saves cleans after a killed save
    renames = []
    real_replace = utils.os.replace
    monkeypatch.setattr(utils.os, 'replace', lambda a, b: (renames.append((Path(a), Path(b))), real_replace(a, b)))
    path = utils.save_checkpoint({'w': torch.ones(2)}, tmp_path / 'a' / 'b' / 'state.pt')
    assert torch.equal(utils.load_checkpoint(path)['w'], torch.ones(2))
    (tmp, final), = renames
    assert final == path and tmp.parent == path.parent
    assert tmp.name.startswith('state.pt.') and tmp.name.endswith('.tmp') and not tmp.exists()


def test_load_checkpoint_names_a_folder_as_a_folder(tmp_path):
    (tmp_path / 'here.pt').mkdir()
    with pytest.raises(FileNotFoundError, match=r'^No checkpoint at .*here\.pt \(it is a folder\)$'):
        utils.load_checkpoint(tmp_path / 'here.pt')
    with pytest.raises(FileNotFoundError, match=r'^No checkpoint at .*gone\.pt$'):
        utils.load_checkpoint(tmp_path / 'gone.pt')


CUDA_MESSAGE = ("Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is False. "
                "If you are running on a CPU-only machine, please use torch.load with map_location=...")


@pytest.mark.parametrize('message, shown', [
    (CUDA_MESSAGE, 'Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is False'),
    ('Invalid device string: cuda:x. More text', 'Invalid device string: cuda:x')])
def test_a_checkpoint_from_another_device_is_named_with_the_devices_here(tmp_path, monkeypatch, message, shown):
    path = utils.save_checkpoint({'w': torch.ones(2)}, tmp_path / 'gpu.pt')

    def load_as_on_a_machine_without_it(*args, **kwargs):
        raise RuntimeError(message)
    monkeypatch.setattr(utils.torch, 'load', load_as_on_a_machine_without_it)
    monkeypatch.setattr(utils, '_available_devices', lambda: ['cpu', 'mps'])
    with pytest.raises(RuntimeError) as e:
        utils.load_checkpoint(path, map_location=None)
    assert str(e.value) == (f'{path} holds tensors saved on a device this machine lacks ({shown}). '
                            f'Pass map_location="cpu" (this machine has: cpu, mps).')


def test_a_damaged_checkpoint_names_the_error_in_a_line(tmp_path, monkeypatch):
    path = tmp_path / 'cut.pt'
    path.write_bytes(b'hello world, not a checkpoint')
    with pytest.raises(RuntimeError, match=r'^Could not read the checkpoint .*cut\.pt \(KeyError: 101\): it is damaged'):
        utils.load_checkpoint(path)

    for message, shown in [('a bad header here. And more.', 'a bad header here'),
                            ('x y ' * 100 + '. And more.', ('x y ' * 100)[:200])]:
        def load_failing(*args, **kwargs):
            raise ValueError(message)
        monkeypatch.setattr(utils.torch, 'load', load_failing)
        with pytest.raises(RuntimeError) as e:
            utils.load_checkpoint(path)
        assert f'(ValueError: {shown}): it is damaged or incomplete' in str(e.value)   # the first sentence, 200 at most
