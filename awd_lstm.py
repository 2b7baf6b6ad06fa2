"""The regularised LSTM that came after the original (Merity, Keskar and Socher 2017,
"Regularizing and Optimizing LSTM Language Models", AWD-LSTM), at the original's size: the
pieces one at a time, then the model that puts them together. ``train_full.py awd`` trains it
(``--awd KEY=VALUE`` for a variant); notebook 08 teaches it, as notebook 03 teaches the
models of ``utils.py``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from utils import FULL_SIZE_MODELS, CharSeqStatefulRNN, seq_nll

#: The regularised LSTM's default settings, those of ``train_full.py awd`` (a variant changes some
#: with ``--awd``): the character-level Penn Treebank rates of the AWD-LSTM code
#: (salesforce/awd-lstm-lm), embedding dropout, AR and TAR at 0 (implemented, off) among them,
#: except that the decoder is not tied (that code ties it). Notebook 08 compares the variants.
AWD_CONFIG = dict(dropouti=0.1, dropouth=0.25, dropoute=0.0, wdrop=0.5, alpha=0.0, beta=0.0, tie=False,
                  dropout=0.1)


class LockedDropout(nn.Module):
    """Variational dropout: one mask per sequence of a batch, shared by all its time steps
    (``x``: batch, time, features). Off in ``eval()``."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask


def embedding_dropout(embedding, x, p, training):
    """Drop whole characters: rows of the embedding matrix, one mask per batch, the kept rows
    scaled by 1 / (1 - p). Off when not ``training``."""
    if not training or p == 0:
        return embedding(x)
    mask = embedding.weight.new_empty(embedding.weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
    return F.embedding(x, embedding.weight * mask)


class WeightDroppedLSTM(nn.Module):
    """A one-layer ``nn.LSTM`` whose hidden-to-hidden matrix is weight-dropped (DropConnect):
    one mask per forward call, applied to the matrix itself, so the fused LSTM kernel still runs
    (the module reads the dropped tensor through its flat weights). Off in ``eval()``."""

    def __init__(self, n_in, n_out, p):
        super().__init__()
        self.lstm = nn.LSTM(n_in, n_out, batch_first=True)
        self.p = p
        raw = self.lstm.weight_hh_l0
        del self.lstm._parameters['weight_hh_l0']
        self.weight_hh_raw = nn.Parameter(raw.detach().clone())

    def forward(self, x, h=None):
        raw = self.weight_hh_raw
        w = F.dropout(raw, self.p, True) if self.training and self.p else raw.view_as(raw)
        setattr(self.lstm, 'weight_hh_l0', w)       # a plain tensor: nn.LSTM refreshes its flat weights
        return self.lstm(x, h)


class CharAWDLSTM(CharSeqStatefulRNN):
    """Embedding, ``n_layers`` weight-dropped LSTMs with locked dropout on the embedding's output
    (``dropouti``), between layers (``dropouth``) and before the decoder (``dropout``), embedding
    dropout (``dropoute``), and activation regularisation (AR, ``alpha``) and temporal AR (TAR,
    ``beta``) on the last layer's output, added to the training loss by :meth:`regularisation`.
    With ``tie`` the last layer has ``n_fac`` units and the decoder shares the embedding's
    matrix. Stateful like notebook 03's models: their ``forward`` carries the state ``h`` (here a
    list of one state per layer) from batch to batch, and ``run`` is one pass from a given state.
    The layers are its own, so it skips their ``__init__``."""

    def __init__(self, vocab_size, n_fac, n_hidden, n_layers, dropout, dropouti, dropouth,
                 dropoute, wdrop, alpha, beta, tie):
        nn.Module.__init__(self)
        self.e = nn.Embedding(vocab_size, n_fac)
        sizes = [n_fac] + [n_hidden] * (n_layers - 1) + [n_fac if tie else n_hidden]
        self.rnns = nn.ModuleList(WeightDroppedLSTM(a, b, wdrop) for a, b in zip(sizes, sizes[1:]))
        self.drop_i, self.drop_h, self.drop_o = (LockedDropout(dropouti), LockedDropout(dropouth),
                                                 LockedDropout(dropout))
        self.l_out = nn.Linear(sizes[-1], vocab_size)
        if tie:
            self.l_out.weight = self.e.weight
        self.dropoute, self.alpha, self.beta = dropoute, alpha, beta
        self.h, self.last = None, None

    def run(self, x, h):
        h = h or [None] * len(self.rnns)
        out = self.drop_i(embedding_dropout(self.e, x, self.dropoute, self.training))
        new_h = []
        for i, rnn in enumerate(self.rnns):
            out, hi = rnn(out, h[i])
            new_h.append(hi)
            raw = out
            out = self.drop_h(out) if i < len(self.rnns) - 1 else self.drop_o(out)
        self.last = (raw, out)                       # the last layer's output, before and after dropout
        return F.log_softmax(self.l_out(out), dim=-1), new_h

    def regularisation(self):
        """AR (``alpha`` times the mean square of the last layer's dropped output) plus TAR
        (``beta`` times the mean square of its undropped output's step-to-step change), for
        the batch just read; 0 in ``eval()``, so validation losses stay plain."""
        if not self.training or self.last is None:
            return 0.0
        raw, dropped = self.last
        return (self.alpha * dropped.float().pow(2).mean()
                + self.beta * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean())


def training_loss(model):
    """The loss a model trains on: the mean negative log-likelihood (``seq_nll``), plus the
    model's AR and TAR if it has them (:meth:`CharAWDLSTM.regularisation`)."""
    if not hasattr(model, 'regularisation'):
        return seq_nll
    return lambda log_probs, targets: seq_nll(log_probs, targets) + model.regularisation()


#: The cells a full-size run can train or ``load_shipped`` build: notebook 03's models
#: (``utils.FULL_SIZE_MODELS``) and the regularised LSTM.
MODELS_BY_CELL = dict(FULL_SIZE_MODELS, awd=CharAWDLSTM)
