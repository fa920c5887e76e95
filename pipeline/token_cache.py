"""The token cache: the dataset encoded once by a given tokenizer, keyed by that tokenizer's fingerprint so a
retrained VQ-VAE is never paired with stale tokens."""
import os

import torch

from pipeline import data, datasets, distributed

from pipeline.errors import CheckpointError, DataError
from pipeline.files import atomic_save, load_file


def token_cache_path(data_cfg, tokenizer_id):
    limits = f"_{data_cfg.train_limit}_{data_cfg.test_limit}" if (data_cfg.train_limit or data_cfg.test_limit) else ""
    name = datasets.spec_of(data_cfg).key.replace(":", "_")  # a folder's key names its contents
    return os.path.join(data_cfg.root, "tokens", f"{name}_{tokenizer_id}{limits}.pt")


@torch.no_grad()
def encode_split(encode_fn, images_uint8, batch_size=1000, desc="encoding"):
    """Token grids idx_NHWK (int16, which holds any codebook size up to 32768) for all images."""
    from tqdm import tqdm
    chunks = [encode_fn(data.to_model_range(images_uint8[i:i + batch_size])).to(torch.int16).cpu()
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
        images, labels = data.load_split(data_cfg, train)
        idx = encode_split(encode_fn, images, desc=f"encoding {split}")
        tokens[split] = (idx.long(), labels)
        payload[f"{split}_idx"], payload[f"{split}_labels"] = idx, labels
    atomic_save(payload, path)
    log(f"tokens: encoded {len(tokens['train'][0])} train and {len(tokens['test'][0])} test images -> {path}")
    return tokens
