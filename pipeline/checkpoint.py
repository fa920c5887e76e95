"""Self-describing checkpoints: weights next to the config that built them, saved atomically, loaded as data.

A checkpoint is a dict {'kind', 'config', 'model', ...}. `kind` says which model it holds ('vqvae', 'classifier',
or a registered prior: 'gpt', 'var', 'diffusion', ...), so a script handed the wrong file says so, and generator.py
rebuilds whichever prior it is. A VQ-VAE checkpoint carries `tokenizer_id`, a hash of its weights; a prior's
checkpoint records the `tokenizer_id` it was trained on and its tokenizer's description (VQVAE.token_info()), so
pairing it with another tokenizer is caught.
"""
import hashlib
import os

import torch

import config as config_module
from pipeline import devices, settings
from pipeline.errors import CheckpointError
from pipeline.files import load_file


def check_layout(ckpt, path, keys=("kind", "model")):
    """A dict with the keys a checkpoint of this repo has, its weights a dict (a hand-made file is refused here, not
    with a KeyError deep inside a script)."""
    missing = [key for key in keys if not isinstance(ckpt, dict) or key not in ckpt]
    if not missing and not all(isinstance(ckpt[key], dict) for key in ("model", "config") if key in keys):
        missing = ["weights and config as dicts"]
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint of this repo (it lacks {', '.join(missing)}); "
                              f"give a file written by its training scripts")


def check_weights_finite(ckpt, path):
    """Weights with NaN or inf would draw black images without a word; refuse them."""
    bad = [name for name, tensor in ckpt["model"].items()
           if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise CheckpointError(f"{path} holds non-finite weights ({bad[0]}{' and others' if len(bad) > 1 else ''}); "
                              f"its training diverged: retrain it with a lower learning rate")


def load_checkpoint(path, kind, hint=""):
    ckpt = load_file(path, hint=hint)
    check_layout(ckpt, path)
    if ckpt["kind"] != kind:
        raise CheckpointError(f"{path} holds a {ckpt['kind']} model, but a {kind} checkpoint was expected")
    check_weights_finite(ckpt, path)
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


def prior_path(cfg, kind_or_path):
    """`--prior` takes a registered kind (gpt | var | diffusion | ...) or a checkpoint path."""
    from models.prior import registered
    priors = registered()
    if kind_or_path in priors:
        return default_path(cfg, priors[kind_or_path].checkpoint_name(getattr(cfg, kind_or_path)))
    return kind_or_path


def dataset_of(ckpt):
    """The dataset a checkpoint was trained on; checkpoints from before datasets were a parameter hold the default."""
    return ckpt.get("dataset", config_module.DataConfig.dataset)


def check_dataset(ckpt, path, dataset):
    """Refuse a checkpoint of another dataset than this run's (dataset=None: any)."""
    found = dataset_of(ckpt)
    if dataset is not None and found != dataset:
        preset = ckpt["preset"] if ckpt.get("preset") in config_module.PRESETS else found
        flags = f"--preset {preset}" if settings.preset_dataset(preset) == found else \
            f"--preset {preset} --set data.dataset={found}"
        raise CheckpointError(f"{path} was trained on {found}, but this run is on {dataset}; run with {flags} "
                              f"(or train one for {dataset})")


def load_vqvae(path, device="cpu", dataset=None, preset=None):
    """Rebuild a VQ-VAE from its checkpoint alone: (model in eval mode, checkpoint dict). dataset: refuse a tokenizer
    trained on another one; preset: the run's, for the hint on how to train a missing one."""
    from models.vqvae import VQVAE
    preset = settings.tokenizer_preset(dataset or config_module.DataConfig.dataset,
                                            "multiscale" in os.path.basename(path), preset)
    ckpt = load_checkpoint(path, "vqvae", hint=f"; train one first with: python vqvae_train.py"
                                               f"{' --preset ' + preset if preset else ''}")
    check_dataset(ckpt, path, dataset)
    model = rebuild(path, lambda: VQVAE(settings.from_dict(config_module.VQVAEConfig, ckpt["config"])), ckpt)
    return model.to(device).eval(), ckpt


def rebuild(path, build, ckpt):
    """build() the model its config describes and load its weights; a config or weights that do not fit (a
    hand-edited file) is one line, not a traceback from inside the model."""
    check_layout(ckpt, path, keys=("kind", "model", "config", "tokenizer_id"))
    try:
        model = build()
        model.load_state_dict(ckpt["model"])
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError, RuntimeError, AttributeError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:100]
        raise CheckpointError(f"{path}: its weights do not fit the model its config describes ({reason}); "
                              f"give a file written by this repo's training scripts") from None
    if "tokenizer_id" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint of this repo (it lacks tokenizer_id)")
    return model


def build_prior(kind, cfg_dict, tokens, vqvae=None):
    """An untrained prior of a registered kind, from its config section (as a dict) and its tokenizer's description
    (VQVAE.token_info(), which every prior checkpoint stores); with the trained vqvae, it copies what it keeps of it."""
    from models.prior import prior_class
    try:
        cls = prior_class(kind)
    except KeyError as e:
        raise CheckpointError(e.args[0]) from None
    return cls.from_tokenizer(settings.from_dict(cls.config_class, cfg_dict), tokens, vqvae)


def load_prior(path, device="cpu"):
    """Rebuild a token prior of any registered kind from its checkpoint alone: (model in eval mode, checkpoint)."""
    from models.prior import registered
    kinds = ", ".join(registered())
    ckpt = load_file(path, hint=f"; train one first with: python transformer_train.py --prior KIND ({kinds})")
    check_layout(ckpt, path)
    if ckpt["kind"] in ("vqvae", "classifier"):
        raise CheckpointError(f"{path} holds a {ckpt['kind']} model, but a prior ({kinds}) was expected")
    check_weights_finite(ckpt, path)
    model = rebuild(path, lambda: build_prior(ckpt["kind"], ckpt["config"], ckpt), ckpt)
    return model.to(device).eval(), ckpt


def tokenizer_beside(prior_path, prior_ckpt):
    """Where a prior's tokenizer is by default: vqvae.pt, or vqvae_multiscale.pt for one on the multi-scale
    tokenizer (VAR), in the prior's folder."""
    name = "vqvae_multiscale.pt" if prior_ckpt.get("scales") else "vqvae.pt"
    return os.path.join(os.path.dirname(prior_path), name)


def find_tokenizer(prior_path, prior_ckpt):
    """The prior's own tokenizer: the one beside it, or the path its training run recorded (`--vqvae OTHER`),
    whichever exists and carries the tokenizer_id the prior was trained on; failing that, the first that exists
    (load_pair then names the mismatch), or the one beside it (load_vqvae then says how to train one)."""
    beside = tokenizer_beside(prior_path, prior_ckpt)
    candidates = [p for p in dict.fromkeys([beside, prior_ckpt.get("vqvae_path")]) if p and os.path.isfile(p)]
    for path in candidates:
        try:
            if load_file(path).get("tokenizer_id") == prior_ckpt["tokenizer_id"]:
                return path
        except (CheckpointError, AttributeError):
            continue
    return candidates[0] if candidates else beside


def load_pair(prior_path, vqvae_path=None, device="cpu", dataset=None, compile=False):
    """A prior and the tokenizer it was trained on; refuses a tokenizer with other weights, and either of them when
    trained on another dataset than `dataset` (None: any). vqvae_path=None: the tokenizer beside the prior.
    compile=True: compiled for sampling (config sample.compile)."""
    prior, prior_ckpt = load_prior(prior_path, device)
    check_dataset(prior_ckpt, prior_path, dataset)
    dataset = dataset or dataset_of(prior_ckpt)  # its tokenizer was trained on the same images
    vqvae_path = vqvae_path or find_tokenizer(prior_path, prior_ckpt)
    vqvae, vqvae_ckpt = load_vqvae(vqvae_path, device, dataset)
    if prior_ckpt["tokenizer_id"] != vqvae_ckpt["tokenizer_id"]:
        raise CheckpointError(
            f"{prior_path} was trained on tokenizer {prior_ckpt['tokenizer_id']}, but {vqvae_path} is tokenizer "
            f"{vqvae_ckpt['tokenizer_id']}; retrain the prior with: python transformer_train.py --prior "
            f"{prior_ckpt['kind']}")
    if compile:
        devices.compile_for_sampling(prior, vqvae)
    return prior, vqvae, prior_ckpt
