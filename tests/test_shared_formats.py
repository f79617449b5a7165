"""The shared layer's format owners (shard sample, Karpathy json), file helpers and torch helpers, on their own."""

from __future__ import annotations

import json
import tarfile

import pytest
import torch
import webdataset as wds

from rs_common.errors import AnnotationError, LayoutError
from rs_common.files import atomic_write_json, atomic_write_text, list_images
from rs_common.formats import karpathy, shard_sample
from rs_common.torch_env import precision_autocast, resolve_device
from shards.writer import write_shard


@pytest.mark.parametrize("name", ["a.jpg", "dir/a.b.json", "dir/a", ".hidden.jpg", "x/.y.txt", "a.", "d.ir/k.txt",
                                  "src__tile_1_0a1b2c3d.jpg"])
def test_member_key_rule_is_webdatasets(name):
    key, ext = wds.tariterators.base_plus_ext(name)
    assert shard_sample.split_member(name) == (None if key is None else (key, ext))


def test_made_keys_hold_no_dot_and_split_back():
    key = shard_sample.make_key("ucm.v2", "images/a.b/tile.01.tif")
    assert "." not in key
    assert shard_sample.split_member(f"{key}.json") == (key, "json")


def test_read_shard_locates_members_and_reads_the_json(tmp_path):
    meta = {"key": "s__a", "captions": ["  a red field . ", "", 3, "red ground ."]}
    path = tmp_path / "shard-000000.tar"
    write_shard(path, [("s__a", shard_sample.sample_members(b"\xff\xd8jpeg", "a red field .", meta)),
                       ("s__b", {"png": b"png bytes"})])
    samples = shard_sample.read_shard(path)
    assert [s.key for s in samples] == ["s__a", "s__b"]
    a, b = samples
    assert list(a.members) == ["jpg", "txt", "json"] and set(a.data) == {"json"}
    with open(path, "rb") as fh:
        fh.seek(a.members["jpg"].offset)
        assert fh.read(a.members["jpg"].size) == b"\xff\xd8jpeg"
    assert shard_sample.json_captions(a.data["json"]) == ["  a red field . ", "red ground ."]
    assert b.data == {} and shard_sample.sample_keys(path) == {"s__a", "s__b"}
    assert shard_sample.json_captions(b'{"captions": "not a list"}') == []
    with pytest.raises(ValueError):
        shard_sample.json_captions(b"{broken")
    with tarfile.open(path) as tar:
        assert tar.getnames()[:3] == ["s__a.jpg", "s__a.txt", "s__a.json"]


def test_build_state(tmp_path):
    assert shard_sample.build_state(tmp_path) == "none"
    atomic_write_json(tmp_path / shard_sample.BUILD_MARKER, {"tool": "x"})
    assert shard_sample.build_state(tmp_path) == "unfinished"
    (tmp_path / shard_sample.MANIFEST).write_text("{}")  # not a build's manifest
    assert shard_sample.build_state(tmp_path) == "unfinished"
    atomic_write_json(tmp_path / shard_sample.MANIFEST, {"shards": [], "num_samples": 0, "inputs": []})
    assert shard_sample.build_state(tmp_path) == "finished"


def test_karpathy_entries_and_errors(tmp_path):
    (tmp_path / "imgs").mkdir()
    caps = tmp_path / "dataset_x.json"
    caps.write_text(json.dumps({"images": [
        {"filename": "a.png", "split": "test", "sentences": [{"raw": " a field "}, {"tokens": ["two", "words"]}]},
        {"filename": "", "sentences": []},
        {"filename": "b.png", "sentences": []},
    ]}))
    assert karpathy.caption_json_files(tmp_path) == [caps]
    first, nameless, bare = karpathy.iter_entries(caps, tmp_path)
    assert first.image_path == tmp_path / "imgs" / "a.png" and first.rel_path == "imgs/a.png"
    assert first.captions == ("a field", "two words") and first.split == "test" and first.problem is None
    assert not nameless.named and "no filename" in nameless.problem
    assert "no sentences" in bare.problem
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(AnnotationError, match="not a Karpathy caption json"):
        list(karpathy.iter_entries(tmp_path / "list.json", tmp_path))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(LayoutError, match="a Karpathy .json file"):
        karpathy.caption_json_files(tmp_path / "notes.txt")


def test_atomic_text_and_listing(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "héllo\n")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n" and not (tmp_path / "a.txt.tmp").exists()
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("d/x.JPG", "d/e/y.tif", "d/.z.png", "d/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d" / "e" / "loop").symlink_to(tmp_path / "d")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path / "d")] == ["d/e/y.tif", "d/x.JPG"]


def test_precision_autocast_and_device():
    cpu = torch.device("cpu")
    assert not isinstance(precision_autocast("amp", cpu), torch.autocast)  # amp on CPU is plain float32
    assert isinstance(precision_autocast("amp_bf16", cpu), torch.autocast)
    assert not isinstance(precision_autocast("fp32", cpu), torch.autocast)
    assert resolve_device("cpu") == cpu

    class Mine(ValueError):
        pass

    with pytest.raises(Mine, match="not a device name"):
        resolve_device("bogus", Mine)
