"""Task distributions: the episode sampler, the decode cache, glyphs, Omniglot, image folders."""

from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import io
import math
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from omniglot_fixture import OMNIGLOT_DIR
from PIL import Image

from workbench.core.config import DatasetConfig, TaskShape
from workbench.core.episode_stream import EpisodeStream
from workbench.core.errors import ConfigError, DataError
from workbench.core.tasks import DATASETS, cache, glyphs, image_folder, omniglot
from workbench.core.tasks.base import EpisodeBatch
from workbench.core.tasks.sampler import ClassImages


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test gets an empty cache dir and no data dir from the environment."""
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("WORKBENCH_DATA", raising=False)
    monkeypatch.delenv(omniglot.URL_ENV, raising=False)
    monkeypatch.delenv(omniglot.SPLITS_URL_ENV, raising=False)
    cache.clear_memory()
    yield
    cache.clear_memory()


# ---- sampler --------------------------------------------------------------------------------
def coded_images(
    classes: int, per_class: int | list[int]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Images whose pixel (0, 0) is the class and pixel (0, 1) the image number in its class."""
    counts = [per_class] * classes if isinstance(per_class, int) else per_class
    imgs, index, n = [], [], 0
    for c, k in enumerate(counts):
        for j in range(k):
            im = torch.zeros(1, 6, 6, dtype=torch.uint8)
            im[0, 0, 0], im[0, 0, 1] = c, j
            imgs.append(im)
        index.append(torch.arange(n, n + k))
        n += k
    return torch.stack(imgs), index


def codes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(class, image number) read back from sampled float images."""
    px = (x * 255).round().long()
    return px[..., 0, 0, 0], px[..., 0, 0, 1]


def test_sampler_shapes_labels_and_distinct_classes() -> None:
    images, index = coded_images(30, 10)
    dist = ClassImages(images, index, name="coded", split="train")
    shape = TaskShape(ways=5, shots=2, queries=3)
    b = dist.sample(shape, 8, torch.Generator().manual_seed(0))
    assert b.support_x.shape == (8, 10, 1, 6, 6) and b.query_x.shape == (8, 15, 1, 6, 6)
    assert (
        b.support_x.dtype == torch.float32
        and 0 <= float(b.support_x.min())
        and float(b.support_x.max()) <= 1
    )
    assert b.ways == 5 and dist.num_classes == 30 and dist.input_shape == (1, 6, 6)
    assert b.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # class-major
    assert b.query_y[0].tolist() == [i for i in range(5) for _ in range(3)]
    s_cls, s_img = codes(b.support_x)
    q_cls, q_img = codes(b.query_x)
    for t in range(8):
        classes = b.info["classes"][t]
        assert len(set(classes.tolist())) == 5
        # every label maps to one class, the one in info, in support and query alike
        assert torch.equal(s_cls[t], classes[b.support_y[t]]) and torch.equal(
            q_cls[t], classes[b.query_y[t]]
        )
        for w in range(5):
            used = s_img[t][b.support_y[t] == w].tolist() + q_img[t][b.query_y[t] == w].tolist()
            assert len(set(used)) == 5  # shots + queries distinct images of the class
    # label order is shuffled: label 0 is not always the smallest class id
    assert any(int(c[0]) != int(c.min()) for c in b.info["classes"])


@pytest.mark.parametrize("ways", [2, 3, 4])  # 2 and 3 of 6: redraw on repeats; 4: random keys
def test_sampler_classes_uniform_over_ordered_distinct_tuples(ways: int) -> None:
    """Every ordered tuple of distinct classes (the label order matters) equally likely."""
    images, index = coded_images(6, 2)
    dist = ClassImages(images, index)
    tasks = 24000
    classes = dist._classes(tasks, ways, torch.Generator().manual_seed(0))
    assert classes.shape == (tasks, ways)
    assert all(len(set(row)) == ways for row in classes.tolist())
    counts = Counter(map(tuple, classes.tolist()))
    cells = math.perm(6, ways)
    assert len(counts) == cells
    expected = tasks / cells
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    # mean cells - 1 (29 / 119 / 359), sd sqrt(2 (cells - 1)): 5 sd is far from chance
    assert chi2 < cells - 1 + 5 * math.sqrt(2 * (cells - 1))


def test_sampler_reproducible_from_generator_state() -> None:
    images, index = coded_images(20, 8)
    dist = ClassImages(images, index)
    shape = TaskShape(ways=4, shots=1, queries=2)
    a = dist.sample(shape, 4, torch.Generator().manual_seed(7))
    b = dist.sample(shape, 4, torch.Generator().manual_seed(7))
    c = dist.sample(shape, 4, torch.Generator().manual_seed(8))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert not torch.equal(a.query_x, c.query_x)


def test_sampler_uneven_classes_never_draw_padding() -> None:
    counts = [3, 9, 4, 12, 3, 5]
    images, index = coded_images(6, counts)
    dist = ClassImages(images, index)
    b = dist.sample(TaskShape(ways=6, shots=1, queries=2), 50, torch.Generator().manual_seed(1))
    cls, img = codes(torch.cat([b.support_x, b.query_x], 1))
    assert bool((img < torch.tensor(counts)[cls]).all())


def test_sampler_rotations_and_invert() -> None:
    images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 3] = 255  # one pixel top right
    index = [torch.tensor([0, 1])] * 4
    dist = ClassImages(images, index, rotation=[0, 1, 2, 3])
    b = dist.sample(TaskShape(ways=4, shots=1, queries=1), 3, torch.Generator().manual_seed(0))
    for t in range(3):
        for w, c in enumerate(b.info["classes"][t].tolist()):
            expect = torch.rot90(images[0].float() / 255, c, dims=(-2, -1))
            assert torch.equal(b.support_x[t, w], expect)
    inv = ClassImages(images, index[:1], invert=True)
    x = inv.sample(TaskShape(ways=1, shots=1, queries=1), 1, torch.Generator()).support_x
    assert float(x[0, 0, 0, 0, 3]) == 0.0 and float(x[0, 0, 0, 0, 0]) == 1.0


def test_too_many_ways_or_images_is_a_config_error() -> None:
    images, index = coded_images(20, 5)
    dist = ClassImages(images, index, name="omniglot", split="val")
    with pytest.raises(ConfigError) as err:
        dist.sample(TaskShape(ways=50), 1, torch.Generator(), phase="train")
    assert err.value.key == "train.ways"
    assert (
        str(err.value)
        == "train.ways: 50 ways requested but the val split of omniglot has only 20 classes"
    )
    with pytest.raises(ConfigError) as err:
        dist.sample(TaskShape(ways=21), 1, torch.Generator())  # val split defaults to eval
    assert err.value.key == "eval.ways"
    with pytest.raises(ConfigError) as err:
        dist.sample(TaskShape(ways=5, shots=1, queries=15), 1, torch.Generator())
    assert err.value.key == "eval.queries" and "only 5" in err.value.message


def assert_same_batch(a: EpisodeBatch, b: EpisodeBatch) -> None:
    for f in ("support_x", "support_y", "query_x", "query_y"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f


def test_episode_stream_gives_the_inline_batches_drawn_on_another_thread() -> None:
    images, index = coded_images(12, 6)
    dist = ClassImages(images, index, rotation=[c % 4 for c in range(12)])
    shape = TaskShape(ways=3, shots=2, queries=2)
    drawn_on: list[int] = []
    sample = dist.sample

    def recording(*args: object) -> EpisodeBatch:
        drawn_on.append(threading.get_ident())
        return sample(*args)  # type: ignore[arg-type]

    dist.sample = recording  # type: ignore[method-assign]
    stream = EpisodeStream(dist, shape, 4, torch.Generator().manual_seed(5), ahead=True)
    inline = torch.Generator().manual_seed(5)
    for _ in range(4):
        assert_same_batch(stream.next(), sample(shape, 4, inline))
    stream.close()  # waits for the fifth draw, begun ahead
    assert drawn_on[0] == threading.get_ident()  # the first draw: nothing was drawn ahead yet
    assert threading.get_ident() not in drawn_on[1:] and len(drawn_on) == 5


def test_episode_stream_state_reproduces_the_batch_not_yet_handed_out() -> None:
    """What a checkpoint saves: resuming from it continues with the very next batch."""
    images, index = coded_images(12, 6)
    dist = ClassImages(images, index)
    shape = TaskShape(ways=3, shots=1, queries=3)
    stream = EpisodeStream(dist, shape, 2, torch.Generator().manual_seed(1), ahead=True)
    stream.next()
    stream.next()  # a third batch is now being drawn ahead
    state = stream.get_state()
    third = stream.next()
    resumed = EpisodeStream(dist, shape, 2, torch.Generator())
    resumed.set_state(state)
    assert_same_batch(resumed.next(), third)
    stream.set_state(state)  # rewinding drops the batch drawn ahead
    assert_same_batch(stream.next(), third)


def test_episode_stream_draws_ahead_only_where_a_draw_is_slow() -> None:
    images, index = coded_images(12, 6)
    dist = ClassImages(images, index)
    shape = TaskShape(ways=3, shots=1, queries=1)
    cheap = EpisodeStream(dist, shape, 2, torch.Generator())
    cheap.next()
    cheap.next()
    assert cheap.ahead is False  # a 2-task draw of 6x6 images: microseconds, stays inline
    sample = dist.sample

    def slow(*args: object) -> EpisodeBatch:
        time.sleep(0.002)
        return sample(*args)  # type: ignore[arg-type]

    dist.sample = slow  # type: ignore[method-assign]
    costly = EpisodeStream(dist, shape, 2, torch.Generator())
    costly.next()
    assert costly.ahead is None  # not decided on one draw: the first pays one-time costs
    costly.next()
    assert costly.ahead is True


def test_episode_stream_raises_a_sampling_error_at_next() -> None:
    images, index = coded_images(4, 3)
    stream = EpisodeStream(
        ClassImages(images, index), TaskShape(ways=9), 1, torch.Generator().manual_seed(0)
    )
    with pytest.raises(ConfigError, match="9 ways requested"):
        stream.next()


# ---- cache ----------------------------------------------------------------------------------
def test_cache_builds_once_and_writes_atomically(tmp_path: Path) -> None:
    calls = []

    def build() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"x": torch.arange(5)}

    assert torch.equal(cache.cached("t", {"a": 1}, build)["x"], torch.arange(5))
    cache.clear_memory()
    assert torch.equal(cache.cached("t", {"a": 1}, build)["x"], torch.arange(5))
    assert len(calls) == 1
    cache.cached("t", {"a": 2}, build)  # other options, other entry
    assert len(calls) == 2
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 2 and all(f.startswith("t-") and f.endswith(".pt") for f in files)
    # a corrupted entry is rebuilt rather than trusted
    cache.cache_path("t", {"a": 1}).write_bytes(b"garbage")
    cache.clear_memory()
    cache.cached("t", {"a": 1}, build)
    assert len(calls) == 3


# ---- glyphs ---------------------------------------------------------------------------------
def test_glyphs_deterministic_and_seeded() -> None:
    a = glyphs.generate(3, 28, classes=10)
    b = glyphs.generate(3, 28, classes=10)
    c = glyphs.generate(4, 28, classes=10)
    assert a.shape == (200, 1, 28, 28) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0.03 < float(a.float().mean() / 255) < 0.4  # strokes on an empty background


def test_glyphs_splits_and_not_trivial() -> None:
    spec = DATASETS.get("glyphs")()
    cfg = DatasetConfig(name="glyphs")
    dists = {s: spec.build(cfg, s) for s in ("train", "val", "test")}
    assert [d.num_classes for d in dists.values()] == [800, 200, 200]
    test = dists["test"]
    b = test.sample(TaskShape(ways=5, shots=1, queries=15), 200, torch.Generator().manual_seed(0))
    # pixel nearest neighbour: well above chance (learnable) but far from perfect (not trivial)
    s = b.support_x.flatten(2)
    q = b.query_x.flatten(2)
    pred = torch.cdist(q, s).argmin(-1)
    acc = float((b.support_y.gather(1, pred) == b.query_y).float().mean())
    assert 0.3 < acc < 0.9
    cache.clear_memory()
    again = spec.build(cfg, "test")  # from the disk cache now
    assert torch.equal(again.images, test.images)
    assert "1,200 classes" in spec.describe(cfg)


# ---- Omniglot: the real archives ------------------------------------------------------------
@pytest.fixture
def real_omniglot(omniglot_cache: Path, monkeypatch: pytest.MonkeyPatch) -> DatasetConfig:
    monkeypatch.setenv(cache.CACHE_ENV, str(omniglot_cache))
    return DatasetConfig(name="omniglot", data_dir=str(OMNIGLOT_DIR.parent))


def characters(dist: ClassImages) -> set[str]:
    assert dist.class_names is not None
    return {n.rsplit("/", 1)[0] for n in dist.class_names}


def test_omniglot_vinyals_split(real_omniglot: DatasetConfig) -> None:
    spec = DATASETS.get("omniglot")()
    d = {s: spec.build(real_omniglot, s) for s in ("train", "val", "test")}
    assert [x.num_classes for x in d.values()] == [4112, 688, 1692]
    assert d["train"].input_shape == (1, 28, 28)
    assert not characters(d["test"]) & (characters(d["train"]) | characters(d["val"]))
    assert len(characters(d["train"])) == 1028
    assert "SHA256 verified" in d["train"].verification  # type: ignore[attr-defined]
    b = d["test"].sample(
        TaskShape(ways=5, shots=1, queries=15), 4, torch.Generator().manual_seed(0)
    )
    assert float(b.support_x.mean()) < 0.3  # inverted: strokes 1, paper 0
    no_rot = real_omniglot.model_copy(update={"rotations": False})
    assert [spec.build(no_rot, s).num_classes for s in ("train", "val", "test")] == [1028, 172, 423]
    by_path = real_omniglot.model_copy(update={"split": str(OMNIGLOT_DIR / "splits" / "vinyals")})
    assert spec.build(by_path, "val").num_classes == 688
    with pytest.raises(ConfigError) as err:
        spec.build(real_omniglot.model_copy(update={"split": "lake"}), "train")
    assert err.value.key == "dataset.split" and "random" in err.value.message
    line = spec.describe(real_omniglot)
    assert "1,623 characters (32,460 images)" in line and "4,112/688/1,692" in line


def test_omniglot_random_split(real_omniglot: DatasetConfig) -> None:
    spec = DATASETS.get("omniglot")()
    cfg = real_omniglot.model_copy(update={"split": "random", "split_seed": 3})
    d = {s: characters(spec.build(cfg, s)) for s in ("train", "val", "test")}  # type: ignore[arg-type]
    assert len(d["train"] | d["val"]) == 1200 and len(d["val"]) == 100
    assert len(d["test"]) == 423 and not d["test"] & (d["train"] | d["val"])
    assert not d["train"] & d["val"]
    other = characters(spec.build(cfg.model_copy(update={"split_seed": 4}), "test"))
    assert other != d["test"]


def test_omniglot_cache_reused(
    real_omniglot: DatasetConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = DATASETS.get("omniglot")()
    spec.build(real_omniglot, "val")  # decoded (or already cached by an earlier test)
    cache.clear_memory()
    omniglot._DIGESTS.clear()

    def no_decode(*args: object) -> None:
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(omniglot, "decode", no_decode)
    spec.build(real_omniglot, "val")  # from the cache: decode() would fail the test


def test_omniglot_tampered_sha256(tmp_path: Path) -> None:
    if not (OMNIGLOT_DIR / "images_background.zip").is_file():
        pytest.skip(f"Omniglot archives not found at {OMNIGLOT_DIR}")
    d = tmp_path / "omniglot"
    d.mkdir()
    for name in ("images_background.zip", "images_evaluation.zip"):
        (d / name).symlink_to(OMNIGLOT_DIR / name)
    sums = (OMNIGLOT_DIR / "SHA256SUMS").read_text().replace("a", "b", 1)
    (d / "SHA256SUMS").write_text(sums)
    cfg = DatasetConfig(name="omniglot", data_dir=str(tmp_path), split="random")
    with pytest.raises(DataError, match="SHA256 mismatch"):
        DATASETS.get("omniglot")().build(cfg, "train")
    (d / "SHA256SUMS").unlink()
    note = omniglot.verify(omniglot.locate(cfg))
    assert "not verified" in note  # the rebuilt archives are not the official bytes either


def test_omniglot_missing_data(tmp_path: Path) -> None:
    spec = DATASETS.get("omniglot")()
    cfg = DatasetConfig(name="omniglot", data_dir=str(tmp_path))
    with pytest.raises(ConfigError) as err:
        spec.build(cfg, "train")
    assert err.value.key == "dataset.data_dir" and "dataset.download=true" in err.value.message
    assert "no archives found" in spec.describe(cfg)
    assert spec.describe(cfg.model_copy(update={"split": "nonsense"}))  # never raises


# ---- Omniglot: download from a local server -------------------------------------------------
def tiny_zip(part: str, alphabet: str, chars: int, drawers: int = 6) -> bytes:
    """An Omniglot-layout archive of small random 1-bit PNGs."""
    rng = np.random.default_rng(len(alphabet))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for c in range(1, chars + 1):
            for d in range(1, drawers + 1):
                im = Image.fromarray(rng.random((20, 20)) > 0.2).convert("1")
                png = io.BytesIO()
                im.save(png, format="PNG")
                z.writestr(
                    f"{part}/{alphabet}/character{c:02d}/{c:04d}_{d:02d}.png", png.getvalue()
                )
    return buf.getvalue()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An http.server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", www
    httpd.shutdown()
    httpd.server_close()


def test_omniglot_download(
    server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, www = server
    md5 = {}
    for part, alphabet, n in (("images_background", "Alpha", 8), ("images_evaluation", "Beta", 4)):
        data = tiny_zip(part, alphabet, n)
        (www / f"{part}.zip").write_bytes(data)
        md5[f"{part}.zip"] = hashlib.md5(data).hexdigest()
    (www / "splits").mkdir()
    for split, chars in (
        ("train", ["Alpha/character01", "Alpha/character02"]),
        ("val", ["Alpha/character03"]),
        ("test", ["Beta/character01"]),
    ):
        (www / "splits" / f"{split}.txt").write_text(
            "".join(f"{c}/rot{r:03d}\n" for c in chars for r in (0, 90, 180, 270))
        )
    monkeypatch.setenv(omniglot.URL_ENV, url)
    monkeypatch.setenv(omniglot.SPLITS_URL_ENV, url + "splits/")
    monkeypatch.setattr(omniglot, "ARCHIVE_MD5", md5)
    data_dir = tmp_path / "data"
    cfg = DatasetConfig(name="omniglot", data_dir=str(data_dir), download=True, image_size=12)

    spec = DATASETS.get("omniglot")()
    assert "will be downloaded" in spec.describe(cfg)
    test = spec.build(cfg, "test")
    assert test.num_classes == 4 and test.input_shape == (1, 12, 12)
    assert (data_dir / "omniglot" / "images_background.zip").is_file()
    assert (data_dir / "omniglot" / "splits" / "vinyals" / "train.txt").is_file()
    assert "official MD5 verified" in test.verification  # type: ignore[attr-defined]
    rnd = cfg.model_copy(update={"split": "random", "download": False})
    sizes = [spec.build(rnd, s).num_classes // 4 for s in ("train", "val", "test")]  # type: ignore[arg-type]
    assert sum(sizes) == 12 and all(sizes)
    assert "12 characters (72 images)" in spec.describe(rnd)

    # a corrupted download is rejected and leaves nothing behind
    bad = tmp_path / "bad"
    monkeypatch.setattr(omniglot, "ARCHIVE_MD5", {**md5, "images_background.zip": "0" * 32})
    with pytest.raises(DataError, match="MD5 mismatch"):
        omniglot.download_archives(bad)
    assert not any(p.name.endswith(".zip") for p in bad.iterdir())


# ---- image folders --------------------------------------------------------------------------
def write_png(path: Path, value: int, size: tuple[int, int] = (10, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    arr[0, 0] = (value, 255 - value, 7)
    Image.fromarray(arr).save(path)


def test_image_folder_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for c in range(10):
        for j in range(6):
            write_png(root / f"class{c}" / f"{j}.png", 20 * c)
    spec = DATASETS.get("image-folder")()
    cfg = DatasetConfig(name="image-folder", data_dir=str(root), image_size=8, channels=3)
    d = {s: spec.build(cfg, s) for s in ("train", "val", "test")}
    assert [x.num_classes for x in d.values()] == [6, 2, 2]
    names = [set(x.class_names or []) for x in d.values()]
    assert len(set.union(*names)) == 10
    b = d["train"].sample(
        TaskShape(ways=3, shots=2, queries=4), 2, torch.Generator().manual_seed(0)
    )
    assert b.support_x.shape == (2, 6, 3, 8, 8)
    # the images of a label all come from one class folder (constant pixel value per class)
    for t in range(2):
        for w in range(3):
            vals = b.query_x[t][b.query_y[t] == w][:, 0, 4, 4]
            assert torch.allclose(vals, vals[0].expand_as(vals))
    assert "60 images" in spec.describe(cfg) and "6/2/2 classes" in spec.describe(cfg)
    gray = spec.build(cfg.model_copy(update={"channels": 1}), "val")
    assert gray.input_shape == (1, 8, 8)

    # train/ val/ test/ sub-folders are used as they are
    split_root = tmp_path / "split"
    for s, n in (("train", 4), ("val", 2), ("test", 3)):
        for c in range(n):
            for j in range(3):
                write_png(split_root / s / f"{s}{c}" / f"{j}.jpg", 10 * c)
    cfg2 = DatasetConfig(name="image-folder", data_dir=str(split_root), image_size=8)
    assert [spec.build(cfg2, s).num_classes for s in ("train", "val", "test")] == [4, 2, 3]


def test_image_folder_mini_imagenet_csv(tmp_path: Path) -> None:
    root = tmp_path / "mini"
    counts = {"train": 5, "val": 2, "test": 3}
    for s, n in counts.items():
        rows = [("filename", "label")]
        for c in range(n):
            label = f"n{s}{c:05d}"
            for j in range(4):
                name = f"{label}{j:08d}.jpg"
                write_png(root / "images" / name, 30 * c, size=(16, 16))
                rows.append((name, label))
        (root / "splits" / "ravi").mkdir(parents=True, exist_ok=True)
        with open(root / "splits" / "ravi" / f"{s}.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    spec = DATASETS.get("image-folder")()
    cfg = DatasetConfig(name="image-folder", data_dir=str(root), image_size=8, channels=3)
    assert [spec.build(cfg, s).num_classes for s in ("train", "val", "test")] == [5, 2, 3]
    assert "csv split" in spec.describe(cfg)
    rnd = spec.build(cfg.model_copy(update={"split": "random"}), "train")
    assert rnd.num_classes == 6  # 64 % of 10 pooled classes
    (root / "images" / f"ntest{0:05d}{1:08d}.jpg").unlink()
    assert "1 listed images missing" in spec.describe(cfg)
    cache.clear_memory()
    with pytest.raises(DataError, match="missing"):
        spec.build(cfg, "test")
    with pytest.raises(ConfigError) as err:
        spec.build(cfg.model_copy(update={"split": "bogus"}), "train")
    assert err.value.key == "dataset.split"
    with pytest.raises(ConfigError) as err:
        spec.build(DatasetConfig(name="image-folder"), "train")
    assert err.value.key == "dataset.data_dir"
    assert image_folder.SPLIT_HELP in spec.describe(cfg.model_copy(update={"split": "bogus"}))
