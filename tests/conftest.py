"""Fixtures of the unit tests (their helpers are in helpers.py)."""
import pytest

from helpers import SMALL_CORPUS_COUNTS, Server   # first: it puts the repository on sys.path
import utils  # noqa: E402  (isort: after helpers)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(utils, 'CORPUS_FILE_COUNTS', SMALL_CORPUS_COUNTS)
    s = Server()
    yield s
    s.close()


@pytest.fixture
def refused_url():
    """An address on 127.0.0.1 where nothing listens."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    return f'http://127.0.0.1:{port}/corpus.zip'
