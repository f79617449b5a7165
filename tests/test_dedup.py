"""p-Hash de-duplication: hashing, faiss semantics, exactness against brute force, and the greedy rule."""

from __future__ import annotations

import io
import logging

import faiss
import imagehash
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from shards.dedup import (
    Contamination,
    Duplicate,
    brute_force_contaminated,
    brute_force_duplicates,
    find_contaminated,
    find_duplicates,
    hamming,
    hex_of,
    phash_u64,
)

# ---------------------------------------------------------------- helpers


def textured(seed: int, size: int = 256) -> Image.Image:
    """A smooth random colour texture (low-frequency noise, bicubic-upsampled), like a plain aerial scene."""
    rng = np.random.default_rng(seed)
    small = (rng.random((12, 12, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(small).resize((size, size), Image.BICUBIC)
    grain = rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=float) + grain, 0, 255).astype(np.uint8))


def flip_bits(h: np.uint64, k: int, rng: np.random.Generator) -> np.uint64:
    mask = 0
    for bit in rng.choice(64, size=k, replace=False).tolist():
        mask |= 1 << bit
    return np.uint64(int(h) ^ mask)


def planted(n: int, n_near: int, max_flips: int, seed: int) -> np.ndarray:
    """Random 64-bit hashes, ``n_near`` of them replaced by copies of an earlier hash with 0..max_flips bit flips."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)
    for i in rng.choice(np.arange(1, n), size=n_near, replace=False).tolist():
        x[i] = flip_bits(x[rng.integers(0, i)], int(rng.integers(0, max_flips + 1)), rng)
    return x


def u64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


# ---------------------------------------------------------------- hashing


def test_phash_u64_matches_imagehash_string() -> None:
    images = [textured(s) for s in range(4)] + [Image.new("RGB", (64, 64), (30, 90, 200)), textured(9).convert("L")]
    for img in images:
        h = phash_u64(img)
        assert 0 <= h < 2**64
        assert hex_of(h) == str(imagehash.phash(img))


def test_jpeg_reencode_stays_close_and_other_image_is_far() -> None:
    img = textured(1)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    buf.seek(0)
    again = Image.open(buf).convert("RGB")
    assert hamming(phash_u64(img), phash_u64(again)) <= 2
    assert hamming(phash_u64(img), phash_u64(textured(2))) > 10


def test_hamming() -> None:
    assert hamming(0, 0) == 0
    assert hamming(0, 2**64 - 1) == 64
    assert hamming(0b1011, 0b0001) == 2


# ---------------------------------------------------------------- faiss behaviour the module relies on


def test_faiss_binary_range_search_radius_is_strict() -> None:
    """Canary: faiss returns distances < radius (so dedup searches with threshold + 1)."""
    x = u64(0, 0b11, 0b111)
    for index in (faiss.IndexBinaryFlat(64), faiss.IndexBinaryMultiHash(64, 4, 16)):
        index.add(x.view(np.uint8).reshape(-1, 8))
        _, dist, ids = index.range_search(x[:1].view(np.uint8).reshape(-1, 8), 2)
        assert sorted(ids.tolist()) == [0]
        _, dist, ids = index.range_search(x[:1].view(np.uint8).reshape(-1, 8), 3)
        assert sorted(ids.tolist()) == [0, 1]


@pytest.mark.parametrize("segments", [1, 2, 4, 8])
def test_multihash_exact_below_segments(segments: int) -> None:
    """Pigeonhole: the raw multi-index finds every pair within segments - 1, i.e. exactly brute force."""
    x = planted(1500, 400, segments + 2, seed=segments)
    codes = x.view(np.uint8).reshape(-1, 8)
    ref = np.bitwise_count(x[:, None] ^ x[None, :])
    index = faiss.IndexBinaryMultiHash(64, segments, 64 // segments)
    index.add(codes)
    t = segments - 1
    lims, _, ids = index.range_search(codes, t + 1)
    got = {(q, int(r)) for q in range(len(x)) for r in ids[lims[q]:lims[q + 1]]}
    assert got == set(zip(*[a.tolist() for a in np.nonzero(ref <= t)]))


# ---------------------------------------------------------------- exactness against brute force


@pytest.mark.parametrize("threshold", [0, 1, 2, 3, 5])
def test_find_duplicates_equals_brute_force(threshold: int) -> None:
    x = planted(4000, 1200, 4, seed=threshold)
    x[3000:3050] = x[17]  # a block of identical hashes
    assert find_duplicates(x, threshold) == brute_force_duplicates(x, threshold)


@pytest.mark.parametrize("threshold", [0, 1, 2, 3, 5])
def test_find_contaminated_equals_brute_force(threshold: int) -> None:
    x = planted(5000, 1500, 4, seed=10 + threshold)
    evals, train = x[:1500].copy(), x[1000:].copy()
    evals[100:130] = evals[5]  # identical eval images: all count as matches
    train[2000:2040] = evals[5]
    got = find_contaminated(train, evals, threshold)
    assert got == brute_force_contaminated(train, evals, threshold)
    assert len(got) > 0 and [c.train for c in got] == sorted(c.train for c in got)


@pytest.mark.parametrize("segments", [1, 2, 8])
def test_other_segment_counts_equal_brute_force(segments: int) -> None:
    x = planted(2000, 600, 4, seed=20 + segments)
    for threshold in (0, 2, 3):
        assert find_duplicates(x, threshold, segments) == brute_force_duplicates(x, threshold)
        assert find_contaminated(x[1000:], x[:1000], threshold, segments) == brute_force_contaminated(x[1000:], x[:1000], threshold)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 400),
    threshold=st.sampled_from([0, 1, 2, 3, 5]),
    base_bits=st.sampled_from([64, 12]),  # 12: few distinct values, many collisions and dense clusters
)
def test_property_equals_brute_force(seed: int, n: int, threshold: int, base_bits: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2**base_bits - 1, size=n, dtype=np.uint64, endpoint=True)
    for i in range(1, n):
        if rng.random() < 0.4:
            x[i] = flip_bits(x[rng.integers(0, i)], int(rng.integers(0, 5)), rng)
    assert find_duplicates(x, threshold) == brute_force_duplicates(x, threshold)
    cut = n // 2
    assert find_contaminated(x[cut:], x[:cut], threshold) == brute_force_contaminated(x[cut:], x[:cut], threshold)


def test_flat_fallback_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="shards.dedup"):
        find_duplicates(u64(1, 2, 3), threshold=4, segments=4)
    assert "IndexBinaryFlat" in caplog.text


# ---------------------------------------------------------------- the greedy rule by hand


def test_chain_removes_middle_only() -> None:
    a = 0
    b = 0b11  # d(a, b) = 2
    c = 0b1111  # d(b, c) = 2, d(a, c) = 4
    assert find_duplicates(u64(a, b, c), threshold=2) == [Duplicate(removed=1, kept=0, distance=2)]
    # order matters: with C first, C and A are kept and B goes to the earliest kept one, C
    assert find_duplicates(u64(c, b, a), threshold=2) == [Duplicate(removed=1, kept=0, distance=2)]


def test_kept_is_earliest_kept_not_nearest() -> None:
    x = u64(0b11, 0b1100, 0b1)  # second is at 4 from the first: kept; third is within 3 of both
    assert find_duplicates(x, threshold=3) == [Duplicate(2, 0, 1)]
    x = u64(0b0, 0b1110000, 0b110000)  # d(0,1)=3 > 2 kept; third: d=2 to first, d=1 to second
    assert find_duplicates(x, threshold=2) == [Duplicate(2, 0, 2)]


def test_identical_hashes_all_but_first_removed() -> None:
    x = np.concatenate([u64(123), np.full(999, 0xDEADBEEF, np.uint64), u64(0xDEADBEEF ^ 1)])
    dups = find_duplicates(x)
    assert dups == [Duplicate(i, 1, 0) for i in range(2, 1000)] + [Duplicate(1000, 1, 1)]


def test_identical_copies_of_a_removed_image_follow_it() -> None:
    x = u64(0, 0b1, 0b1, 0b1)  # the value 0b1 is removed for image 0, so are its copies
    assert find_duplicates(x, threshold=1) == [Duplicate(1, 0, 1), Duplicate(2, 0, 1), Duplicate(3, 0, 1)]


def test_threshold_is_inclusive() -> None:
    assert find_duplicates(u64(0, 0b11), threshold=2) == [Duplicate(1, 0, 2)]
    assert find_duplicates(u64(0, 0b111), threshold=2) == []
    assert find_contaminated(u64(0b111, 0b11), u64(0), threshold=2) == [Contamination(1, [(0, 2)], 1)]


def test_empty_and_single() -> None:
    empty = np.zeros(0, np.uint64)
    assert find_duplicates(empty) == [] and brute_force_duplicates(empty) == []
    assert find_duplicates(u64(42)) == []
    assert find_contaminated(empty, u64(1)) == [] and find_contaminated(u64(1), empty) == []
    assert brute_force_contaminated(empty, u64(1)) == []
    assert find_contaminated(u64(1), u64(1)) == [Contamination(0, [(0, 0)], 1)]


def test_contamination_matches_nearest_first_and_capped() -> None:
    evals = np.concatenate([np.full(15, 0b11, np.uint64), u64(0b1, 0)])  # 15 at d=2, then d=1 and d=0
    hits = find_contaminated(u64(0, 2**64 - 1), evals, threshold=2)
    assert len(hits) == 1 and hits[0].train == 0 and hits[0].n_matches == 17
    assert hits[0].matches == [(16, 0), (15, 1)] + [(e, 2) for e in range(8)]
    assert hits == brute_force_contaminated(u64(0, 2**64 - 1), evals, threshold=2)


def test_signed_and_list_inputs() -> None:
    big = 2**64 - 1
    assert find_duplicates([big, big ^ 1]) == [Duplicate(1, 0, 1)]
    assert find_duplicates(u64(big, big ^ 1).view(np.int64)) == [Duplicate(1, 0, 1)]


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        find_duplicates(u64(1), threshold=-1)
    with pytest.raises(ValueError):
        find_duplicates(u64(1), segments=3)


def test_image_phash_reduces_big_images_and_keeps_small_ones_exact() -> None:
    """Images under 2*hash_side are hashed exactly as imagehash does; bigger ones after a box reduction that
    moves the hash by a few bits at most, and copies of one image still hash identically."""
    from shards.dedup import image_phash

    small = textured(3).resize((200, 180))
    assert image_phash(small, 128) == phash_u64(small)
    big = textured(4).resize((900, 700), Image.Resampling.BICUBIC)
    assert image_phash(big, 0) == phash_u64(big)
    assert hamming(image_phash(big, 128), phash_u64(big)) <= 4
    assert image_phash(big.copy(), 128) == image_phash(big, 128)
