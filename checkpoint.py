"""Self-describing checkpoints: weights next to the config that built them, saved atomically, loaded as data.

A checkpoint is a dict {'kind', 'config', 'model', ...}. `kind` says which model it holds ('vqvae' or 'gpt'), so a
script handed the wrong file says so. A VQ-VAE checkpoint carries `tokenizer_id`, a hash of its weights; a prior's
checkpoint records the `tokenizer_id` it was trained on, so pairing it with another tokenizer is caught.
"""
import hashlib
import os

import torch

import config as config_module


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or of the wrong kind; scripts print its message as one line."""


def atomic_save(obj, path):
    """Write to a temp file in the same folder, then rename: a kill mid-save leaves the old file intact."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp_path = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(obj, tmp_path)
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def load_file(path, what="checkpoint", hint=""):
    if not os.path.exists(path):
        raise CheckpointError(f"no {what} at {path}{hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{what} {path} is unreadable ({str(e).splitlines()[0][:120]}); "
                              f"delete it and train again") from None


def load_checkpoint(path, kind, hint=""):
    ckpt = load_file(path, hint=hint)
    if not isinstance(ckpt, dict) or "kind" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint of this repo")
    if ckpt["kind"] != kind:
        raise CheckpointError(f"{path} holds a {ckpt['kind']} model, but a {kind} checkpoint was expected")
    return ckpt


def tokenizer_fingerprint(model):
    """A short hash of a tokenizer's weights and codebooks: equal fingerprints mean equal token grids."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


def default_path(cfg, name):
    return os.path.join(cfg.checkpoint_dir, f"{name}.pt")


def load_vqvae(path, device="cpu"):
    """Rebuild a VQ-VAE from its checkpoint alone: (model in eval mode, checkpoint dict)."""
    from models.vqvae import VQVAE
    ckpt = load_checkpoint(path, "vqvae", hint="; train one first with: python vqvae_train.py")
    model = VQVAE(config_module.from_dict(config_module.VQVAEConfig, ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def load_prior(path, device="cpu"):
    """Rebuild a token prior (the raster GPT) from its checkpoint alone: (model in eval mode, checkpoint dict)."""
    from models.gpt import GPT
    ckpt = load_checkpoint(path, "gpt", hint="; train one first with: python transformer_train.py")
    gpt_cfg = config_module.from_dict(config_module.GPTConfig, ckpt["config"])
    model = GPT(gpt_cfg, tuple(ckpt["grid_shape"]), ckpt["codebook_size"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def load_pair(prior_path, vqvae_path, device="cpu"):
    """A prior and the tokenizer it was trained on; refuses a tokenizer with other weights."""
    prior, prior_ckpt = load_prior(prior_path, device)
    vqvae, vqvae_ckpt = load_vqvae(vqvae_path, device)
    if prior_ckpt["tokenizer_id"] != vqvae_ckpt["tokenizer_id"]:
        raise CheckpointError(
            f"{prior_path} was trained on tokenizer {prior_ckpt['tokenizer_id']}, but {vqvae_path} is tokenizer "
            f"{vqvae_ckpt['tokenizer_id']}; retrain the prior with: python transformer_train.py")
    return prior, vqvae, prior_ckpt
