"""The original's full-size model of notebook 03, trained to its end, resumably.

    python train_full.py lstm      # or: make full-lstm (gru: make full-gru)
    python train_full.py lstm --order 3 --seed 1    # another speech order, another model seed
    python train_full.py awd --awd wdrop=0          # the regularised LSTM of awd_lstm.py, a variant

Trains ``CharLSTM``, ``CharGRU`` or the regularised LSTM in the original's configuration on
Obama's speeches, in bf16 autocast where that is native, else in fp32. After every epoch the
whole state is saved to ``data/full_run/<name>/`` and the same command resumes it. A finished run
writes ``models/runs/<name>.json``; the headline runs ship ``models/<cell>_3x512.pt``. ``--tiny``
runs the same code in seconds. docs/full_runs.md tells the options, promises and files.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from awd_lstm import AWD_CONFIG, MODELS_BY_CELL, training_loss  # noqa: E402
import checkpoints  # noqa: E402
from checkpoints import (STATE_FORMAT, StateMismatch, check_state_dir, from_half, half,  # noqa: E402
                         load_cycle_end, load_state, non_finite, remove_unfinished_saves,
                         save_checkpoint, save_cycle_end, save_state)
from utils import (DATA_DIR, CharVocab, History, LanguageModelData,  # noqa: E402
                   LanguageModelLoader, device, evaluate, fit, load_speeches,
                   original_sgdr_schedule, per_character_losses, seed_everything, seq_nll)

#: The original's configuration (part 2, section 4), which identifies a run. The numeric path
#: (fp32 or bf16 autocast) is not part of it: it is chosen per machine and recorded per epoch.
ORIGINAL_CONFIG = dict(n_fac=42, n_hidden=512, n_layers=3, dropout=0.5, bs=64, bptt=72,
                       lr=1e-2, weight_decay=1e-5, cycles=5, cycle_mult=2, n_train=800_000,
                       n_valid=None, seed=42, order_seed=None, vary_bptt=False)
#: What a state saved before these keys existed meant by their absence.
CONFIG_DEFAULTS = dict(order_seed=None, vary_bptt=False)
#: The configuration of each cell. The GRU, which the original never trained, learns at 3e-3: a run
#: at the LSTM's 1e-2 went badly in its first two epochs (its output was not kept). The regularised
#: LSTM keeps the original's sizes and schedule with its own settings (``awd_lstm.AWD_CONFIG``).
CELL_CONFIGS = {'lstm': ORIGINAL_CONFIG, 'gru': dict(ORIGINAL_CONFIG, lr=3e-3),
                'awd': dict(ORIGINAL_CONFIG, **AWD_CONFIG)}
#: What ``--awd`` may change: the model's settings and the gradient clipping, off by default
#: (the AWD-LSTM code clips at 0.25). Only a clipped run has ``clip`` in its configuration.
AWD_SETTINGS = dict(AWD_CONFIG, clip=0.0)
#: What each numeric ``--awd`` value is, and the test it must pass: AR's and TAR's weights, the
#: clipping norm, and for every other key a rate.
_WEIGHT, _RATE = ('a weight, at least 0', lambda v: v >= 0), ('a rate in [0, 1)', lambda v: 0 <= v < 1)
AWD_VALUES = {'alpha': _WEIGHT, 'beta': _WEIGHT,
              'clip': ('a norm above 0 (without --awd clip, nothing is clipped)', lambda v: v > 0)}
#: The same code path at a size that runs in seconds on a CPU.
TINY_CONFIG = dict(ORIGINAL_CONFIG, n_fac=8, n_hidden=32, bs=16, bptt=24, cycles=2,
                   n_train=40_000, n_valid=8_000)


def build_model(cell, vocab_size, config):
    return checkpoints.build_model(MODELS_BY_CELL, cell, vocab_size, config)


def cycle_ends(config):
    """The epochs that end a cycle (0, 2, 6, 14 and 30 for the original's): where the learning
    rate is at its lowest, and where the original saved its model."""
    return [sum(config['cycle_mult'] ** j for j in range(i + 1)) - 1 for i in range(config['cycles'])]


def n_epochs(config):
    return sum(config['cycle_mult'] ** i for i in range(config['cycles']))


def run_name(cell, config, fp32=False):
    """A run's name: cell, speech order, model seed, each ``--awd`` setting that differs from the
    default, ``_varybptt`` and ``_fp32``; e.g. ``lstm_order3_seed42`` or ``awd_sorted_seed42_wdrop0``."""
    order = 'sorted' if config['order_seed'] is None else f'order{config["order_seed"]}'
    setting = lambda v: ('' if v else 'off') if isinstance(v, bool) else f'{v:g}'
    variant = ''.join(f'_{key}{setting(config[key])}' for key, default in AWD_SETTINGS.items()
                      if cell == 'awd' and config.get(key, default) != default)
    return (f'{cell}_{order}_seed{config["seed"]}' + variant + ('_varybptt' if config['vary_bptt'] else '')
            + ('_fp32' if fp32 else ''))


def awd_variant(settings):
    """The ``--awd KEY=VALUE`` settings as a dict: numbers (:data:`AWD_VALUES`), ``tie`` true or false."""
    variant = {}
    for setting in settings:
        key, _, value = setting.partition('=')
        if key not in AWD_SETTINGS or not value:
            raise ValueError(f'--awd {setting!r}: expected KEY=VALUE with KEY one of {", ".join(AWD_SETTINGS)}')
        what, ok = AWD_VALUES.get(key, _RATE)
        number = not isinstance(AWD_SETTINGS[key], bool)
        try:
            variant[key] = float(value) if number else {'true': True, 'false': False}[value.lower()]
        except (KeyError, ValueError):
            raise ValueError(f'--awd {setting!r}: {key} is ' + (f'a number, not {value!r}' if number else 'true or false')) from None
        if number and not ok(variant[key]):
            raise ValueError(f'--awd {setting!r}: {key} is {what}')
    return variant


def bf16_lstm_supported():
    """Whether an LSTM runs under bf16 autocast here at all (on a CPU without native bf16, oneDNN
    refuses it on AVX2 and emulates it slowly on AVX-512)."""
    with contextlib.suppress(RuntimeError), torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        nn.LSTM(4, 4, 2).to(device)(torch.zeros(3, 2, 4, device=device))[0].float().sum().backward()
        return True
    return False                        # autocast refused it


def preferred_amp():
    """``'bfloat16'`` (bf16 autocast) on a GPU that runs it and on a CPU with native bf16, else
    ``None`` (fp32): the fastest faithful numeric path here, as ``make bench`` measures."""
    native = device.type != 'cpu' or instruction_set() in NATIVE_BF16
    return 'bfloat16' if native and bf16_lstm_supported() else None


def numeric_path(amp):
    """How an epoch's arithmetic was done, in words."""
    return f'{amp} autocast' if amp else 'fp32'


def _cpuinfo(field):
    """A field of /proc/cpuinfo's first processor ('' without such a file)."""
    with contextlib.suppress(OSError), open('/proc/cpuinfo') as f:
        return next((line.split(':', 1)[1].strip() for line in f if line.startswith(field)), '')
    return ''                           # no /proc/cpuinfo


def _hardware():
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    cpu = _cpuinfo('model name') or platform.processor() or platform.machine()
    return f'{cpu}, {torch.get_num_threads()} threads'


def cpu_flags():
    return _cpuinfo('flags').split()


#: The instruction sets that decide the numeric path, widest first: (its flag, its name).
INSTRUCTION_SETS = (('amx_bf16', 'AMX'), ('avx512_bf16', 'avx512_bf16'), ('avx512f', 'AVX-512'),
                    ('avx2', 'AVX2'))
#: Those with bf16 in hardware: the only CPUs where bf16 autocast is faster than fp32.
NATIVE_BF16 = {'AMX', 'avx512_bf16'}


def instruction_set(flags=None):
    """The widest of :data:`INSTRUCTION_SETS` in ``flags`` (default: this CPU's), or 'unknown'."""
    flags = cpu_flags() if flags is None else flags
    return next((name for flag, name in INSTRUCTION_SETS if flag in flags), 'unknown')


def where_this_runs(amp):
    """Where and how an epoch trained here: hardware, instruction set, device, numeric path, torch, commit."""
    return {'hardware': _hardware(), 'instruction_set': instruction_set(), 'device': device.type,
            'amp': amp, 'torch': str(torch.__version__), 'commit': _commit()}


def data_fingerprint(train_ids, valid_ids, vocab_size, vocab=None):
    """What identifies a run's text: length and SHA-256 of the training and validation ids, and the
    vocabulary (its characters, else its size); a resume on another text is refused by it."""
    def digest(ids):
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64))
        return f'{len(ids)} ids, sha256 {hashlib.sha256(ids.tobytes()).hexdigest()[:16]}'
    return {'train': digest(train_ids), 'valid': digest(valid_ids),
            'vocab': ''.join(vocab) if vocab is not None else f'{vocab_size} characters'}


class RunDiverged(RuntimeError):
    """An epoch whose losses or weights stopped being finite; the state keeps the last good epoch."""


def _epoch_ranges(epochs):
    """'0-12 in bfloat16 autocast on X; 13-30 in fp32 on Y' from per-epoch provenance."""
    parts, start = [], 0
    for i in range(1, len(epochs) + 1):
        if i == len(epochs) or _place(epochs[i]) != _place(epochs[start]):
            span = f'{start}' if i - 1 == start else f'{start}-{i - 1}'
            parts.append(f'{span} in {numeric_path(epochs[start]["amp"])} on '
                         f'{epochs[start]["hardware"]} ({epochs[start]["device"]})')
            start = i
    return '; '.join(parts)


def _place(epoch):
    return epoch['hardware'], epoch['device'], epoch['amp'], epoch['torch']


def train(cell, train_ids, valid_ids, vocab_size, config, state_path, stop_after=None,
          verbose=True, amp=None, vocab=None, clip=None):
    """Train ``cell`` with ``config``, saving after every epoch to ``state_path`` and resuming from
    it. ``amp``: 'bfloat16' (bf16 autocast) or None (fp32), recorded per epoch, so a run may move
    to another machine. ``stop_after``: stop once that many epochs are done. ``clip``: clip the
    gradients' norm in this call's epochs (recorded per epoch, a way on after a diverged epoch);
    by default the configuration's. Returns ``(model, history, record)``: ``record`` holds
    ``wall_seconds`` and one provenance dict per epoch. A lock beside the state refuses a second
    run on it; an epoch that stops being finite raises ``RunDiverged`` and is not saved."""
    from filelock import FileLock, Timeout

    state_path = Path(state_path)
    check_state_dir(state_path.parent)
    lock = FileLock(str(state_path) + '.lock')
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise StateMismatch(f'Another run is training into {state_path} (it holds {lock.lock_file}): wait for it to '
                            f'end, or give this run a state of its own (another --state-dir).') from None
    try:
        return _train(cell, train_ids, valid_ids, vocab_size, config, state_path, stop_after,
                      verbose, amp, vocab, config.get('clip') if clip is None else clip)
    finally:
        lock.release()


def _diverged(model, history):
    """What stopped being finite after an epoch, in words, or '' if nothing did."""
    bad = non_finite(model.state_dict().items())
    what = [f'the validation loss is {history.valid_loss[-1]}'] if not np.isfinite(history.valid_loss[-1]) else []
    return '; '.join(what + ([f'the weights of {", ".join(bad[:3])} are not finite'] if bad else []))


def _train(cell, train_ids, valid_ids, vocab_size, config, state_path, stop_after, verbose, amp,
           vocab, clip):
    remove_unfinished_saves(state_path, verbose)
    fingerprint = data_fingerprint(train_ids, valid_ids, vocab_size, vocab)
    seed_everything(config['seed'])
    data = LanguageModelData.from_ids(train_ids, valid_ids, bs=config['bs'], bptt=config['bptt'],
                                      vary_bptt=config['vary_bptt'], seed=config['seed'])
    model = build_model(cell, vocab_size, config).to(device)
    opt = torch.optim.Adam(model.parameters(), config['lr'], weight_decay=config['weight_decay'])
    sched = original_sgdr_schedule(opt, len(data.train), config['cycle_mult'])
    history, record = History(), {'wall_seconds': 0.0, 'epochs': []}
    here = where_this_runs(amp)
    if state_path.exists():
        state = load_state(state_path, device, cell, config, fingerprint, CONFIG_DEFAULTS)
        model.load_state_dict(state['model'])
        opt.load_state_dict(state['optimizer'])
        sched.load_state_dict(state['scheduler'])
        history = History(**state['history'])
        record = {'wall_seconds': state['wall_seconds'], 'epochs': list(state['epochs'])}
        torch.set_rng_state(state['rng_cpu'].cpu())
        if 'rng_lengths' in state:     # the varied lengths' generator (a fixed bptt draws nothing)
            data.train.rng.bit_generator.state = state['rng_lengths']
        if torch.cuda.is_available() and state.get('rng_cuda'):
            torch.cuda.set_rng_state_all([s.cpu() for s in state['rng_cuda']])
        if verbose:
            print(f'resuming from {state_path} after epoch {history.epoch[-1]}')
            if _place(record['epochs'][-1]) != _place(here) and len(history.epoch) < n_epochs(config):
                print(f'this run moves: epochs {_epoch_ranges(record["epochs"])}; it continues in {numeric_path(amp)} '
                      f'on {here["hardware"]} ({here["device"]}, torch {here["torch"]})')
    total = n_epochs(config)
    if verbose and not history.epoch:
        print(f'{cell}: {len(data.train)} batches per epoch, {total} epochs, on {device} in {numeric_path(amp)}')
    amp_dtype = getattr(torch, amp) if amp else None
    while len(history.epoch) < total and (stop_after is None or len(history.epoch) < stop_after):
        start = time.perf_counter()
        kept = f'{state_path} still holds epoch {history.epoch[-1]}' if history.epoch else 'no state was saved'
        advice = (f'{kept}. Run the same command with --clip (e.g. --clip 1.0: gradient clipping, recorded per '
                  f'epoch) to go on from there, or train another run (another --seed).')
        try:
            fit(model, data, 1, opt, training_loss(model), history=history, scheduler=sched, clip=clip,
                amp_dtype=amp_dtype, continue_average=True, verbose=verbose)
        except FloatingPointError as e:
            raise RunDiverged(f'{str(e).split(": training diverged")[0]}: training diverged; {advice}') from e
        what = _diverged(model, history)
        if what:
            raise RunDiverged(f'Epoch {history.epoch[-1]} diverged ({what}), so it was not saved; {advice}')
        seconds = time.perf_counter() - start
        record['wall_seconds'] += seconds
        record['epochs'].append(dict(here, clip=clip, seconds=seconds))
        epoch = history.epoch[-1]
        if epoch in cycle_ends(config):     # before the state: a resume redoes the epoch and this
            save_cycle_end(state_path.parent / f'{cell}_cycle_end_epoch{epoch:02d}.pt', cell,
                           model, history, config, vocab)
        save_state({'format': STATE_FORMAT, 'cell': cell, 'config': config, 'fingerprint': fingerprint,
                    'model': model.state_dict(), 'optimizer': opt.state_dict(), 'scheduler': sched.state_dict(),
                    'history': asdict(history), 'wall_seconds': record['wall_seconds'], 'epochs': record['epochs'],
                    'rng_cpu': torch.get_rng_state(), 'rng_lengths': data.train.rng.bit_generator.state,
                    'rng_cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}, state_path, epoch)
    return model, history, record


def _character_losses(model, ids, bs, bptt):
    return torch.from_numpy(per_character_losses(model, ids, bs, bptt)[1]).double()


def _averaged(losses):
    # minus the log of the mean probability, character by character, then the mean over characters
    losses = torch.stack(losses)                                        # (models, characters)
    return -(torch.logsumexp(-losses, dim=0) - math.log(len(losses))).mean().item()


def snapshot_ensemble(paths, vocab, valid_ids, device='cpu'):
    """The original's idea of ensembling its cycle-end models, measured: ``{label: validation loss}``
    of each snapshot alone, then of the last 2, 3, ... and all, their probabilities averaged
    character by character (each reads the text as :func:`utils.evaluate` does)."""
    loaded = sorted((load_cycle_end(p, MODELS_BY_CELL, vocab, device) for p in paths), key=lambda m: m[1]['epoch'])
    if not loaded:
        raise ValueError('snapshot_ensemble: no cycle-end snapshots given')
    c = loaded[0][1]['config']
    each = [_character_losses(model, valid_ids, c['bs'], c['bptt']) for model, _ in loaded]
    losses = {f"epoch {snapshot['epoch']}": _averaged([one]) for one, (_, snapshot) in zip(each, loaded)}
    for k in range(2, len(loaded) + 1):
        losses[f'last {k}'] = _averaged(each[-k:])
    return losses


def write_run_history(path, name, cell, config, history, record, valid_files, final_valid, fp32=False):
    """One small JSON per finished run (``models/runs/<name>.json``): what identifies it, its losses per
    epoch, the speech files it validates on, the loss of its fp16 weights, and where each epoch ran."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {'name': name, 'cell': cell, 'order_seed': config['order_seed'], 'seed': config['seed'],
           'fp32_forced': fp32, 'config': config, 'epoch': list(history.epoch),
           'train_loss': list(history.train_loss), 'valid_loss': list(history.valid_loss),
           'valid_loss_final_fp16_weights': final_valid, 'valid_files': list(valid_files),
           'where': _epoch_ranges(record['epochs']), 'wall_seconds': record['wall_seconds'],
           'epochs': record['epochs']}
    _write_json(path, doc)
    return doc


def _write_json(path, doc):
    # atomically: a killed write leaves the old file whole
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(doc, indent=1) + '\n')
    tmp.replace(path)


def record_ensemble(path, losses):
    """Add a snapshot ensemble's figures, and where they were measured, to a run's history file."""
    path = Path(path)
    doc = json.loads(path.read_text())
    doc['snapshot_ensemble'] = {'valid_loss': losses, 'measured': where_this_runs(None)}
    _write_json(path, doc)


def _commit():
    git = lambda *args, **kw: subprocess.run(['git', *args], cwd=ROOT, capture_output=True, text=True, **kw).stdout.strip()
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return git('rev-parse', 'HEAD', check=True) + ('-dirty' if git('status', '--porcelain', '--untracked-files=no') else '')
    return 'unknown'                    # no git, or not a clone


def _distinct(values):
    return '; '.join(dict.fromkeys(values))


def ship(cell, model, history, record, vocab, valid_ids, config, path):
    """Write the shipped checkpoint: fp16 weights and the validation loss of exactly those weights
    (in fp32), which notebook 03 re-checks; where it trained comes from ``record``'s epochs."""
    weights = half(model)
    check = from_half(build_model(cell, len(vocab), config), weights)
    shipped_valid = evaluate(check, LanguageModelLoader(valid_ids, config['bs'], config['bptt']),
                             seq_nll)
    h = asdict(history)
    epochs = record['epochs']
    save_checkpoint({
        'cell': cell, 'model': weights, 'vocab': list(vocab.itos), 'config': config,
        'history': {k: h[k] for k in ('epoch', 'train_loss', 'valid_loss', 'time', 'batch_loss')},
        'valid_loss_shipped_weights': shipped_valid,
        'wall_seconds': record['wall_seconds'],
        'hardware': _distinct(e['hardware'] for e in epochs),
        'device': _distinct(e['device'] for e in epochs),
        'torch': _distinct(e['torch'] for e in epochs),
        'epochs': epochs, 'commit': _commit(),
    }, path)
    return shipped_valid


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('cell', choices=sorted(MODELS_BY_CELL))
    parser.add_argument('--tiny', action='store_true', help='the same code path at a tiny size')
    parser.add_argument('--state-dir', type=Path, help='where the per-epoch state goes (default: data/full_run/<name>)')
    parser.add_argument('--fp32', action='store_true', help='fp32 even where bf16 autocast is fast (a run of its own)')
    parser.add_argument('--order', type=int, metavar='SEED', help='shuffle the speeches by this seed (default: sorted by name)')
    parser.add_argument('--vary-bptt', action='store_true', help="the original library's varied sequence lengths")
    parser.add_argument('--seed', type=int, help=f'the model seed (default: {ORIGINAL_CONFIG["seed"]})')
    parser.add_argument('--clip', type=float, help="clip the gradients' norm in this call's epochs, recorded per epoch")
    parser.add_argument('--awd', action='append', default=[], metavar='KEY=VALUE',
                        help=f'a setting of the regularised LSTM, a run of its own, e.g. wdrop=0 (keys: {", ".join(AWD_SETTINGS)})')
    parser.add_argument('--ensemble', action='store_true', help="train nothing: measure the run's cycle-end snapshots")
    args = parser.parse_args(argv)
    if args.awd and args.cell != 'awd':
        parser.error(f'--awd sets the regularised LSTM\'s settings: it needs the cell awd, not {args.cell}')
    try:
        variant = awd_variant(args.awd)
    except ValueError as e:
        parser.error(str(e))
    tiny = dict(TINY_CONFIG, **(AWD_CONFIG if args.cell == 'awd' else {}))
    config = dict(tiny if args.tiny else CELL_CONFIGS[args.cell], order_seed=args.order, vary_bptt=args.vary_bptt, **variant)
    if args.seed is not None:
        config['seed'] = args.seed
    name = run_name(args.cell, config, args.fp32)
    headline = not args.fp32 and config == CELL_CONFIGS[args.cell]
    amp = None if args.fp32 else preferred_amp()
    if not args.fp32 and amp is None and not args.ensemble:
        why = f'this CPU ({instruction_set()}) has no native bf16' if device.type == 'cpu' else f'bf16 does not run on {device}'
        print(f'{why}: training in fp32')
    state_dir = args.state_dir or DATA_DIR / ('full_run_tiny' if args.tiny else 'full_run') / name
    if args.tiny:
        out, history_path = state_dir / f'{args.cell}_tiny.pt', state_dir / f'{name}.json'
    else:
        out = ROOT / 'models' / f'{args.cell}_3x512.pt' if headline else state_dir / f'{args.cell}_final.pt'
        history_path = ROOT / 'models' / 'runs' / f'{name}.json'

    speeches = load_speeches('obama', order=config['order_seed'])
    if not speeches.is_full_corpus and not args.tiny:
        sys.exit('The full run needs the Grammar Lab corpus (see docs/data.md); only --tiny runs on the offline fallback.')
    vocab = CharVocab(speeches)
    ids = vocab.encode(speeches)
    n_train = config['n_train'] if speeches.is_full_corpus or not args.tiny else int(0.8 * len(ids))
    valid_end = None if config['n_valid'] is None else n_train + config['n_valid']
    train_ids, valid_ids = ids[:n_train], ids[n_train:valid_end]
    needed = n_train + 2 * config['bs']         # two characters per column to validate on
    if len(ids) < needed:
        sys.exit(f'train_full.py: the text ({speeches.n_speeches} speeches of {speeches.president}, {len(ids):,} characters, '
                 f'from the {speeches.source}) is too short for this configuration: it needs more than {needed:,} '
                 f'characters ({n_train:,} for training, then at least {2 * config["bs"]} for validation). Is the '
                 f'corpus complete? See docs/data.md.')
    if args.ensemble:
        paths = sorted(state_dir.glob(f'{args.cell}_cycle_end_epoch*.pt'))
        if not paths:
            sys.exit(f'train_full.py: {state_dir} holds no cycle-end snapshots of {name}: train the run first')
        try:
            losses = snapshot_ensemble(paths, vocab.itos, valid_ids, device)
        except ValueError as e:
            sys.exit(f'train_full.py: {e}')
        print(f'{name}: validation loss of its cycle-end snapshots, alone and averaged')
        for label, loss in losses.items():
            print(f'{label:>10}  {loss:.4f}')
        if history_path.exists():
            record_ensemble(history_path, losses)
            print(f'recorded in {history_path}')
        return
    try:
        model, history, record = train(args.cell, train_ids, valid_ids, len(vocab), config, state_dir / f'{args.cell}_state.pt',
                                       amp=amp, vocab=vocab.itos, clip=args.clip)
    except (StateMismatch, RunDiverged, OSError) as e:
        sys.exit(f'train_full.py: {e}')
    valid = ship(args.cell, model, history, record, vocab, valid_ids, config, out)
    write_run_history(history_path, name, args.cell, config, history, record, speeches.names_between(n_train, valid_end),
                      valid, args.fp32)
    print(f'{name}: {len(history.epoch)} epochs in {record["wall_seconds"] / 60:.1f} min ({_epoch_ranges(record["epochs"])}); '
          f'final train {history.train_loss[-1]:.3f}, valid {history.valid_loss[-1]:.3f} (fp16 weights, fp32: {valid:.4f}); '
          f'wrote {out} and {history_path}')


if __name__ == '__main__':
    main()
