"""Checkpoints, the shipped models and the environment: atomic saves, errors that name a damaged,
pickled or missing file without advising to delete it, devices, and the variables that switch
the device, the configuration and the progress bars."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import utils
from helpers import ROOT


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


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='No checkpoint at .*nothing.pt'):
        utils.load_checkpoint(tmp_path / 'nothing.pt')


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
    monkeypatch.setattr(utils.torch, 'save', dies_halfway)
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
    assert 'delete' not in str(e.value).lower()


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
