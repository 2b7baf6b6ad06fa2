"""Beam search: batched with carried states, against brute force and the original's form."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import utils
from search_reference import beam_search_by_rereading


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
