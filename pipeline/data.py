"""A dataset split in memory, batching, and the value ranges images move between.

A dataset lives in memory as one uint8 tensor images_NCHW (MNIST: 47 MB) and batches are index slices: no
DataLoader workers or per-image transforms, which on a 2-core CPU would cost more than the model.
"""
import torch

from pipeline.datasets import spec_of
from pipeline.errors import DataError


def load_split(data_cfg, train):
    """One split of the configured dataset as (images_NCHW uint8, labels_N int64), cut to data_cfg.train_limit /
    test_limit when those are set."""
    spec = spec_of(data_cfg)
    images, labels = spec.load(data_cfg, train)
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != spec.image_shape or len(images) != len(labels):
        raise DataError(f"the {spec.name} files under {data_cfg.root} are not {'x'.join(map(str, spec.image_shape))} "
                        f"uint8 images with one label each; delete them and run again")
    limit = data_cfg.train_limit if train else data_cfg.test_limit
    if limit:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def class_proportions(data_cfg):
    """The share of each class in the training split (classes_C, summing to 1): generator.py and evaluate.py draw
    sample sets in these proportions, since FID compares distributions."""
    _, labels = load_split(data_cfg, train=True)
    counts = torch.bincount(labels, minlength=spec_of(data_cfg).num_classes).double()
    return counts / counts.sum()


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
