"""Self-describing checkpoints: weights next to the config that built them, saved atomically, loaded as data.

A checkpoint is a dict {'kind', 'config', 'model', ...}. `kind` says which model it holds ('vqvae', or a prior:
'gpt', 'var', 'diffusion'), so a script handed the wrong file says so, and generator.py rebuilds whichever prior it is. A VQ-VAE checkpoint carries `tokenizer_id`, a hash of its weights; a prior's
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


def tokenizer_path(cfg, multiscale=None):
    """checkpoints/vqvae.pt, or checkpoints/vqvae_multiscale.pt for VAR's tokenizer, so neither overwrites the other.
    multiscale=None: as the config says (vqvae.scales set or not)."""
    multiscale = bool(cfg.vqvae.scales) if multiscale is None else multiscale
    return default_path(cfg, "vqvae_multiscale" if multiscale else "vqvae")


def prior_name(cfg, kind):
    """File and results-folder name of a prior: gpt, var, diffusion, or diffusion_uniform for the uniform process."""
    if kind == "diffusion" and cfg.diffusion.noise != "mask":
        return f"diffusion_{cfg.diffusion.noise}"
    return kind


def prior_path(cfg, kind_or_path):
    """`--prior` takes a kind (gpt | var | diffusion) or a checkpoint path."""
    if kind_or_path in config_module.PRIORS:
        return default_path(cfg, prior_name(cfg, kind_or_path))
    return kind_or_path


def load_vqvae(path, device="cpu"):
    """Rebuild a VQ-VAE from its checkpoint alone: (model in eval mode, checkpoint dict)."""
    from models.vqvae import VQVAE
    preset = " --preset mnist_var" if "multiscale" in os.path.basename(path) else ""
    ckpt = load_checkpoint(path, "vqvae", hint=f"; train one first with: python vqvae_train.py{preset}")
    model = VQVAE(config_module.from_dict(config_module.VQVAEConfig, ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def build_prior(kind, cfg_dict, tokens):
    """An untrained prior of the given kind; `tokens` describes its tokenizer's sequence (see prior_token_info)."""
    if kind == "gpt":
        from models.gpt import GPT
        return GPT(config_module.from_dict(config_module.GPTConfig, cfg_dict), tuple(tokens["grid_shape"]),
                   tokens["codebook_size"])
    if kind == "diffusion":
        from models.diffusion import DiscreteDiffusion
        return DiscreteDiffusion(config_module.from_dict(config_module.DiffusionConfig, cfg_dict),
                                 tuple(tokens["grid_shape"]), tokens["codebook_size"])
    if kind == "var":
        from models.var import VAR
        return VAR(config_module.from_dict(config_module.VARConfig, cfg_dict), tuple(tokens["scales"]),
                   tokens["codebook_size"], tokens["code_dim"], tokens["phi_ratio"])
    raise CheckpointError(f"unknown prior kind {kind!r}; expected one of {', '.join(config_module.PRIORS)}")


def prior_token_info(vqvae):
    """What a prior checkpoint records about its tokenizer's token sequence."""
    c = vqvae.cfg
    return {"grid_shape": list(vqvae.grid_shape), "codebook_size": c.codebook_size, "scales": list(c.scales),
            "code_dim": c.code_dim, "phi_ratio": c.phi_ratio}


def load_prior(path, device="cpu"):
    """Rebuild a token prior (GPT, VAR or diffusion) from its checkpoint alone: (model in eval mode, checkpoint)."""
    ckpt = load_file(path, hint="; train one first with: python transformer_train.py --prior gpt|var|diffusion")
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in config_module.PRIORS:
        what = ckpt.get("kind") if isinstance(ckpt, dict) else None
        raise CheckpointError(f"{path} holds {'a ' + what + ' model' if what else 'no checkpoint of this repo'}, "
                              f"but a prior ({', '.join(config_module.PRIORS)}) was expected")
    model = build_prior(ckpt["kind"], ckpt["config"], ckpt)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def tokenizer_beside(prior_path, prior_ckpt):
    """Where a prior's tokenizer is by default: vqvae.pt, or vqvae_multiscale.pt for VAR, in the prior's folder."""
    name = "vqvae_multiscale.pt" if prior_ckpt.get("scales") else "vqvae.pt"
    return os.path.join(os.path.dirname(prior_path), name)


def load_pair(prior_path, vqvae_path=None, device="cpu"):
    """A prior and the tokenizer it was trained on; refuses a tokenizer with other weights.
    vqvae_path=None: the tokenizer beside the prior (tokenizer_beside)."""
    prior, prior_ckpt = load_prior(prior_path, device)
    vqvae_path = vqvae_path or tokenizer_beside(prior_path, prior_ckpt)
    vqvae, vqvae_ckpt = load_vqvae(vqvae_path, device)
    if prior_ckpt["tokenizer_id"] != vqvae_ckpt["tokenizer_id"]:
        raise CheckpointError(
            f"{prior_path} was trained on tokenizer {prior_ckpt['tokenizer_id']}, but {vqvae_path} is tokenizer "
            f"{vqvae_ckpt['tokenizer_id']}; retrain the prior with: python transformer_train.py --prior "
            f"{prior_ckpt['kind']}")
    return prior, vqvae, prior_ckpt
