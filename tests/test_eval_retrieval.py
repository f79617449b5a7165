"""Retrieval evaluation: recall@k against a numpy reference and clip_benchmark, hand-made cases, eval sets, CLI."""

from __future__ import annotations

import io
import json
from html import unescape as html_unescape
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clip_pretrain  # noqa: F401 - registers rs-tiny
from clip_pretrain.evaluate.common import EvalError
from clip_pretrain.evaluate.eval_sets import expand_shard_pattern, load_karpathy_eval_set, load_shard_eval_set
from clip_pretrain.evaluate.recall import recall_at_k, slow_recall_at_k
from launch import eval_retrieval as cli
from shards import writer as shard_writer

KEYS = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mean_recall"]


def random_case(n_images: int, dim: int, seed: int, max_caps: int = 7):
    """Random embeddings, 0..max_caps captions per image (uneven; image 0 has at least one); captions sit near
    their image so recall is neither 0 nor 100; caption order is shuffled so an image's captions are not
    contiguous. Seeds whose score rows hold a near-tie (gap < 2e-6) among their top 11 are passed over:
    there float32 rounding (faiss vs torch vs numpy BLAS) may legitimately order two items either way."""
    for attempt in range(200):
        rng = np.random.default_rng([seed, attempt])
        img = rng.standard_normal((n_images, dim)).astype(np.float32)
        counts = rng.integers(0, max_caps + 1, size=n_images)
        counts[0] = max(counts[0], 1)
        t2i = np.repeat(np.arange(n_images), counts)
        rng.shuffle(t2i)
        txt = (img[t2i] + 1.3 * rng.standard_normal((len(t2i), dim))).astype(np.float32)
        if not has_near_ties(img, txt):
            return img, txt, t2i
    raise AssertionError("no tie-free case found")


def has_near_ties(img: np.ndarray, txt: np.ndarray, top: int = 11, gap: float = 2e-6) -> bool:
    i = img.astype(np.float64) / np.linalg.norm(img, axis=1, keepdims=True)
    t = txt.astype(np.float64) / np.linalg.norm(txt, axis=1, keepdims=True)
    scores = i @ t.T
    for rows in (scores, scores.T):
        best = -np.sort(-rows, axis=1)[:, :top]
        if best.shape[1] > 1 and np.diff(-best, axis=1).min() < gap:
            return True
    return False


def assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-9), key


# ---------------------------------------------------------------- against references


@pytest.mark.parametrize("n_images,dim,batch", [(1, 8, 4), (3, 8, 2), (12, 16, 5), (60, 32, 7), (400, 64, 128)])
def test_recall_matches_slow_reference(n_images, dim, batch):
    img, txt, t2i = random_case(n_images, dim, seed=n_images)
    fast = recall_at_k(img, txt, t2i, batch_size=batch, use_gpu=False)
    assert_same(fast, slow_recall_at_k(img, txt, t2i))
    assert set(KEYS) <= set(fast)
    assert fast["mean_recall"] == pytest.approx(np.mean([fast[k] for k in KEYS[:6]]))
    if n_images >= 60:
        assert 0 < fast["mean_recall"] < 100  # a non-trivial case


def test_recall_matches_clip_benchmark():
    from clip_benchmark.metrics.zeroshot_retrieval import recall_at_k as cb_recall_at_k

    for seed, n_images in [(0, 40), (1, 150), (2, 333)]:
        img, txt, t2i = random_case(n_images, 32, seed)
        ours = recall_at_k(img, txt, t2i, batch_size=50, use_gpu=False)
        img_t = torch.nn.functional.normalize(torch.from_numpy(img), dim=-1)
        txt_t = torch.nn.functional.normalize(torch.from_numpy(txt), dim=-1)
        scores = txt_t @ img_t.T  # (n_texts, n_images), as clip_benchmark builds it
        positive = torch.zeros_like(scores, dtype=torch.bool)
        positive[torch.arange(len(t2i)), torch.from_numpy(t2i)] = True
        for k in (1, 5, 10):
            # clip_benchmark's evaluate(): per-query recall > 0 (ANY positive in the top k), averaged
            t2i_cb = (cb_recall_at_k(scores, positive, k) > 0).float().mean().item() * 100
            i2t_cb = (cb_recall_at_k(scores.T, positive.T, k) > 0).float().mean().item() * 100
            assert ours[f"t2i_R@{k}"] == pytest.approx(t2i_cb, abs=1e-4)
            assert ours[f"i2t_R@{k}"] == pytest.approx(i2t_cb, abs=1e-4)


def test_batch_size_and_normalisation_do_not_matter():
    img, txt, t2i = random_case(80, 24, seed=5)
    ref = recall_at_k(img, txt, t2i, use_gpu=False)
    assert_same(ref, recall_at_k(img * 3.0, torch.from_numpy(txt) * 0.2, t2i.tolist(), batch_size=1, use_gpu=False))
    assert_same(ref, recall_at_k(img.astype(np.float64), txt, t2i, batch_size=13, use_gpu=False))
    half = recall_at_k(torch.from_numpy(img).bfloat16(), torch.from_numpy(txt).half(), t2i, use_gpu=False)
    assert 0 < half["mean_recall"] < 100  # low-precision tensors (as autocast gives them) are accepted


def test_input_is_not_modified_and_errors_are_clear():
    img, txt, t2i = random_case(10, 8, seed=3)
    before = img.copy()
    recall_at_k(img, txt, t2i, use_gpu=False)
    np.testing.assert_array_equal(img, before)
    with pytest.raises(EvalError, match="entries for"):
        recall_at_k(img, txt, t2i[:-1], use_gpu=False)
    with pytest.raises(EvalError, match="outside"):
        recall_at_k(img, txt, np.full(len(t2i), 10), use_gpu=False)
    with pytest.raises(EvalError, match="dim"):
        recall_at_k(img, txt[:, :4], t2i, use_gpu=False)
    bad = img.copy()
    bad[2, 0] = np.nan
    with pytest.raises(EvalError, match="NaN"):
        recall_at_k(bad, txt, t2i, use_gpu=False)


# ---------------------------------------------------------------- hand-made cases


def unit(angle_deg: float, dim: int = 4) -> np.ndarray:
    """A unit vector in the plane of the first two axes; exact enough that ranks follow the angles."""
    v = np.zeros(dim, np.float32)
    v[0], v[1] = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return v


def test_positive_at_rank_6_counts_at_r10_not_r5():
    # images at 0, 10, ..., 110 degrees; text 0 points at 0 degrees but belongs to image 5 (6th best)
    img = np.stack([unit(10 * i) for i in range(12)])
    txt = np.stack([unit(0), unit(110)])
    t2i = np.array([5, 11])
    res = recall_at_k(img, txt, t2i, use_gpu=False)
    # t2i: text 0 -> image 5 at rank 6 (miss @1/@5, hit @10); text 1 -> image 11 at rank 1
    assert (res["t2i_R@1"], res["t2i_R@5"], res["t2i_R@10"]) == (50.0, 50.0, 100.0)
    # i2t: image 5 (50 deg) sees text 0 (0 deg) and text 1 (110 deg): text 0 is nearer -> hit @1;
    # image 11 sees text 1 first -> hit @1; the other 10 images have no captions -> misses
    assert res["i2t_R@1"] == res["i2t_R@10"] == pytest.approx(100 * 2 / 12)
    assert_same(res, slow_recall_at_k(img, txt, t2i))


def test_any_of_several_positives_is_a_hit():
    # image 0 has five captions; only the fifth points at it, the others at image 1
    img = np.stack([unit(0), unit(90)])
    txt = np.stack([unit(80), unit(85), unit(88), unit(89), unit(2)])
    t2i = np.zeros(5, dtype=np.int64)
    res = recall_at_k(img, txt, t2i, ks=(1, 2), use_gpu=False)
    assert res["i2t_R@1"] == 50.0  # image 0 hits at 1 through its fifth caption; image 1 has no captions
    assert res["t2i_R@1"] == 20.0  # only the fifth caption finds image 0 first
    assert res["t2i_R@2"] == 100.0
    assert_same(res, slow_recall_at_k(img, txt, t2i, ks=(1, 2)))


def test_identical_rows_tie_counts():
    # 12 identical images (exact ties for every text) and one caption per image, all identical too: every query
    # sees the same all-tied row, so torch.topk keeps the same k items for all of them (which k is its choice:
    # tests/test_retrieval_ties.py), and exactly k of the 12 queries find their positive among them
    img = np.tile(unit(0), (12, 1))
    txt = np.tile(unit(30), (12, 1))
    t2i = np.arange(12)
    res = recall_at_k(img, txt, t2i, use_gpu=False)
    assert (res["t2i_R@1"], res["t2i_R@5"], res["t2i_R@10"]) == pytest.approx((100 / 12, 500 / 12, 1000 / 12))
    assert (res["i2t_R@1"], res["i2t_R@5"], res["i2t_R@10"]) == pytest.approx((100 / 12, 500 / 12, 1000 / 12))
    assert_same(res, slow_recall_at_k(img, txt, t2i))
    # the same outcome with any batching (faiss's BLAS path starts at 20 queries; check both sides of it)
    big_img = np.tile(unit(0), (40, 1))
    big_txt = np.tile(unit(30), (40, 1))
    for batch in (1, 7, 40):
        r = recall_at_k(big_img, big_txt, np.arange(40), batch_size=batch, use_gpu=False)
        assert r["t2i_R@10"] == pytest.approx(100 * 10 / 40)


def test_tied_duplicate_caption_in_two_images():
    # two images with one identical embedding (the same scene twice), each with an identical caption
    img = np.stack([unit(0), unit(0), unit(90)])
    txt = np.stack([unit(5), unit(5), unit(90)])
    t2i = np.array([0, 1, 2])
    res = recall_at_k(img, txt, t2i, ks=(1, 2), use_gpu=False)
    # text 1 ties between images 0 and 1: torch.topk of a 3-long row is an insertion sort, so image 0 (lower
    # index) is kept -> miss @1, hit @2 (clip_benchmark on CPU gives the same)
    assert res["t2i_R@1"] == pytest.approx(200 / 3)
    assert res["t2i_R@2"] == 100.0
    assert res["i2t_R@1"] == pytest.approx(200 / 3)  # image 1's best texts tie: text 0 first
    assert_same(res, slow_recall_at_k(img, txt, t2i, ks=(1, 2)))


def test_k_larger_than_the_database():
    img = np.stack([unit(0), unit(90)])
    txt = np.stack([unit(80), unit(10), unit(40)])
    res = recall_at_k(img, txt, [0, 1, 0], use_gpu=False)
    assert res["t2i_R@5"] == res["t2i_R@10"] == res["i2t_R@5"] == 100.0
    assert res["t2i_R@1"] == pytest.approx(100 / 3)
    assert_same(res, slow_recall_at_k(img, txt, [0, 1, 0]))


# ---------------------------------------------------------------- eval sets


def write_shard(path: Path, samples: list[tuple[str, bytes | None, dict | None]]) -> None:
    """A shard written by stage 0's own writer (``<key>.jpg`` + ``<key>.json``)."""
    members = []
    for key, jpg, meta in samples:
        files = {}
        if jpg is not None:
            files["jpg"] = jpg
        if meta is not None:
            files["json"] = json.dumps(meta).encode()
        members.append((key, files))
    shard_writer.write_shard(path, members)


def jpeg(color: tuple[int, int, int], size: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def shard_dir(tmp_path) -> Path:
    d = tmp_path / "shards"
    d.mkdir()
    write_shard(d / "shard-000000.tar", [
        ("src/a", jpeg((200, 10, 10)), {"captions": ["a red field .", "red ground ."]}),
        ("src/b", jpeg((10, 200, 10)), {"captions": ["a green forest ."]}),
        ("src/nocap", jpeg((0, 0, 0)), {"captions": []}),
    ])
    write_shard(d / "shard-000001.tar", [
        ("src/c", jpeg((10, 10, 200)), {"captions": ["blue water .", "a lake ."]}),
        ("src/bad", b"not a jpeg at all", {"captions": ["a broken image ."]}),
        ("src/noimg", None, {"captions": ["no image here ."]}),
    ])
    return d


def test_shard_eval_set(shard_dir):
    es = load_shard_eval_set(shard_dir)
    assert [i.key for i in es.items] == ["src/a", "src/b", "src/c", "src/bad"]
    assert es.items[0].captions == ("a red field .", "red ground .")
    assert es.skipped == {"no_captions": 1, "no_image": 1}
    assert es.items[2].read_bytes()[:2] == b"\xff\xd8"
    brace = load_shard_eval_set(str(shard_dir / "shard-{000000..000001}.tar"))
    assert [i.key for i in brace.items] == [i.key for i in es.items]
    assert len(expand_shard_pattern(str(shard_dir / "shard-*.tar"))) == 2
    with pytest.raises(EvalError, match="8 of 10 shards not found"):
        expand_shard_pattern(str(shard_dir / "shard-{000000..000009}.tar"))
    with pytest.raises(EvalError, match="nowhere"):
        load_shard_eval_set(shard_dir / "nowhere")


def test_cli_on_shards(shard_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["--model", "rs-tiny", "--checkpoint", "none", "--shards", str(shard_dir), "--output", str(out),
                     "--workers", "0", "--device", "cpu"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_images"] == 3 and m["n_texts"] == 5  # the broken JPEG and its caption are left out
    assert m["skipped"] == {"corrupt_image": 1}
    assert m["eval_set"]["skipped_when_listing"] == {"no_captions": 1, "no_image": 1}
    assert m["t2i_R@5"] == 100.0  # only three images
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n_images"] == 3
    # random init is seeded: a chance baseline is the same on every run
    assert cli.main(["--model", "rs-tiny", "--shards", str(shard_dir), "--output", str(tmp_path / "again"),
                     "--workers", "0", "--device", "cpu"]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert {k: again[k] for k in KEYS} == {k: m[k] for k in KEYS}


def report_weights(out: Path) -> str:
    """The weights the report's header names."""
    text = (out / "report.html").read_text()
    start = text.index("<b class='source'>") + len("<b class='source'>")
    return html_unescape(text[start:text.index("</b>", start)])


def test_report_names_the_weights_it_scored(shard_dir, tmp_path):
    from clip_pretrain.checkpoint import save_safetensors
    from clip_pretrain.evaluate.common import load_bundle
    from clip_pretrain.evaluate.retrieval import RetrievalEvalConfig, evaluate_retrieval

    def cfg(name: str, checkpoint: str | None = None) -> RetrievalEvalConfig:
        return RetrievalEvalConfig(model="rs-tiny", checkpoint=checkpoint, shards=str(shard_dir),
                                   output=str(tmp_path / name), device="cpu", workers=0, report_queries=2)

    # random init, from the command line and from code
    assert cli.main(["--model", "rs-tiny", "--shards", str(shard_dir), "--output", str(tmp_path / "rand"),
                     "--workers", "0", "--device", "cpu", "--report-queries", "2"]) == 0
    assert report_weights(tmp_path / "rand") == "random init (seed 0)"
    assert json.loads((tmp_path / "rand" / "metrics.json").read_text())["model_source"] == "random init (seed 0)"
    # a checkpoint file: its path
    bundle = load_bundle("rs-tiny", None, torch.device("cpu"))
    ckpt = tmp_path / "weights" / "final.safetensors"
    ckpt.parent.mkdir()
    save_safetensors(bundle.model.state_dict(), ckpt)
    evaluate_retrieval(cfg("file", str(ckpt)))
    assert report_weights(tmp_path / "file") == str(ckpt)
    # an in-memory model, as training passes it (cfg.checkpoint unset): never "None"
    m = evaluate_retrieval(cfg("mem"), bundle=bundle)
    assert m["checkpoint"] is None and report_weights(tmp_path / "mem") == m["model_source"]
    assert m["model_source"].startswith("in-memory rs-tiny model") and "None" not in m["model_source"]
    # ... the config's checkpoint when it names one, or what the caller says the model is
    evaluate_retrieval(cfg("mem_file", str(ckpt)), bundle=bundle)
    assert str(ckpt) in report_weights(tmp_path / "mem_file")
    evaluate_retrieval(cfg("mem_told"), bundle=bundle, source="training run runs/x, step 5 <final>")
    assert report_weights(tmp_path / "mem_told") == "training run runs/x, step 5 <final>"


def test_karpathy_splits(shared_data):
    root = shared_data / "captions/dota_p1888"
    assert len(load_karpathy_eval_set(root).items) == 6  # default split: test
    assert len(load_karpathy_eval_set(root / "dataset.json", split="all").items) == 30
    assert len(load_karpathy_eval_set(root, split="train,test").items) == 30
    assert len(load_karpathy_eval_set(root, images=root / "images", split="train").items) == 24
    with pytest.raises(EvalError, match="train 9"):
        load_karpathy_eval_set(shared_data / "captions/ucm")  # all nine are train
    with pytest.raises(EvalError, match="no_such_dir"):
        load_karpathy_eval_set(root, images=root / "no_such_dir")


# ---------------------------------------------------------------- command line on the real samples


def test_cli_end_to_end_ucm(shared_data, tmp_path):
    out = tmp_path / "ucm"
    rc = cli.main(["--model", "rs-tiny", "--captions", str(shared_data / "captions/ucm/dataset.json"), "--split", "all",
                   "--output", str(out), "--save-embeddings", "--batch-size", "4", "--workers", "0", "--device", "cpu"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    for key in KEYS:
        assert 0.0 <= m[key] <= 100.0, key
    assert m["n_images"] == 9 and m["n_texts"] == 45 and m["checkpoint"] is None
    t2i = json.loads((out / "text_to_image.json").read_text())
    img, txt = np.load(out / "image_emb.npy"), np.load(out / "text_emb.npy")
    assert img.shape == (9, 128) and txt.shape == (45, 128) and len(t2i) == 45
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    # the saved embeddings reproduce the metrics (not compared with the numpy reference: a random-init model
    # gives nearly identical embeddings, whose float32 near-ties BLAS and faiss may order differently)
    assert_same({k: m[k] for k in KEYS + ["n_images", "n_texts"]}, recall_at_k(img, txt, t2i, use_gpu=False))
    report = (out / "report.html").read_text()
    assert report.count("data:image/jpeg;base64,") >= 9 and "&#10003;" in report


def test_cli_help_and_bad_paths(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0 and "--save-embeddings" in capsys.readouterr().out
    missing = tmp_path / "missing.json"
    assert cli.main(["--model", "rs-tiny", "--captions", str(missing), "--output", str(tmp_path / "o")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert cli.main(["--model", "rs-tiny", "--shards", str(tmp_path / "none-*.tar")]) == 2
    assert "none-*.tar" in capsys.readouterr().err
    assert cli.main(["--model", "rs-tiny", "--shards", str(tmp_path)]) == 2
    assert "no shard" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # a bad config value stops at argument parsing, like argparse errors
        cli.main(["--captions", str(missing)])
    assert exc.value.code == 2 and "model is required" in capsys.readouterr().err


def test_cli_bad_checkpoint(shard_dir, tmp_path, capsys):
    ckpt = tmp_path / "nope.pt"
    args = ["--model", "rs-tiny", "--shards", str(shard_dir), "--output", str(tmp_path / "o"), "--workers", "0"]
    assert cli.main(args + ["--checkpoint", str(ckpt)]) == 2
    assert str(ckpt) in capsys.readouterr().err
    ckpt.write_bytes(b"garbage")
    assert cli.main(args + ["--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "checkpoint" in err
    assert cli.main(args + ["--model", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_cli_bad_inputs_are_one_line_errors_before_a_model_is_built(tmp_path, capsys, monkeypatch):
    """What a user gets wrong: every case exits 2 with one `error:` line naming the path, no traceback, and the
    model is never built (all are found from paths and the eval-set listing)."""
    import clip_pretrain.models as models

    monkeypatch.setattr(models, "create_clip", lambda *a, **k: pytest.fail("model built before the input checks"))
    (tmp_path / "images").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "images" / "a.png")
    caps = tmp_path / "dataset.json"
    caps.write_text(json.dumps({"images": [{"filename": "a.png", "split": "test", "sentences": [{"raw": "a field"}]}]}))
    (tmp_path / "far").mkdir()
    away = tmp_path / "far" / "dataset.json"
    away.write_text(caps.read_text())
    (tmp_path / "bad.json").write_text("{oops")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    base = ["--model", "rs-tiny", "--workers", "0", "--device", "cpu"]
    out = ["--output", str(tmp_path / "out")]
    cases = [
        (["--captions", str(tmp_path / "bad.json")] + out, "bad.json"),
        (["--captions", str(tmp_path / "list.json")] + out, "not a Karpathy caption json"),
        (["--captions", str(tmp_path / "empty")] + out, "no caption json"),
        (["--captions", str(tmp_path / "file.txt")] + out, "a Karpathy .json file or a folder"),
        (["--captions", str(caps), "--images", str(tmp_path / "file.txt")] + out, "a file, not an image folder"),
        (["--captions", str(away)] + out, "pass the folder that holds them as --images"),
        (["--captions", str(caps), "--split", "val"] + out, "no usable images in split 'val'"),
        (["--shards", str(tmp_path / "file.txt")] + out, "not a readable tar shard"),
        (["--captions", str(caps), "--output", str(tmp_path / "file.txt")], "exists and is not a folder"),
        (["--captions", str(caps), "--checkpoint", str(tmp_path / "nope.pt")] + out, "nope.pt"),
        (["--captions", str(caps), "--device", "bogus"] + out, "'bogus' is not a device name"),
    ]
    for extra, says in cases:
        assert cli.main(base + extra) == 2, extra
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert "Traceback" not in err and len(lines) == 1 and says in lines[0], (extra, err)
    with pytest.raises(SystemExit) as exc:
        cli.main(base + ["--captions", str(caps), "--report-queries", "-1"])
    assert exc.value.code == 2 and "report_queries must be >= 0" in capsys.readouterr().err
