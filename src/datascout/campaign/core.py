"""A labeling campaign: items, rounds of select -> label -> retrain, leases, labels with history.

Everything lives in ``DIR/campaign.db`` (SQLite, WAL); the embeddings stay in their own
memory-mapped file and the kNN graph is saved next to them and reused. One :class:`Campaign`
may be shared by many threads: each thread gets its own SQLite connection, and the retrain/select
step runs in a background thread so that annotators never wait for training.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np

from datascout.campaign.schema import DB_NAME, connect
from datascout.exceptions import LabelingError, ValidationError
from datascout.io import iter_jsonl

log = logging.getLogger("datascout.campaign")

SKIP = None  # the label value of a skipped item
MAX_BATCH = 100
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.@")


class NotFoundError(LabelingError):
    """An item id (or another name) that the campaign does not hold."""


class ConflictError(LabelingError):
    """A request that contradicts the campaign's state (e.g. an item leased to someone else)."""


def check_annotator(name) -> str:
    if not isinstance(name, str) or not (1 <= len(name) <= 64) or not set(name) <= NAME_CHARS:
        raise ValidationError(f"annotator must be 1-64 characters of letters, digits, _-.@ but is {name!r}")
    return name


def read_items(path) -> list[dict]:
    """Items from JSONL: one object per embeddings row, ``{"id", "text"}`` or ``{"id", "image"}``
    (image paths relative to the file). Returns ``[{"id", "kind", "payload"}]``."""
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"expected an items file at {str(path)!r} but none exists")
    out, seen = [], set()
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict) or "id" not in obj or not (("text" in obj) ^ ("image" in obj)):
            raise ValidationError(f"{path.name} line {lineno}: expected {{\"id\", \"text\"}} or "
                                  f"{{\"id\", \"image\"}} but got keys {sorted(obj) if isinstance(obj, dict) else type(obj).__name__}")
        item_id = str(obj["id"])
        if item_id in seen:
            raise ValidationError(f"{path.name} line {lineno}: id {item_id!r} occurs twice")
        seen.add(item_id)
        if "text" in obj:
            out.append({"id": item_id, "kind": "text", "payload": str(obj["text"])})
        else:
            img = (path.parent / str(obj["image"])).resolve()
            if not img.is_file():
                raise ValidationError(f"{path.name} line {lineno}: image {str(obj['image'])!r} does not exist")
            out.append({"id": item_id, "kind": "image", "payload": str(img)})
    if not out:
        raise ValidationError(f"{path.name} holds no items: expected one JSON object per line")
    return out


class Campaign:
    """A campaign directory. ``Campaign.create(...)`` makes one; ``Campaign(dir)`` opens it."""

    def __init__(self, directory, *, select_in: str = "thread", _db_file=None):
        if select_in not in ("thread", "process"):
            raise ValidationError(f"select_in must be 'thread' or 'process' but is {select_in!r}")
        self.directory = Path(directory)
        self._db_file = None if _db_file is None else Path(_db_file)  # create(): the staged database
        self.select_in = select_in
        self._selector: _SelectWorker | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._last_error: str | None = None
        self.config = self._read_config()

    # -- storage -------------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        return self._db_file or self.directory / DB_NAME

    @property
    def con(self):
        con = getattr(self._local, "con", None)
        if con is None:
            con = connect(self.db_path)
            self._local.con = con
        return con

    @contextlib.contextmanager
    def _write(self):
        """One write transaction on this thread's connection, all or nothing. The threads of one
        process queue on a lock for it (an immediate hand-off) rather than on SQLite's busy
        handler, which sleeps in growing steps of up to 100 ms: under 50 concurrent annotators
        that made the p95 latency of a label ~10x its median. Other processes still wait on
        SQLite's own lock (busy timeout 30 s)."""
        with self._write_lock:
            con = self.con
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def _read_config(self) -> dict:
        rows = self.con.execute("SELECT key, value FROM meta").fetchall()
        cfg = {k: json.loads(v) for k, v in rows}
        if "classes" not in cfg:
            raise ValidationError(f"{str(self.db_path)!r} is not an initialised campaign (no classes)")
        return cfg

    @property
    def classes(self) -> list[str]:
        return self.config["classes"]

    def embeddings(self):
        from datascout.io import load_embeddings

        path = Path(self.config["embeddings"])
        if not path.is_absolute():
            path = self.directory / path
        X, _ = load_embeddings(path)
        return X, path

    @classmethod
    def create(cls, directory, *, embeddings, items, classes=None, positive_class=None,
               strategy=None, batch_size: int = 20, k: int = 30, index: str = "HNSW32",
               lease_seconds: float = 600.0, labels_per_item: int = 1, random_state: int = 0,
               seed_labels=None, like=None, query_embedding=None, query_note=None) -> "Campaign":
        """Create a campaign in ``directory`` (which must not hold one) and select round 0: the
        items most like ``like`` (an item id) or ``query_embedding`` (a vector in the pool's space,
        e.g. an embedded text or image; ``query_note`` describes it in the round's settings), else
        by the strategy (random until there are labels)."""
        from datascout.io import load_embeddings
        from datascout.strategies import make_strategy

        directory = Path(directory)
        if (directory / DB_NAME).exists():
            raise ValidationError(f"{str(directory)!r} already holds a campaign")
        if (classes is None) == (positive_class is None):
            raise ValidationError("give either classes (e.g. cat,dog) or a positive class, not both or neither")
        if positive_class is not None:
            classes = [f"not {positive_class}", str(positive_class)]
        classes = [str(c).strip() for c in classes]
        if len(classes) < 2 or len(set(classes)) != len(classes) or any(not c for c in classes):
            raise ValidationError(f"expected at least 2 distinct non-empty class names but got {classes}")
        if len(classes) > 9:
            log.info("more than 9 classes: keys 1-9 cover the first nine")
        strategy = strategy or ("most-likely-positive" if positive_class is not None else "entropy")
        make_strategy(strategy)  # validates the name
        for name, v, lo in (("batch_size", batch_size, 1), ("k", k, 1), ("labels_per_item", labels_per_item, 1)):
            if int(v) < lo:
                raise ValidationError(f"{name} must be >= {lo} but is {v}")
        if not float(lease_seconds) > 0 or not np.isfinite(float(lease_seconds)):  # NaN fails both
            raise ValidationError(f"lease_seconds must be a finite number > 0 but is {lease_seconds}")
        emb_path = Path(embeddings).resolve()
        X, _ = load_embeddings(emb_path)
        if isinstance(items, (str, Path)):
            items = read_items(items)
        if len(items) != X.shape[0]:
            raise ValidationError(f"the items file has {len(items)} items but the embeddings have {X.shape[0]} rows")
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (DB_NAME + ".init")
        for p in (tmp, Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm")):
            p.unlink(missing_ok=True)
        con = connect(tmp, create=True)
        try:
            cfg = {"classes": classes, "positive_class": positive_class, "strategy": strategy,
                   "batch_size": int(batch_size), "k": int(k), "index": index,
                   "lease_seconds": float(lease_seconds), "labels_per_item": int(labels_per_item),
                   "random_state": int(random_state), "embeddings": str(emb_path),
                   "n_items": int(X.shape[0]), "dim": int(X.shape[1]), "created": time.time()}
            con.execute("BEGIN")
            con.executemany("INSERT INTO meta VALUES (?, ?)", [(k_, json.dumps(v)) for k_, v in cfg.items()])
            con.executemany("INSERT INTO items VALUES (?, ?, ?, ?)",
                            [(i, it["id"], it["kind"], it["payload"]) for i, it in enumerate(items)])
            con.execute("COMMIT")
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
        # the graph, the seed labels and round 0 go into the staged database too: only a
        # campaign that can be labeled appears as campaign.db (a kill before leaves none)
        camp = cls(directory, _db_file=tmp)
        try:
            camp.graph()  # build (or reuse) the kNN graph now, not in the first round
            if seed_labels is not None:
                camp.import_labels(seed_labels)
            query = None
            if like is not None:
                query = np.asarray(X[camp.positions([like])[0]], dtype=np.float32)
                query_note = query_note or f"like item {like}"
            elif query_embedding is not None:
                query = np.asarray(query_embedding, dtype=np.float32).reshape(-1)
                if query.shape[0] != X.shape[1]:
                    raise ValidationError(f"the query embedding has {query.shape[0]} dimensions but the "
                                          f"embeddings have {X.shape[1]}")
            camp.select_round(query=query, query_note=query_note)
            camp.close()
            con = connect(tmp)
            try:
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the one file
            finally:
                con.close()
            tmp.replace(directory / DB_NAME)
        except BaseException:
            camp.close()
            for p in directory.glob(DB_NAME + "*"):
                p.unlink()
            raise
        for p in (Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm")):
            p.unlink(missing_ok=True)
        return cls(directory)

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # -- ids -----------------------------------------------------------------------------

    def positions(self, ids) -> list[int]:
        """Pool positions of item ids; raises :class:`NotFoundError` on an unknown id."""
        ids = [str(i) for i in ids]
        out = []
        for chunk in range(0, len(ids), 500):
            part = ids[chunk: chunk + 500]
            q = f"SELECT id, pos FROM items WHERE id IN ({','.join('?' * len(part))})"
            found = dict(self.con.execute(q, part).fetchall())
            for i in part:
                if i not in found:
                    raise NotFoundError(f"unknown item {i!r}: it is not in this campaign")
                out.append(found[i])
        return out

    def class_id(self, label) -> int | None:
        if label is SKIP:
            return None
        if isinstance(label, str) and label in self.classes:
            return self.classes.index(label)
        raise LabelingError(f"unknown class {label!r}: expected one of {self.classes} (or null to skip)")

    # -- rounds --------------------------------------------------------------------------

    def current_round(self) -> int:
        r = self.con.execute("SELECT MAX(round) FROM rounds").fetchone()[0]
        return -1 if r is None else int(r)

    def round_progress(self, rnd: int | None = None, con=None) -> dict:
        con = con or self.con
        rnd = self.current_round() if rnd is None else rnd
        need = self.config["labels_per_item"]
        total, done = con.execute(
            """SELECT COUNT(*), COALESCE(SUM(n >= ?), 0) FROM (
                 SELECT s.pos, (SELECT COUNT(DISTINCT annotator) FROM labels l WHERE l.pos = s.pos
                                AND l.source = 'web') AS n
                 FROM selections s WHERE s.round = ?)""", (need, rnd)).fetchone()
        return {"round": rnd, "selected": int(total), "done": int(done)}

    def resolved_labels(self, con=None):
        """``(positions, class ids)`` of every labeled item: the latest answer of each annotator,
        then the majority over annotators (a tie goes to the most recent answer)."""
        con = con or self.con
        rows = con.execute(
            """SELECT l.pos, l.class, l.label_id FROM labels l
               JOIN (SELECT pos, annotator, MAX(label_id) AS m FROM labels GROUP BY pos, annotator) last
                 ON l.label_id = last.m
               WHERE l.class IS NOT NULL ORDER BY l.pos, l.label_id""").fetchall()
        if not rows:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        arr = np.asarray(rows, dtype=np.int64)
        pos, cls_, lid = arr[:, 0], arr[:, 1], arr[:, 2]
        n_cls = len(self.classes)
        upos, inv = np.unique(pos, return_inverse=True)
        votes = np.zeros((len(upos), n_cls), dtype=np.int64)
        np.add.at(votes, (inv, cls_), 1)
        latest = np.zeros((len(upos), n_cls), dtype=np.int64)
        np.maximum.at(latest, (inv, cls_), lid)
        best = votes == votes.max(axis=1, keepdims=True)
        winner = np.argmax(np.where(best, latest, -1), axis=1)
        return upos, winner.astype(np.int64)

    def graph(self):
        from datascout.seals import build_or_load_graph

        X, path = self.embeddings()
        k = min(self.config["k"], X.shape[0] - 1)
        return build_or_load_graph(X, path, self.config["index"], k)

    def select_round(self, *, query=None, query_note=None) -> int:
        """Retrain on the labels so far, select the next batch and store it as a new round (in
        one transaction). Returns the round number. Runs on the calling thread."""
        from datascout.campaign.metrics import cv_quality
        from datascout.loop import ActiveLearner
        from datascout.pool import Pool
        from datascout.seals import CandidatePool

        t0 = time.perf_counter()
        con = self.con
        cfg = self.config
        X, _ = self.embeddings()
        n = X.shape[0]
        rnd = self.current_round() + 1
        pos, y = self.resolved_labels(con)
        selected = np.asarray([r[0] for r in con.execute("SELECT pos FROM selections")], dtype=np.int64)
        blocked = np.setdiff1d(selected, pos)  # selected but skipped / not answered: never again
        n_free = n - len(pos) - len(blocked)
        b = min(cfg["batch_size"], n_free)
        if b <= 0:
            raise ValidationError("every item of the campaign is labeled or was selected: nothing left to select")
        metrics = cv_quality(np.asarray(X[np.sort(pos)], dtype=np.float32) if len(pos) else None,
                             y[np.argsort(pos)] if len(pos) else None, len(self.classes),
                             positive=1 if cfg["positive_class"] is not None else None,
                             random_state=cfg["random_state"])
        scores = None
        if query is not None:
            from datascout.pool import iter_row_chunks
            from datascout.strategies import cosine_to_direction, top_b

            # exact cosine to the query, streamed over the memory map in chunks (no copy of X)
            unit = query / max(float(np.linalg.norm(query)), 1e-12)
            sim = np.empty(n, dtype=np.float64)
            for rows in iter_row_chunks(n):
                sim[rows] = cosine_to_direction(X[rows], unit)
            sim[np.union1d(pos, blocked)] = -np.inf
            chosen = top_b(sim, b, np.random.default_rng(cfg["random_state"]))
            scores = sim[chosen]
            how = {"query": query_note or True, "candidates": int(n)}
        else:
            strategy = cfg["strategy"]
            n_seen = len(np.unique(y))
            if len(pos) == 0:
                strategy = "random"
            graph = self.graph()  # may be a saved graph with more neighbours: use the campaign's k
            cand = CandidatePool(X, graph=graph, k=min(self.config["k"], graph.k))
            learner = ActiveLearner(Pool(X), len(self.classes), strategy, candidates=cand,
                                    holdout=blocked if len(blocked) else None,
                                    random_state=cfg["random_state"] + rnd)
            if len(pos):
                learner.teach(pos, y)
            chosen = np.asarray(learner.query(b), dtype=np.int64)
            if learner.strategy.needs_probs and n_seen >= 1:
                scores = learner.score_rows(np.asarray(X[chosen], dtype=np.float32), chosen)
            how = dict(learner.last_query_)
        settings = {"batch_size": int(b), "k": cfg["k"], "index": cfg["index"], **how,
                    "seconds": round(time.perf_counter() - t0, 3)}
        with self._write() as con:
            if self.current_round() + 1 != rnd:
                raise ConflictError(f"round {rnd} was selected meanwhile by another process")
            con.execute("INSERT INTO rounds VALUES (?, ?, ?, ?, ?)",
                        (rnd, "query" if query is not None else cfg["strategy"] if len(pos) else "random",
                         json.dumps(settings), json.dumps(metrics), time.time()))
            con.executemany("INSERT INTO selections VALUES (?, ?, ?, ?)",
                            [(int(p_), rnd, r, None if scores is None else float(scores[r]))
                             for r, p_ in enumerate(chosen.tolist())])
        log.info("round %d selected: %d items in %.2fs", rnd, len(chosen), settings["seconds"])
        return rnd

    def maybe_advance(self, *, background: bool = True) -> bool:
        """Start selecting the next round when the current one is fully answered. Returns True
        when a selection was started (or ran, with ``background=False``)."""
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                return False
            prog = self.round_progress()
            if prog["selected"] == 0 or prog["done"] < prog["selected"]:
                return False
            if background and self._left_to_select() == 0:
                return False  # the campaign is complete (``exhausted``): a state, not an error
            if not background:
                self.select_round()
                return True
            if self.select_in == "process":
                # a separate interpreter, started once and reused: training never holds the
                # server's GIL, and a round pays no interpreter start-up
                if self._selector is None:
                    self._selector = _SelectWorker(self.directory)
                self._selector.start()
                self._worker = self._selector
            else:
                self._worker = threading.Thread(target=self._select_in_background, name="datascout-select",
                                                daemon=True)
                self._worker.start()
            return True

    def _left_to_select(self) -> int:
        """Items neither labeled nor ever selected: what a next round can still choose from."""
        taken = self.con.execute("""SELECT COUNT(*) FROM (SELECT pos FROM selections
                                      UNION SELECT pos FROM labels WHERE class IS NOT NULL)""").fetchone()[0]
        return self.config["n_items"] - int(taken)

    @property
    def exhausted(self) -> bool:
        """The current round is fully answered and no item is left for another: the campaign is
        complete. Labels still arrive (relabels), and nothing more is selected."""
        prog = self.round_progress()
        return prog["selected"] > 0 and prog["done"] >= prog["selected"] and self._left_to_select() == 0

    def _select_in_background(self) -> None:
        try:
            self.select_round()
            self._last_error = None
        except Exception as exc:  # reported in stats; the annotators keep working
            self._last_error = f"{type(exc).__name__}: {exc}"
            _log_selection_failure(exc)
        finally:
            self.close()  # this thread's connection

    @property
    def last_error_(self) -> str | None:
        """Why the last background selection failed, or ``None``."""
        if self._worker is not None and self._worker is self._selector:
            self._selector.is_alive()  # collects its answer when there is one
            return self._selector.error
        return self._last_error

    @property
    def selecting(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def wait_idle(self, timeout: float = 60.0) -> None:
        w = self._worker
        if w is not None:
            w.join(timeout)

    # -- leases and labels ----------------------------------------------------------------

    def lease_batch(self, annotator: str, n: int = 10) -> dict:
        """Lease up to ``n`` items of the current round to ``annotator``: first the items they
        already hold, then free ones. An item is not handed to a second annotator while a lease
        on it is live (unless the campaign asks for several answers per item)."""
        check_annotator(annotator)
        if not isinstance(n, int) or not (1 <= n <= MAX_BATCH):
            raise ValidationError(f"n must be an integer in 1..{MAX_BATCH} but is {n!r}")
        now = time.time()
        need = self.config["labels_per_item"]
        con = self.con
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO annotators VALUES (?, ?)", (annotator, now))
            rnd = self.current_round()
            rows = con.execute(
                """SELECT s.pos FROM selections s
                   WHERE s.round = ?
                     AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.pos = s.pos AND l.annotator = ?
                                     AND l.source = 'web')
                     AND (EXISTS (SELECT 1 FROM leases e WHERE e.pos = s.pos AND e.annotator = ?
                                  AND e.done = 0 AND e.expires > ?)
                          OR (SELECT COUNT(DISTINCT annotator) FROM labels l WHERE l.pos = s.pos
                              AND l.source = 'web')
                           + (SELECT COUNT(*) FROM leases e WHERE e.pos = s.pos AND e.annotator <> ?
                              AND e.done = 0 AND e.expires > ?) < ?)
                   ORDER BY (SELECT COUNT(*) FROM leases e WHERE e.pos = s.pos AND e.annotator = ?
                             AND e.done = 0 AND e.expires > ?) DESC, s.rank
                   LIMIT ?""",
                (rnd, annotator, annotator, now, annotator, now, need, annotator, now, n)).fetchall()
            positions = [r[0] for r in rows]
            expires = now + self.config["lease_seconds"]
            con.executemany(
                """INSERT INTO leases VALUES (?, ?, ?, 0)
                   ON CONFLICT(pos, annotator) DO UPDATE SET expires = excluded.expires, done = 0""",
                [(p, annotator, expires) for p in positions])
            items = self._items_at(positions)
        return {"round": rnd, "items": items, "lease_expires": expires,
                "progress": self.round_progress(rnd), "selecting": self.selecting}

    def _items_at(self, positions) -> list[dict]:
        if not positions:
            return []
        q = f"SELECT pos, id, kind, payload FROM items WHERE pos IN ({','.join('?' * len(positions))})"
        by_pos = {r[0]: r for r in self.con.execute(q, positions).fetchall()}
        out = []
        for p in positions:
            _, item_id, kind, payload = by_pos[p]
            it = {"id": item_id, "kind": kind}
            if kind == "text":
                it["text"] = payload
            out.append(it)
        return out

    def submit(self, annotator: str, labels: list) -> dict:
        """Record ``[(item id, class name or None = skip), ...]`` from ``annotator`` in one
        transaction, all or nothing. Each item must be leased to the annotator (or already
        answered by them: a relabel, kept as history). Returns counts and the round progress."""
        check_annotator(annotator)
        if not isinstance(labels, list) or not labels:
            raise ValidationError("labels must be a non-empty list of {id, label}")
        if len(labels) > 10 * MAX_BATCH:
            raise ValidationError(f"at most {10 * MAX_BATCH} labels per request, got {len(labels)}")
        ids = [str(i) for i, _ in labels]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise LabelingError(f"item {dup!r} occurs twice in one request")
        classes = [self.class_id(lab) for _, lab in labels]
        positions = self.positions(ids)
        now = time.time()
        con = self.con
        with self._write() as con:
            ph = ",".join("?" * len(positions))
            leased = {r[0] for r in con.execute(
                f"SELECT pos FROM leases WHERE annotator = ? AND pos IN ({ph})", [annotator, *positions])}
            answered = {r[0] for r in con.execute(
                f"SELECT DISTINCT pos FROM labels WHERE annotator = ? AND pos IN ({ph})", [annotator, *positions])}
            for i, p in zip(ids, positions):
                if p not in leased and p not in answered:
                    raise ConflictError(f"item {i!r} is not leased to annotator {annotator!r}: "
                                        "get it from /api/batch first")
            round_of = dict(con.execute(f"SELECT pos, round FROM selections WHERE pos IN ({ph})", positions).fetchall())
            con.executemany("INSERT INTO labels (pos, class, annotator, time, round, source) VALUES (?, ?, ?, ?, ?, 'web')",
                            [(p, c, annotator, now, round_of.get(p)) for p, c in zip(positions, classes)])
            con.execute(f"UPDATE leases SET done = 1 WHERE annotator = ? AND pos IN ({ph})", [annotator, *positions])
        started = self.maybe_advance()
        return {"accepted": len(positions), "relabels": len(answered),
                "progress": self.round_progress(), "selecting": started or self.selecting}

    # -- import / export / stats ----------------------------------------------------------

    def import_labels(self, path, *, annotator: str = "import") -> int:
        from datascout.campaign.formats import read_label_file

        check_annotator(annotator)
        rows = read_label_file(path)
        ids = [r[0] for r in rows]
        positions = self.positions(ids)
        classes = [self.class_id(r[1]) if r[1] is not None else None for r in rows]
        now = time.time()
        con = self.con
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO annotators VALUES (?, ?)", (annotator, now))
            for r in rows:
                if r[2]:
                    con.execute("INSERT OR IGNORE INTO annotators VALUES (?, ?)", (check_annotator(r[2]), now))
            con.executemany(
                "INSERT INTO labels (pos, class, annotator, time, round, source) VALUES (?, ?, ?, ?, NULL, 'import')",
                [(p, c, r[2] or annotator, now) for p, c, r in zip(positions, classes, rows) if c is not None])
        return sum(c is not None for c in classes)

    def stats(self) -> dict:
        from datascout.campaign.formats import stats

        return stats(self)

    def export(self, fmt: str) -> str:
        from datascout.campaign.formats import export

        return export(self, fmt)


class _SelectWorker:
    """A long-lived selection process for one campaign (spawned at the first round, restarted if
    it dies). ``start()`` asks for one round; ``is_alive()`` is True while that round is being
    selected (the interface of the thread it replaces); ``error`` is the last round's failure."""

    def __init__(self, directory):
        self.directory = str(directory)
        self.proc = self.conn = None
        self.busy = False
        self.error: str | None = None
        self._lock = threading.Lock()  # the server's threads all ask whether it is busy

    def start(self) -> None:
        with self._lock:
            self._start()

    def _start(self) -> None:
        import multiprocessing

        if self.proc is None or not self.proc.is_alive():
            ctx = multiprocessing.get_context("spawn")
            self.conn, child = ctx.Pipe()
            self.proc = ctx.Process(target=_select_worker_main, args=(self.directory, child),
                                    name="datascout-select", daemon=True)
            self.proc.start()
            child.close()
        self.conn.send("select")
        self.busy = True

    def _collect(self, timeout: float) -> None:
        """Take the round's answer if it came within ``timeout`` s (or note that the process died)."""
        with self._lock:
            if not self.busy:
                return
            try:
                answered = self.conn.poll(timeout)
                if answered:
                    self.error = self.conn.recv()
            except (EOFError, OSError):  # the pipe broke: the process died without answering
                answered = False
            if answered:
                self.busy = False
            elif not self.proc.is_alive():
                self.error = f"the selection process exited with code {self.proc.exitcode}"
                self.busy = False

    def is_alive(self) -> bool:
        self._collect(0)
        return self.busy

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.busy and (deadline is None or time.monotonic() < deadline):
            self._collect(0.1)


def _log_selection_failure(exc: Exception) -> None:
    """A user-level reason (another process selected the round, the data changed) is one line;
    anything else is a bug and keeps its traceback."""
    from datascout.exceptions import DatascoutError

    if isinstance(exc, DatascoutError):
        log.warning("selecting the next round failed: %s", exc)
    else:
        log.exception("selecting the next round failed")


def _select_worker_main(directory: str, conn) -> None:
    """Body of the selection process: one round per request, answering ``None`` or the error."""
    camp = Campaign(directory)
    try:
        while True:
            try:
                if conn.recv() != "select":
                    return
            except EOFError:  # the server is gone
                return
            try:
                camp.select_round()
                conn.send(None)
            except Exception as exc:
                _log_selection_failure(exc)
                conn.send(f"{type(exc).__name__}: {exc}")
    finally:
        camp.close()
