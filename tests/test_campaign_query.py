"""A rare-concept campaign that starts from a text or an image query: the query is embedded with
the pool's own model (read from its manifest) and round 0 is the exact nearest items to it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datascout.campaign import Campaign
from datascout.cli import main

pytest.importorskip("torch")


def _rounds0(d):
    camp = Campaign(d)
    try:
        # the query's picks, best first (the round's audit items are uniform random: left out)
        got = [p for (p,) in camp.con.execute(
            "SELECT pos FROM selections WHERE round = 0 AND audit = 0 ORDER BY rank")]
        settings = json.loads(camp.con.execute("SELECT settings FROM rounds WHERE round = 0").fetchone()[0])
    finally:
        camp.close()
    return got, settings


def test_text_query_selects_the_nearest_quotes(tmp_path, capsys):
    from datascout.datasets import load
    from datascout.embed import TextEmbedder

    ds = load("fortunes")
    rows = []
    for name in ("love", "computers", "food"):
        rows += np.flatnonzero(ds.labels == ds.classes.index(name))[:40].tolist()
    items = [{"id": str(ds.ids[i]), "text": ds.data[i]} for i in rows]
    src = tmp_path / "items.jsonl"
    src.write_text("".join(json.dumps(it) + "\n" for it in items), encoding="utf-8")
    pool = tmp_path / "pool"
    assert main(["embed", "text", str(src), "--out", str(pool), "--quiet"]) == 0
    query = "my darling, I love you with all my heart"
    d = tmp_path / "camp"
    assert main(["campaign", "init", str(d), "--embeddings", str(pool / "embeddings.npy"), "--items", str(src),
                 "--positive-class", "love", "--query-text", query, "--batch-size", "10", "--k", "5"]) == 0
    # independent reference: the same model, cosine against every row, best first
    E = np.load(pool / "embeddings.npy")
    q = TextEmbedder().load().encode([query])[0]
    cos = (E @ q) / (np.linalg.norm(E, axis=1) * np.linalg.norm(q))
    got, settings = _rounds0(d)
    assert got == np.argsort(-cos, kind="stable")[:9].tolist()  # 10 minus 1 audit item
    assert settings["query"] == f"text: {query}"
    love = sum(items[p]["id"].startswith("love:") for p in got)
    assert love >= 6, f"only {love}/9 of the items nearest a love query are love quotes"


def test_image_query_finds_the_same_picture_first(tmp_path, fashion_ds):
    from PIL import Image

    ds = fashion_ds
    folder = tmp_path / "imgs"
    items = []
    for c in (1, 8):  # trousers, bags
        (folder / ds.classes[c]).mkdir(parents=True)
        for i in np.flatnonzero(ds.labels == c)[:15]:
            rel = f"{ds.classes[c]}/{i}.png"
            Image.fromarray(ds.data[i]).save(folder / rel)
    pool = tmp_path / "pool"
    assert main(["embed", "images", str(folder), "--out", str(pool), "--image-size", "64", "--quiet"]) == 0
    ids = np.load(pool / "ids.npy").tolist()
    items = [{"id": i, "image": str(folder / i)} for i in ids]
    src = tmp_path / "items.jsonl"
    src.write_text("".join(json.dumps(it) + "\n" for it in items), encoding="utf-8")
    probe = ids[20]
    d = tmp_path / "camp"
    assert main(["campaign", "init", str(d), "--embeddings", str(pool / "embeddings.npy"), "--items", str(src),
                 "--positive-class", "bag", "--query-image", str(folder / probe), "--batch-size", "5"]) == 0
    got, settings = _rounds0(d)
    assert ids[got[0]] == probe  # the picture itself is its own nearest item (cosine 1)
    E = np.load(pool / "embeddings.npy").astype(np.float64)
    assert got == np.argsort(-(E @ E[20]), kind="stable")[:4].tolist()  # 5 minus 1 audit item
    assert settings["query"].startswith("image: ")


def test_query_errors_are_one_line_and_leave_nothing(tmp_path, capsys):
    from test_campaign_support import fortunes_items, write_inputs

    items, X, _, _ = fortunes_items(n_per_class=10)
    emb, items_path = write_inputs(tmp_path, items, X)
    d = tmp_path / "camp"
    # a bare .npy has no manifest: the pool's model is unknown
    assert main(["campaign", "init", str(d), "--embeddings", str(emb), "--items", str(items_path),
                 "--positive-class", "art", "--query-text", "a painting"]) == 2
    err = capsys.readouterr().err
    assert "needs embeddings made by 'datascout embed'" in err and len(err.strip().splitlines()) == 1
    assert not d.exists() or not list(d.glob("campaign.db*"))
    # an image query against a text pool
    pool = tmp_path / "pool"
    src = tmp_path / "texts.jsonl"
    src.write_text("".join(json.dumps({"id": it["id"], "text": it["text"]}) + "\n" for it in items[:12]))
    assert main(["embed", "text", str(src), "--out", str(pool), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["campaign", "init", str(d), "--embeddings", str(pool / "embeddings.npy"), "--items", str(src),
                 "--positive-class", "art", "--query-image", str(tmp_path / "x.png")]) == 2
    assert "an image query needs a pool of image embeddings but this pool holds 'text'" in capsys.readouterr().err
    assert main(["campaign", "init", str(d), "--embeddings", str(pool / "embeddings.npy"), "--items", str(src),
                 "--positive-class", "art", "--query-text", "   "]) == 2
    assert "the query text is empty" in capsys.readouterr().err
    assert not d.exists() or not list(d.glob("campaign.db*"))
