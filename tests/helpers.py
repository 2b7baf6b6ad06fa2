"""Helpers the unit tests share: the zips and servers of the download tests, small data and models,
and full-size runs at a tiny size.
The fixtures that use them live in the repository's conftest.py."""
import io
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import corpus  # noqa: E402
import train_full  # noqa: E402
import utils  # noqa: E402

SPEECH = ('<title="Remarks">\n<date="January 1, 2009">\n'
          'Thank you. <APPLAUSE> Good evening &amp; welcome.\n'
          'ok\n'
          'We will -- and we must -  keep going.\n')


def make_zip(entries):
    """Bytes of a zip holding ``{name: text}``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED) as zf:
        for name, text in entries.items():
            zf.writestr(name, text)
    return buf.getvalue()


def rows(n=20, k=3):
    """``n`` rows of ``k`` distinct integers (row i holds i*k ... i*k + k - 1) and targets 0 .. n-1."""
    xs = np.arange(n * k).reshape(n, k)
    return xs, np.arange(n)


def corpus_zip():
    folder = utils.CORPUS_FOLDER
    return make_zip({f'{folder}/obama/obama_speeches_001.txt': SPEECH.replace('Thank', 'Second'),
                     f'{folder}/obama/obama_speeches_000.txt': SPEECH,
                     f'{folder}/lincoln/lincoln_speeches_000.txt': SPEECH})


def trickling(content_length, n_bytes, pause=0.3):
    """A route that promises ``content_length`` bytes, then sends one every ``pause`` seconds,
    ``n_bytes`` in all: it never trips a read timeout, only a deadline."""
    def route(handler):
        handler.send_response(200)
        handler.send_header('Content-Length', str(content_length))
        handler.end_headers()
        try:
            for _ in range(n_bytes):
                handler.wfile.write(b'.')
                handler.wfile.flush()
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass                          # the client gave up, as it should
    return route


class Server:
    """Routes: path -> (status, body, headers), or path -> a function of the request handler
    that answers by itself (to set cookies, read headers, trickle). Records every request path
    and its headers (``self.headers``)."""

    def __init__(self):
        self.routes, self.requests, self.headers = {}, [], []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                server.headers.append(dict(self.headers))
                route = server.routes.get(self.path, (404, b'not found', {}))
                if callable(route):
                    route(self)
                    self.close_connection = True
                    return
                status, body, headers = route
                self.send_response(status)
                headers = {'Content-Length': str(len(body)), **headers}
                for k, v in headers.items():
                    if v is not None:
                        self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f'http://127.0.0.1:{self.httpd.server_address[1]}{path}'

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


#: What the tests' small zips hold: the completeness check a download meets is told so explicitly
#: (a corpus of two presidents: any other folder missing is not noticed).
SMALL_CORPUS_COUNTS = {'obama': 2, 'lincoln': 1}


def leftovers(dest):
    # the lock file stays (deleting a lock file is racy); anything else is a leftover
    return sorted(p.name for p in Path(dest).iterdir() if p.name != corpus._LOCK) \
        if Path(dest).exists() else []


class Tiny(nn.Module):
    def __init__(self, vocab_size=5, n_fac=4):
        super().__init__()
        self.e = nn.Embedding(vocab_size, n_fac)
        self.l_out = nn.Linear(2 * n_fac, vocab_size)

    def forward(self, x):
        return F.log_softmax(self.l_out(self.e(x).flatten(1)), dim=-1)


def tiny_data(n=600):
    g = np.random.default_rng(0)
    xs = g.integers(0, 5, size=(n, 2))
    return utils.ArraysData.from_arrays(utils.last_rows(n, 100), xs, xs[:, 0],
                                        bs=32, seed=0)


# --------------------------------------------------- small full-size runs (train_full.py)

CONFIG = dict(train_full.TINY_CONFIG, n_fac=4, n_hidden=8, n_layers=2, bs=4, bptt=10,
              cycles=2)          # 1 + 2 = 3 epochs


def text_ids(n, seed=0):
    """``n`` character ids of a text with structure to learn: a repeated phrase with random
    letters in between."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.7, np.arange(n) % 7, rng.integers(0, 12, n)).astype(np.int64)


def train_small(path, stop_after=None, config=CONFIG, cell='lstm', train_ids=None, valid_ids=None,
                verbose=False, **kwargs):
    """``train_full.train`` of ``cell`` at a tiny size (3 epochs, seconds), its state in ``path``."""
    train_ids = text_ids(1200) if train_ids is None else train_ids
    valid_ids = text_ids(400, seed=1) if valid_ids is None else valid_ids
    return train_full.train(cell, train_ids, valid_ids, 12, config, path, stop_after=stop_after,
                            verbose=verbose, **kwargs)
