"""Embedding throughput: the pipeline (``embed_to_dir``: chunking, memory-mapped writes,
normalisation, manifest) against calling the model directly, in the same run; then the ONNX
Runtime text path and dynamic int8 quantisation against torch float32.

Writes the section ``embed`` of docs/benchmarks.md. Run:

    python benchmarks/bench_embed.py            # ~10 min on 2 shared cores
    python benchmarks/bench_embed.py --quick    # smaller, for a smoke run
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import markdown_table, peak_rss_mib, write_section  # noqa: E402

from datascout.datasets import load_fashion_mnist, load_fortunes  # noqa: E402
from datascout.embed import ArraySource, ImageEmbedder, TextEmbedder, embed_to_dir  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def pipeline_run(items, kind, embedder, chunk):
    with tempfile.TemporaryDirectory() as tmp:
        return timed(lambda: embed_to_dir(ArraySource(items, kind), embedder, Path(tmp) / "p",
                                          chunk_size=chunk, progress=False))[0]


def cosine_min(a, b):
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def bench_text(n, batch_sizes, threads_list, repeats):
    import torch

    texts = [t for t in load_fortunes().data if t.strip()]
    texts = [texts[i] for i in np.random.default_rng(0).choice(len(texts), n, replace=False)]
    rows = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        for bs in batch_sizes:
            emb = TextEmbedder(batch_size=bs).load()
            emb.encode(texts[:bs])  # warm-up
            direct, piped = [], []
            for _ in range(repeats):  # interleaved A B B A (cancels drift in the load), best of each
                direct.append(timed(lambda: emb.model_.encode(texts, batch_size=bs, convert_to_numpy=True))[0])
                piped.append(pipeline_run(texts, "text", emb, 2048))
                piped.append(pipeline_run(texts, "text", emb, 2048))
                direct.append(timed(lambda: emb.model_.encode(texts, batch_size=bs, convert_to_numpy=True))[0])
            d, p = min(direct), min(piped)
            rows.append(["MiniLM (fortunes)", threads, bs, n / d, n / p, d / p])
            print(rows[-1], flush=True)
    return rows, texts


def bench_text_backends(texts, bs, threads):
    """torch float32 vs ONNX Runtime vs dynamic int8 (all Linear, attention only), same texts."""
    import torch

    torch.set_num_threads(threads)
    base = TextEmbedder(batch_size=bs).load()
    onnx = TextEmbedder(batch_size=bs, backend="onnx").load()
    variants = {"torch float32": base.encode, "ONNX Runtime float32 (backend='onnx')": onnx.encode}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = torch.ao.quantization.quantize_dynamic(copy.deepcopy(base.model_), {torch.nn.Linear},
                                                      dtype=torch.qint8)
        att = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(base.model_),
            {n for n, m in base.model_.named_modules() if isinstance(m, torch.nn.Linear) and ".attention." in n},
            dtype=torch.qint8)
    variants["int8 dynamic, all Linear (not offered)"] = lambda t: full.encode(t, batch_size=bs)
    variants["int8 dynamic, attention only (not offered)"] = lambda t: att.encode(t, batch_size=bs)
    for fn in variants.values():
        fn(texts[:bs])  # warm-up (and the one-off ONNX export happened at load)
    ref = None
    times = {k: [] for k in variants}
    outs = {}
    for _ in range(2):
        for name, fn in variants.items():
            t, out = timed(lambda: fn(texts))
            times[name].append(t)
            outs[name] = np.asarray(out, dtype=np.float32)
    ref = outs["torch float32"]
    t_ref = min(times["torch float32"])
    rows = []
    for name in variants:
        t = min(times[name])
        rows.append([name, threads, bs, len(texts) / t, t_ref / t, cosine_min(ref, outs[name])])
        print(rows[-1], flush=True)
    return rows


def bench_images(n, sizes, batch_sizes, threads_list):
    import torch

    imgs = load_fashion_mnist().data[:n]
    rows = []
    for size, n_img in sizes:
        batch = imgs[:n_img]
        for threads in threads_list:
            torch.set_num_threads(threads)
            for bs in batch_sizes:
                emb = ImageEmbedder(image_size=size, batch_size=bs).load()
                emb.encode(batch[:bs])  # warm-up

                def direct():
                    with torch.inference_mode():
                        for a in range(0, len(batch), bs):
                            emb.model_(emb.to_tensor(batch[a:a + bs]))

                # interleaved A B B A (cancels drift in the load), best of each
                d1 = timed(direct)[0]
                p = min(pipeline_run(batch, "images", emb, 1024), pipeline_run(batch, "images", emb, 1024))
                d = min(d1, timed(direct)[0])
                rows.append([f"EfficientNet-Lite0 {size}px (Fashion-MNIST)", threads, bs,
                             n_img / d, n_img / p, d / p])
                print(rows[-1], flush=True)
    return rows


def render(text_rows, backend_rows, image_rows, n_text, img112, img224, rss_mib):
    header = ["workload", "threads", "batch", "direct items/s", "pipeline items/s", "pipeline / direct"]
    low = [r for r in text_rows + image_rows if r[5] < 0.95]
    onnx = backend_rows[1]
    onnx_ok = onnx[4] > 1.0 and onnx[5] >= 0.99
    return (
        "### Embedding throughput (`datascout embed`)\n\n"
        f"Pipeline = `embed_to_dir` (chunks, pre-allocated memory-mapped `.npy`, L2 normalisation, "
        f"skipped-item bookkeeping, manifest) against the model called directly on the same items "
        f"in the same run ({n_text} fortunes quotes; the first {img112} / {img224} Fashion-MNIST "
        f"images at 112 / 224 px); timed in the order direct, pipeline, pipeline, direct; best of each. "
        "Floor: pipeline / direct >= 0.95. "
        + ("Met in every row." if not low else
           f"NOT met in {len(low)} of {len(text_rows) + len(image_rows)} rows. The pipeline makes the "
           "same model call per chunk as the direct call, so the gap is most likely load from other jobs "
           "on the shared cores (rates swing 2x between neighbouring rows), but that is not verified "
           "here: the floor is unproven until a rerun on a quiet machine.")
        + "\n\n" + markdown_table(header, text_rows + image_rows)
        + "\n\n### Text backends (same quotes, same run)\n\n"
        + markdown_table(["backend", "threads", "batch", "sentences/s", "speed-up vs torch",
                          "min cosine vs torch"], backend_rows)
        + "\n\n"
        + (f"ONNX Runtime ran {onnx[4]:.2f}x the torch speed with min cosine {onnx[5]:.6f}: it meets "
           "the bar (faster, cosine >= 0.99) and is offered as `backend='onnx'`."
           if onnx_ok else
           f"ONNX Runtime ran {onnx[4]:.2f}x the torch speed here (min cosine {onnx[5]:.6f}): not "
           "faster in this run, so the CLI does not offer it; it stays a library option "
           "(`TextEmbedder(backend='onnx')`) for a rerun on a quiet machine.")
        + " Dynamic int8 is not offered: quantising every Linear layer, or only the attention "
          "layers, drops the min cosine below 0.99 (see the table), whatever the speed.\n"
        f"Peak RSS {rss_mib:.0f} MiB. The machine is shared with other jobs: "
        "compare ratios within this run, not absolute rates across runs.\n"
    )


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        n_text, img112, img224, reps = 128, 64, 32, 1  # each timed twice (A B B A)
    else:
        n_text, img112, img224, reps = 256, 128, 64, 2
    text_rows, texts = bench_text(n_text, [32, 64], [1, 2], reps)
    backend_rows = bench_text_backends(texts, 64, 2)
    image_rows = bench_images(img112, [(112, img112), (224, img224)], [32, 64], [2])
    body = render(text_rows, backend_rows, image_rows, n_text, img112, img224, peak_rss_mib())
    write_section("embed", body, "python benchmarks/bench_embed.py" + (" --quick" if args.quick else ""))
    print(body)


if __name__ == "__main__":
    main()
