"""The evaluation suite (launch/eval_suite.py): splits, probes against plain sklearn, the feature cache, the suite file,
and whole runs on the shared real samples and on generated data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clip_pretrain  # noqa: F401 - registers rs-tiny
from clip_pretrain.evaluate import probes
from clip_pretrain.evaluate.class_splits import SPLIT_RULE, load_class_split, write_split_lists
from clip_pretrain.evaluate.common import EvalError, load_bundle
from clip_pretrain.evaluate.feature_cache import FeatureCache, file_key
from clip_pretrain.evaluate.suite import SuiteConfig, run_suite
from clip_pretrain.evaluate.suite_file import load_suite, shipped_suites
from launch import eval_suite as cli


def write_image(path: Path, seed: int, size: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def class_tree(root: Path, classes: dict[str, int]) -> Path:
    seed = 0
    for name, n in classes.items():
        for i in range(1, n + 1):
            write_image(root / name / f"img_{i}.png", seed)
            seed += 1
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from clip_pretrain.checkpoint import save_safetensors

    bundle = load_bundle("rs-tiny", None, torch.device("cpu"), init_seed=3)
    path = tmp_path_factory.mktemp("weights") / "final.safetensors"
    save_safetensors(bundle.model.state_dict(), path)
    return path


# ---- splits -------------------------------------------------------------------------------------------------------

def test_split_is_8_to_2_by_sorted_file_name(tmp_path):
    root = class_tree(tmp_path / "scenes", {"Airport": 10, "Beach": 5, "Desert": 2})
    split = load_class_split(root)
    assert split.classes == ["Airport", "Beach", "Desert"] and split.rule == SPLIT_RULE
    airport_train = [p.name for p, y in zip(split.train, split.train_labels) if y == 0]
    # plain string order: img_1, img_10, img_2, ... -> the first 8 are train
    assert airport_train == ["img_1.png", "img_10.png", "img_2.png", "img_3.png", "img_4.png", "img_5.png", "img_6.png",
                             "img_7.png"]
    assert [p.name for p, y in zip(split.test, split.test_labels) if y == 0] == ["img_8.png", "img_9.png"]
    assert np.bincount(split.train_labels).tolist() == [8, 4, 1] and np.bincount(split.test_labels).tolist() == [2, 1, 1]
    write_split_lists(split, tmp_path / "split.json")
    lists = json.loads((tmp_path / "split.json").read_text())
    assert lists["test"][0] == ["Airport/img_8.png", "Airport"] and len(lists["train"]) == 13
    assert load_class_split(root).train == split.train  # the same on every call


def test_shipped_train_test_roots_are_kept(tmp_path):
    train = class_tree(tmp_path / "train", {"a": 3, "b": 3})
    test = class_tree(tmp_path / "test", {"a": 1, "b": 2})
    split = load_class_split(train=train, test=test)
    assert split.rule == "shipped" and len(split.train) == 6 and len(split.test) == 3
    with pytest.raises(EvalError, match="no images in the train root"):
        load_class_split(train=class_tree(tmp_path / "t2", {"a": 2, "b": 2}), test=class_tree(tmp_path / "e2", {"c": 1, "a": 1}))
    with pytest.raises(EvalError, match="both train and test"):
        load_class_split(train=train)


# ---- probes against plain sklearn -----------------------------------------------------------------------------------

def clustered(n_classes=5, per_class=30, dim=16, seed=0, noise=0.9):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    y = np.repeat(np.arange(n_classes), per_class)
    x = centres[y] + noise * rng.normal(size=(len(y), dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    test = np.arange(len(y)) % 5 == 0
    return x[~test], y[~test], x[test], y[test]


def test_linear_probe_equals_plain_sklearn():
    from sklearn.linear_model import LogisticRegression

    tx, ty, ex, ey = clustered()
    got = probes.linear_probe(tx, ty, ex, ey, c_grid=(0.01, 1.0, 100.0))
    fit, val = probes.validation_split(ty)
    assert len(set(fit) & set(val)) == 0 and len(fit) + len(val) == len(ty)
    scores = {c: LogisticRegression(C=c, max_iter=1000, solver=probes.SOLVER).fit(tx[fit], ty[fit]).score(tx[val], ty[val]) for c in (0.01, 1.0, 100.0)}
    best = max(scores, key=lambda c: (scores[c], -c))
    assert got["C"] == best
    want = 100 * LogisticRegression(C=best, max_iter=1000, solver=probes.SOLVER).fit(tx, ty).score(ex, ey)
    assert got["top1"] == pytest.approx(want, abs=1e-9)
    assert 40 < got["top1"] <= 100


@pytest.mark.parametrize("k", [1, 5, 20])
def test_knn_equals_sklearn(k):
    from sklearn.neighbors import KNeighborsClassifier

    tx, ty, ex, ey = clustered(seed=k)
    got = probes.knn_classify(tx, ty, ex, ey, k)
    ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(tx, ty).predict(ex)
    assert np.array_equal(probes.knn_predict(tx, ty, ex, k), ref)
    assert got["top1"] == pytest.approx(100 * np.mean(ref == ey)) and got["k"] == k


def test_knn_tied_vote_goes_to_the_lower_class():
    tx = np.eye(4, dtype=np.float32)
    ty = np.array([1, 1, 0, 0])
    pred = probes.knn_predict(tx, ty, np.full((1, 4), 0.5, dtype=np.float32), k=4)
    assert pred.tolist() == [0]


def test_few_shot_reports_mean_and_spread():
    from sklearn.linear_model import LogisticRegression

    tx, ty, ex, ey = clustered(per_class=20)
    got = probes.few_shot(tx, ty, ex, ey, shots=(1, 4), seeds=3, c=1.0)
    assert set(got) == {"1-shot", "4-shot"}
    runs = []
    for seed in range(3):
        idx, short = probes.sample_shots(ty, 4, seed)
        assert np.bincount(ty[idx]).tolist() == [4] * 5 and short == 0
        runs.append(100 * LogisticRegression(C=1.0, max_iter=1000, solver=probes.SOLVER).fit(tx[idx], ty[idx]).score(ex, ey))
    assert got["4-shot"]["top1"] == pytest.approx(np.mean(runs)) and got["4-shot"]["top1_std"] == pytest.approx(np.std(runs, ddof=1))
    assert got["1-shot"]["top1_std"] > 0  # different draws, different probes
    assert probes.few_shot(tx, ty, ex, ey, shots=(100,), seeds=1)["100-shot"]["classes_with_fewer_images"] == 5


# ---- feature cache ------------------------------------------------------------------------------------------------

def test_feature_cache_embeds_each_image_once(tmp_path):
    paths = [write_image(tmp_path / "img" / f"{i}.png", i) for i in range(5)]
    calls = []

    def encode(todo):
        calls.append(list(todo))
        kept = [i for i, p in enumerate(todo) if p.name != "3.png"]  # 3.png "does not decode"
        return np.asarray([[float(todo[i].stem), 1.0] for i in kept], dtype=np.float32), np.asarray(kept), {"x": 1}

    cache = FeatureCache(tmp_path / "cache", "k1", {"model": "m"})
    feats, kept, _ = cache.features(paths, encode)
    assert kept.tolist() == [0, 1, 2, 4] and feats[:, 0].tolist() == [0, 1, 2, 4]
    again = FeatureCache(tmp_path / "cache", "k1", {"model": "m"})  # a later run
    feats2, kept2, _ = again.features(paths[:3], encode)
    assert len(calls) == 1 and again.computed == 0 and np.array_equal(feats2, feats[:3])
    write_image(paths[0], 99)  # an edited image is embedded afresh
    again.features(paths[:3], encode)
    assert [p.name for p in calls[-1]] == ["0.png"]
    assert FeatureCache(tmp_path / "cache", "k2", {"model": "other"}).rows == {}  # another model shares nothing
    (tmp_path / "cache" / "k1" / "part-broken.npz").write_bytes(b"not a zip")
    assert len(FeatureCache(tmp_path / "cache", "k1", {}).rows) == 5  # a damaged part is ignored, not fatal
    assert file_key(tmp_path / "nope.png").endswith("|missing")


# ---- suite file ---------------------------------------------------------------------------------------------------

def test_suite_file_errors_name_the_entry(tmp_path):
    bad = tmp_path / "s.yaml"
    for text, match in (("- {name: A, tasks: [zeroshot]}", "needs 'path'"),
                        ("- {name: A, tasks: [zeroshot, retrieval], path: x}", "different kinds"),
                        ("- {name: A, tasks: [linear], path: x}", "tasks"),
                        ("- {name: A, tasks: [knn], path: x, colour: red}", "unknown key"),
                        ("- {name: A, tasks: [knn], path: x}\n- {name: A, tasks: [knn], path: y}", "appears twice"),
                        ("name: A", "non-empty YAML list"),
                        ("- [1, 2", "not a readable YAML")):
        bad.write_text(text)
        with pytest.raises(EvalError, match=match):
            load_suite(bad)
    with pytest.raises(EvalError, match="shipped: demo, remoteclip"):
        load_suite("no-such-suite")


def test_shipped_remoteclip_suite_lists_the_papers_sets():
    assert "remoteclip" in shipped_suites()
    _, entries = load_suite("remoteclip", "/nonexistent")
    zs = [e.name for e in entries if "zeroshot" in e.tasks]
    assert len(zs) == 12 and {"AID", "EuroSAT", "RESISC45"} <= set(zs)
    assert [e.name for e in entries if e.tasks == ["retrieval"]] == ["RSITMD", "RSICD", "UCM-captions"]
    assert all(e.missing() for e in entries)  # nothing there: every dataset would be skipped, none is an error


# ---- whole runs ---------------------------------------------------------------------------------------------------

def write_suite(path: Path, entries: list[dict]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(entries))
    return path


@pytest.mark.shared_data
def test_suite_on_the_shared_real_samples(shared_data, tiny_checkpoint, tmp_path, capsys):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    suite = write_suite(tmp_path / "suite.yaml", [
        {"name": "AID-sample", "tasks": ["zeroshot", "linear_probe", "knn", "few_shot"], "path": "scenes/aid"},
        {"name": "dota-tiles", "tasks": ["zeroshot", "knn"], "path": "scenes/dota_p1888"},
        {"name": "UCM-captions", "tasks": ["retrieval"], "path": "captions/ucm/dataset.json", "split": "all"},
        {"name": "dota-p1888-captions", "tasks": ["retrieval"], "path": "captions/dota_p1888/dataset.json"},
        {"name": "DOTA", "tasks": ["counting"], "path": "detection/dota"},
        {"name": "RSITMD", "tasks": ["retrieval"], "path": "not/here/dataset_RSITMD.json"},
    ])
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["--checkpoint", str(tiny_checkpoint), "--model", "rs-tiny", "--suite", str(suite), "--data-root",
            str(shared_data), "--output", str(out), "--cache", str(cache), "--device", "cpu", "--workers", "0",
            "--shots", "1", "2", "4", "--few-shot-seeds", "3"]
    assert cli.main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    result = json.loads((out / "suite.json").read_text())
    meta = json.loads((out / "suite_meta.json").read_text())
    assert list(result) == ["zeroshot", "linear_probe", "knn", "few_shot", "retrieval", "counting"]
    assert set(result["zeroshot"]) == {"AID-sample", "dota-tiles"} and printed["knn"]["AID-sample"] == round(result["knn"]["AID-sample"]["top1"], 2)
    assert set(result["few_shot"]["AID-sample"]) == {"1-shot", "2-shot", "4-shot"}
    assert {"top1", "top1_std"} <= set(result["few_shot"]["AID-sample"]["4-shot"])
    assert {"i2t_R@1", "t2i_R@10", "mean_recall"} <= set(result["retrieval"]["UCM-captions"])
    assert result["retrieval"]["UCM-captions"]["n_images"] == 9
    assert [d["status"] for d in meta["datasets"]] == ["ran"] * 5 + ["skipped"]
    assert "not found" in meta["datasets"][-1]["reason"]
    # AID sample: 30 classes x 15 images -> 12 train / 3 test per class, the lists written out
    aid = meta["datasets"][0]
    assert (aid["n_train"], aid["n_test"], aid["n_classes"]) == (360, 90, 30)
    lists = json.loads(Path(aid["split_list"]).read_text())
    assert lists["test"][:3] == [["Airport/airport_7.jpg", "Airport"], ["Airport/airport_8.jpg", "Airport"],
                                 ["Airport/airport_9.jpg", "Airport"]]
    # the linear probe and k-NN equal plain sklearn on the cached features
    parts = sorted(cache.glob("*/part-*.npz"))
    rows = {}
    for part in parts:
        with np.load(part) as d:
            rows.update(zip(d["keys"].tolist(), d["features"]))
    root = shared_data / "scenes" / "aid"
    classes = sorted(lists["classes"])

    def xy(split):
        x = np.stack([rows[file_key(root / f)] for f, _ in lists[split]])
        return x, np.asarray([classes.index(c) for _, c in lists[split]])

    (tx, ty), (ex, ey) = xy("train"), xy("test")
    lp = result["linear_probe"]["AID-sample"]
    assert lp["top1"] == pytest.approx(100 * LogisticRegression(C=lp["C"], max_iter=1000, solver=probes.SOLVER).fit(tx, ty).score(ex, ey))
    knn = KNeighborsClassifier(n_neighbors=20, metric="cosine", algorithm="brute").fit(tx, ty)
    assert result["knn"]["AID-sample"]["top1"] == pytest.approx(100 * knn.score(ex, ey))
    # counting on the DOTA samples: every listed image is scored or left out with a reason
    cnt = result["counting"]["DOTA"]
    assert cnt["n_listed"] == cnt["n_images"] + sum(cnt["left_out"].values()) == 3
    # the table files
    assert (out / "suite.md").read_text().count("AID-sample") >= 1 and (out / "suite.html").exists()
    # a second run reuses every feature: nothing is embedded again, and the numbers are the same
    assert cli.main([*args, "--output", str(tmp_path / "out2")]) == 0
    meta2 = json.loads((tmp_path / "out2" / "suite_meta.json").read_text())
    assert meta2["feature_cache"]["embedded"] == 0 and meta2["feature_cache"]["reused"] > 0
    assert json.loads((tmp_path / "out2" / "suite.json").read_text()) == result


def test_suite_runs_each_image_once_and_survives_a_bad_dataset(tiny_checkpoint, tmp_path, monkeypatch):
    from clip_pretrain.evaluate import suite_tasks

    scenes = class_tree(tmp_path / "data" / "scenes", {"a": 5, "b": 5, "c": 5})
    (scenes / "c" / "img_5.png").write_bytes(b"\x89PNG broken")  # a corrupt test image: skipped and counted
    class_tree(tmp_path / "data" / "one", {"only": 4})
    suite = write_suite(tmp_path / "s.yaml", [
        {"name": "scenes", "tasks": ["zeroshot", "linear_probe", "knn", "few_shot"], "path": "scenes"},
        {"name": "one-class", "tasks": ["zeroshot"], "path": "one"},
    ])
    seen = []
    real = suite_tasks.encode_images
    monkeypatch.setattr(suite_tasks, "encode_images", lambda model, pre, todo, *a, **k: (seen.extend(todo), real(model, pre, todo, *a, **k))[1])
    result = run_suite(SuiteConfig(checkpoint=str(tiny_checkpoint), model="rs-tiny", suite=str(suite),
                                   data_root=str(tmp_path / "data"), output=str(tmp_path / "out"), device="cpu", workers=0,
                                   shots=[1, 2], few_shot_seeds=2))
    assert len(seen) == len(set(seen)) == 15  # every image once, for four tasks
    assert result["zeroshot"]["scenes"]["n_skipped_images"] == 1 and result["zeroshot"]["scenes"]["n_images"] == 2
    meta = json.loads((tmp_path / "out" / "suite_meta.json").read_text())
    assert meta["datasets"][1]["status"] == "failed" and "at least 2 class folders" in meta["datasets"][1]["reason"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # a bad setting stops at parsing, as in every tool
        cli.main(["--suite", "remoteclip"])
    assert exc.value.code == 2 and "checkpoint is required" in capsys.readouterr().err
    suite = write_suite(tmp_path / "s.yaml", [{"name": "x", "tasks": ["knn"], "path": "x"}])
    assert cli.main(["--checkpoint", str(tmp_path / "missing.pt"), "--suite", str(suite), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "missing.pt" in err and len(err.strip().splitlines()) == 1


def test_shipped_demo_suite_on_the_demo_data(tmp_path):
    """The demo's suite (every task) on freshly generated demo data, with a run folder as the checkpoint."""
    import shutil

    from synthetic.demo_data import generate_demo

    data = tmp_path / "data"
    generate_demo(data, seed=1, n_dota=12, n_coco=2, n_masks=2, n_captions=30, n_scenes_per_class=5, size=128)
    run = tmp_path / "run"
    bundle = load_bundle("rs-tiny", None, torch.device("cpu"), init_seed=5)
    from clip_pretrain.checkpoint import save_safetensors
    from clip_pretrain.identity import write_identity

    run.mkdir()
    save_safetensors(bundle.model.state_dict(), run / "final.safetensors")
    write_identity(run, "rs-tiny", bundle.model, bundle.quick_gelu)
    out = tmp_path / "suite"
    assert cli.main(["--checkpoint", str(run), "--suite", "demo", "--data-root", str(data), "--output", str(out),
                     "--device", "cpu", "--workers", "0", "--few-shot-seeds", "2", "--cache", str(tmp_path / "c")]) == 0
    result = json.loads((out / "suite.json").read_text())
    assert list(result) == ["zeroshot", "linear_probe", "knn", "few_shot", "retrieval", "counting"]
    meta = json.loads((out / "suite_meta.json").read_text())
    assert meta["model"] == "rs-tiny" and [d["status"] for d in meta["datasets"]] == ["ran"] * 3
    scenes = meta["datasets"][0]
    assert scenes["n_classes"] == 6 and scenes["n_train"] + scenes["n_test"] >= 30
    counting = result["counting"]["demo-dota"]
    assert counting["n_listed"] == 12 == counting["n_images"] + sum(counting["left_out"].values())
    assert "no paper numbers for rs-tiny" in (out / "suite.md").read_text()
    # rewriting the weights (another run in the same folder) is another model: nothing is reused
    shutil.copy(run / "final.safetensors", run / "other.safetensors")
    cli.main(["--checkpoint", str(run), "--suite", "demo", "--data-root", str(data), "--output", str(tmp_path / "s2"),
              "--device", "cpu", "--workers", "0", "--few-shot-seeds", "2", "--cache", str(tmp_path / "c")])
    assert json.loads((tmp_path / "s2" / "suite_meta.json").read_text())["feature_cache"]["reused"] == 0


def test_a_suite_where_nothing_ran_is_an_error_naming_the_data_root(tiny_checkpoint, tmp_path, capsys):
    """The first thing a user meets with a shipped suite: a --data-root that holds none of its folders."""
    out = tmp_path / "out"
    assert cli.main(["--checkpoint", str(tiny_checkpoint), "--model", "rs-tiny", "--suite", "remoteclip",
                     "--data-root", str(tmp_path / "nowhere"), "--output", str(out), "--device", "cpu",
                     "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none of the 16 datasets" in err[0] and "--data-root" in err[0] and "AID" in err[0]
    assert json.loads((out / "suite_meta.json").read_text())["status_counts"] == {"skipped": 16}
