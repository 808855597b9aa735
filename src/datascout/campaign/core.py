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
import warnings
from pathlib import Path

import numpy as np

from datascout.campaign.schema import DB_NAME, connect
from datascout.exceptions import DatascoutError, LabelingError, ValidationError

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


def _stat_signature(path) -> list:
    """``[total size, latest mtime_ns]`` of an embeddings file (or of every file of a shard
    directory): what tells, without reading the rows, that the content may have changed."""
    path = Path(path)
    if not path.exists():
        raise ValidationError(f"expected the campaign's embeddings at {str(path)!r} but none exists "
                              "(moved or deleted?)")
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    stats = [p.stat() for p in files]
    return [sum(st.st_size for st in stats), max((st.st_mtime_ns for st in stats), default=0)]


def _uniform_sample(n: int, taken: np.ndarray, m: int, rng) -> np.ndarray:
    """``m`` distinct positions drawn uniformly from ``range(n)`` minus the sorted ``taken``,
    without materialising the free positions when few are taken (rejection sampling)."""
    if m <= 0:
        return np.empty(0, dtype=np.int64)
    if len(taken) > n // 2:
        return np.sort(rng.choice(np.setdiff1d(np.arange(n), taken), size=m, replace=False))
    out = np.empty(0, dtype=np.int64)
    while len(out) < m:
        draw = rng.integers(0, n, size=2 * (m - len(out)) + 8)
        draw = draw[~np.isin(draw, taken)]
        out = np.unique(np.r_[out, draw])  # sorted, distinct; then keep a uniform subset
        if len(out) > m:
            out = np.sort(rng.choice(out, size=m, replace=False))
    return out


def _check_label_rows(rows, pos_of, classes, name: str) -> None:
    """Labels rows name known classes (and, with ``pos_of``, known items): else one line."""
    for item_id, label, who in rows:
        if label is not None and label not in classes:
            raise LabelingError(f"{name}: unknown class {label!r} for item {item_id!r}: expected one of {classes}")
        if who:
            check_annotator(who)
    if pos_of is not None:
        unknown = [r[0] for r in rows if str(r[0]) not in pos_of]
        if unknown:
            raise NotFoundError(f"{name}: {len(unknown)} labels name items that are not in the campaign "
                                f"(first: {', '.join(repr(str(i)) for i in unknown[:3])})")


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
        # per process: the embeddings (with the file signature they were checked at), the graph
        # and the validated Pool over them, so a round reads no row to check anything
        self._embeddings_cache = self._graph_cache = self._pool_cache = None
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
        """``(X, path)``: the campaign's embeddings, memory-mapped, checked against what was
        recorded at creation: the shape always; the content (its fingerprint) again only when
        the file's size or modification time differ from the recorded ones (then a changed
        content is an error, an unchanged one renews the record)."""
        from datascout.io import load_embeddings

        path = Path(self.config["embeddings"])
        if not path.is_absolute():
            path = self.directory / path
        stat = _stat_signature(path)
        cached = self._embeddings_cache
        if cached is not None and cached[0] == stat:
            return cached[1], path
        X, _ = load_embeddings(path)
        want = (self.config["n_items"], self.config["dim"])
        if X.ndim != 2 or tuple(X.shape) != want:
            raise ValidationError(f"{str(path)!r} holds an array of shape {tuple(X.shape)} but the campaign was "
                                  f"created on {want}: the embeddings file was replaced")
        if self.config.get("embeddings_stat") != stat:
            from datascout.seals import fingerprint

            fp = fingerprint(X)
            if self.config.get("embeddings_fingerprint", fp) != fp:
                raise ValidationError(f"the content of {str(path)!r} changed since the campaign was created "
                                      f"(fingerprint {fp}, recorded {self.config['embeddings_fingerprint']}): "
                                      "labels would pair with other vectors; restore the file")
            self._set_meta({"embeddings_stat": stat, "embeddings_fingerprint": fp})
        self._embeddings_cache = (stat, X)
        return X, path

    def _set_meta(self, values: dict) -> None:
        with self._write() as con:
            con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                            [(k_, json.dumps(v)) for k_, v in values.items()])
        self.config.update(values)

    @classmethod
    def create(cls, directory, *, embeddings=None, items=None, pool=None, classes=None, positive_class=None,
               strategy=None, batch_size: int = 20, k: int = 30, index: str = "HNSW32",
               lease_seconds: float = 600.0, labels_per_item: int = 1, random_state: int = 0,
               seed_labels=None, like=None, query_embedding=None, query_note=None,
               id_column: str = "id", text_column: str = "text", audit_fraction: float = 0.1,
               review_fraction: float = 0.1, select_ahead: bool = True,
               label_budget: int | None = None) -> "Campaign":
        """Create a campaign in ``directory`` (which must not hold one) and select round 0: the
        items most like ``like`` (an item id) or ``query_embedding`` (a vector in the pool's space,
        e.g. an embedded text or image; ``query_note`` describes it in the round's settings), else
        by the strategy (random until there are labels).

        ``embeddings``: a file (``.npy``, ``.npz``, Parquet), a shard directory or a pool folder of
        ``datascout embed``; or ``pool``: such a folder. ``items``: a JSONL / CSV / Parquet file or
        a list of ``{"id", "kind", "payload"}``; without it, a pool folder's own source. Items are
        matched to embeddings rows by id wherever the embeddings carry ids (see
        :mod:`datascout.campaign.items`). ``audit_fraction``: the share of each round drawn
        uniformly at random from the unlabeled pool, labeled blind and never trained on: the
        honest estimate of the model's quality (0 turns it off). ``review_fraction``: at most this
        share of a batch, every round, of the labels the label audit suspects most (cleanlab on
        out-of-fold probabilities, near-duplicate conflicts) is asked again of another annotator,
        blind; the answers are resolved by votes weighted by each annotator's quality.
        ``select_ahead``: select the next round once the current one is handed out and half
        answered, so nobody waits (default); ``False`` waits for its last label. ``label_budget``:
        the stopping rule ``budget`` fires once the campaign holds this many labeled items
        (:meth:`stopping`). Everything is checked before anything is written: a
        rejected call leaves no folder, no database and no graph behind."""
        from datascout.campaign.formats import read_label_file
        from datascout.campaign.items import items_from_pool, match_items, open_pool, read_items
        from datascout.seals import fingerprint
        from datascout.registry import make_strategy

        directory = Path(directory)
        if (directory / DB_NAME).exists():
            raise ValidationError(f"{str(directory)!r} already holds a campaign")
        if (classes is None) == (positive_class is None):
            raise ValidationError("give either classes (e.g. cat,dog) or a positive class, not both or neither")
        if positive_class is not None:
            classes = [f"not {positive_class}", str(positive_class)]
        classes = [str(c).strip() for c in classes]
        twice = sorted({c for c in classes if classes.count(c) > 1})
        if twice:
            raise ValidationError(f"class names must be distinct but {', '.join(map(repr, twice))} occurs twice in {classes}")
        if len(classes) < 2 or any(not c for c in classes):
            raise ValidationError(f"expected at least 2 non-empty class names but got {classes}")
        if len(classes) > 9:
            log.info("more than 9 classes: keys 1-9 cover the first nine")
        strategy = strategy or ("most-likely-positive" if positive_class is not None else "entropy")
        make_strategy(strategy)  # validates the name
        for name, v, lo in (("batch_size", batch_size, 1), ("k", k, 1), ("labels_per_item", labels_per_item, 1)):
            if int(v) < lo:
                raise ValidationError(f"{name} must be >= {lo} but is {v}")
        if not float(lease_seconds) > 0 or not np.isfinite(float(lease_seconds)):  # NaN fails both
            raise ValidationError(f"lease_seconds must be a finite number > 0 but is {lease_seconds}")
        if not 0 <= float(audit_fraction) < 1:  # NaN fails too
            raise ValidationError(f"audit_fraction must be in [0, 1) but is {audit_fraction}")
        if not 0 <= float(review_fraction) <= 1:
            raise ValidationError(f"review_fraction must be in [0, 1] but is {review_fraction}")
        if label_budget is not None and int(label_budget) <= 0:
            raise ValidationError(f"label_budget must be > 0 but is {label_budget}")
        inputs = open_pool(embeddings, pool)
        X = inputs.embeddings
        if items is None:
            if inputs.pool_dir is None:
                raise ValidationError("items are needed: pass an items file, or a pool folder written by "
                                      "'datascout embed' (its source holds the items)")
            items, what = items_from_pool(inputs.pool_dir), f"the source of {inputs.pool_dir.name}"
        elif isinstance(items, (str, Path)):
            items, what = read_items(items, id_column=id_column, text_column=text_column), Path(items).name
        else:
            what = "the items"
        n_given = len(items)
        items = match_items(items, inputs.ids if inputs.ids is not None else X.shape[0], inputs.skipped, what)
        if len(items) < n_given:
            log.warning("datascout: note: %d items of %s were skipped by the embedding run (skipped.jsonl): "
                        "left out", n_given - len(items), what)
        pos_of = {it["id"]: p for p, it in enumerate(items)}
        seed_rows = None
        if seed_labels is not None:  # checked now: ids and classes known
            seed_rows = read_label_file(seed_labels)
            _check_label_rows(seed_rows, pos_of, classes, Path(seed_labels).name)
        query = None
        if like is not None:
            if str(like) not in pos_of:
                raise NotFoundError(f"unknown item {str(like)!r} for the query: it is not in this campaign")
            query = np.asarray(X[pos_of[str(like)]], dtype=np.float32)
            query_note = query_note or f"like item {like}"
        elif query_embedding is not None:
            query = np.asarray(query_embedding, dtype=np.float32).reshape(-1)
            if query.shape[0] != X.shape[1]:
                raise ValidationError(f"the query embedding has {query.shape[0]} dimensions but the "
                                      f"embeddings have {X.shape[1]}")
        if query is not None:
            if not np.isfinite(query).all():
                raise ValidationError("the query vector must be finite but holds NaN or inf")
            if not float(np.abs(query).max()) > 0:
                raise ValidationError("the query vector is all zeros: it has no direction to search along")
        from datascout.seals import check_graph_index

        check_graph_index(index)
        emb_path = inputs.path
        created_dir = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (DB_NAME + ".init")
        try:
            for p in (tmp, Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm")):
                p.unlink(missing_ok=True)
            stat = _stat_signature(emb_path)
            fp = fingerprint(X)
            con = connect(tmp, create=True)
            try:
                cfg = {"classes": classes, "positive_class": positive_class, "strategy": strategy,
                       "batch_size": int(batch_size), "k": int(k), "index": index,
                       "lease_seconds": float(lease_seconds), "labels_per_item": int(labels_per_item),
                       "audit_fraction": float(audit_fraction),
                       "review_fraction": float(review_fraction), "select_ahead": bool(select_ahead),
                       "label_budget": None if label_budget is None else int(label_budget),
                       "random_state": int(random_state),
                       "embeddings": str(emb_path),
                       "n_items": int(X.shape[0]), "dim": int(X.shape[1]), "created": time.time(),
                       "embeddings_fingerprint": fp, "embeddings_stat": stat,
                       "matched_by": "id" if inputs.ids is not None else "line order"}
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
                if seed_rows is not None:
                    camp._import_rows(seed_rows, "import")
                camp.select_round(query=query, query_note=query_note)
            finally:
                camp.close()
            con = connect(tmp)
            try:
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the one file
            finally:
                con.close()
            tmp.replace(directory / DB_NAME)
        except BaseException:
            for p in directory.glob(DB_NAME + "*"):
                p.unlink()
            if created_dir:
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only when it is empty again
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
                 SELECT s.pos, (SELECT COUNT(DISTINCT annotator) FROM labels l WHERE l.pos = s.pos) AS n
                 FROM selections s WHERE s.round = ?)""", (need, rnd)).fetchone()
        return {"round": rnd, "selected": int(total), "done": int(done)}

    def resolved_labels(self, con=None, *, with_ties: bool = False):
        """``(positions, class ids)`` of every labeled item: the latest answer of each annotator,
        then the majority over annotators, each vote weighted by the annotator's estimated quality
        once it is known (CROWDLAB, refreshed every round; 1 before); a tie goes to the most
        recent answer."""
        con = con or self.con
        rows = con.execute(
            """SELECT l.pos, l.class, l.label_id, l.annotator FROM labels l
               JOIN (SELECT pos, annotator, MAX(label_id) AS m FROM labels GROUP BY pos, annotator) last
                 ON l.label_id = last.m
               WHERE l.class IS NOT NULL ORDER BY l.pos, l.label_id""").fetchall()
        if not rows:
            empty = np.empty(0, np.int64)
            return (empty, empty, np.empty(0, bool)) if with_ties else (empty, empty)
        arr = np.asarray([r[:3] for r in rows], dtype=np.int64)
        pos, cls_, lid = arr[:, 0], arr[:, 1], arr[:, 2]
        n_cls = len(self.classes)
        upos, inv = np.unique(pos, return_inverse=True)
        quality = self._annotator_quality(con)  # CROWDLAB's, once known: votes weigh by it
        weight = np.asarray([quality.get(r[3], 1.0) for r in rows], dtype=np.float64)
        votes = np.zeros((len(upos), n_cls), dtype=np.float64)
        np.add.at(votes, (inv, cls_), weight)
        latest = np.zeros((len(upos), n_cls), dtype=np.int64)
        np.maximum.at(latest, (inv, cls_), lid)
        best = votes == votes.max(axis=1, keepdims=True)
        winner = np.argmax(np.where(best, latest, -1), axis=1)
        if with_ties:  # items whose answers are split evenly: the latest is a guess, not a label
            return upos, winner.astype(np.int64), best.sum(axis=1) > 1
        return upos, winner.astype(np.int64)

    def _annotator_quality(self, con=None) -> dict:
        row = (con or self.con).execute("SELECT value FROM meta WHERE key = 'annotator_quality'").fetchone()
        return json.loads(row[0]) if row else {}

    def graph(self):
        """The campaign's kNN graph: loaded (or built) once per process, found by the
        fingerprint recorded at creation, so a round reads no embeddings row to check it."""
        from datascout.seals import build_or_load_graph

        X, path = self.embeddings()
        cached = self._graph_cache
        if cached is not None and cached[0] is X:
            return cached[1]
        k = min(self.config["k"], X.shape[0] - 1)
        g = build_or_load_graph(X, path, self.config["index"], k,
                                fingerprint_=self.config["embeddings_fingerprint"])
        self._graph_cache = (X, g)
        return g

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
        rng = np.random.default_rng([cfg["random_state"], rnd])
        pos, y, tied = self.resolved_labels(con, with_ties=True)
        sel = np.asarray(con.execute("SELECT pos, audit FROM selections").fetchall(), dtype=np.int64).reshape(-1, 2)
        blocked = np.setdiff1d(sel[:, 0], pos)  # selected but skipped / not answered: never again
        is_audit = np.isin(pos, sel[sel[:, 1] == 1, 0])
        # audit labels are never trained on; nor are ties (sent to review for a deciding answer)
        train_pos, train_y = pos[~is_audit & ~tied], y[~is_audit & ~tied]
        ties = pos[tied]
        audit_pos, audit_y = pos[is_audit], y[is_audit]
        taken = np.union1d(pos, blocked)
        b = min(cfg["batch_size"], n - len(taken))
        if b <= 0:
            raise ValidationError("every item of the campaign is labeled or was selected: nothing left to select")
        share = float(cfg.get("audit_fraction", 0.0))
        n_audit = 0 if share <= 0 or b < 2 else min(b - 1, max(1, int(round(b * share))))
        audit_new = _uniform_sample(n, taken, n_audit, rng)
        order = np.argsort(train_pos)
        positive = 1 if cfg["positive_class"] is not None else None
        metrics = cv_quality(np.asarray(X[train_pos[order]], dtype=np.float32) if len(train_pos) else None,
                             train_y[order] if len(train_pos) else None, len(self.classes),
                             positive=positive, random_state=cfg["random_state"])
        metrics["n_train"], metrics["n_labels"] = metrics["n_labels"], int(len(pos))  # CV on the training labels
        held = np.union1d(np.union1d(blocked, audit_pos), audit_new)
        learner = None
        if len(train_pos):
            cached = self._pool_cache
            if cached is None or cached.embeddings is not X:  # Pool() checks every row: once per process
                cached = self._pool_cache = Pool(X)
            graph = self.graph()  # may be a saved graph with more neighbours: use the campaign's k
            cand = CandidatePool(X, graph=graph, k=min(self.config["k"], graph.k))
            learner = ActiveLearner(cached, len(self.classes), cfg["strategy"], candidates=cand,
                                    holdout=held if len(held) else None,
                                    random_state=cfg["random_state"] + rnd)
            learner.teach(train_pos, train_y)
        n_pick = b - len(audit_new)
        scores = None
        if query is not None:
            from datascout.pool import iter_row_chunks
            from datascout.strategies import cosine_to_direction, top_b

            # exact cosine to the query, streamed over the memory map in chunks (no copy of X)
            unit = query / max(float(np.linalg.norm(query)), 1e-12)
            sim = np.empty(n, dtype=np.float64)
            for rows in iter_row_chunks(n):
                sim[rows] = cosine_to_direction(X[rows], unit)
            sim[np.union1d(taken, audit_new)] = -np.inf
            chosen = top_b(sim, n_pick, rng)
            scores = sim[chosen]
            how = {"query": query_note or True, "candidates": int(n)}
            strategy = "query"
        elif learner is None:  # no label to learn from yet: a uniform random batch
            chosen = _uniform_sample(n, np.union1d(taken, audit_new), n_pick, rng)
            how = {"candidates": int(n - len(taken))}
            strategy = "random"
        else:
            chosen = np.asarray(learner.query(n_pick), dtype=np.int64)
            if learner.strategy.needs_probs:
                scores = learner.score_rows(np.asarray(X[chosen], dtype=np.float32), chosen)
            how = dict(learner.last_query_)
            strategy = cfg["strategy"]
        chosen = np.concatenate([chosen, audit_new]).astype(np.int64)
        # the audit items take random ranks among the strategy's picks, which keep their order:
        # the page cannot tell them from the rest
        slots = np.zeros(len(chosen), dtype=bool)
        slots[rng.choice(len(chosen), size=len(audit_new), replace=False)] = True
        ranks = np.r_[np.flatnonzero(~slots), np.flatnonzero(slots)]
        audit_flag = np.r_[np.zeros(n_pick, np.int64), np.ones(len(audit_new), np.int64)]
        scores = np.r_[scores if scores is not None else np.full(n_pick, np.nan), np.full(len(audit_new), np.nan)]
        pred_class = pred_prob = None
        if learner is not None and len(np.unique(train_y)) >= 2:
            proba = learner.predict_proba(np.asarray(X[chosen], dtype=np.float32))
            pred_class, pred_prob = proba.argmax(axis=1), proba.max(axis=1)
            if len(audit_pos):
                from datascout.campaign.metrics import audit_quality

                metrics["audit"] = audit_quality(
                    audit_y, learner.predict_proba(np.asarray(X[audit_pos], dtype=np.float32)),
                    len(self.classes), positive=positive, n_unlabeled=int(n - len(pos)),
                    random_state=cfg["random_state"])
        reviews, quality = [], None
        if learner is not None and len(np.unique(train_y)) >= 2:
            reviews, quality = self._review_and_quality(con, X, pos, y, train_pos, train_y, b, learner, ties)
            metrics["review_added"] = len(reviews)
        if "audit" not in metrics:
            metrics["audit"] = {"labels": int(len(audit_pos)), "value": None, "ci": None,
                                "metric": "average_precision" if positive is not None else "accuracy"}
        stop_meta = None
        if learner is not None and len(np.unique(train_y)) >= 2:  # what the stopping rules read
            from datascout.campaign.stopping import round_measurements

            metrics["stopping"], stop_meta = round_measurements(
                con, X, learner, pos, chosen[:n_pick], cfg, metrics.get("audit"),
                int((y == 1).sum()) if positive is not None else None)
        settings = {"batch_size": int(b), "audit": int(len(audit_new)), "k": cfg["k"], "index": cfg["index"],
                    **how, "seconds": round(time.perf_counter() - t0, 3)}
        with self._write() as con:
            if self.current_round() + 1 != rnd:
                raise ConflictError(f"round {rnd} was selected meanwhile by another process")
            con.execute("INSERT INTO rounds VALUES (?, ?, ?, ?, ?)",
                        (rnd, strategy, json.dumps(settings), json.dumps(metrics), time.time()))
            con.executemany("INSERT OR IGNORE INTO reviews VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [(p_, rnd, why, sc, sug, first, time.time()) for p_, why, sc, sug, first in reviews])
            if quality is not None:
                con.execute("INSERT OR REPLACE INTO meta VALUES ('annotator_quality', ?)", (json.dumps(quality),))
            if stop_meta is not None:
                con.execute("INSERT OR REPLACE INTO meta VALUES ('stop_set_predictions', ?)", (stop_meta,))
            con.executemany(
                "INSERT INTO selections (pos, round, rank, score, audit, pred_class, pred_prob) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(int(chosen[i]), rnd, int(ranks[i]), None if np.isnan(scores[i]) else float(scores[i]),
                  int(audit_flag[i]), None if pred_class is None else int(pred_class[i]),
                  None if pred_prob is None else float(pred_prob[i])) for i in range(len(chosen))])
        log.info("round %d selected: %d items in %.2fs", rnd, len(chosen), settings["seconds"])
        return rnd

    def _review_and_quality(self, con, X, pos, y, train_pos, train_y, b: int, learner, ties=()):
        """The labels to ask again: every even split between annotators (``ties``), then the
        label audit's most suspect single-answer training labels, at most ``review_fraction`` of a
        batch; and each annotator's CROWDLAB quality (``None`` where cleanlab is not installed or
        there is too little to go on)."""
        answers: dict[int, dict] = {}
        for p_, who, c in con.execute(
                """SELECT l.pos, l.annotator, l.class FROM labels l
                   JOIN (SELECT MAX(label_id) AS m FROM labels GROUP BY pos, annotator) last ON l.label_id = last.m
                   WHERE l.class IS NOT NULL"""):
            answers.setdefault(p_, {})[who] = c
        queued = {r[0] for r in con.execute("SELECT pos FROM reviews")}
        # an even split between annotators always asks for a deciding answer
        reviews = [(int(p_), "tie", 1.0, None, int(next(iter(answers[p_].values()))))
                   for p_ in np.asarray(ties).tolist() if p_ not in queued and p_ in answers]
        queued |= {r[0] for r in reviews}
        try:
            from datascout.labels import audit_labels, out_of_fold_probs
            from cleanlab.multiannotator import get_label_quality_multiannotator
        except ImportError:
            return reviews, None
        K = len(self.classes)
        counts = np.bincount(train_y, minlength=K)
        keep = counts[train_y] >= 2
        if len(np.unique(train_y[keep])) < 2:
            return reviews, None
        tp, ty = train_pos[keep], train_y[keep]
        order = np.argsort(tp)
        tp, ty = tp[order], ty[order]
        rs = self.config["random_state"]
        oof = out_of_fold_probs(X[tp], ty, K, folds=5, random_state=rs)
        full = np.full(X.shape[0], -1, dtype=np.int64)
        full[tp] = ty
        audit = audit_labels(X, full, n_classes=K, probs=oof, graph=self.graph(), outlier_quantile=0.0,
                             random_state=rs)
        share = float(self.config.get("review_fraction", 0.0))
        room = len(reviews) + (0 if share <= 0 else max(1, int(np.ceil(share * b))))
        for p_, sc, sug, why in zip(audit.positions.tolist(), audit.score.tolist(), audit.suggested.tolist(),
                                    audit.reasons):
            if len(reviews) >= room:
                break
            if p_ in queued or len(answers.get(p_, {})) != 1:
                continue
            first = next(iter(answers[p_].values()))
            reviews.append((int(p_), ";".join(why), float(sc), int(sug), int(first)))
        quality = None
        names = sorted({a for per in answers.values() for a in per})
        if len(names) >= 2 and any(len(per) >= 2 for per in answers.values()):
            import pandas as pd

            items = np.asarray(sorted(answers), dtype=np.int64)
            probs = learner.predict_proba(np.asarray(X[items], dtype=np.float32)).astype(np.float64)
            at = np.searchsorted(items, tp)
            probs[at] = oof  # out-of-fold where the model was trained on the item
            probs = np.clip(probs, 1e-6, None)
            probs /= probs.sum(axis=1, keepdims=True)
            table = pd.DataFrame([[answers[i].get(a, np.nan) for a in names] for i in items.tolist()],
                                 columns=names, dtype=float)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    got = get_label_quality_multiannotator(table, probs, verbose=False)
                stats_ = got["annotator_stats"]
                quality = {str(a): float(q) for a, q in stats_["annotator_quality"].items()}
            except Exception as exc:  # cleanlab refuses some shapes of data (too few overlaps)
                log.info("annotator quality not estimated this round: %s", exc)
        return reviews, quality

    def quality_now(self) -> dict:
        """The model's quality on the labels held now: cross-validated on the training labels
        (actively chosen: biased toward hard items) and, the honest figure, measured on the audit
        labels by a model trained on all the others (``{"n_labels", "n_train", "cv", "audit"}``)."""
        from datascout.campaign.metrics import audit_quality, cv_quality
        from datascout.models import FittedModel, default_model

        cfg = self.config
        pos, y = self.resolved_labels()
        audit = np.isin(pos, [r[0] for r in self.con.execute("SELECT pos FROM selections WHERE audit = 1")])
        positive = 1 if cfg["positive_class"] is not None else None
        X, _ = self.embeddings()
        tp, ty = pos[~audit], y[~audit]
        out = cv_quality(np.asarray(X[tp], dtype=np.float32) if len(tp) else None, ty if len(tp) else None,
                         len(self.classes), positive=positive, random_state=cfg["random_state"])
        out["n_train"], out["n_labels"] = out["n_labels"], int(len(pos))
        result = {"labels": int(audit.sum()), "metric": "average_precision" if positive is not None else "accuracy",
                  "value": None, "ci": None}
        if audit.any() and len(np.unique(ty)) >= 2:
            model = FittedModel(default_model(cfg["random_state"]), len(self.classes)).fit(
                np.asarray(X[tp], dtype=np.float32), ty)
            result = audit_quality(y[audit], model.predict_proba(np.asarray(X[pos[audit]], dtype=np.float32)),
                                   len(self.classes), positive=positive, n_unlabeled=int(X.shape[0] - len(pos)),
                                   random_state=cfg["random_state"])
        out["audit"] = result
        return out

    def maybe_advance(self, *, background: bool = True, early: bool | None = None) -> bool:
        """Start selecting the next round when the current one is fully answered or, with
        ``early`` (the default in the background), as soon as none of its items is left to hand
        out (all answered or leased) and a quarter of it is answered: the annotators then label
        their leased items while the model learns from the labels so far, and the next batch is
        there when they finish (with half, 50 annotators leasing 5 items each found the round
        handed out before half was answered, and waited: docs/benchmarks.md, server load). Returns True when a
        selection was started (or ran, with ``background=False``)."""
        early = (background and self.config.get("select_ahead", True)) if early is None else early
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                return False
            prog = self.round_progress()
            if prog["selected"] == 0:
                return False
            if prog["done"] < prog["selected"] and not (
                    early and 4 * prog["done"] >= prog["selected"] and self._left_in_round(prog["round"]) == 0):
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

    def _left_in_round(self, rnd: int) -> int:
        """Items of round ``rnd`` that can still be handed out: answered by fewer annotators
        than asked, counting live leases as answers to come."""
        return int(self.con.execute(
            """SELECT COUNT(*) FROM selections s WHERE s.round = ?
               AND (SELECT COUNT(DISTINCT annotator) FROM labels l WHERE l.pos = s.pos)
                 + (SELECT COUNT(*) FROM leases e WHERE e.pos = s.pos AND e.done = 0 AND e.expires > ?) < ?""",
            (rnd, time.time(), self.config["labels_per_item"])).fetchone()[0])

    def _left_to_select(self) -> int:
        """Items neither labeled nor ever selected: what a next round can still choose from."""
        taken = self.con.execute("""SELECT COUNT(*) FROM (SELECT pos FROM selections
                                      UNION SELECT pos FROM labels WHERE class IS NOT NULL)""").fetchone()[0]
        return self.config["n_items"] - int(taken)

    def warm_up(self) -> None:
        """Under ``select_in="process"``: start the selection process now, idle (see
        :meth:`_SelectWorker.spawn`)."""
        if self.select_in == "process":
            with self._lock:
                if self._selector is None:
                    self._selector = _SelectWorker(self.directory)
                self._selector.spawn()

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
        """Lease up to ``n`` items to ``annotator``: first the review queue's items for them,
        then the items they already hold, then free ones, oldest open round first. An item is
        not handed to a second annotator while a lease on it is live (unless the campaign asks
        for several answers per item). When the latest round has nothing left to hand out, the
        next one starts to be selected, so the next batch exists before this one is labeled."""
        check_annotator(annotator)
        if not isinstance(n, int) or not (1 <= n <= MAX_BATCH):
            raise ValidationError(f"n must be an integer in 1..{MAX_BATCH} but is {n!r}")
        now = time.time()
        need = self.config["labels_per_item"]
        con = self.con
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO annotators VALUES (?, ?)", (annotator, now))
            rnd = self.current_round()
            open_from = con.execute(
                """SELECT MIN(s.round) FROM selections s
                   WHERE (SELECT COUNT(DISTINCT annotator) FROM labels l WHERE l.pos = s.pos) < ?""",
                (need,)).fetchone()[0]
            rows = con.execute(
                """SELECT s.pos FROM selections s
                   WHERE s.round >= ?
                     AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.pos = s.pos AND l.annotator = ?)
                     AND (EXISTS (SELECT 1 FROM leases e WHERE e.pos = s.pos AND e.annotator = ?
                                  AND e.done = 0 AND e.expires > ?)
                          OR (SELECT COUNT(DISTINCT annotator) FROM labels l WHERE l.pos = s.pos)
                           + (SELECT COUNT(*) FROM leases e WHERE e.pos = s.pos AND e.annotator <> ?
                              AND e.done = 0 AND e.expires > ?) < ?)
                   ORDER BY (SELECT COUNT(*) FROM leases e WHERE e.pos = s.pos AND e.annotator = ?
                             AND e.done = 0 AND e.expires > ?) DESC, s.round, s.rank
                   LIMIT ?""",
                (rnd if open_from is None else open_from, annotator, annotator, now, annotator, now, need,
                 annotator, now, n)).fetchall()
            review = self._open_reviews(con, annotator, now)[:n]
            positions = review + [r[0] for r in rows if r[0] not in set(review)][: n - len(review)]
            expires = now + self.config["lease_seconds"]
            con.executemany(
                """INSERT INTO leases VALUES (?, ?, ?, 0)
                   ON CONFLICT(pos, annotator) DO UPDATE SET expires = excluded.expires, done = 0""",
                [(p, annotator, expires) for p in positions])
            items = self._items_at(positions, review=set(review))
        # nobody waits: once the round has nothing left to hand out, the next one is selected
        # (from the labels so far) while these items are being labeled
        selecting = self.selecting or self.maybe_advance()
        return {"round": rnd, "items": items, "lease_expires": expires,
                "progress": self.round_progress(rnd), "selecting": selecting}

    def _open_reviews(self, con, annotator: str, now: float) -> list[int]:
        """Positions of the review queue that ``annotator`` may answer, most suspect first: not
        answered by them, not leased to someone else, and still open (one answer so far, or two
        that disagree: a third decides). Their own live leases come first."""
        rows = con.execute(
            """SELECT r.pos,
                      EXISTS (SELECT 1 FROM leases e WHERE e.pos = r.pos AND e.annotator = ? AND e.done = 0
                              AND e.expires > ?) AS mine,
                      EXISTS (SELECT 1 FROM leases e WHERE e.pos = r.pos AND e.annotator <> ? AND e.done = 0
                              AND e.expires > ?) AS theirs,
                      EXISTS (SELECT 1 FROM labels l WHERE l.pos = r.pos AND l.annotator = ?) AS answered
               FROM reviews r ORDER BY r.score DESC, r.pos""", (annotator, now, annotator, now, annotator)).fetchall()
        candidates = [p_ for p_, mine, theirs, answered in rows if not answered and (mine or not theirs)]
        if not candidates:
            return []
        ph = ",".join("?" * len(candidates))
        latest: dict[int, dict] = {}
        for p_, who, c in con.execute(
                f"""SELECT l.pos, l.annotator, l.class FROM labels l
                    JOIN (SELECT MAX(label_id) AS m FROM labels WHERE pos IN ({ph}) GROUP BY pos, annotator) last
                      ON l.label_id = last.m WHERE l.class IS NOT NULL""", candidates):
            latest.setdefault(p_, {})[who] = c
        mine_first = {p_ for p_, mine, *_ in rows if mine}

        def still_open(p_):
            got = latest.get(p_, {})
            return len(got) < 2 or (len(got) == 2 and len(set(got.values())) == 2)

        out = [p_ for p_ in candidates if still_open(p_)]
        return sorted(out, key=lambda p_: p_ not in mine_first)

    def _items_at(self, positions, review=frozenset()) -> list[dict]:
        """The items at ``positions``, each with the model's guess when it was selected
        (``prediction``: ``{"label", "probability"}`` or ``None`` before the first model) and why
        it was chosen (``selected_by``: the round's strategy and the item's score)."""
        if not positions:
            return []
        ph = ",".join("?" * len(positions))
        by_pos = {r[0]: r for r in self.con.execute(
            f"""SELECT i.pos, i.id, i.kind, i.payload, r.strategy, s.score, s.audit, s.pred_class, s.pred_prob
                FROM items i LEFT JOIN selections s ON s.pos = i.pos LEFT JOIN rounds r ON r.round = s.round
                WHERE i.pos IN ({ph})""", positions).fetchall()}
        out = []
        for p in positions:
            _, item_id, kind, payload, strategy, score, audit, pred, prob = by_pos[p]
            it = {"id": item_id, "kind": kind}
            if kind == "text":
                it["text"] = payload
            it["prediction"] = None if pred is None else {"label": self.classes[pred], "probability": prob}
            it["selected_by"] = {"strategy": "random" if audit else strategy, "score": score, "audit": bool(audit)}
            if p in review:  # asked again, blind: nothing says what the first answer was
                it["selected_by"] = {"strategy": "review", "score": None, "audit": False}
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
            leased = dict(con.execute(
                f"SELECT pos, expires FROM leases WHERE annotator = ? AND pos IN ({ph})", [annotator, *positions]))
            answered = {r[0] for r in con.execute(
                f"SELECT DISTINCT pos FROM labels WHERE annotator = ? AND pos IN ({ph})", [annotator, *positions])}
            held_by_others = dict(con.execute(
                f"""SELECT pos, MIN(annotator) FROM leases WHERE annotator <> ? AND done = 0 AND expires > ?
                    AND pos IN ({ph}) GROUP BY pos""", [annotator, now, *positions]))
            for i, p in zip(ids, positions):
                if p in answered:
                    continue  # a relabel, kept as history
                if p not in leased:
                    raise ConflictError(f"item {i!r} is not leased to annotator {annotator!r}: "
                                        "lease it first (POST /api/batch)")
                if leased[p] <= now and p in held_by_others:
                    raise ConflictError(f"the lease of annotator {annotator!r} on item {i!r} expired and the item "
                                        f"is now leased to {held_by_others[p]!r}")
            round_of = dict(con.execute(f"SELECT pos, round FROM selections WHERE pos IN ({ph})", positions).fetchall())
            con.executemany("INSERT INTO labels (pos, class, annotator, time, round, source) VALUES (?, ?, ?, ?, ?, 'web')",
                            [(p, c, annotator, now, round_of.get(p)) for p, c in zip(positions, classes)])
            con.execute(f"UPDATE leases SET done = 1 WHERE annotator = ? AND pos IN ({ph})", [annotator, *positions])
        started = self.maybe_advance()
        return {"accepted": len(positions), "relabels": len(answered),
                "progress": self.round_progress(), "selecting": started or self.selecting}

    # -- import / export / stats ----------------------------------------------------------

    def import_labels(self, path, *, annotator: str = "import") -> int:
        """Import labels from a file (CSV / JSONL / any of Label Studio's exports: JSON, JSON-MIN,
        CSV; the format is told by the content). They count like answers given on the page: an
        item of the current round that they label is done (never leased again), and a round they
        complete selects its successor. A label an annotator already gave is not added again, so
        importing one file twice adds nothing. Label Studio's users become annotators by the
        email the sync recorded for their id (else ``ls-ID``); its cancelled annotations are
        skips. Returns how many labels were added."""
        from datascout.campaign.formats import is_resolved_export, label_file_kind, read_label_file
        from datascout.campaign.labelstudio import known_users, member_aliases

        check_annotator(annotator)
        from_ls = label_file_kind(path) == "label-studio"
        rows = read_label_file(path, users=known_users(self), aliases=member_aliases(self)) if from_ls \
            else read_label_file(path)
        _check_label_rows(rows, None, self.classes, Path(path).name)
        if is_resolved_export(path):
            # resolved labels (a CSV export) fill in items nobody labeled; they are not one more
            # annotator's answers on items that have some (re-importing an export adds nothing)
            labeled = {r[0] for r in self.con.execute(
                "SELECT i.id FROM items i WHERE i.pos IN (SELECT pos FROM labels WHERE class IS NOT NULL)")}
            kept = [r for r in rows if str(r[0]) not in labeled]
            if len(kept) < len(rows):
                log.warning("datascout: note: %d of %d resolved labels in %s are on items already labeled: "
                            "left as they are", len(rows) - len(kept), len(rows), Path(path).name)
            rows = kept
        added = self._import_rows(rows, annotator, skips=from_ls)
        if added:
            try:
                self.maybe_advance(background=False)
            except DatascoutError as exc:  # the labels are in; the next round can wait
                log.warning("datascout: note: the labels are imported, but the next round was not selected: %s", exc)
        return added

    def _import_rows(self, rows, annotator: str, *, skips: bool = False) -> int:
        """Store checked ``(id, class name or None, annotator or None)`` rows; repeats of an
        annotator's current answer are left out, and so are rows without a class unless ``skips``
        (Label Studio's cancelled annotations: then they are skips). Returns the count added."""
        check_annotator(annotator)
        latest = {}  # (id, annotator) -> class id: the last row of the file wins
        for item_id, label, who in rows:
            if label is not None or skips:
                latest[(str(item_id), check_annotator(who) if who else annotator)] = self.class_id(label)
        if not latest:
            return 0
        keys = list(latest)
        positions = self.positions([i for i, _ in keys])
        now = time.time()
        with self._write() as con:
            ph = ",".join("?" * len(set(positions)))
            current = {(p, a): c for p, a, c in con.execute(
                f"""SELECT l.pos, l.annotator, l.class FROM labels l
                    JOIN (SELECT MAX(label_id) AS m FROM labels WHERE pos IN ({ph}) GROUP BY pos, annotator) last
                      ON l.label_id = last.m""", sorted(set(positions))).fetchall()}
            round_of = dict(con.execute(f"SELECT pos, round FROM selections WHERE pos IN ({ph})",
                                        sorted(set(positions))).fetchall())
            new = [(p, latest[key], key[1], now, round_of.get(p))
                   for p, key in zip(positions, keys) if current.get((p, key[1]), -1) != latest[key]]
            con.executemany("INSERT OR IGNORE INTO annotators VALUES (?, ?)",
                            sorted({(a, now) for _, _, a, _, _ in new}))
            con.executemany("INSERT INTO labels (pos, class, annotator, time, round, source) "
                            "VALUES (?, ?, ?, ?, ?, 'import')", new)
        return len(new)

    def stopping(self) -> dict:
        """Which stopping rules have fired, and when (:func:`datascout.campaign.stopping.stopping_status`)."""
        from datascout.campaign.stopping import stopping_status

        return stopping_status(self)

    def stats(self) -> dict:
        from datascout.campaign.formats import stats

        return {**stats(self), "stopping": self.stopping()}

    def export(self, fmt: str, *, annotators=None, image_base_url: str | None = None) -> str:
        from datascout.campaign.formats import export

        return export(self, fmt, annotators=annotators, image_base_url=image_base_url)


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

    def spawn(self) -> None:
        """Start the process now, idle: it loads the campaign's embeddings and graph and its
        libraries while the annotators label round 0, so the first round boundary does not wait
        for an interpreter to start."""
        with self._lock:
            self._spawn()

    def _start(self) -> None:
        self._spawn()
        self.conn.send("select")
        self.busy = True

    def _spawn(self) -> None:
        import multiprocessing

        if self.proc is None or not self.proc.is_alive():
            ctx = multiprocessing.get_context("spawn")
            self.conn, child = ctx.Pipe()
            self.proc = ctx.Process(target=_select_worker_main, args=(self.directory, child),
                                    name="datascout-select", daemon=True)
            self.proc.start()
            child.close()

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
    try:  # warm up while idle: the libraries, the checked embeddings and the graph
        import sklearn.linear_model  # noqa: F401

        import datascout.loop  # noqa: F401

        camp.graph()
    except Exception as exc:  # reported by the first round that needs them
        log.debug("warming the selection process failed: %s", exc)
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
