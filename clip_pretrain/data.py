"""Training data: stage-0 webdataset shards -> (image tensor, caption tokens) batches, exactly resumable.

How an epoch is cut (the same on every process, from the seed, the epoch and the shard sizes alone):

* the shards are put in a seeded per-epoch order and seen as one stream of N samples;
* the stream is cut into ``world * workers`` contiguous, disjoint slots, one per (rank, loader worker), so a
  worker reads only the one or two shards its slot overlaps (no rank reads everything) and no sample is seen
  twice in an epoch; every slot yields the same number of full batches (the remainder is dropped, as
  open_clip_train's ``drop_last``), so all ranks take the same number of steps and DDP never waits forever;
* inside a slot a seeded shuffle buffer (webdataset's ``shuffle``) mixes the samples.

Per sample, the caption (one of the five, drawn anew each epoch) and the augmentation (random resized crop,
flip, 0/90/180/270 rotation) come from RNGs seeded by (seed, epoch, sample key), not by what came before, so a
sample gets the same crop whether or not training was resumed. Each batch reports how many raw samples its
worker has consumed; the checkpoint keeps that per worker, and a resumed worker skips that many raw samples
(tar reading only, no decoding) and continues where it stopped: mid-epoch resume is exact.

Bad samples (undecodable image, no caption) are skipped and counted by reason; the batch is filled from
the following samples, and if a slot runs dry its first *decoded* samples are reused (logged in the counts), so
the step count stays equal on all ranks. Data that cannot train at all is a :class:`DataError` naming the file,
never a hang: a slot that meets a long run of undecodable samples stops, a shard that ends before the count
``sizes.json`` promised stops, and before any model is built :func:`check_training_data` looks at the tars
(complete? counts current?), the build that wrote them (finished?) and the first samples (does one decode?).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import braceexpand
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from clip_pretrain.config import AugConfig
from rs_common.formats.shard_sample import CAPTION, MANIFEST, META, SIZES, build_state, json_captions, sample_keys

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
SKIP_REASONS = ("no_caption", "corrupt_image", "no_image")  # decode_sample's reasons, always shown in errors
TAR_BLOCK = 512
PROBE_SAMPLES = 64  # raw samples the start-up probe reads at most: enough to tell "all broken" from "a few bad"


class DataError(ValueError):
    """Training data that cannot be used at all (no shards, empty shards); names the path."""


def worker_error(exc: DataError) -> DataError:
    """A DataError as its one-line message: the DataLoader re-raises a worker's exception with the worker's whole
    traceback as the message ("Caught DataError in DataLoader worker process 0. Original Traceback ..."), whose
    last line holds the message the worker raised."""
    text = str(exc).strip()
    if not text.startswith("Caught "):
        return exc
    last = text.splitlines()[-1]
    return DataError(last.partition("DataError: ")[2] or last)


def reasons_text(skipped: Counter) -> str:
    """``"no_caption: 96, corrupt_image: 0, no_image: 0"`` (the usual reasons always, others when they occurred)."""
    keys = [*SKIP_REASONS, *(k for k in skipped if k not in SKIP_REASONS and k != "reused_to_fill_batch")]
    return ", ".join(f"{k}: {skipped.get(k, 0)}" for k in keys)


def short_list(urls: list[str], n: int = 3) -> str:
    """At most ``n`` shard paths, comma-joined, with a count of the rest."""
    return ", ".join(urls[:n]) + (f" (+{len(urls) - n} more)" if len(urls) > n else "")


# ---------------------------------------------------------------- shards and their sizes


def expand_urls(spec: str) -> list[str]:
    """``dir/shard-{000000..000009}.tar``, several such joined by ``::`` (open_clip_train's form), or a folder."""
    urls: list[str] = []
    for part in filter(None, spec.split("::")):
        path = Path(part)
        if path.is_dir():
            found = sorted(str(p) for p in path.glob("shard-*.tar")) or sorted(str(p) for p in path.glob("*.tar"))
            if not found:
                raise DataError(f"{path}: folder holds no .tar shards")
            urls.extend(found)
        else:
            urls.extend(braceexpand.braceexpand(part))
    missing = [u for u in urls if "://" not in u and not Path(u).is_file()]
    if missing:
        raise DataError(f"shard(s) not found: {missing[:5]}{' ...' if len(missing) > 5 else ''} (from --train-data {spec!r})")
    if not urls:
        raise DataError(f"--train-data {spec!r} names no shards")
    return urls


def count_samples(url: str) -> int:
    """Samples in one tar by reading its headers (used when no sizes.json lies beside it)."""
    return len(sample_keys(url))  # webdataset's own grouping rule


def shard_sizes(urls: list[str]) -> list[int]:
    """Sample count per shard: from ``sizes.json`` beside the shards (stage 0 writes it), else counted. A shard
    modified after its sizes.json was written is recounted, and a count that disagrees is a DataError (the plan
    would otherwise ask the shard for samples it does not hold)."""
    sizes: dict[str, int] = {}
    written: dict[str, float] = {}
    for folder in {str(Path(u).parent) for u in urls}:
        sizes_json = Path(folder) / SIZES
        if sizes_json.is_file():
            try:
                listed = {str(Path(folder) / k): int(v) for k, v in json.loads(sizes_json.read_text()).items()}
            except (ValueError, TypeError, AttributeError) as exc:
                raise DataError(f"{sizes_json}: not a JSON mapping of shard name to sample count ({exc})") from None
            sizes.update(listed)
            written.update(dict.fromkeys(listed, sizes_json.stat().st_mtime))
    out = []
    for u in urls:
        if u not in sizes:
            out.append(count_samples(u))
            continue
        if "://" not in u and Path(u).stat().st_mtime > written[u]:
            real = count_samples(u)
            if real != sizes[u]:
                raise DataError(f"{u}: sizes.json says {sizes[u]} samples but the shard (changed after sizes.json was "
                                f"written) holds {real}: rebuild the shards, or fix sizes.json")
        out.append(sizes[u])
    return out


# ---------------------------------------------------------------- start-up checks (cheap, before the model is built)


def tar_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete tar, or None. A complete tar is a whole number of 512-byte blocks ending in
    two zero blocks (read: 1 KiB, whatever the shard's size); without that end marker (some writers omit it) the
    headers are walked and every member must lie wholly inside the file."""
    size = path.stat().st_size
    if size == 0:
        return "empty file (0 bytes)"
    if size % TAR_BLOCK == 0 and size >= 2 * TAR_BLOCK:
        with open(path, "rb") as fh:
            fh.seek(-2 * TAR_BLOCK, 2)
            if fh.read(2 * TAR_BLOCK) == bytes(2 * TAR_BLOCK):
                return None
    return walk_tar(path, size)


def walk_tar(path: Path, size: int) -> str | None:
    """The header walk of :func:`tar_problem`: None when every member is whole and nothing but zeros follows."""
    with open(path, "rb") as fh:
        compressed = fh.read(6)[:3] in (b"\x1f\x8b\x08", b"BZh", b"\xfd7z")
    end = 0
    try:
        with tarfile.open(path, "r:*" if compressed else "r:") as tar:
            for member in tar:
                if compressed:
                    continue  # a compressed stream is checked by reading it through (tarfile raises at a cut)
                stop = member.offset_data + member.size
                if stop > size:
                    return f"member {member.name} needs bytes up to {stop}, the file has {size}"
                end = max(end, member.offset_data + -(-member.size // TAR_BLOCK) * TAR_BLOCK)
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        return f"not a readable tar ({str(exc) or type(exc).__name__})"
    if not compressed and end < size:
        with open(path, "rb") as fh:
            fh.seek(end)
            if fh.read().strip(b"\0"):
                return f"bytes {end}..{size} after the last whole member are not a tar header (cut inside a header?)"
    return None


def check_tars(urls: list[str]) -> None:
    """Every local shard is a complete tar (a zero-byte or cut-off copy is named here, not met mid-run)."""
    for url in urls:
        if "://" in url:
            continue
        problem = tar_problem(Path(url))
        if problem:
            raise DataError(f"{url}: truncated or not a tar shard: {problem}; rebuild it or leave it out of --train-data")


def check_builds(urls: list[str], allow_unfinished: bool) -> None:
    """Refuse shards in a folder whose stage-0 build started and has not finished (shards there may be missing or
    about to be replaced); folders no build of ours wrote (plain webdataset tars) are fine."""
    if allow_unfinished:
        return
    for folder in sorted({Path(u).parent for u in urls if "://" not in u}):
        if build_state(folder) == "unfinished":
            raise DataError(f"{folder}: the shard build there has not finished (no {MANIFEST}): finish the build (rerun "
                            "it) or pass --allow-unfinished-build to train on the shards as they are")


def probe_decoding(urls: list[str], limit: int = PROBE_SAMPLES) -> None:
    """Decode the first samples of the first shard(s) until one works; none of ``limit`` working is a DataError
    naming the shards and the reasons (all images corrupt, captions under an extension this loader does not read),
    found in well under a second instead of after the model is built or never."""
    skipped: Counter = Counter()
    looked: list[str] = []
    seen = 0

    def handler(exc: Exception) -> bool:
        skipped["unreadable_tar_member"] += 1
        return True

    for url in urls:
        looked.append(url)
        for sample in wds.tariterators.tarfile_samples([{"url": url}], handler=handler):
            seen += 1
            try:
                decode_sample(sample)
                return
            except ValueError as exc:
                skipped[str(exc).split(":", 1)[0]] += 1
            if seen >= limit:
                break
        if seen >= limit:
            break
    if seen:
        raise DataError(f"{short_list(looked)}: none of the first {seen} samples could be used ({reasons_text(skipped)}): "
                        "images must decode and captions must be in .txt or .json members")


def check_training_data(spec: str, allow_unfinished_build: bool = False) -> tuple[list[str], list[int]]:
    """The shards of ``--train-data`` and their sample counts, after every check that needs no model: the shards
    exist, their build finished, each tar is whole, the counts are current, and the first samples decode."""
    urls = expand_urls(spec)
    check_builds(urls, allow_unfinished_build)
    check_tars(urls)
    sizes = shard_sizes(urls)
    probe_decoding(urls)
    return urls, sizes


# ---------------------------------------------------------------- the epoch plan


def mix_seed(*parts: object) -> int:
    """A 63-bit seed from any values (stable across processes and runs, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1


@dataclass(frozen=True)
class Piece:
    """Samples ``[start, stop)`` of shard ``url`` (in file order)."""

    url: str
    start: int
    stop: int


def slot_pieces(urls: list[str], sizes: list[int], epoch: int, seed: int, n_slots: int, slot: int, num_samples: int = 0) -> list[Piece]:
    """The part of the epoch's stream that slot ``slot`` of ``n_slots`` reads."""
    order = list(range(len(urls)))
    random.Random(mix_seed("shards", seed, epoch)).shuffle(order)
    total = sum(sizes) if not num_samples else min(num_samples, sum(sizes))
    lo, hi = slot * total // n_slots, (slot + 1) * total // n_slots
    pieces, pos = [], 0
    for i in order:
        a, b = max(lo, pos), min(hi, pos + sizes[i])
        if a < b:
            pieces.append(Piece(urls[i], a - pos, b - pos))
        pos += sizes[i]
    return pieces


def resampled_pieces(urls: list[str], sizes: list[int], epoch: int, seed: int, n_slots: int, slot: int,
                     num_samples: int = 0) -> list[Piece]:
    """``--dataset-resampled``: what slot ``slot`` reads when shards are drawn WITH replacement (open_clip_train's
    ``ResampledShards``: uniformly, whatever their size). The slot draws whole shards until it holds its share of the
    epoch (the same count as without resampling); the last draw is a random contiguous part of its shard, so no
    shard's tail is favoured less. The draws come from (seed, epoch, slot) alone, so the plan is the same after a
    resume and the exact mid-epoch resume (skip the raw samples already consumed) holds as it does without it."""
    total = sum(sizes) if not num_samples else min(num_samples, sum(sizes))
    need = (slot + 1) * total // n_slots - slot * total // n_slots
    rng = random.Random(mix_seed("resampled", seed, epoch, slot))
    choices = [i for i, n in enumerate(sizes) if n > 0]
    pieces = []
    while need > 0 and choices:
        i = rng.choice(choices)
        take = min(sizes[i], need)
        start = rng.randrange(sizes[i] - take + 1)
        pieces.append(Piece(urls[i], start, start + take))
        need -= take
    return pieces


def batches_per_slot(sizes: list[int], n_slots: int, batch_size: int, num_samples: int = 0) -> int:
    total = sum(sizes) if not num_samples else min(num_samples, sum(sizes))
    return (total // n_slots) // batch_size


# ---------------------------------------------------------------- per-sample work


class RSTrainTransform:
    """RemoteCLIP's augmentations: random resized crop, horizontal flip, rotation by a multiple of 90 degrees.

    Every random draw comes from the per-sample ``rng`` (see the module docstring). A class, not a closure,
    so loader workers can be spawned as well as forked."""

    def __init__(self, image_size: int, mean, std, aug: AugConfig):
        self.crop = T.RandomResizedCrop(image_size, scale=tuple(aug.crop_scale), interpolation=T.InterpolationMode.BICUBIC)
        self.normalize = T.Normalize(mean, std)
        self.hflip, self.rotations = aug.hflip, list(aug.rotations)

    def __call__(self, image: Image.Image, rng: random.Random) -> torch.Tensor:
        torch.manual_seed(rng.getrandbits(63))  # torchvision draws crop boxes from torch's global RNG
        x = TF.to_tensor(self.crop(image))
        if self.hflip and rng.random() < 0.5:
            x = TF.hflip(x)
        k = rng.choice(self.rotations) // 90 % 4
        if k:
            x = torch.rot90(x, k, dims=(1, 2))
        return self.normalize(x)


def decode_sample(sample: dict) -> tuple[Image.Image, list[str]]:
    """Image and captions of one raw webdataset sample; raises ValueError with a reason word first."""
    ext = next((e for e in IMAGE_EXTS if e in sample), None)
    if ext is None:
        raise ValueError("no_image: sample has no jpg/png/webp member")
    try:
        image = Image.open(io.BytesIO(sample[ext]))
        image = image.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad bytes
        raise ValueError(f"corrupt_image: {exc}") from None
    captions: list[str] = []
    if META in sample:
        try:
            captions = json_captions(sample[META])
        except ValueError:
            captions = []
    if not captions and CAPTION in sample:
        captions = [sample[CAPTION].decode("utf-8", "replace").strip()]
    captions = [c for c in captions if c]
    if not captions:
        raise ValueError("no_caption: sample has no caption")
    return image, captions


# ---------------------------------------------------------------- the dataset


class ShardStream(IterableDataset):
    """Batches for one rank; see the module docstring.

    Before iterating set ``epoch`` (where to start), and to resume mid-epoch ``resume_step`` (batches this rank already trained
    on in the epoch) and ``resume_raw`` (role -> raw samples that role had consumed). A loader worker plays the
    *role* ``(worker id + resume_step) % workers``: the DataLoader takes batches from its workers round-robin
    starting at worker 0, so rotating the roles makes the resumed sequence continue exactly where it stopped.
    """

    def __init__(self, urls: list[str], sizes: list[int], *, rank: int, world: int, batch_size: int, seed: int,
                 transform: Callable, tokenizer: Callable, shuffle_buffer: int, num_samples: int = 0,
                 max_bad_in_a_row: int = 0, resampled: bool = False):
        self.urls, self.sizes = urls, sizes
        self.plan = resampled_pieces if resampled else slot_pieces  # which shards each slot reads per epoch
        # a run of undecodable samples this long is broken data, not a few bad files: stop instead of reading on
        self.max_bad_in_a_row = max_bad_in_a_row or max(1000, 10 * batch_size)
        self.rank, self.world, self.batch_size, self.seed = rank, world, batch_size, seed
        self.transform, self.tokenizer = transform, tokenizer
        self.shuffle_buffer, self.num_samples = shuffle_buffer, num_samples
        self.epoch = 0
        self.resume_step = 0
        self.resume_raw: dict[int, int] = {}

    def raw_samples(self, pieces: list[Piece], skipped: Counter) -> Iterator[dict]:
        """The raw samples of ``pieces`` in order; a shard that ends before a piece's end holds fewer samples than
        the plan (sizes.json) counted on, which is a DataError rather than a silently shorter epoch."""
        def handler(exc: Exception) -> bool:
            skipped["unreadable_tar_member"] += 1
            return True

        for piece in pieces:
            stream = wds.tariterators.tarfile_samples([{"url": piece.url}], handler=handler)
            count = 0
            for i, sample in enumerate(stream):
                if i >= piece.stop:
                    break
                count = i + 1
                if i >= piece.start:
                    yield sample
            if count < piece.stop:
                expected = self.sizes[self.urls.index(piece.url)]
                raise DataError(f"{piece.url}: sizes.json says {expected} samples but the shard holds {count} readable "
                                "sample(s) (truncated or replaced after the build?): rebuild the shards or sizes.json")

    def __iter__(self) -> Iterator[dict]:
        """Batches of epoch ``self.epoch`` from ``resume_step`` on, then of every following epoch, endlessly:
        one loader (and one set of worker processes) serves the whole run; the loop counts steps into epochs."""
        info = get_worker_info()
        n_workers, worker = (info.num_workers, info.id) if info else (1, 0)
        role = (worker + self.resume_step) % n_workers
        done = len(range(role, self.resume_step, n_workers))  # batches of this role already trained on
        epoch, skip_raw = self.epoch, (self.resume_raw.get(role, 0) if done else 0)
        skipped: Counter = Counter()
        while True:
            yield from self.epoch_batches(epoch, n_workers, role, done, skip_raw, skipped)
            epoch, done, skip_raw = epoch + 1, 0, 0

    def epoch_batches(self, epoch: int, n_workers: int, role: int, done: int, skip_raw: int, skipped: Counter) -> Iterator[dict]:
        n_slots, slot = self.world * n_workers, self.rank * n_workers + role
        pieces = self.plan(self.urls, self.sizes, epoch, self.seed, n_slots, slot, self.num_samples)
        n_batches = batches_per_slot(self.sizes, n_slots, self.batch_size, self.num_samples)
        shuffled = wds.filters._shuffle(
            self.raw_samples(pieces, skipped), self.shuffle_buffer, min(self.shuffle_buffer, 100),
            rng=random.Random(mix_seed("buffer", self.seed, epoch, slot)),
        )
        consumed = 0
        for _ in range(skip_raw):  # exact resume: skip what was consumed, undecoded
            if next(shuffled, None) is None:
                break
            consumed += 1
        pool: list[dict] = []  # a slot's first samples that decoded: reused only if skips leave it short of full batches
        bad_in_a_row = 0
        for _ in range(done, n_batches):
            images, texts = [], []
            while len(images) < self.batch_size:
                raw, reused = next(shuffled, None), False
                if raw is None:
                    if not pool:
                        raise DataError(self.slot_error(slot, pieces, "no sample of the slot could be used", skipped))
                    skipped["reused_to_fill_batch"] += 1
                    raw, reused = pool[skipped["reused_to_fill_batch"] % len(pool)], True
                else:
                    consumed += 1
                try:
                    image, captions = decode_sample(raw)
                except ValueError as exc:
                    skipped[str(exc).split(":", 1)[0]] += 1
                    bad_in_a_row += 1
                    if bad_in_a_row >= self.max_bad_in_a_row:
                        raise DataError(self.slot_error(
                            slot, pieces, f"{bad_in_a_row} samples in a row could not be used", skipped)) from None
                    continue
                bad_in_a_row = 0
                if not reused and len(pool) < self.batch_size:
                    pool.append(raw)
                rng = random.Random(mix_seed("sample", self.seed, epoch, raw["__key__"]))
                texts.append(rng.choice(captions))
                images.append(self.transform(image, rng))
            yield {"images": torch.stack(images), "texts": self.tokenizer(texts), "epoch": epoch, "role": role,
                   "raw_consumed": consumed, "skipped": dict(skipped)}

    def slot_error(self, slot: int, pieces: list[Piece], what: str, skipped: Counter) -> str:
        """One line naming the rank, the loader slot, its shards and the skip counts by reason."""
        shards = short_list(list(dict.fromkeys(p.url for p in pieces)))
        return (f"{shards} (rank {self.rank}, loader slot {slot}): {what} (skipped: {reasons_text(skipped)}): "
                "images must decode and captions must be in .txt or .json members")


def steps_per_epoch(sizes: list[int], world: int, workers: int, batch_size: int, num_samples: int = 0,
                    accum_freq: int = 1) -> int:
    """Optimizer steps one epoch takes on every rank: its loader batches // ``accum_freq`` (a step takes that many;
    the few batches left at an epoch's end that cannot fill a step are dropped, as open_clip_train drops them)."""
    n_workers = max(workers, 1)
    return batches_per_slot(sizes, world * n_workers, batch_size, num_samples) * n_workers // accum_freq


def make_loader(dataset: ShardStream, workers: int) -> DataLoader:
    """One batch per worker item (the dataset batches itself); the stream never ends, the loop stops it."""
    return DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=torch.cuda.is_available(),
                      prefetch_factor=4 if workers else None)
