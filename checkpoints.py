"""Checkpoints in one place: files saved atomically and read safely (``weights_only=True``), fp16
weights loaded back in fp32, the shipped models, and a run's resumable state and cycle-end
snapshots. It imports no module of the project: the model classes come in as ``models``, a dict
from cell name to class. Every error names the file, the cause and what to do, and never advises
deleting anything."""
from __future__ import annotations

import errno
import glob
import inspect
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

#: Written into every state file; a file without it is not a state of this version.
STATE_FORMAT = 'train_full state, format 2'


# ----------------------------------------------------------------------- devices

def _has_mps():
    return getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available()


def available_devices():
    return ['cpu'] + [f'cuda:{i}' for i in range(torch.cuda.device_count())] + (['mps'] if _has_mps() else [])


def check_device(dev, what):
    """``dev`` as a ``torch.device``, if this machine has it; else an error naming ``what`` asked for it."""
    dev = torch.device(dev)
    here = (dev.type == 'cpu' or dev.type == 'mps' and _has_mps()
            or dev.type == 'cuda' and (dev.index or 0) < torch.cuda.device_count())
    if not here:
        raise RuntimeError(f'{what}: the device {dev} is not available here; this machine has: {", ".join(available_devices())}.')
    return dev


# -------------------------------------------------------------------- files

def save_checkpoint(obj, path):
    """``torch.save`` to ``path`` atomically: a temporary file beside it, then one rename, so a kill
    during the save leaves the previous file intact. The file gets a plain ``torch.save``'s mode."""
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
    except BaseException as e:      # torch reports a full disk as "unexpected pos ...", the cause inside
        Path(tmp).unlink(missing_ok=True)
        if any(isinstance(c, OSError) and c.errno == errno.ENOSPC for c in _causes(e)):
            raise OSError(errno.ENOSPC, f'No space left in {path.parent} to save {path.name}: {path.name} is as it was '
                                        f'before this save; free some space and save again') from e
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
    """``torch.load(path, map_location=..., weights_only=True)`` with errors that say what is wrong and
    lose nothing (:func:`_unreadable`). A missing file raises ``FileNotFoundError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'No checkpoint at {path}' + (' (it is a folder)' if path.is_dir() else ''))
    if isinstance(map_location, (str, torch.device)):
        check_device(map_location, f'load_checkpoint({path.name!r}, map_location={str(map_location)!r})')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise RuntimeError(f'{path} {_unreadable(e, path)}.') from e


def _unreadable(e, path):
    """Why ``torch.load`` refused ``path``, and what to do: pickled objects are "not a plain
    checkpoint", a device this machine lacks is named, anything else is "damaged" (move it aside)."""
    first = str(e).split('. ')[0][:200]
    if 'Weights only load failed' in str(e):
        return ('is not a plain checkpoint: it holds pickled Python objects (a module saved with torch.save(model), '
                'numpy arrays, ...), which weights_only=True refuses. If you trust where it came from, load it '
                'yourself with torch.load(path, weights_only=False); the series saves plain dicts of tensors, '
                'numbers and strings')
    if 'deserialize object on' in str(e) or 'device' in str(e).lower():
        return (f'holds tensors saved on a device this machine lacks ({first}). Pass map_location="cpu" (this '
                f'machine has: {", ".join(available_devices())})')
    return (f'({type(e).__name__}: {first}): it is damaged or incomplete (a save cut short?). '
            f'Move it aside (e.g. mv "{path}" "{path}.damaged") and train again, or restore it from a copy')


# ------------------------------------------------------------ weights and models

def build_model(models, cell, vocab_size, config):
    """``models[cell]`` called with the vocabulary size and the configuration's values of its other arguments."""
    cls = models[cell]
    return cls(vocab_size, **{name: config[name] for name in list(inspect.signature(cls).parameters)[1:]})


def half(model):
    """The model's weights in fp16, on the CPU (the shipped and cycle-end checkpoints)."""
    return {k: v.detach().to('cpu', torch.float16) if v.is_floating_point() else v.cpu()
            for k, v in model.state_dict().items()}


def from_half(model, weights):
    """``model`` with fp16 ``weights`` (as :func:`half` keeps them) loaded and cast to fp32."""
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    return model


def non_finite(tensors):
    """The names of the floating-point tensors among ``(name, tensor)`` pairs that hold NaN or inf."""
    return [name for name, t in tensors if torch.is_tensor(t) and t.is_floating_point()
            and not torch.isfinite(t).all()]


def checked_model(path, models, cell, vocab, config, weights, loss=0.0):
    """The model of ``cell`` with the fp16 ``weights`` of ``path`` in fp32, built only once they fit:
    names and shapes by a strict ``load_state_dict`` on the meta device, every value finite, the
    recorded ``loss`` too. Else a ``ValueError`` names the file and the cause."""
    try:
        chars = isinstance(vocab, list) and all(isinstance(c, str) and len(c) == 1 for c in vocab)
        if not (chars and len(set(vocab)) == len(vocab)):
            raise ValueError('its vocabulary is not a list of distinct single characters')
        with torch.device('meta'):
            build_model(models, cell, len(vocab), config).load_state_dict(weights, assign=True)
        bad = non_finite(list(weights.items()) + [('recorded validation loss', torch.tensor(float(loss)))])
        if bad:
            raise ValueError(f'{", ".join(bad[:3])} not finite (NaN or infinite)')
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        cause = ' '.join(str(e).split()) if isinstance(e, (ValueError, RuntimeError)) else f'{type(e).__name__}: {e}'
        raise ValueError(f'{path} is a damaged checkpoint ({cause}). Restore it from a copy (a shipped '
                         f'model: git checkout -- {path}) or train it again.') from None
    return from_half(build_model(models, cell, len(vocab), config), weights)


def load_shipped(path, models, device='cpu'):
    """A checkpoint shipped by train_full.py (``models/<cell>_3x512.pt``) as ``(model, checkpoint)``:
    the model of its cell (one of ``models``) in fp32 on ``device``, once :func:`checked_model` passes."""
    device = check_device(device, f'load_shipped({Path(path).name!r}, device={str(device)!r})')
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict) or 'valid_loss_shipped_weights' not in checkpoint:
        raise ValueError(f'{path} is not a checkpoint shipped by train_full.py (models/<cell>_3x512.pt); a run\'s state '
                         f'is resumed by train_full.py instead')
    if checkpoint.get('cell') not in models:
        raise ValueError(f'{path} holds a model of cell {checkpoint.get("cell")!r}, not of {", ".join(map(repr, models))}: '
                         f'pass its class, e.g. models=awd_lstm.MODELS_BY_CELL')
    model = checked_model(path, models, checkpoint['cell'], checkpoint.get('vocab'), checkpoint.get('config'),
                          checkpoint.get('model'), checkpoint['valid_loss_shipped_weights'])
    return model.to(device).eval(), checkpoint


# ------------------------------------------------------------- a run's state

class StateMismatch(ValueError):
    """A state file that cannot be resumed by this command; the message says why and what to do."""


#: What every state holds, and of which type (checked before anything is read from it).
STATE_FIELDS = {'cell': str, 'config': dict, 'fingerprint': dict, 'model': dict, 'optimizer': dict,
                'scheduler': dict, 'history': dict, 'wall_seconds': (int, float), 'epochs': list,
                'rng_cpu': torch.Tensor}


def _refused(path, why, todo=None):
    """A state that this command cannot resume: ``why``, then what to do (never to delete it)."""
    return StateMismatch(f'{path} {why} ' + (todo or f'Move it aside to start afresh (e.g. mv "{path}" '
                                                     f'"{path}.aside"), or pass another --state-dir.'))


def _format_number(marker):
    prefix = STATE_FORMAT.rsplit(' ', 1)[0] + ' '
    number = marker[len(prefix):] if isinstance(marker, str) and marker.startswith(prefix) else ''
    return int(number) if number.isdigit() else None


def _not_this_format(state):
    """Why ``state`` is not a state of this format (with what to do, when not the usual), or None."""
    if not isinstance(state, dict):
        return f'holds a {type(state).__name__}, not a state of train_full.py.', None
    if state.get('format') == STATE_FORMAT:
        return None
    number, ours = _format_number(state.get('format')), _format_number(STATE_FORMAT)
    if number is not None and number > ours:
        return (f'is a state of a newer version of train_full.py (format {number}; this one reads {ours}):',
                'update your checkout (git pull) and run it again.')
    if 'valid_loss_shipped_weights' in state:
        what = 'a shipped checkpoint (models/<cell>_3x512.pt), which holds no optimiser'
    elif {'cell', 'config', 'optimizer', 'rng_cpu'} <= state.keys():
        what = 'a state of an earlier version of train_full.py, which recorded no fingerprint of its text'
    else:
        what = f'a dict with the keys {sorted(map(str, state))[:8]}'
    return f'is not a state of this train_full.py: it is {what}.', None


def _damage(state):
    """What is missing, malformed or not finite in a state of this format (weights, optimiser
    moments, losses), in words, or ''."""
    problems = [f'{k!r} is missing' if k not in state else f'{k!r} is a {type(state[k]).__name__}'
                for k, kind in STATE_FIELDS.items() if not isinstance(state.get(k), kind)]
    if problems:
        return '; '.join(problems)
    history = state['history']
    lengths = {k: len(history.get(k) or []) for k in ('epoch', 'train_loss', 'valid_loss')}
    if len(set(lengths.values())) != 1 or lengths['epoch'] != len(state['epochs']) or not lengths['epoch']:
        return f'its history ({lengths}) and its {len(state["epochs"])} recorded epochs disagree'
    batches = len(history.get('batch_loss') or [])
    if state['scheduler'].get('last_epoch') != batches:
        return f'its schedule is at batch {state["scheduler"].get("last_epoch")} but its history has {batches} batches'
    moments = [(f'optimiser {k} of parameter {i}', v) for i, st in state['optimizer'].get('state', {}).items()
               for k, v in st.items()]
    losses = [('train_loss', v) for v in history['train_loss']] + [('valid_loss', v) for v in history['valid_loss']]
    bad = non_finite(list(state['model'].items()) + moments) + sorted(
        {k for k, v in losses + [('moving average', history.get('average', 0.0))]
         if not (isinstance(v, (int, float)) and np.isfinite(v))})
    more = f' and {len(bad) - 4} more' if len(bad) > 4 else ''
    return f'it holds values that are not finite (NaN or infinite) in {", ".join(bad[:4])}{more}' if bad else ''


def _differences(saved, now, what):
    keys = sorted(set(saved) | set(now), key=str)
    return [f'{what} {k!r}: {saved.get(k, "(absent)")!r} in the state, {now.get(k, "(absent)")!r} now'
            for k in keys if saved.get(k, '(absent)') != now.get(k, '(absent)')]


def _unresumable(state, cell, config, fingerprint, config_defaults):
    """Why ``state`` cannot be resumed as this run, as ``(why, what to do or None)``, or None."""
    wrong = _not_this_format(state)
    damage = '' if wrong else _damage(state)
    if wrong or damage:
        return wrong or (f'is a damaged state: {damage}. It cannot be resumed;', None)
    diffs = [f'cell: {state["cell"]!r} in the state, {cell!r} now'] if state['cell'] != cell else []
    diffs += _differences({**(config_defaults or {}), **state['config']}, config, 'config')
    diffs += _differences(state['fingerprint'], fingerprint, 'text')
    return (f'belongs to another run; it differs in {"; ".join(diffs)}.', None) if diffs else None


def check_state(state, path, cell, config, fingerprint, config_defaults=None):
    """Refuse, by name, a state that is not a whole ``train_full`` state of this format, or that
    belongs to another run (cell, configuration or text). ``config_defaults``: what a state saved
    before some keys existed meant by their absence."""
    problem = _unresumable(state, cell, config, fingerprint, config_defaults)
    if problem:
        raise _refused(path, *problem)


def check_state_dir(folder):
    """Fail before training, not after the first epoch, when ``folder`` cannot hold the state."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f'The state folder {folder} is a file, not a folder: pass a folder as --state-dir.')
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise PermissionError(f'The state folder {folder} is not writable ({e.strerror or e}): pass another --state-dir.') from e


def remove_unfinished_saves(state_path, verbose=True):
    """Delete the temporary files that saves of ``state_path`` killed midway left (about 65 MB each
    at full size); the state file itself is never touched."""
    state_path = Path(state_path)
    removed = sorted(state_path.parent.glob(glob.escape(state_path.name) + '.*.tmp'))
    for tmp in removed:
        tmp.unlink(missing_ok=True)
    if removed and verbose:
        print(f'removed {len(removed)} unfinished save(s) of {state_path.name}: {", ".join(t.name for t in removed)}')
    return [t.name for t in removed]


def load_state(path, map_location, cell, config, fingerprint, config_defaults=None):
    """The state of a run at ``path``, once :func:`check_state` has found it whole and of this run."""
    try:
        state = load_checkpoint(path, map_location=map_location)
    except RuntimeError as e:
        if 'not a plain checkpoint' not in str(e):     # never advise weights_only=False for a state
            raise
        raise _refused(path, 'holds pickled Python objects, which no state of train_full.py does, so it is not loaded '
                             '(loading it could run code it carries).') from None
    check_state(state, path, cell, config, fingerprint, config_defaults)
    return state


def save_state(state, path, epoch):
    """Save the state after ``epoch`` atomically; a failure says which epoch the file still holds."""
    kept = f'the last completed epoch before it, {epoch - 1}, is kept in {path}' if epoch else 'no earlier epoch was saved'
    try:
        save_checkpoint(state, path)
    except OSError as e:
        raise OSError(e.errno, f'Could not save epoch {epoch} ({e.strerror or e}); {kept}. '
                               f'Run the same command again once the cause is fixed.') from e


# -------------------------------------------------------- cycle-end snapshots

def save_cycle_end(path, cell, model, history, config, vocab=None):
    """Keep the fp16 weights at the end of a cycle, where the original saved its model: the members
    of a snapshot ensemble (``--ensemble``). Not committed (about 11 MB each for the LSTM)."""
    save_checkpoint({'cell': cell, 'config': config, 'epoch': history.epoch[-1],
                     'train_loss': history.train_loss[-1], 'valid_loss': history.valid_loss[-1],
                     'vocab': None if vocab is None else list(vocab), 'model': half(model)}, path)


def load_cycle_end(path, models, vocab, device='cpu'):
    """A snapshot of :func:`save_cycle_end` as ``(model, snapshot)``, ready to evaluate; its
    vocabulary must be ``vocab``, that of the text it is measured on."""
    snapshot = load_checkpoint(path)
    if not isinstance(snapshot, dict) or 'format' in snapshot or snapshot.get('cell') not in models:
        raise ValueError(f'{path} is not a cycle-end snapshot of train_full.py (<cell>_cycle_end_epochNN.pt, kept '
                         f'beside a run\'s state)')
    if snapshot.get('vocab') != list(vocab):
        raise ValueError(f'{path} was trained with another vocabulary: measure it on the speeches and order of its own run')
    model = checked_model(path, models, snapshot['cell'], list(vocab), snapshot.get('config'), snapshot.get('model'))
    return model.to(device).eval(), snapshot
