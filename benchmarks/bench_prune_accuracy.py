"""Accuracy vs fraction kept: each pruning method vs random, on real data.

Data (train split pruned, test split untouched):
  * fashion-mnist: the EfficientNet pool under cache_dir()/pools/fashion-mnist when one exists,
    else PCA-64 pixel embeddings; ``--fmnist-train`` items of the 60k training images, the
    official 10k test images;
  * fortunes: MiniLM embeddings (cache_dir()/pools/fortunes or the cached
    fortunes-minilm-n*.npy) when present, else TF-IDF + SVD-128 of the quotes (said in the table);
  * letter: 20,000 x 16, stratified 80/20 split.
Models: logistic regression (all methods) and a small MLP (one hidden layer of 128; a subset of
methods, to fit the time budget). Seeds 0, 1, 2 (the seed drives the scores' randomness, the
sampler's ties and the model). Reported: mean and std of test accuracy, and the difference to
random at the same fraction and model.

Run: python benchmarks/bench_prune_accuracy.py [--datasets fashion-mnist letter fortunes]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import markdown_table, write_section  # noqa: E402

from datascout.datasets import cache_dir, load  # noqa: E402
from datascout.prune import PruneConfig, evaluate_pruning, plot_accuracy_vs_fraction  # noqa: E402

FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
SEEDS = (0, 1, 2)


def configs(n_clusters):
    return {
        "random": PruneConfig(method="random", sampler="top"),
        "prototypes (auto)": PruneConfig(method="prototypes", sampler="auto", n_clusters=n_clusters),
        "prototypes (hard)": PruneConfig(method="prototypes", sampler="top", n_clusters=n_clusters),
        "el2n (top)": PruneConfig(method="el2n", sampler="top"),
        "el2n (ccs)": PruneConfig(method="el2n", sampler="ccs", ccs_beta=0.1),
        "forgetting (top)": PruneConfig(method="forgetting", sampler="top"),
        "semdedup": PruneConfig(method="semdedup", sampler="top", n_clusters=n_clusters),
    }


MLP_METHODS = ("random", "prototypes (auto)", "el2n (top)", "el2n (ccs)")


def _pool(name):
    """An embeddings pool another command produced: (X, labels, description) or None."""
    d = cache_dir() / "pools" / name
    if not d.is_dir():
        return None
    from datascout.io import load_embeddings, load_labels

    for emb in sorted(d.glob("*.npy")) + sorted(d.glob("*.npz")) + sorted(d.glob("*.parquet")):
        if "label" in emb.name:
            continue
        for lab in sorted(d.glob("*label*")):
            try:
                X, ids = load_embeddings(emb)
                y, _ = load_labels(lab, ids=ids)
            except Exception:
                continue
            if len(y) == X.shape[0]:
                return np.asarray(X, dtype=np.float32), np.asarray(y), f"pool {name}/{emb.name}"
    return None


def fashion(args):
    ds_pool = _pool("fashion-mnist")
    if ds_pool is not None and len(ds_pool[1]) == 70000:
        X, y, what = ds_pool
    else:
        from datascout.datasets import fashion_mnist_pixel_embeddings

        X, ds = fashion_mnist_pixel_embeddings(64)
        y, what = ds.labels, "PCA-64 pixel embeddings"
    rng = np.random.default_rng(0)
    tr = rng.choice(60000, args.fmnist_train, replace=False)
    te = np.arange(60000, 70000)
    return X[tr], y[tr], X[te], y[te], what


def fortunes(args):
    ds = load("fortunes")
    found = _pool("fortunes")
    if found is not None and len(found[1]) == len(ds.labels):
        X, y, what = found
    else:
        cached = sorted(cache_dir().glob(f"fortunes-minilm-n{len(ds.labels)}.npy"))
        if cached:
            X, y, what = np.load(cached[0]).astype(np.float32), ds.labels, "MiniLM (all-MiniLM-L6-v2) embeddings"
        else:
            from sklearn.decomposition import TruncatedSVD
            from sklearn.feature_extraction.text import TfidfVectorizer

            T = TfidfVectorizer(min_df=2, sublinear_tf=True).fit_transform(ds.data)
            X = TruncatedSVD(128, random_state=0).fit_transform(T).astype(np.float32)
            y, what = ds.labels, "TF-IDF + SVD-128 (no MiniLM pool was cached yet)"
    return _split(X, y) + (what,)


def letter(args):
    ds = load("letter")
    return _split(ds.data.astype(np.float32), ds.labels) + ("16 raw features",)


def _split(X, y):
    from sklearn.model_selection import train_test_split

    keep = np.bincount(y)[y] >= 2
    X, y = X[keep], y[keep]
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y)
    return X[tr], y[tr], X[te], y[te]


LOADERS = {"fashion-mnist": fashion, "letter": letter, "fortunes": fortunes}


def summarise(records, name):
    keys = {}
    for r in records:
        keys.setdefault((r["model"], r["name"], r["fraction"]), []).append(r["accuracy"])
    rows, wins = [], []
    for model in ("scaled-logreg", "scaled-mlp"):
        names = [n for n in dict.fromkeys(r["name"] for r in records if r["model"] == model)]
        for n in names:
            row = [model, n]
            for f in FRACTIONS:
                a = np.asarray(keys.get((model, n, f), [np.nan]))
                base = np.asarray(keys.get((model, "random", f), [np.nan]))
                diff = a.mean() - base.mean()
                cell = f"{a.mean():.4f} ± {a.std():.4f}"
                if n != "random":
                    cell += f" ({diff:+.4f})"
                    # beats random when the mean gain exceeds both spreads
                    if diff > max(a.std(), base.std()):
                        wins.append(f"{n} ({model}) at {int(f * 100)}%: {diff:+.4f}")
                row.append(cell)
            rows.append(row)
    table = markdown_table(["model", "method"] + [f"{int(f * 100)}% kept" for f in FRACTIONS], rows)
    verdict = ("Beats random by more than the spread of either: " + "; ".join(wins) + "."
               if wins else "No method beats random by more than the spread of seeds.")
    return table, verdict


def run_dataset(name, args):
    t0 = time.perf_counter()
    Xtr, ytr, Xte, yte, what = LOADERS[name](args)
    n_clusters = max(10, len(ytr) // 200)
    cfgs = configs(n_clusters)
    rec = evaluate_pruning(Xtr, ytr, Xte, yte, cfgs, FRACTIONS, seeds=SEEDS, models=("scaled-logreg",))
    print(name, "logreg done", round(time.perf_counter() - t0), "s", flush=True)
    if name in args.mlp:
        rec += evaluate_pruning(Xtr, ytr, Xte, yte, {k: cfgs[k] for k in MLP_METHODS}, FRACTIONS,
                                seeds=SEEDS, models=("scaled-mlp",))
    from datascout.models import make_model

    full = float(np.mean(make_model("scaled-logreg").fit(Xtr, ytr).predict(Xte) == yte))
    secs = time.perf_counter() - t0
    plot_accuracy_vs_fraction([r for r in rec if r["model"] == "scaled-logreg"],
                              Path(args.plots) / f"prune-{name}.png", title=f"{name}: logistic regression")
    table, verdict = summarise(rec, name)
    return (f"### {name}: {what}; {len(ytr):,} train / {len(yte):,} test, {len(np.unique(ytr))} classes\n\n"
            f"Logistic regression on 100% of the training split: {full:.4f}. k-means clusters: {n_clusters}. "
            f"Mean ± std of test accuracy over seeds {list(SEEDS)}; in brackets the difference to random "
            f"at the same fraction. {secs:.0f} s.\n\n{table}\n\n{verdict}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["fashion-mnist", "fortunes", "letter"])
    ap.add_argument("--fmnist-train", type=int, default=10000)
    ap.add_argument("--mlp", nargs="*", default=["fashion-mnist"], help="data sets that also get the MLP")
    ap.add_argument("--section", default="prune-accuracy",
                    help="section of docs/benchmarks.md (one per process when data sets run side by side)")
    ap.add_argument("--plots", default=str(cache_dir() / "bench-prune"), help="folder for PNG plots")
    args = ap.parse_args()
    Path(args.plots).mkdir(parents=True, exist_ok=True)
    cmd = "python " + " ".join(["benchmarks/bench_prune_accuracy.py"] + sys.argv[1:])
    sections = {}
    for name in args.datasets:
        sections[name] = run_dataset(name, args)
        print(sections[name], flush=True)
        # the section is rewritten after each data set, so a long run shows its progress
        title = "## Pruning: accuracy vs fraction kept" + (
            "" if args.section == "prune-accuracy" else f" ({', '.join(sections)})")
        body = (title + "\n\n"
                "Methods: random; prototypes (distance to the nearest of k-means centroids on normalised "
                "embeddings; *auto* keeps easy below 50% kept and hard from 50%; *hard* always keeps the "
                "farthest); EL2N (5 softmax-regression proxies, 2 epochs) keeping the highest, or CCS over "
                "EL2N (beta 0.1, 50 strata); forgetting events (10 epochs) keeping the highest; SemDeDup "
                "keeping the least redundant (highest 1 - max similarity). Evaluation model: scikit-learn "
                "logistic regression on standardised features; MLP: one hidden layer of 128 (Adam, early "
                f"stopping), on {', '.join(args.mlp) or 'no data set'} only, for a subset of methods (time "
                "budget).\n\n" + "\n\n".join(sections.values()))
        write_section(args.section, body, cmd)


if __name__ == "__main__":
    main()
