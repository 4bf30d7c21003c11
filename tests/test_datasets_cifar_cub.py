"""CIFAR-FS, FC100 and CUB-200-2011, on small archives built here in the official formats.

None of the real archives can be downloaded where the tests run, so each test builds what the
loader reads: CIFAR-100's binary tar.gz (the real record layout and label names, a few records
per class instead of 600) and CUB_200_2011.tgz (200 class folders of tiny JPEGs, classes.txt),
and serves them from a local HTTP server for the download paths.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.core.config import DatasetConfig, TaskShape
from workbench.core.errors import ConfigError, DataError
from workbench.core.tasks import DATASETS, cache, cifar100, cub, sources
from workbench.core.tasks.sampler import ClassImages

# CIFAR-100's 20 superclasses (coarse labels, alphabetical) and their 5 fine classes each, as on
# https://www.cs.toronto.edu/~kriz/cifar.html; the fine labels are the 100 names sorted.
SUPERCLASSES = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}
COARSE = sorted(SUPERCLASSES)
FINE = sorted(n for names in SUPERCLASSES.values() for n in names.split())
COARSE_OF = {f: COARSE.index(c) for c, names in SUPERCLASSES.items() for f in names.split()}
TRAIN_PER_CLASS, TEST_PER_CLASS = 5, 3  # the real archive: 500 + 100
SPLITS = ("train", "val", "test")


@pytest.fixture(autouse=True)
def _private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An empty cache, no data dir or mirror from the environment, nothing remembered."""
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    for var in (sources.DATA_ENV, cifar100.URL_ENV, cub.URL_ENV):
        monkeypatch.delenv(var, raising=False)
    cache.clear_memory()
    yield
    cache.clear_memory()


# ---- building the archives --------------------------------------------------------------------
def cifar_records(per_class: int, seed: int) -> np.ndarray:
    """uint8 [100 * per_class, 3074] records in the binary layout, classes interleaved."""
    rng = np.random.default_rng(seed)
    fine = np.repeat(np.arange(100), per_class)
    rng.shuffle(fine)
    rec = np.empty((len(fine), cifar100.RECORD), dtype=np.uint8)
    rec[:, 0] = [COARSE_OF[FINE[f]] for f in fine]
    rec[:, 1] = fine
    rec[:, 2:] = rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)
    return rec


def cifar_files(train: np.ndarray, test: np.ndarray) -> dict[str, bytes]:
    return {
        "train.bin": train.tobytes(),
        "test.bin": test.tobytes(),
        "fine_label_names.txt": ("\n".join(FINE) + "\n").encode(),
        "coarse_label_names.txt": ("\n".join(COARSE) + "\n").encode(),
    }


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def cifar() -> dict[str, object]:
    """The archive's bytes and the records it holds (train.bin, test.bin)."""
    train = cifar_records(TRAIN_PER_CLASS, 0)
    test = cifar_records(TEST_PER_CLASS, 1)
    files = cifar_files(train, test)
    data = tar_gz({f"cifar-100-binary/{n}": b for n, b in files.items()})
    pooled = np.concatenate([train, test])
    by_class = {  # [n, 3, 32, 32] planes of each fine class, train.bin's records first
        name: pooled[pooled[:, 1] == f, 2:].reshape(-1, 3, 32, 32) for f, name in enumerate(FINE)
    }
    return {"archive": data, "train": train, "test": test, "files": files, "by_class": by_class}


def class_pixels(cifar: dict[str, object], name: str) -> np.ndarray:
    return cifar["by_class"][name]  # type: ignore[index,no-any-return]


def put_cifar(root: Path, cifar: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The built archive in <root>/cifar-100/, accepted as if it were the official one."""
    archive = root / "cifar-100" / cifar100.ARCHIVE
    archive.parent.mkdir(parents=True)
    archive.write_bytes(cifar["archive"])  # type: ignore[arg-type]
    monkeypatch.setattr(cifar100.OFFICIAL, "md5", hashlib.md5(archive.read_bytes()).hexdigest())
    return archive


CUB_PER_CLASS = 3


def cub_class(i: int) -> str:
    return f"{i + 1:03d}.Bird_{i + 1}"


def cub_colour(i: int) -> tuple[int, int, int]:
    """A solid colour naming class i, far enough apart to survive JPEG."""
    return (i, 255 - i, 40 + 60 * (i % 3))


@pytest.fixture(scope="module")
def cub_files() -> dict[str, bytes]:
    """CUB_200_2011/ as in the official archive: classes.txt, images.txt, bounding boxes, and
    one folder per class of JPEGs of varying sizes (one grayscale), solid class colours."""
    files: dict[str, bytes] = {}
    classes, images, boxes = [], [], []
    for i in range(200):
        classes.append(f"{i + 1} {cub_class(i)}")
        for j in range(CUB_PER_CLASS):
            im = Image.new("RGB", (12 + j * 5, 10 + j * 3), cub_colour(i))
            if i == 7 and j == 0:
                im = im.convert("L")  # the real archive has a few grayscale photographs
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=95)
            rel = f"{cub_class(i)}/Bird_{i + 1}_{j:04d}.jpg"
            files[f"CUB_200_2011/images/{rel}"] = buf.getvalue()
            images.append(f"{len(images) + 1} {rel}")
            boxes.append(f"{len(boxes) + 1} 1.0 1.0 5.0 5.0")
    # classes.txt is not in sorted order in the file: its ids give the order
    files["CUB_200_2011/classes.txt"] = "\n".join(reversed(classes)).encode() + b"\n"
    files["CUB_200_2011/images.txt"] = "\n".join(images).encode() + b"\n"
    files["CUB_200_2011/bounding_boxes.txt"] = "\n".join(boxes).encode() + b"\n"
    files["attributes.txt"] = b"1 has_bill_shape::curved\n"
    return files


@pytest.fixture(scope="module")
def cub_archive(cub_files: dict[str, bytes]) -> bytes:
    return tar_gz(cub_files)


def put_cub(root: Path, data: bytes, monkeypatch: pytest.MonkeyPatch) -> Path:
    archive = root / "cub" / cub.ARCHIVE
    archive.parent.mkdir(parents=True)
    archive.write_bytes(data)
    monkeypatch.setattr(cub.OFFICIAL, "md5", hashlib.md5(data).hexdigest())
    return archive


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


def build_all(name: str, cfg: DatasetConfig) -> dict[str, ClassImages]:
    spec = DATASETS.get(name)()
    out = {s: spec.build(cfg, s) for s in SPLITS}  # type: ignore[arg-type]
    assert all(isinstance(d, ClassImages) for d in out.values())
    return out  # type: ignore[return-value]


def shipped(dataset: str, split: str) -> list[str]:
    return sources.read_names(sources.SPLITS_DIR / dataset / f"{split}.txt")


# ---- CIFAR-FS ---------------------------------------------------------------------------------
def test_cifar_fs_split_episodes_and_exact_pixels(
    cifar: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_cifar(tmp_path, cifar, monkeypatch)
    cfg = DatasetConfig(name="cifar-fs", data_dir=str(tmp_path), image_size=32, channels=3)
    d = build_all("cifar-fs", cfg)
    names = {s: set(d[s].class_names or []) for s in SPLITS}
    assert [len(names[s]) for s in SPLITS] == [64, 16, 20]
    assert names["train"] | names["val"] | names["test"] == set(FINE)  # disjoint, all 100
    assert all(names[s] == set(shipped("cifar-fs", s)) for s in SPLITS)
    assert {"baby", "whale", "worm"} <= names["test"] and "otter" in names["val"]
    per = TRAIN_PER_CLASS + TEST_PER_CLASS
    assert all(d[s].examples_per_class == per and d[s].num_images == per * len(names[s])
               for s in SPLITS)  # fmt: skip
    assert "official MD5 verified" in d["train"].verification  # type: ignore[attr-defined]

    # pixels: R, G, B planes of 32x32 each, row-major, become [C, H, W] unchanged
    apple = class_pixels(cifar, "apple")
    first = d["train"].images[d["train"].table[d["train"].class_names.index("apple"), 0]]  # type: ignore[union-attr]
    assert torch.equal(first, torch.from_numpy(apple[0]))
    raw = cifar["train"][cifar["train"][:, 1] == FINE.index("apple")][0, 2:]  # type: ignore[index]
    hwc = first.permute(1, 2, 0)
    assert tuple(hwc[0, 1].tolist()) == (raw[1], raw[1024 + 1], raw[2048 + 1])  # (y 0, x 1)
    assert tuple(hwc[31, 0].tolist()) == (raw[31 * 32], raw[1024 + 31 * 32], raw[2048 + 31 * 32])

    shape = TaskShape(ways=5, shots=2, queries=3)
    for s in SPLITS:
        b = d[s].sample(shape, 3, torch.Generator().manual_seed(1))
        assert b.support_x.shape == (3, 10, 3, 32, 32) and b.query_x.shape == (3, 15, 3, 32, 32)
        assert b.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
        assert b.query_y[0].tolist() == [w for w in range(5) for _ in range(3)]
        for t in range(3):
            for x, y in ((b.support_x[t], b.support_y[t]), (b.query_x[t], b.query_y[t])):
                for img, label in zip(x, y, strict=True):
                    name = d[s].class_names[int(b.info["classes"][t][label])]  # type: ignore[index]
                    px = torch.from_numpy(class_pixels(cifar, name))
                    assert name in names[s]
                    assert ((px == (img * 255).round().to(torch.uint8)).flatten(1).all(1)).any()


# ---- FC100 ------------------------------------------------------------------------------------
def test_fc100_split_by_superclass(
    cifar: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_cifar(tmp_path, cifar, monkeypatch)
    cfg = DatasetConfig(name="fc100", data_dir=str(tmp_path), image_size=32, channels=3)
    d = build_all("fc100", cfg)
    fine = {s: set(d[s].class_names or []) for s in SPLITS}
    assert [len(fine[s]) for s in SPLITS] == [60, 20, 20]
    assert fine["train"] | fine["val"] | fine["test"] == set(FINE)
    supers = {s: {COARSE[COARSE_OF[f]] for f in fine[s]} for s in SPLITS}
    assert [len(supers[s]) for s in SPLITS] == [12, 4, 4]  # whole superclasses, 5 classes each
    assert supers["test"] == {"aquatic_mammals", "insects", "medium_mammals", "people"}
    assert supers["val"] == {
        "large_carnivores", "large_omnivores_and_herbivores", "non-insect_invertebrates",
        "small_mammals",
    }  # fmt: skip
    assert all(supers[s] == set(shipped("fc100", s)) for s in SPLITS)
    b = d["test"].sample(TaskShape(ways=5, shots=1, queries=4), 2, torch.Generator().manual_seed(0))
    assert b.support_x.shape == (2, 5, 3, 32, 32) and b.query_x.shape == (2, 20, 3, 32, 32)
    assert b.query_y[1].tolist() == [w for w in range(5) for _ in range(4)]
    line = DATASETS.get("fc100")().describe(cfg)
    assert "split oreshkin: 12/4/4 superclasses" in line and "papers use" not in line


# ---- the CIFAR-100 reader: folders, sizes, refusals -------------------------------------------
def test_cifar_unpacked_folder_grayscale_resize_and_own_split(
    cifar: dict[str, object], tmp_path: Path
) -> None:
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    for name, data in cifar["files"].items():  # type: ignore[attr-defined]
        (folder / name).write_bytes(data)
    cfg = DatasetConfig(name="cifar-fs", data_dir=str(tmp_path), image_size=20, channels=1)
    test = DATASETS.get("cifar-fs")().build(cfg, "test")
    assert test.input_shape == (1, 20, 20) and test.num_classes == 20
    assert "not verified" in test.verification  # type: ignore[attr-defined]
    # the same conversion as every other loader: Pillow's luma, then a Lanczos resize
    rgb = Image.fromarray(class_pixels(cifar, "baby")[0].transpose(1, 2, 0), "RGB")
    want = np.array(rgb.convert("L").resize((20, 20), Image.Resampling.LANCZOS))
    got = test.images[test.table[test.class_names.index("baby"), 0], 0]  # type: ignore[union-attr]
    assert torch.equal(got, torch.from_numpy(want))
    line = DATASETS.get("cifar-fs")().describe(cfg)
    assert "unpacked" in line and "64/16/20 classes" in line and "dataset.channels=3" in line

    # dataset.split as a folder of class lists
    mine = tmp_path / "mine"
    mine.mkdir()
    for s, names in zip(
        SPLITS, (["apple", "bear", "boy"], ["bus", "can"], ["tank", "rose"]), strict=True
    ):
        (mine / f"{s}.txt").write_text("# my split\n" + "\n".join(names) + "\n")
    own = DATASETS.get("cifar-fs")().build(cfg.model_copy(update={"split": str(mine)}), "val")
    assert own.class_names == ["bus", "can"]
    (mine / "val.txt").write_text("bus\nunicorn\n")
    with pytest.raises(DataError, match="'unicorn' is not a CIFAR-100 fine class"):
        DATASETS.get("cifar-fs")().build(cfg.model_copy(update={"split": str(mine)}), "val")
    with pytest.raises(ConfigError, match="unknown cifar-fs split 'lake'"):
        DATASETS.get("cifar-fs")().build(cfg.model_copy(update={"split": "lake"}), "val")


def test_cifar_malformed_files_are_refused(cifar: dict[str, object]) -> None:
    files = dict(cifar["files"])  # type: ignore[call-overload]
    good = cifar100.parse(files)
    assert good["starts"][-1] == 100 * (TRAIN_PER_CLASS + TEST_PER_CLASS)
    assert good["coarse_of"].tolist() == [COARSE_OF[f] for f in FINE]
    cases: list[tuple[dict[str, bytes], str]] = [
        ({"train.bin": files["train.bin"][:-1]}, "not a whole number of 3,074-byte records"),
        ({"test.bin": b"\x05\xc8" + bytes(3072)}, "fine label 200"),
        ({"test.bin": b"\x15\x00" + bytes(3072)}, "coarse label 21"),
        ({"fine_label_names.txt": b"apple\n"}, "should list 100 distinct names"),
    ]
    rec = np.frombuffer(files["test.bin"], np.uint8).reshape(-1, 3074).copy()
    rec[rec[:, 1] == 0, 1] = 1  # no images of apple left
    cases.append(
        ({"train.bin": rec.tobytes(), "test.bin": rec.tobytes()}, "no images of fine class 0")
    )
    rec = np.frombuffer(files["train.bin"], np.uint8).reshape(-1, 3074).copy()
    rec[np.flatnonzero(rec[:, 1] == 3)[0], 0] = 0  # bear under two superclasses
    cases.append(({"train.bin": rec.tobytes()}, r"fine class 3 \(bear\) has records under two"))
    for change, message in cases:
        with pytest.raises(DataError, match=message):
            cifar100.parse({**files, **change})


def test_cifar_archive_checksums(
    cifar: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = DATASETS.get("cifar-fs")()
    cfg = DatasetConfig(name="cifar-fs", data_dir=str(tmp_path))
    with pytest.raises(ConfigError) as err:
        spec.build(cfg, "train")
    assert err.value.key == "dataset.data_dir" and "cifar-100-binary.tar.gz" in err.value.message
    (tmp_path / "cifar-100-python").mkdir()  # the pickled version is pointed at, never read
    with pytest.raises(ConfigError, match="never read"):
        spec.build(cfg, "train")

    archive = put_cifar(tmp_path, cifar, monkeypatch)
    monkeypatch.setattr(cifar100.OFFICIAL, "md5", "03b5dce01913d631647c71ecec9e9cb8")
    with pytest.raises(DataError) as bad:  # not the official bytes, and nothing vouches for it
        spec.build(cfg, "train")
    assert str(archive) in str(bad.value) and "03b5dce01913d631647c71ecec9e9cb8" in str(bad.value)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    (archive.parent / "SHA256SUMS").write_text(f"{sha}  {cifar100.ARCHIVE}\n")
    ok = spec.build(cfg, "train")
    assert "SHA256 verified" in ok.verification  # type: ignore[attr-defined]
    (archive.parent / "SHA256SUMS").write_text(f"{'0' * 64}  {cifar100.ARCHIVE}\n")
    with pytest.raises(DataError, match=f"SHA256 mismatch for {archive}"):
        spec.build(cfg, "train")


def test_cifar_download_verified(
    cifar: dict[str, object],
    server: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, www = server
    (www / cifar100.ARCHIVE).write_bytes(cifar["archive"])  # type: ignore[arg-type]
    monkeypatch.setenv(cifar100.URL_ENV, url + cifar100.ARCHIVE)
    monkeypatch.setattr(cifar100.OFFICIAL, "md5", hashlib.md5(cifar["archive"]).hexdigest())  # type: ignore[arg-type]
    data_dir = tmp_path / "data"
    cfg = DatasetConfig(name="fc100", data_dir=str(data_dir), download=True)
    assert "will be downloaded" in DATASETS.get("fc100")().describe(cfg)
    val = DATASETS.get("fc100")().build(cfg, "val")
    assert val.num_classes == 20 and val.input_shape == (1, 28, 28)  # the config's defaults
    assert (data_dir / "cifar-100" / cifar100.ARCHIVE).is_file()
    assert "official MD5 verified" in val.verification  # type: ignore[attr-defined]
    # cifar-fs finds the same archive without downloading again
    fs = DATASETS.get("cifar-fs")().build(
        cfg.model_copy(update={"name": "cifar-fs", "download": False}), "val"
    )
    assert fs.num_classes == 16

    # a corrupted download is refused, naming the file and the checksum, and nothing is kept
    monkeypatch.setattr(cifar100.OFFICIAL, "md5", "03b5dce01913d631647c71ecec9e9cb8")
    bad = tmp_path / "bad"
    with pytest.raises(DataError) as err:
        cifar100.OFFICIAL.download(bad)
    assert "MD5 mismatch for cifar-100-binary.tar.gz" in str(err.value)
    assert "expected 03b5dce01913d631647c71ecec9e9cb8" in str(err.value)
    assert list(bad.iterdir()) == []


# ---- CUB-200-2011 -----------------------------------------------------------------------------
def test_cub_chen_split_episodes_at_84(
    cub_archive: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_cub(tmp_path, cub_archive, monkeypatch)
    cfg = DatasetConfig(name="cub", data_dir=str(tmp_path), image_size=84, channels=3)
    d = build_all("cub", cfg)
    want = {
        "train": [cub_class(i) for i in range(200) if i % 2 == 0],
        "val": [cub_class(i) for i in range(200) if i % 4 == 1],
        "test": [cub_class(i) for i in range(200) if i % 4 == 3],
    }
    assert {s: d[s].class_names for s in SPLITS} == want
    assert [d[s].num_classes for s in SPLITS] == [100, 50, 50]
    assert "official MD5 verified" in d["test"].verification  # type: ignore[attr-defined]
    assert all(d[s].examples_per_class == CUB_PER_CLASS for s in SPLITS)
    for s in SPLITS:
        b = d[s].sample(TaskShape(ways=5, shots=1, queries=2), 2, torch.Generator().manual_seed(3))
        assert b.support_x.shape == (2, 5, 3, 84, 84) and b.query_x.shape == (2, 10, 3, 84, 84)
        assert b.query_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
        for t in range(2):
            for img, label in zip(b.query_x[t], b.query_y[t], strict=True):
                name = d[s].class_names[int(b.info["classes"][t][label])]  # type: ignore[index]
                i = int(name[:3]) - 1
                colour = torch.tensor(cub_colour(i), dtype=torch.float32)
                if i == 7:  # the grayscale photograph is read as RGB (three equal channels)
                    continue
                assert (img.mean(dim=(1, 2)) * 255 - colour).abs().max() < 4
    test = d["test"]
    grey = test.images[test.table[test.class_names.index(cub_class(7)), 0]]  # type: ignore[union-attr]
    assert (
        grey.shape == (3, 84, 84)
        and torch.equal(grey[0], grey[1])
        and torch.equal(grey[1], grey[2])
    )
    line = DATASETS.get("cub")().describe(cfg)
    assert "100/50/50 classes" in line and "bounding boxes not used" in line


def test_cub_unpacked_folder_and_refusals(cub_files: dict[str, bytes], tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name, data in cub_files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    cfg = DatasetConfig(name="cub", data_dir=str(root / "CUB_200_2011"), image_size=16, channels=3)
    val = DATASETS.get("cub")().build(cfg, "val")
    assert val.class_names == [cub_class(i) for i in range(200) if i % 4 == 1]
    assert val.input_shape == (3, 16, 16) and "not verified" in val.verification  # type: ignore[attr-defined]
    seven = val.images[val.table[val.class_names.index(cub_class(5)), 0]]  # 5 % 4 == 1
    assert (seven.float().mean(dim=(1, 2)) - torch.tensor(cub_colour(5))).abs().max() < 4
    line = DATASETS.get("cub")().describe(cfg)
    assert "200 classes, 600 images" in line and "papers use 84x84 RGB" in line

    # classes.txt and the folders must agree; the Chen split needs all 200 classes
    gone = root / "CUB_200_2011" / "images" / cub_class(199)
    for f in gone.iterdir():
        f.unlink()
    gone.rmdir()
    cache.clear_memory()
    with pytest.raises(DataError, match=f"lists {cub_class(199)}, which has no images"):
        DATASETS.get("cub")().build(cfg, "val")
    (root / "CUB_200_2011" / "classes.txt").unlink()
    cache.clear_memory()
    with pytest.raises(DataError, match="has 199 classes; CUB-200-2011 has 200"):
        DATASETS.get("cub")().build(cfg, "val")
    # ... unless dataset.split names the classes
    lists = tmp_path / "lists"
    lists.mkdir()
    for s, i in zip(SPLITS, (0, 1, 2), strict=True):
        (lists / f"{s}.txt").write_text(f"{cub_class(2 * i)}\n{cub_class(2 * i + 1)}\n")
    own = DATASETS.get("cub")().build(cfg.model_copy(update={"split": str(lists)}), "test")
    assert own.class_names == [cub_class(4), cub_class(5)]


def test_cub_download_and_corrupted_archive(
    cub_archive: bytes,
    server: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, www = server
    (www / cub.ARCHIVE).write_bytes(cub_archive)
    monkeypatch.setenv(cub.URL_ENV, url + cub.ARCHIVE)
    monkeypatch.setenv(sources.DATA_ENV, str(tmp_path / "env-data"))  # the default data dir
    monkeypatch.setattr(cub.OFFICIAL, "md5", hashlib.md5(cub_archive).hexdigest())
    cfg = DatasetConfig(name="cub", download=True, image_size=8, channels=3)
    train = DATASETS.get("cub")().build(cfg, "train")
    assert train.num_classes == 100
    archive = tmp_path / "env-data" / "cub" / cub.ARCHIVE
    assert archive.is_file()

    # a local archive that is not the official one is refused, naming file and checksum
    archive.write_bytes(cub_archive[:-10] + bytes(10))
    monkeypatch.setattr(cub.OFFICIAL, "md5", "97eceeb196236b17998738112f37df78")
    with pytest.raises(DataError) as err:
        DATASETS.get("cub")().build(cfg, "train")
    assert str(archive) in str(err.value) and "97eceeb196236b17998738112f37df78" in str(err.value)
    # and so is a corrupted download, which leaves nothing behind
    with pytest.raises(DataError, match="MD5 mismatch for CUB_200_2011.tgz"):
        cub.OFFICIAL.download(tmp_path / "bad")
    assert list((tmp_path / "bad").iterdir()) == []


# ---- a run on each ----------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["cifar-fs", "fc100", "cub"])
def test_protonet_trains_on_the_built_archives(
    dataset: str,
    cifar: dict[str, object],
    cub_archive: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from workbench.catalog import Catalog
    from workbench.cli import main

    monkeypatch.setenv("WORKBENCH_DB", str(tmp_path / "e.db"))
    data = tmp_path / "data"
    if dataset == "cub":
        put_cub(data, cub_archive, monkeypatch)
    else:
        put_cifar(data, cifar, monkeypatch)
    size = "32" if dataset != "cub" else "24"
    args = [
        "run", "--algorithm", "protonet", "--dataset", dataset, "--data-dir", str(data),
        "--ways", "5", "--shots", "1", "--queries", "2", "--steps", "3",
        "--set", f"dataset.image_size={size}", "--set", "dataset.channels=3",
        "--set", "val_every=3", "--set", "val_episodes=2", "--set", "test_episodes=2",
        "--set", "ckpt_every=3", "--set", "train.meta_batch=1", "--quiet",
    ]  # fmt: skip
    assert main(args) == 0
    assert "run 1: finished at step 3" in capsys.readouterr().out
    with Catalog.open(tmp_path / "e.db") as cat:
        run = cat.get_run(1)
        assert run.status == "finished" and run.dataset == dataset
        assert [e.split for e in cat.evaluations(1)] == ["test"]


def test_the_run_starts_at_the_papers_shape_and_records_the_archive(
    cifar: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form's and CLI's start for CIFAR-FS/FC100 is 32x32 RGB, CUB's 84x84 RGB; the run's
    data record holds the archive's sha256, and the memory estimate counts the images."""
    from workbench.core.config import default_config
    from workbench.core.footprint import dataset_bytes
    from workbench.core.provenance import data_record

    for name, size in (("cifar-fs", 32), ("fc100", 32), ("cub", 84)):
        d = default_config("protonet", name).dataset
        assert (d.image_size, d.channels) == (size, 3)
    archive = put_cifar(tmp_path, cifar, monkeypatch)
    cfg = default_config("protonet", "cifar-fs").with_overrides([f"dataset.data_dir={tmp_path}"])
    record = data_record("cifar-fs", cfg.dataset, None)
    assert record["sha256"] == {archive.name: hashlib.sha256(archive.read_bytes()).hexdigest()}
    assert dataset_bytes(cfg) == 60_000 * 32 * 32 * 3
