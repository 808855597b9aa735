"""Helpers shared by the campaign, server and browser tests (no tests of its own): a small text
campaign over real fortunes quotes with class-clustered synthetic embeddings, and a real
``datascout serve`` subprocess on a free port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FORTUNE_CLASSES = ["computers", "education", "art"]


def fortunes_items(n_per_class: int = 60, dim: int = 16, seed: int = 0):
    """(items, embeddings, true class ids, class names): real quotes from three fortunes files;
    each quote's embedding is its class centre plus noise, so a model can learn the classes."""
    from datascout.datasets import load

    ds = load("fortunes")
    rng = np.random.default_rng(seed)
    items, y = [], []
    for c, name in enumerate(FORTUNE_CLASSES):
        idx = np.flatnonzero(ds.labels == ds.classes.index(name))[:n_per_class]
        items += [{"id": str(ds.ids[i]), "text": ds.data[i]} for i in idx]
        y += [c] * len(idx)
    y = np.asarray(y)
    centres = rng.normal(size=(len(FORTUNE_CLASSES), dim)) * 2.5
    X = (centres[y] + rng.normal(size=(len(y), dim))).astype(np.float32)
    return items, X, y, list(FORTUNE_CLASSES)


def write_inputs(directory: Path, items, X) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    emb = directory / "emb.npy"
    np.save(emb, X)
    path = directory / "items.jsonl"
    path.write_text("".join(json.dumps(it) + "\n" for it in items), encoding="utf-8")
    return emb, path


def make_campaign(tmp: Path, **kw):
    from datascout.campaign import Campaign

    items, X, y, classes = fortunes_items()
    emb, items_path = write_inputs(tmp / "inputs", items, X)
    kw.setdefault("classes", classes)
    kw.setdefault("batch_size", 12)
    kw.setdefault("k", 10)
    camp = Campaign.create(tmp / "camp", embeddings=emb, items=items_path, **kw)
    truth = {it["id"]: classes[c] for it, c in zip(items, y)}
    return camp, truth


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``datascout serve DIR`` in a subprocess; ``url``; ``kill()`` sends SIGKILL."""

    def __init__(self, directory, *, token=None, host="127.0.0.1", cli=False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if cli:  # the real command line (imports every command group: slower to start)
            cmd = [sys.executable, "-m", "datascout", "serve", str(directory), "--host", host,
                   "--port", str(self.port)] + (["--token", token] if token else [])
        else:
            cmd = [sys.executable, "-c", "import sys; from datascout.server import serve; "
                   "serve(sys.argv[1], host=sys.argv[2], port=int(sys.argv[3]), token=sys.argv[4] or None)",
                   str(directory), host, str(self.port), token or ""]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # the server's output goes to a file, never to an unread pipe that could fill and block it
        self._log = tempfile.NamedTemporaryFile(prefix="datascout-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait(token)

    def output(self) -> str:
        """Everything the server printed so far."""
        return Path(self._log.name).read_text(encoding="utf-8", errors="replace")

    def _wait(self, token, timeout=60.0):
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                if httpx.get(self.url + "/api/config", headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self._close_log()

    def _close_log(self):
        if not self._log.closed:
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_log()


def make_image_campaign(tmp: Path, n_per_class: int = 4, **kw):
    """A campaign of small PNG items (``img/K.png``, ids ``im K``) with the fortunes embeddings;
    returns ``(campaign, ids, image paths)``."""
    from PIL import Image

    from datascout.campaign import Campaign

    items, X, y, classes = fortunes_items(n_per_class=n_per_class)
    (tmp / "img").mkdir(parents=True)
    paths = []
    for k in range(len(items)):
        paths.append(tmp / "img" / f"{k}.png")
        Image.new("RGB", (8, 8), (k, 0, 0)).save(paths[-1])
    ids = [f"im {k}" for k in range(len(items))]
    emb, items_path = write_inputs(tmp / "inputs", [{"id": i, "image": str(p)} for i, p in zip(ids, paths)], X)
    kw.setdefault("classes", classes)
    kw.setdefault("batch_size", 4)
    kw.setdefault("k", 5)
    return Campaign.create(tmp / "camp", embeddings=emb, items=items_path, **kw), ids, paths
