"""Generation and search: get_next, generate and beam_search (batched with carried states,
against brute force and the original's form), their temperatures and the arguments they refuse."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import utils
from helpers import Tiny
from search_reference import beam_search_by_rereading


# --- get_next and generate --------------------------------------------------------------------

class PrefersTheLast(nn.Module):
    """A stateless model of ``n_out`` outputs that prefers the last one."""
    def __init__(self, n_out):
        super().__init__()
        self.w = nn.Parameter(torch.arange(n_out, dtype=torch.float))

    def run(self, x, h):               # h: a stand-in state, (1, batch, 1)
        h = torch.zeros(1, len(x), 1) if h is None else h
        return F.log_softmax(self.w.expand(*x.shape, -1), dim=-1), h

    def forward(self, x):
        return self.run(x, None)[0]


def test_a_model_of_another_vocabulary_size_is_refused_by_name():
    vocab = utils.CharVocab('abc')
    for call in (lambda m: utils.generate(m, vocab, 'ab', 5),
                 lambda m: utils.get_next(m, vocab, 'ab'),
                 lambda m: utils.beam_search(m, vocab, 'ab', 3, beam_size=2)):
        for n_out in (2, 5):
            with pytest.raises(ValueError, match=f'The model predicts {n_out} characters but the '
                                                 f'vocabulary has 3'):
                call(PrefersTheLast(n_out))
    assert utils.beam_search(PrefersTheLast(3), vocab, 'ab', 2, beam_size=1)[0][0] == 'abcc'


@pytest.mark.parametrize('temperature', [np.float32(0.5), np.float64(2.0), torch.tensor(0.5), 1, 0.7])
def test_a_temperature_is_judged_by_value(temperature):
    char, p = utils.get_next(PrefersTheLast(3), utils.CharVocab('abc'), 'ab', torch.Generator().manual_seed(0),
                             temperature=temperature)
    assert char in 'abc' and 0 < p <= 1


@pytest.mark.parametrize('temperature', [0, -1, float('nan'), float('inf'), True, np.bool_(True), torch.tensor(True),
                                         np.array(True), '0.5', None, [0.5], torch.ones(2), torch.tensor(1 + 1j)])
def test_a_bad_temperature_is_refused(temperature):
    with pytest.raises(ValueError, match='temperature must be a finite number above 0'):
        utils.get_next(PrefersTheLast(3), utils.CharVocab('abc'), 'ab', temperature=temperature)


def test_a_tiny_temperature_picks_the_likeliest_without_overflow():
    for temperature in (1e-45, 1e-300):
        assert utils.get_next(PrefersTheLast(3), utils.CharVocab('abc'), 'ab', temperature=temperature) == ('c', 1.0)


def test_generation_arguments_are_checked():
    vocab = utils.CharVocab('abc ')
    model = Tiny(vocab_size=4)
    for bad in (-1.0, 0, float('nan'), float('inf')):
        with pytest.raises(ValueError, match='temperature must be a finite number above 0'):
            utils.get_next(model, vocab, 'ab', temperature=bad)
    with pytest.raises(ValueError, match='context must be an integer of at least 1'):
        utils.generate(model, vocab, 'ab', 3, context=0)
    with pytest.raises(ValueError, match='prompt is empty'):
        utils.generate(model, vocab, '', 3, context=2)


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
    with pytest.raises(ValueError, match='text is empty'):
        utils.get_next(NextInAlphabet(), utils.CharVocab('abcd'), '')
    with pytest.raises(ValueError, match='prompt is empty'):
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
    with pytest.raises(ValueError, match='n_chars must be an integer of at least 0, got -1'):
        utils.generate(NextInAlphabet(), vocab, 'ab', -1)


def test_generate_samples_at_its_temperature():
    vocab = utils.CharVocab('abcd')
    cold = utils.generate(NextInAlphabet(), vocab, 'a', 40, 1, torch.Generator().manual_seed(0), temperature=1e-3)
    assert cold == 'a' + 'bcda' * 10                    # always the likeliest: at 1.0, 4 in 40 would stray


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


# --- beam search ------------------------------------------------------------------------------

class TinyGRU(nn.Module):
    def __init__(self, vocab_size=4, n_hidden=8, layers=1, lstm=False):
        super().__init__()
        torch.manual_seed(0)
        self.e = nn.Embedding(vocab_size, 5)
        self.rnn = (nn.LSTM if lstm else nn.GRU)(5, n_hidden, layers, batch_first=True)
        self.l_out = nn.Linear(n_hidden, vocab_size)
        with torch.no_grad():
            self.l_out.weight.mul_(4)   # peaky distributions: ties are unlikely

    def run(self, x, h):
        out, h = self.rnn(self.e(x), h)
        return F.log_softmax(self.l_out(out), dim=-1), h


def _seq_model():
    return TinyGRU(vocab_size=4, lstm=True), utils.CharVocab('abcd')


def test_beam_search_arguments_are_checked():
    model, vocab = _seq_model()
    for kwargs, match in [(dict(beam_size=0), 'beam_size'), (dict(beam_size=-2), 'beam_size'),
                          (dict(beam_size=2, n_candidates=0), 'n_candidates'),
                          (dict(beam_size=2, n_candidates=len(vocab) + 1), 'n_candidates')]:
        with pytest.raises(ValueError, match=match):
            utils.beam_search(model, vocab, vocab.itos[0], 3, **kwargs)
    with pytest.raises(ValueError, match='prompt is empty'):
        utils.beam_search(model, vocab, '', 3, beam_size=2)


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
    with pytest.raises(ValueError, match='prompt is empty'):
        utils.beam_search(model, vocab, '', 2)


def text_log_prob(model, vocab, prompt, continuation):
    x = torch.from_numpy(vocab.encode(prompt + continuation)).unsqueeze(0)
    with torch.no_grad():
        logp = model.run(x, None)[0][0]
    ids = vocab.encode(continuation)
    return sum(float(logp[len(prompt) - 1 + i, c]) for i, c in enumerate(ids))


@pytest.mark.parametrize('lstm', [False, True])
def test_full_beam_equals_brute_force(lstm):
    vocab, model = utils.CharVocab('abcd'), TinyGRU(layers=2, lstm=lstm)
    steps = 3
    beams = utils.beam_search(model, vocab, 'ab', steps, beam_size=len(vocab) ** steps)
    brute = sorted(((''.join(t), text_log_prob(model, vocab, 'ab', ''.join(t)))
                    for t in itertools.product('abcd', repeat=steps)), key=lambda tc: -tc[1])
    assert [t for t, _ in beams] == ['ab' + t for t, _ in brute]
    assert [s for _, s in beams] == pytest.approx([s for _, s in brute], abs=1e-4)


def test_breadth_first_keeps_everything():
    vocab, model = utils.CharVocab('abcd'), TinyGRU()
    beams = utils.beam_search(model, vocab, 'a', 4)
    assert len(beams) == 4 ** 4 and len({t for t, _ in beams}) == 256
    assert sum(torch.tensor([s for _, s in beams]).exp()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize('beam_size', [1, 3, 10])
def test_batched_search_matches_rereading(beam_size):
    vocab, model = utils.CharVocab('abcd'), TinyGRU(layers=2, lstm=True)
    fast = utils.beam_search(model, vocab, 'dab', 6, beam_size)
    slow = beam_search_by_rereading(model, vocab, 'dab', 6, beam_size)
    assert [t for t, _ in fast] == [t for t, _ in slow]
    assert [s for _, s in fast] == pytest.approx([s for _, s in slow], abs=1e-4)


def test_stochastic_beam_search_is_seeded_and_samples():
    vocab, model = utils.CharVocab('abcd'), TinyGRU()
    run = lambda seed: utils.beam_search(model, vocab, 'a', 30, 1, n_candidates=1,
                                         generator=torch.Generator().manual_seed(seed))
    assert run(0) == run(0)
    texts = {run(seed)[0][0] for seed in range(5)}
    assert len(texts) > 1                                   # sampling, not argmax
    greedy = utils.beam_search(model, vocab, 'a', 30, 1)[0]
    wide = utils.beam_search(model, vocab, 'a', 30, 1, n_candidates=4,
                             generator=torch.Generator().manual_seed(0))[0]
    assert wide == greedy                                   # all candidates: plain beam search


def test_search_rejects_unknown_prompt_character():
    with pytest.raises(KeyError, match="'z'"):
        utils.beam_search(TinyGRU(), utils.CharVocab('abcd'), 'abz', 2, 2)


@pytest.mark.parametrize('steps', [2, 3])
def test_pruning_after_all_steps_is_exact(steps):
    # keeping every extension until the last step is breadth-first search, cut to the best few
    vocab, model = utils.CharVocab('abcd'), TinyGRU(layers=2, lstm=True)
    pruned_once = utils.beam_search(model, vocab, 'ab', steps, beam_size=5, prune_every=steps)
    every_text = utils.beam_search(model, vocab, 'ab', steps)
    assert [t for t, _ in pruned_once] == [t for t, _ in every_text[:5]]
    assert [s for _, s in pruned_once] == pytest.approx([s for _, s in every_text[:5]], abs=1e-5)


def test_pruning_every_two_steps_keeps_what_two_step_rounds_keep():
    vocab, model = utils.CharVocab('abcd'), TinyGRU()
    result = utils.beam_search(model, vocab, 'a', 4, beam_size=3, prune_every=2)
    # by hand: all 2-character extensions, keep 3; extend each kept text by all 2-character
    # continuations, keep 3
    kept = [('a', 0.0)]
    for _ in range(2):
        cands = [(t + ''.join(c), s + text_log_prob(model, vocab, t, ''.join(c)))
                 for t, s in kept for c in itertools.product('abcd', repeat=2)]
        kept = sorted(cands, key=lambda ts: -ts[1])[:3]
    assert [t for t, _ in result] == [t for t, _ in kept]
    one_step = utils.beam_search(model, vocab, 'a', 4, beam_size=3)
    assert result[0][1] >= one_step[0][1] - 1e-5        # looking further never finds a worse best


def test_pruning_interval_is_checked():
    with pytest.raises(ValueError, match='prune_every'):
        utils.beam_search(TinyGRU(), utils.CharVocab('abcd'), 'a', 2, 2, prune_every=0)
