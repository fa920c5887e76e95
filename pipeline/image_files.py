"""Image sets a user brings to evaluate.py: an npz (generator.py --save writes one; labels optional), a .npy array,
or a folder of PNG files (generator.py --save DIR/ names each by its index and class id, and the ids are read back).

Every form becomes (images uint8 N x C x H x W, labels int64 N). Without labels every label is -1 ("not
conditioned on a class"), and evaluate.py reports only the metrics that need none. Arrays may be N x C x H x W,
N x H x W x C (channels last, as most image libraries write) or N x H x W (grey); pixel values are uint8, 0 = black.
"""
import glob
import os
import re

import numpy as np
import torch
from pipeline.errors import SampleFileError

MIN_SAMPLES = 4  # precision/recall need each point's 3 nearest neighbours
MAKE_ONE = "make one with: python generator.py --n 10000 --save"


def read_images(path, image_shape, num_classes):
    """(images, labels) from an npz, a .npy or a folder of PNGs, checked against the dataset's image_shape (C, H, W)
    and class count."""
    if os.path.isdir(path):
        images, labels = read_png_folder(path, image_shape)
    elif not os.path.exists(path):
        raise SampleFileError(f"no sample file at {path}; {MAKE_ONE} {path}")
    elif path.endswith(".npy"):
        images, labels = read_npy(path), None
    else:
        images, labels = read_npz(path)
    images = to_nchw(images, image_shape, path)
    labels = np.full(len(images), -1, dtype=np.int64) if labels is None else check_labels(labels, len(images),
                                                                                             num_classes, path)
    if len(images) < MIN_SAMPLES:
        raise SampleFileError(f"{path} holds {len(images)} images; scoring needs at least {MIN_SAMPLES} (k=3 nearest "
                              f"neighbours); {MAKE_ONE} {path}")
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception:
        raise SampleFileError(f"{path} is not a readable npz of arrays; {MAKE_ONE} {path}") from None
    if "images" not in arrays:
        raise SampleFileError(f"{path} lacks the array(s) images; expected images (and optionally labels), "
                              f"found {', '.join(sorted(arrays)) or 'none'}")
    return arrays["images"], arrays.get("labels")


def read_npy(path):
    try:
        return np.load(path, allow_pickle=False)
    except Exception:
        raise SampleFileError(f"{path} is not a readable .npy array (uint8 images)") from None


def labels_from_names(paths):
    """The class ids in generator.py's PNG names (`00042-c3-dress.png`, `00042-uncond.png`: -1), or None when any
    file is named otherwise (a folder from elsewhere is scored without labels)."""
    matches = [re.fullmatch(r"\d+-(?:c(\d+)(?:-.*)?|uncond)\.png", os.path.basename(p)) for p in paths]
    if not all(matches):
        return None
    return np.array([int(m.group(1)) if m.group(1) is not None else -1 for m in matches], dtype=np.int64)


def read_png_folder(folder, image_shape):
    """Every *.png in the folder (sorted by name), as grey or RGB to match the dataset's channels, and the class ids
    their names hold (None when they hold none)."""
    from PIL import Image
    paths = sorted(glob.glob(os.path.join(glob.escape(folder), "*.png")))
    if not paths:
        raise SampleFileError(f"{folder} holds no .png files; give a folder of PNG images, an npz or a .npy")
    mode = "L" if image_shape[0] == 1 else "RGB"
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert(mode))
        except Exception:
            raise SampleFileError(f"{path} is not a readable PNG image") from None
        if pixels.shape[:2] != tuple(image_shape[1:]):
            raise SampleFileError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]} pixels; this dataset's images are "
                                  f"{image_shape[2]}x{image_shape[1]}")
        images.append(pixels)
    return np.stack(images), labels_from_names(paths)


def to_nchw(images, image_shape, path):
    """uint8 N x C x H x W from N x C x H x W, N x H x W x C or (one channel) N x H x W."""
    C, H, W = image_shape
    expected = f"uint8 of shape N x {C} x {H} x {W} (or N x {H} x {W} x {C}{'' if C > 1 else f', or N x {H} x {W}'})"
    if images.dtype != np.uint8:
        raise SampleFileError(f"{path}: images must be {expected}, pixel values 0-255 (got {images.dtype} "
                              f"{images.shape})")
    if images.ndim == 3 and C == 1 and images.shape[1:] == (H, W):
        return images[:, None]
    if images.ndim == 4 and images.shape[1:] == (C, H, W):
        return images
    if images.ndim == 4 and images.shape[1:] == (H, W, C):
        return images.transpose(0, 3, 1, 2)
    raise SampleFileError(f"{path}: images must be {expected} (got {images.dtype} {images.shape})")


def check_labels(labels, n, num_classes, path):
    if labels.dtype.kind not in "iu" or labels.shape != (n,):
        raise SampleFileError(f"{path}: labels must be integers of shape ({n},) (got {labels.dtype} {labels.shape})")
    labels = labels.astype(np.int64)
    # any other label would be scored wrongly without a word: 42 as a miss, -7 as unconditional
    bad = labels[(labels < -1) | (labels >= num_classes)]
    if len(bad):
        raise SampleFileError(f"{path}: labels must be -1 (unconditional) or a class id in 0..{num_classes - 1} "
                              f"(found {bad[0]}, in {len(bad)} of {n} samples)")
    return labels
