"""checkpoints.py and the environment: atomic saves; errors that name a damaged, pickled or
missing file without advising to delete it; the shipped models, snapshots and run states refused
by name when damaged or foreign; devices, and the variables that switch the device, the
configuration and the progress bars."""
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import checkpoints
import train_full
import utils
from helpers import CONFIG, ROOT, text_ids, train_small


# --- checkpoints and the shipped models -------------------------------------------------------

def _no_delete_advice(message):
    return 'delete' not in message.lower()


@pytest.mark.parametrize('content', [nn.Linear(2, 2), {'weights': np.ones(3)}],
                         ids=['a pickled module', 'numpy arrays'])
def test_a_file_of_pickled_objects_is_not_called_damaged(tmp_path, content):
    path = tmp_path / 'model.pt'
    torch.save(content, path)
    with pytest.raises(RuntimeError, match='model.pt is not a plain checkpoint.*weights_only=False') as e:
        utils.load_checkpoint(path)
    assert 'damaged' not in str(e.value) and _no_delete_advice(str(e.value))


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_a_device_this_machine_lacks_is_named(tmp_path):
    path = utils.save_checkpoint({'w': torch.ones(2)}, tmp_path / 'ok.pt')
    with pytest.raises(RuntimeError, match=r"map_location='cuda'\): the device cuda is not "
                                           r"available here; this machine has: cpu") as e:
        utils.load_checkpoint(path, map_location='cuda')
    assert 'damaged' not in str(e.value)
    assert torch.equal(utils.load_checkpoint(path)['w'], torch.ones(2))    # the file is fine
    assert checkpoints.check_device('cpu:0', 'x') == torch.device('cpu:0')     # a device here, named with its index


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        utils.load_checkpoint(tmp_path / 'nothing.pt')
    assert str(e.value) == f'No checkpoint at {tmp_path / "nothing.pt"}'       # not "a folder"


def test_a_checkpoint_gets_the_mode_torch_save_gives(tmp_path):
    old = os.umask(0o022)
    try:
        path = utils.save_checkpoint({'w': torch.ones(2)}, tmp_path / 'ok.pt')
        torch.save({'w': torch.ones(2)}, tmp_path / 'plain.pt')
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / 'plain.pt').stat().st_mode) == 0o644


def test_checkpoint_saves_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / 'm.pt'
    utils.save_checkpoint({'w': torch.ones(3)}, path)

    def dies_halfway(obj, fh):
        fh.write(b'PK\x03\x04 half a checkpoint')
        raise KeyboardInterrupt
    monkeypatch.setattr(checkpoints.torch, 'save', dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        utils.save_checkpoint({'w': torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(utils.load_checkpoint(path)['w'], torch.ones(3))   # the last good one
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.pt']


def test_a_damaged_checkpoint_is_named(tmp_path):
    path = tmp_path / 'cut.pt'
    utils.save_checkpoint({'w': torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(RuntimeError, match='cut.pt.*damaged or incomplete.*Move it aside') as e:
        utils.load_checkpoint(path)
    assert f'mv "{path}" "{path}.damaged"' in str(e.value) and 'delete' not in str(e.value).lower()


def test_save_checkpoint_makes_the_folders_and_writes_beside_the_file(tmp_path, monkeypatch):
    # the temporary file is <name>.<random>.tmp in the same folder: one rename on one disk, and
    # the pattern train_full.remove_unfinished_saves cleans after a killed save
    renames = []
    real_replace = checkpoints.os.replace
    monkeypatch.setattr(checkpoints.os, 'replace', lambda a, b: (renames.append((Path(a), Path(b))), real_replace(a, b)))
    path = utils.save_checkpoint({'w': torch.ones(2)}, tmp_path / 'a' / 'b' / 'state.pt')
    assert torch.equal(utils.load_checkpoint(path)['w'], torch.ones(2))
    (tmp, final), = renames
    assert final == path and tmp.parent == path.parent
    assert tmp.name.startswith('state.pt.') and tmp.name.endswith('.tmp') and not tmp.exists()


def test_load_checkpoint_names_a_folder_as_a_folder(tmp_path):
    (tmp_path / 'here.pt').mkdir()
    with pytest.raises(FileNotFoundError, match=r'here\.pt \(it is a folder\)'):
        utils.load_checkpoint(tmp_path / 'here.pt')
    with pytest.raises(FileNotFoundError, match=r'No checkpoint at .*gone\.pt'):
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
    monkeypatch.setattr(checkpoints.torch, 'load', load_as_on_a_machine_without_it)
    monkeypatch.setattr(checkpoints, 'available_devices', lambda: ['cpu', 'mps'])
    with pytest.raises(RuntimeError) as e:
        utils.load_checkpoint(path, map_location=None)
    message = str(e.value)                  # the file, torch's first sentence, the remedy, the devices here
    assert message.startswith(str(path)) and f'({shown})' in message
    assert 'map_location="cpu"' in message and 'this machine has: cpu, mps' in message


def test_a_damaged_checkpoint_names_the_error_in_a_line(tmp_path, monkeypatch):
    path = tmp_path / 'cut.pt'
    path.write_bytes(b'hello world, not a checkpoint')
    with pytest.raises(RuntimeError, match=r'cut\.pt \(KeyError: 101\): it is damaged'):
        utils.load_checkpoint(path)

    for message, shown in [('a bad header here. And more.', 'a bad header here'),
                            ('x y ' * 100 + '. And more.', ('x y ' * 100)[:200])]:
        def load_failing(*args, **kwargs):
            raise ValueError(message)
        monkeypatch.setattr(checkpoints.torch, 'load', load_failing)
        with pytest.raises(RuntimeError) as e:
            utils.load_checkpoint(path)
        assert f'(ValueError: {shown}): it is damaged or incomplete' in str(e.value)   # the first sentence, 200 at most


# --- the shipped models, cycle-end snapshots and a run's state -----------------------------

def test_shipped_checkpoint_loads_weights_only_and_reproduces_its_loss(tmp_path):
    valid_ids = text_ids(400, seed=1)
    vocab = utils.CharVocab('abcdefghijkl')
    model, history, record = train_small(tmp_path / 's.pt')
    path = tmp_path / 'ship.pt'
    recorded = train_full.ship('lstm', model, history, record, vocab, valid_ids, CONFIG, path)
    ck = torch.load(path, weights_only=True)
    assert ck['vocab'] == list('abcdefghijkl') and ck['config'] == CONFIG
    assert len(ck['history']['valid_loss']) == 3 and len(ck['epochs']) == 3
    assert ck['wall_seconds'] == record['wall_seconds'] and ck['device'] == 'cpu'
    assert ck['torch'] == torch.__version__ and ck['commit'] == train_full._commit()   # how it was made
    assert ck['model']['rnn.weight_ih_l0'].dtype == torch.float16
    fresh = train_full.build_model('lstm', 12, CONFIG)
    fresh.load_state_dict({k: v.float() for k, v in ck['model'].items()})
    loss = utils.evaluate(fresh, utils.LanguageModelLoader(valid_ids, CONFIG['bs'], CONFIG['bptt']),
                          utils.seq_nll)
    assert loss == pytest.approx(recorded, abs=1e-6) and ck['valid_loss_shipped_weights'] == recorded
    assert abs(recorded - history.valid_loss[-1]) < 0.01     # fp16 rounding costs next to nothing

    loaded, checkpoint = utils.load_shipped(path)
    assert isinstance(loaded, utils.CharLSTM) and not loaded.training
    assert checkpoint['valid_loss_shipped_weights'] == recorded
    loss = utils.evaluate(loaded, utils.LanguageModelLoader(valid_ids, CONFIG['bs'], CONFIG['bptt']),
                          utils.seq_nll)
    assert loss == pytest.approx(recorded, abs=1e-6)


def test_load_shipped_refuses_a_run_state_by_name(tmp_path):
    train_small(tmp_path / 's.pt')
    with pytest.raises(ValueError, match=r'not a checkpoint shipped by train_full.py.*resumed by train_full.py'):
        utils.load_shipped(tmp_path / 's.pt')


@pytest.fixture
def shipped(tmp_path):
    model, history, record = train_small(tmp_path / 's.pt', stop_after=1)
    path = tmp_path / 'ship.pt'
    train_full.ship('lstm', model, history, record, utils.CharVocab('abcdefghijkl'), text_ids(400, seed=1),
                    CONFIG, path)
    return path


@pytest.mark.parametrize('damage, words', [
    (lambda ck: ck['config'].__setitem__('n_hidden', 1_000_000), 'rnn.weight_ih_l0'),
    (lambda ck: ck['config'].__setitem__('n_hidden', 16), 'rnn.weight_ih_l0'),
    (lambda ck: ck['config'].__setitem__('dropout', 'half'), "'half'"),
    (lambda ck: ck['config'].pop('n_layers'), "KeyError: 'n_layers'"),
    (lambda ck: ck['vocab'].pop(), 'e.weight'),
    (lambda ck: ck['vocab'].__setitem__(0, 'ab'), 'vocabulary'),
    (lambda ck: ck['model'].pop('l_out.bias'), 'l_out.bias'),
    (lambda ck: ck['model']['l_out.bias'].__setitem__(0, float('nan')), 'l_out.bias not finite'),
    (lambda ck: ck.__setitem__('valid_loss_shipped_weights', float('nan')), 'recorded validation loss not finite'),
    (lambda ck: ck.__setitem__('vocab', 'abc'), 'vocabulary'),
    (lambda ck: ck.__setitem__('model', [1, 2]), 'state_dict'),
])
def test_a_damaged_shipped_checkpoint_is_refused_by_name_before_a_model_is_built(shipped, monkeypatch, damage, words):
    ck = torch.load(shipped, weights_only=True)
    damage(ck)
    torch.save(ck, shipped)
    built, real = [], checkpoints.build_model
    monkeypatch.setattr(checkpoints, 'build_model', lambda *a: built.append(torch.get_default_device().type) or real(*a))
    with pytest.raises(ValueError, match=r'ship\.pt is a damaged checkpoint \(.*' + re.escape(words)):
        utils.load_shipped(shipped)
    assert set(built) <= {'meta'}                          # refused before a real model was built


def test_load_shipped_names_a_device_this_machine_lacks(shipped):
    with pytest.raises(RuntimeError, match=r"load_shipped\('ship.pt', device='cuda:7'\): the device cuda:7 is not "
                       r"available here; this machine has: cpu"):
        utils.load_shipped(shipped, device='cuda:7')


def test_a_snapshot_of_another_vocabulary_or_a_state_is_refused_by_name(tmp_path):
    train_small(tmp_path / 's.pt', vocab='abcdefghijkl')
    snapshot = tmp_path / 'lstm_cycle_end_epoch00.pt'
    with pytest.raises(ValueError, match=r'lstm_cycle_end_epoch00\.pt was trained with another vocabulary'):
        checkpoints.load_cycle_end(snapshot, train_full.MODELS_BY_CELL, list('abcdefghijkm'))
    with pytest.raises(ValueError, match=r's\.pt is not a cycle-end snapshot'):
        checkpoints.load_cycle_end(tmp_path / 's.pt', train_full.MODELS_BY_CELL, list('abcdefghijkl'))


@pytest.mark.parametrize('content, words', [
    ({'cell': 'lstm', 'model': {}, 'valid_loss_shipped_weights': 1.2}, 'a shipped checkpoint'),
    ({'cell': 'lstm', 'config': {}, 'optimizer': {}, 'rng_cpu': torch.zeros(1)}, 'an earlier version'),
    ({'w': torch.ones(2)}, "a dict with the keys ['w']"),
    ([1, 2, 3], 'holds a list'),
])
def test_a_file_that_is_not_a_state_is_refused_by_name(tmp_path, content, words):
    path = tmp_path / 's.pt'
    torch.save(content, path)
    with pytest.raises(train_full.StateMismatch, match=re.escape(words)) as e:
        train_small(path)
    assert _no_delete_advice(str(e.value))
    assert torch.load(path, weights_only=True) is not None    # left as it was


@pytest.mark.parametrize('damage, words', [
    (lambda s: s['model'].__setitem__('l_out.bias', s['model']['l_out.bias'] * float('nan')),
     'not finite (NaN or infinite) in l_out.bias'),
    (lambda s: s['optimizer']['state'][0].__setitem__('exp_avg_sq', s['optimizer']['state'][0]['exp_avg_sq'] * float('nan')),
     'not finite (NaN or infinite) in optimiser exp_avg_sq of parameter 0'),
    (lambda s: s['history'].__setitem__('average', float('nan')), 'not finite (NaN or infinite) in moving average'),
    (lambda s: s.pop('optimizer'), "'optimizer' is missing"),
    (lambda s: s.__setitem__('epochs', 'x'), "'epochs' is a str"),
    (lambda s: s['history'].__setitem__('valid_loss', []), 'its history'),
    (lambda s: s['scheduler'].__setitem__('last_epoch', 10_000), 'its schedule is at batch 10000 but its history has'),
])
def test_a_damaged_state_is_named_as_damaged_before_anything_is_read(tmp_path, damage, words):
    train_small(tmp_path / 's.pt', stop_after=1)
    state = utils.load_checkpoint(tmp_path / 's.pt')
    damage(state)
    utils.save_checkpoint(state, tmp_path / 's.pt')
    with pytest.raises(train_full.StateMismatch, match=r'.*s\.pt is a damaged state: .*' + re.escape(words)) as e:
        train_small(tmp_path / 's.pt')
    assert 'Move it aside' in str(e.value) and 'diverg' not in str(e.value)


def test_a_state_of_a_newer_version_or_of_pickled_objects_is_named_for_what_it_is(tmp_path):
    train_small(tmp_path / 's.pt', stop_after=1)
    state = utils.load_checkpoint(tmp_path / 's.pt')
    state['format'] = 'train_full state, format 9'
    utils.save_checkpoint(state, tmp_path / 's.pt')
    with pytest.raises(train_full.StateMismatch, match=r'a state of a newer version of train_full.py \(format 9; '
                       r'this one reads 2\): update your checkout'):
        train_small(tmp_path / 's.pt')
    torch.save({'format': train_full.STATE_FORMAT, 'x': np.arange(3)}, tmp_path / 'p.pt')
    with pytest.raises(train_full.StateMismatch, match='holds pickled Python objects') as e:
        train_small(tmp_path / 'p.pt')
    assert 'weights_only=False' not in str(e.value)


# --- the environment: device, configuration, progress bars, paths -----------------------------

@pytest.mark.skipif(getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available(),
                    reason='needs a machine without mps')
def test_a_device_variable_naming_a_missing_device_fails_when_read():
    env = {**os.environ, 'PRESIDENTIAL_DEVICE': 'mps'}
    out = subprocess.run([sys.executable, '-c', 'import utils'], env=env, cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert 'PRESIDENTIAL_DEVICE=mps: the device mps is not available here; this machine has: cpu' in out.stderr


@pytest.mark.parametrize('value, on', [('0', False), ('False', False), ('OFF', False), (' 0', False),
                                       ('no', False), ('1', True), ('yes', True), ('', True)])
def test_progress_variable_is_lenient(monkeypatch, value, on):
    monkeypatch.setenv('PRESIDENTIAL_PROGRESS', value)
    assert utils.progress_enabled() is on


@pytest.mark.parametrize('value, cuda, expected', [
    ('', False, 'cpu'), ('', True, 'full'), ('1', False, 'full'), (' Yes ', False, 'full'),
    ('0', True, 'cpu'), ('off', True, 'cpu'), ('tiny', False, 'tiny'), ('TINY', True, 'tiny')])
def test_the_configuration_follows_the_variable_and_the_device(monkeypatch, value, cuda, expected):
    monkeypatch.setenv('PRESIDENTIAL_FULL_CONFIG', value)
    monkeypatch.setattr(utils, 'device', torch.device('cuda' if cuda else 'cpu'))
    assert utils.configuration() == expected


def test_a_bad_configuration_variable_is_named(monkeypatch):
    monkeypatch.setenv('PRESIDENTIAL_FULL_CONFIG', 'fast')
    with pytest.raises(ValueError, match="PRESIDENTIAL_FULL_CONFIG='fast': use 1 .* 0 .* or tiny"):
        utils.configuration()


def test_a_bad_device_variable_is_named():
    env = {**os.environ, 'PRESIDENTIAL_DEVICE': 'nonsense'}
    out = subprocess.run([sys.executable, '-c', 'import utils'], env=env, cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode != 0 and "PRESIDENTIAL_DEVICE='nonsense' is not a device" in out.stderr


def test_device_env(monkeypatch):
    monkeypatch.setenv('PRESIDENTIAL_DEVICE', 'cpu')
    assert utils._pick_device() == torch.device('cpu')
    if not torch.cuda.is_available():
        monkeypatch.setenv('PRESIDENTIAL_DEVICE', 'cuda')
        with pytest.raises(RuntimeError, match='PRESIDENTIAL_DEVICE=cuda: the device cuda is not '
                                               'available here; this machine has: cpu'):
            utils._pick_device()


def test_models_dir_is_the_repositorys_whatever_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert utils.MODELS_DIR.is_absolute() and (utils.MODELS_DIR / 'lstm_3x512.pt').is_file()
