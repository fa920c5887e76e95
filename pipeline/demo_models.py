"""The trained models demo.py offers: every prior checkpoint under a folder, found by a recursive walk, and each one
loaded on first use and kept until its files change.

A model is named by its checkpoint's path relative to the folder (`fashion_mnist/gpt.pt`), and labelled by that
folder, its dataset and its prior (`fashion_mnist/run2 · fashion_mnist · gpt`), so no folder layout is assumed. Each
checkpoint is read as generator.py reads one: loaded as data (weights_only), its dataset and preset read from it,
its tokenizer found beside it or where its training recorded it, and the pair refused when their tokenizer
fingerprints differ. A file that changes on disk (a retrained prior or tokenizer) is read again on the next request.
"""
import os
import re
import threading
from dataclasses import dataclass

import torch

from models.prior import registered
from pipeline import data, datasets, devices, files, sampling, settings
from pipeline.checkpoint import check_dataset, check_layout, dataset_of, find_tokenizer, load_pair
from pipeline.errors import CheckpointError, UserError

TEMP_FILE = re.compile(r"\.tmp\d+\.pt$")  # files.atomic_write's temp file of a checkpoint being written


def stamp(path):
    """(modification time, size) of a file, or None when it is gone: a changed stamp means a changed file."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


def checkpoint_files(root):
    """Every .pt file under root (symbolic links followed, each real folder once), sorted; temp files skipped."""
    found, seen = [], set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = sorted(s for s in subfolders if not s.startswith("."))
        found += [os.path.join(folder, n) for n in names if n.endswith(".pt") and not TEMP_FILE.search(n)]
    return sorted(found)


@dataclass
class Entry:
    """One prior checkpoint as the page lists it."""
    id: str            # its path relative to the root, with / between folders
    path: str
    kind: str          # the prior's registered kind
    name: str          # its checkpoint name (gpt, var, diffusion, diffusion_uniform, ...)
    dataset: str
    preset: str        # the preset it was trained with ("" for a checkpoint older than that record)
    epoch: int
    training: str = ""  # who is training into it now ("" when no run is)

    @property
    def label(self):
        folder = os.path.dirname(self.id)
        parts = [folder] if folder else []
        return " · ".join(parts + [self.dataset, self.name])

    def listing(self):
        return {"id": self.id, "label": self.label, "kind": self.kind, "name": self.name, "dataset": self.dataset,
                "preset": self.preset, "epoch": self.epoch, "training": self.training}


def describe(root, path):
    """The Entry of a prior checkpoint; None for any other kind of checkpoint (a tokenizer, a classifier). A file
    that cannot be read as a checkpoint is a CheckpointError."""
    ckpt = files.load_file(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("kind"), str):
        raise CheckpointError(f"{path} is not a checkpoint of this repo")
    priors = registered()
    if ckpt["kind"] not in priors:
        return None
    check_layout(ckpt, path, keys=("kind", "model", "config", "tokenizer_id"))
    cls = priors[ckpt["kind"]]
    try:
        name = cls.checkpoint_name(settings.from_dict(cls.config_class, ckpt["config"]))
    except TypeError:
        raise CheckpointError(f"{path}: its config does not fit the {ckpt['kind']} prior") from None
    epoch = ckpt.get("epoch")
    return Entry(id=os.path.relpath(path, root).replace(os.sep, "/"), path=path, kind=ckpt["kind"], name=name,
                 dataset=str(dataset_of(ckpt)), preset=str(ckpt.get("preset", "")),
                 epoch=epoch if isinstance(epoch, int) else 0)


@dataclass
class Loaded:
    """A prior and its tokenizer, loaded, with what drawing from them needs (see Models.load)."""
    entry: Entry
    tokenizer: str     # the path of its tokenizer
    prior: object
    vqvae: object
    cfg: object        # the config it samples with: its trained preset under demo.py's --set overrides
    device: object
    dtype: object
    class_names: tuple
    image_shape: tuple
    stamps: dict       # path -> stamp when it was loaded (the prior's file and its tokenizer's)
    overrides: list    # demo.py's --set assignments (the generator.py command under a picture repeats them)
    test_split: tuple = None  # (images, labels) of the test split, read on first use

    def test_images(self):
        """The test split generator.py --edit reads (uint8 N x C x H x W, labels), read once."""
        if self.test_split is None:
            self.test_split = data.load_split(self.cfg.data, train=False)
        return self.test_split

    def defaults(self):
        """What the page's fields start at: the prior's own sampling point, its reverse steps where it has them,
        the config's seed and its number of samples per class."""
        temperature, guidance = settings.sampling_settings(self.cfg, self.prior)
        return {"temperature": temperature, "guidance": guidance, "seed": self.cfg.seed,
                "steps": getattr(self.prior.cfg, "steps", None) if self.prior.sampling_steps else None,
                "top_k": self.cfg.sample.top_k, "n": min(self.cfg.sample.per_class, 10)}

    def capabilities(self):
        p = self.prior
        return {"edits": list(p.edits), "reverse_process": p.reverse_process, "sampling_steps": p.sampling_steps,
                "kv_cache": p.kv_cache, "exact_likelihood": p.exact_likelihood,
                "multiscale_tokenizer": p.multiscale_tokenizer}

    def default_region(self, edit):
        """The cells generator.py --edit re-draws ((grid, grid) bool); none on a grid too small for its regions."""
        grid = self.vqvae.cfg.grid_size
        try:
            return sampling.redraw_cells(grid, edit)
        except CheckpointError:
            return torch.zeros(grid, grid, dtype=torch.bool)


class Models:
    """The prior checkpoints under a folder and the loaded ones, for several threads at once.

    list() walks the folder on every call, reading only files whose stamp changed since the last walk; get(id)
    loads a model on first use and again whenever its prior's or its tokenizer's file has changed since."""

    def __init__(self, root, base_cfg, overrides=()):
        self.root, self.base_cfg, self.overrides = root, base_cfg, list(overrides)
        self.device = None
        self._described = {}  # path -> (stamp, Entry or None, reason it was skipped or "")
        self._loaded = {}     # id -> Loaded
        self._scan_lock = threading.Lock()

    def scan(self):
        """(entries, skipped): the prior checkpoints under the root, and one line per .pt file that could not be
        read."""
        with self._scan_lock:
            paths = checkpoint_files(self.root) if os.path.isdir(self.root) else []
            described = {}
            for path in paths:
                now = stamp(path)
                known = self._described.get(path)
                if known is not None and known[0] == now:
                    described[path] = known
                    continue
                try:
                    described[path] = (now, describe(self.root, path), "")
                except UserError as e:
                    described[path] = (now, None, str(e))
            self._described = described
        entries = sorted((e for _, e, _ in described.values() if e is not None),
                         key=lambda e: (e.id.count("/"), e.id))  # the folder's own models first
        for entry in entries:
            entry.training = files.run_in_progress(entry.path) or ""
        skipped = [reason for _, _, reason in described.values() if reason]
        return entries, skipped

    def entry(self, model_id):
        entries, _ = self.scan()
        for entry in entries:
            if entry.id == model_id:
                return entry
        raise CheckpointError(f"no model {model_id!r} under {self.root} (any more); reload the page to see the "
                              f"models there now")

    def get(self, model_id):
        """The loaded model of this id, loaded again if its files changed; call with the model lock held."""
        entry = self.entry(model_id)
        loaded = self._loaded.get(model_id)
        if loaded is not None and loaded.entry == entry and all(stamp(p) == s for p, s in loaded.stamps.items()):
            return loaded
        self._loaded.pop(model_id, None)
        loaded = self.load(entry)
        self._loaded[model_id] = loaded
        return loaded

    def load(self, entry):
        """Load the prior and its tokenizer as generator.py does (load_pair refuses a tokenizer with another
        fingerprint), with the config of the preset it was trained with."""
        if self.device is None:
            self.device = devices.pick_device(self.base_cfg.device)
        before = stamp(entry.path)
        tokenizer = find_tokenizer(entry.path, files.load_file(entry.path))
        stamps = {entry.path: before, tokenizer: stamp(tokenizer)}
        prior, vqvae, ckpt = load_pair(entry.path, tokenizer, self.device)
        if {p: stamp(p) for p in stamps} != stamps:
            raise CheckpointError(f"{entry.path} or its tokenizer changed while it was read (a run is writing "
                                  f"it); try again in a moment")
        cfg = settings.config_of_checkpoint(self.base_cfg, ckpt, self.overrides)
        check_dataset(ckpt, entry.path, cfg.data.dataset)
        spec = datasets.spec_of(cfg.data)
        return Loaded(entry=entry, tokenizer=tokenizer, prior=prior, vqvae=vqvae, cfg=cfg, device=self.device,
                      dtype=devices.amp_dtype(self.device, cfg.amp), class_names=tuple(spec.class_names),
                      image_shape=tuple(spec.image_shape), stamps=stamps, overrides=self.overrides)

    def details(self, loaded):
        """What the page shows of a loaded model and fills its fields with."""
        vqvae = loaded.vqvae
        return {**loaded.entry.listing(), "classes": list(loaded.class_names),
                "image_shape": list(loaded.image_shape), "grid": list(vqvae.grid_shape),
                "scales": list(vqvae.cfg.scales), "defaults": loaded.defaults(),
                "capabilities": loaded.capabilities(), "device": devices.in_words(loaded.device, loaded.dtype)}


# what the page says when the folder holds no trained prior: the quick start's two training commands
TRAIN_COMMANDS = ("python vqvae_train.py", "python transformer_train.py")
