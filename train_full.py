"""The original's full-size model of notebook 03, trained to its end, resumably.

    python train_full.py lstm      # or: make full-lstm
    python train_full.py gru       # or: make full-gru

Trains notebook 03's ``CharLSTM`` (or ``CharGRU``) in the original's configuration on
Obama's speeches of the full corpus: embedding 42, 3 layers of 512, dropout 0.5, batches of
64 x 72, the first 800,000 characters for training and the rest for validation, Adam 1e-2
with weight decay 1e-5, and the original library's cosine annealing with warm restarts
(warm-up included) over cycles of 1+2+4+8+16 = 31 epochs. Forward passes run under bf16
autocast (``make bench`` compares it with fp32). It uses the GPU when there is one.

After every epoch it saves model, optimiser, scheduler, random state and history to
``data/full_run/<cell>_state.pt`` (atomically); run the same command again and it resumes
from there, so a killed run loses at most one epoch and ends where an uninterrupted one
would. At the end it writes ``models/<cell>_3x512.pt``: the weights in fp16, the vocabulary,
the configuration, the history and how it was made; notebook 03 loads and re-checks it.

``--tiny`` runs the same code at a tiny size (a minute on a CPU, either corpus) into
``data/full_run_tiny/``; CI uses it so that this path never goes untested.
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from utils import (DATA_DIR, CharVocab, History, LanguageModelData, LanguageModelLoader,  # noqa: E402
                   device, evaluate,
                   fit, load_checkpoint, load_speeches, original_sgdr_schedule, save_checkpoint,
                   seed_everything, seq_nll)

#: The original's configuration (part 2, section 4).
ORIGINAL_CONFIG = dict(n_fac=42, n_hidden=512, n_layers=3, dropout=0.5, bs=64, bptt=72,
                       lr=1e-2, weight_decay=1e-5, cycles=5, cycle_mult=2, n_train=800_000,
                       n_valid=None, seed=42, amp='bfloat16')
# amp: the dtype of forward passes under torch.autocast, or None for fp32; main() drops to
# fp32 where this machine cannot run an LSTM in bf16 (see bf16_lstm_supported).
#: The same code path at a size that runs in about a minute on a CPU.
TINY_CONFIG = dict(ORIGINAL_CONFIG, n_fac=8, n_hidden=32, bs=16, bptt=24, cycles=2,
                   n_train=40_000, n_valid=8_000)


# The models of notebook 03, section 3-5 (same classes, same parameter names).
class CharSeqStatefulRNN(nn.Module):
    def __init__(self, vocab_size, n_fac, n_hidden):
        super().__init__()
        self.e = nn.Embedding(vocab_size, n_fac)
        self.rnn = nn.RNN(n_fac, n_hidden, batch_first=True)
        self.l_out = nn.Linear(n_hidden, vocab_size)
        self.h = None

    def reset(self):
        self.h = None

    def run(self, x, h):
        output, h = self.rnn(self.e(x), h)
        return F.log_softmax(self.l_out(output), dim=-1), h

    def forward(self, x):
        if self.h is not None and _batch_size(self.h) != len(x):
            self.reset()
        log_probs, h = self.run(x, self.h)
        self.h = _detach(h)
        return log_probs


def _detach(h):
    return tuple(t.detach() for t in h) if isinstance(h, tuple) else h.detach()


def _batch_size(h):
    return (h[0] if isinstance(h, tuple) else h).shape[1]


class CharLSTM(CharSeqStatefulRNN):
    def __init__(self, vocab_size, n_fac, n_hidden, n_layers, dropout):
        super().__init__(vocab_size, n_fac, n_hidden)
        self.rnn = nn.LSTM(n_fac, n_hidden, n_layers, dropout=dropout, batch_first=True)


class CharGRU(CharSeqStatefulRNN):
    def __init__(self, vocab_size, n_fac, n_hidden, n_layers, dropout):
        super().__init__(vocab_size, n_fac, n_hidden)
        self.rnn = nn.GRU(n_fac, n_hidden, n_layers, dropout=dropout, batch_first=True)


CELLS = {'lstm': CharLSTM, 'gru': CharGRU}


def build_model(cell, vocab_size, config):
    c = config
    return CELLS[cell](vocab_size, c['n_fac'], c['n_hidden'], c['n_layers'], c['dropout'])


def n_epochs(config):
    return sum(config['cycle_mult'] ** i for i in range(config['cycles']))


def bf16_lstm_supported():
    """Whether an LSTM runs under bf16 autocast here. CPUs without native bf16 (no avx512_bf16
    or AMX) make oneDNN refuse it ("could not create a primitive descriptor")."""
    try:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            nn.LSTM(4, 4, 2).to(device)(torch.zeros(3, 2, 4, device=device))[0].float().sum().backward()
        return True
    except RuntimeError:
        return False


def _amp_dtype(config):
    return getattr(torch, config['amp']) if config['amp'] else None


def train(cell, train_ids, valid_ids, vocab_size, config, state_path, stop_after=None,
          verbose=True):
    """Train ``cell`` ('lstm' or 'gru') with ``config``, saving after every epoch to
    ``state_path`` and resuming from it if it exists. ``stop_after``: stop once that many
    epochs are done (to test the resume). Returns ``(model, history, wall_seconds)``."""
    state_path = Path(state_path)
    seed_everything(config['seed'])
    data = LanguageModelData.from_ids(train_ids, valid_ids, bs=config['bs'], bptt=config['bptt'])
    model = build_model(cell, vocab_size, config).to(device)
    opt = torch.optim.Adam(model.parameters(), config['lr'], weight_decay=config['weight_decay'])
    sched = original_sgdr_schedule(opt, len(data.train), config['cycle_mult'])
    history, wall = History(), 0.0
    if state_path.exists():
        state = load_checkpoint(state_path, map_location=device)
        if state['config'] != config or state['cell'] != cell:
            raise ValueError(f'{state_path} holds a run of {state["cell"]} with {state["config"]}, '
                             f'not of {cell} with {config}: delete it to start afresh.')
        model.load_state_dict(state['model'])
        opt.load_state_dict(state['optimizer'])
        sched.load_state_dict(state['scheduler'])
        history = History(**state['history'])
        wall = state['wall_seconds']
        torch.set_rng_state(state['rng_cpu'].cpu())
        if torch.cuda.is_available() and state.get('rng_cuda'):
            torch.cuda.set_rng_state_all([s.cpu() for s in state['rng_cuda']])
        if verbose:
            print(f'resuming from {state_path} after epoch {history.epoch[-1]}')
    total = n_epochs(config)
    if verbose and not history.epoch:
        print(f'{cell}: {len(data.train)} batches per epoch, {total} epochs, on {device}')
    while len(history.epoch) < total and (stop_after is None or len(history.epoch) < stop_after):
        start = time.perf_counter()
        fit(model, data, 1, opt, seq_nll, history=history, scheduler=sched,
            amp_dtype=_amp_dtype(config), continue_average=True, verbose=verbose)
        wall += time.perf_counter() - start
        save_checkpoint({'cell': cell, 'config': config, 'model': model.state_dict(),
                         'optimizer': opt.state_dict(), 'scheduler': sched.state_dict(),
                         'history': asdict(history), 'wall_seconds': wall,
                         'rng_cpu': torch.get_rng_state(),
                         'rng_cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
                        state_path)
    return model, history, wall


def _hardware():
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    return f'{cpu}, {torch.get_num_threads()} threads'


def _commit():
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out + ('-dirty' if dirty else '')
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def ship(cell, model, history, wall, vocab, valid_ids, config, path):
    """Write the shipped checkpoint: fp16 weights, and the validation loss of exactly those
    weights (evaluated in fp32, state carried, mean over every predicted character), which
    notebook 03 re-checks."""
    half = {k: v.detach().to('cpu', torch.float16) if v.is_floating_point() else v.cpu()
            for k, v in model.state_dict().items()}
    check = build_model(cell, len(vocab), config)
    check.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in half.items()})
    shipped_valid = evaluate(check, LanguageModelLoader(valid_ids, config['bs'], config['bptt']),
                             seq_nll)
    h = asdict(history)
    save_checkpoint({
        'cell': cell, 'model': half, 'vocab': list(vocab.itos), 'config': config,
        'history': {k: h[k] for k in ('epoch', 'train_loss', 'valid_loss', 'time', 'batch_loss')},
        'valid_loss_shipped_weights': shipped_valid,
        'wall_seconds': wall, 'hardware': _hardware(), 'device': device.type,
        'torch': str(torch.__version__), 'commit': _commit(),
    }, path)
    return shipped_valid


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('cell', choices=sorted(CELLS))
    parser.add_argument('--tiny', action='store_true', help='the same code path at a tiny size')
    parser.add_argument('--state-dir', type=Path, default=None,
                        help='where the per-epoch state goes (default: data/full_run)')
    args = parser.parse_args(argv)
    config = dict(TINY_CONFIG if args.tiny else ORIGINAL_CONFIG)
    if config['amp'] == 'bfloat16' and not bf16_lstm_supported():
        print('bf16 autocast is not supported for the LSTM on this machine: training in fp32')
        config['amp'] = None
    state_dir = args.state_dir or DATA_DIR / ('full_run_tiny' if args.tiny else 'full_run')
    out = state_dir / f'{args.cell}_tiny.pt' if args.tiny else ROOT / 'models' / f'{args.cell}_3x512.pt'

    speeches = load_speeches('obama')
    if not speeches.is_full_corpus and not args.tiny:
        sys.exit('The full run needs the Grammar Lab corpus (see README, "The data"); '
                 'only --tiny runs on the offline fallback.')
    vocab = CharVocab(speeches)
    ids = vocab.encode(speeches)
    n_train = config['n_train'] if speeches.is_full_corpus or not args.tiny else int(0.8 * len(ids))
    valid_end = None if config['n_valid'] is None else n_train + config['n_valid']
    train_ids, valid_ids = ids[:n_train], ids[n_train:valid_end]
    model, history, wall = train(args.cell, train_ids, valid_ids, len(vocab), config,
                                 state_dir / f'{args.cell}_state.pt')
    valid = ship(args.cell, model, history, wall, vocab, valid_ids, config, out)
    print(f'{args.cell}: {len(history.epoch)} epochs in {wall / 60:.1f} min on {_hardware()}; '
          f'final train {history.train_loss[-1]:.3f}, valid {history.valid_loss[-1]:.3f} '
          f'(fp16 weights, fp32: {valid:.4f}); wrote {out}')


if __name__ == '__main__':
    main()
