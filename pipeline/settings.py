"""Building a run's config: defaults -> preset -> `--set` overrides -> explicit flags -> the fields that follow the
dataset, then validation (checks.py). Also the two directions between config sections and the plain dicts a
checkpoint stores, and the sampling settings a prior draws at."""
import dataclasses
import math
import os

from config import PRESETS, Config, DataConfig, PriorConfig, prior_sections
from models.vqvae import reachable_grid_sizes
from pipeline.checks import image_size_check, validate
from pipeline.datasets import DATASETS, spec_of
from pipeline.errors import ConfigError, DataError

FOLDER_ONLY = ("data.folder", "data.image_size", "data.channels", "data.background")
USER_PATHS = ("data.root", "data.folder", "checkpoint_dir", "results_dir")  # ~ and $VARIABLES expanded in these


def parse_value(text, current):
    """Parse `text` into the type of the field's current value."""
    kind = type(current)
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if kind is tuple:
            items = [t for t in text.strip("()[] ").split(",") if t.strip()]
            item_kind = type(current[0]) if current else int  # an empty default (vqvae.scales) holds ints
            return tuple(item_kind(t.strip()) for t in items)
        return kind(text)
    except ValueError:
        raise ConfigError(f"cannot read {text!r} as {kind.__name__}") from None


# fields that moved, so an old command line gets told where to instead of "unknown field"
MOVED = {"sample.cfg_scale": "each prior has its own guidance scale; set gpt.guidance, var.guidance or "
                             "diffusion.guidance (or pass --cfg to the sampling scripts)"}
# fields that were renamed: the old name (in older command lines and checkpoints) still sets the new field
RENAMED = {"cfg_scale": "guidance"}
# fields whose default changed after they were added: a checkpoint saved without the field was trained with this
# value, not today's default (keyed by the config class)
DEFAULT_BEFORE = {"VQVAEConfig": {"scale_weighting": "vectors"}}


def apply_override(cfg, assignment):
    """Apply one 'section.field=value' (or top-level 'field=value') string to cfg in place."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.field=value")
    path, text = assignment.split("=", 1)
    path = path.strip()
    *sections, name = path.split(".")
    name = RENAMED.get(name, name)
    target = cfg
    for section in sections:
        if not dataclasses.is_dataclass(target) or not hasattr(target, section):
            raise ConfigError(f"unknown config section {section!r} in {assignment!r}")
        target = getattr(target, section)
    if path in MOVED:
        raise ConfigError(f"{path} is gone: {MOVED[path]}")
    if not dataclasses.is_dataclass(target) or name not in {f.name for f in dataclasses.fields(target)}:
        raise ConfigError(f"unknown config field {path!r}; see config.py for the names")
    current = getattr(target, name)
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"{path!r} is a section; set one of its fields, e.g. {path}.<field>=...")
    try:
        setattr(target, name, parse_value(text.strip(), current))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def expand_path(text):
    """~ and $VARIABLES in a path a user gives, as the shell would have expanded them at the start of a word (it does
    not inside `--set data.folder=~/pictures`)."""
    return os.path.expandvars(os.path.expanduser(text))


def expand_user_paths(cfg):
    for path in USER_PATHS:
        *sections, name = path.split(".")
        section = cfg
        for part in sections:
            section = getattr(section, part)
        setattr(section, name, expand_path(getattr(section, name)))
    return cfg


def assigned_fields(assignments):
    """The 'section.field' names that 'section.field=value' assignments set."""
    return [a.split("=", 1)[0].strip() for a in assignments]


def folder_grid_size(image_size):
    """The token grid of a folder of images unless vqvae.grid_size is set: about a token per 4x4 pixels, at most
    8x8 tokens (28 -> 7x7, 32 -> 8x8, 64 -> 8x8 with a token per 8x8 pixels): more tokens would make the prior's
    sequence, and its attention, grow with the square of the image size on a CPU budget."""
    return max(g for g in reachable_grid_sizes(image_size) if g <= min(8, image_size // 4))


def follow_dataset(cfg, assignments=()):
    """Copy the dataset's image size, channels and class count into the fields that follow it, and put its
    checkpoints and results into their own subfolders (MNIST, the first dataset, keeps the top folders)."""
    if cfg.data.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset data.dataset={cfg.data.dataset!r}; choose one of {', '.join(DATASETS)}")
    size_ok, size_message = image_size_check(cfg.data)
    if cfg.data.dataset == "folder" and not size_ok:  # checked first: the folder's token grid is computed from it
        raise ConfigError(size_message)
    if cfg.data.dataset != "folder":
        stray = [name for name in FOLDER_ONLY if name in assigned_fields(assignments)]
        if stray:
            raise ConfigError(f"{stray[0]} is read only with data.dataset=folder (data.dataset={cfg.data.dataset} "
                              f"has its own images)")
    try:
        spec = spec_of(cfg.data)
    except DataError as e:
        raise ConfigError(str(e)) from None
    following = {"vqvae.image_size", "vqvae.image_channels", *(f"{p}.num_classes" for p in prior_sections(cfg))}
    for name in assigned_fields(assignments):
        if name in following:
            raise ConfigError(f"{name} follows the dataset ({spec.name}: {spec.channels}x{spec.image_size}x"
                              f"{spec.image_size}, {spec.num_classes} classes); choose data.dataset instead")
    cfg.vqvae.image_size, cfg.vqvae.image_channels = spec.image_size, spec.channels
    grid_given = "vqvae.grid_size" in assigned_fields([*PRESETS[cfg.preset], *assignments])
    if cfg.data.dataset == "folder" and not grid_given:
        cfg.vqvae.grid_size = folder_grid_size(spec.image_size)
        if cfg.vqvae.scales and cfg.vqvae.scales[-1] != cfg.vqvae.grid_size:  # a multi-scale plan up to that grid
            cfg.vqvae.scales = tuple(s for s in (1, 2, 3, 4, 5, 6, 8) if s <= cfg.vqvae.grid_size)
    for name in prior_sections(cfg):
        getattr(cfg, name).num_classes = spec.num_classes
    if "run" not in assigned_fields(assignments):
        cfg.run = preset_run(cfg.preset)
    for folder in (spec.folder, cfg.run):
        if folder:
            cfg.checkpoint_dir = os.path.join(cfg.checkpoint_dir, folder)
            cfg.results_dir = os.path.join(cfg.results_dir, folder)
    return cfg


def preset_run(preset):
    """The run folder a preset writes into: none for a dataset's own presets and their `_var` siblings (whose files
    have other names: vqvae_multiscale.pt, var.pt), else the preset's name without `_var`, so `tiny` and `tiny_var`
    share checkpoints/tiny/ as `mnist` and `mnist_var` share checkpoints/."""
    family = preset[:-len("_var")] if preset.endswith("_var") else preset
    return "" if family == preset_dataset(preset) else family


def follow_quantizer(cfg, assignments=()):
    """FSQ has no codebook: its vocabulary is the product of its levels and each token reads one channel per level, so
    vqvae.codebook_size and vqvae.code_dim follow vqvae.fsq_levels."""
    if cfg.vqvae.quantizer != "fsq":
        return cfg
    for name in ("vqvae.codebook_size", "vqvae.code_dim"):
        if name in assigned_fields(assignments):
            raise ConfigError(f"{name} follows vqvae.fsq_levels with vqvae.quantizer=fsq; set the levels instead, "
                              f"e.g. vqvae.fsq_levels=(8,5,5,5) for 1000 codes")
    cfg.vqvae.codebook_size, cfg.vqvae.code_dim = math.prod(cfg.vqvae.fsq_levels), len(cfg.vqvae.fsq_levels)
    return cfg


def build_config(preset="mnist", overrides=(), seed=None, device=None):
    """Defaults -> preset -> --set overrides -> explicit flags -> the dataset's fields, then validation."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    cfg = Config(preset=preset)
    for assignment in [*PRESETS[preset], *overrides]:
        apply_override(cfg, assignment)
    if seed is not None:
        cfg.seed = seed
    if device is not None:
        cfg.device = device
    return validate(follow_quantizer(follow_dataset(expand_user_paths(cfg), overrides), overrides))


def config_of_checkpoint(cfg, ckpt, overrides=()):
    """The config a prior samples with: the preset it was trained with, on the dataset it was trained on (its sampling
    settings as that preset defines them now), under this command's --set overrides, whatever preset the command
    names; so a checkpoint found by path never draws at another dataset's settings or with its class names. cfg
    itself when they agree. A checkpoint older than the recorded preset keeps the command's preset, or its
    dataset's own when it was trained on another dataset."""
    dataset = ckpt.get("dataset", DataConfig.dataset)
    preset = ckpt.get("preset") or (cfg.preset if dataset == cfg.data.dataset else dataset)
    preset = preset if preset in PRESETS else cfg.preset
    given = assigned_fields(overrides)
    if "data.dataset" in given or (preset == cfg.preset and dataset == cfg.data.dataset):
        return cfg  # an explicit data.dataset is the user's to give (load_pair refuses a contradiction)
    data = ckpt.get("run_config", {}).get("data", {})
    trained_on = [f"data.dataset={dataset}"] if dataset != preset_dataset(preset) else []
    if dataset == "folder":
        trained_on += [f"{name}={data[name[5:]]}" for name in FOLDER_ONLY if name[5:] in data and name not in given]
    return build_config(preset, [*trained_on, *overrides], cfg.seed, cfg.device)


def to_dict(section):
    return dataclasses.asdict(section)


def from_dict(kind, values):
    """Rebuild a config dataclass from a checkpoint's dict (tuples come back as lists)."""
    fields = {f.name: f for f in dataclasses.fields(kind)}
    values = {**DEFAULT_BEFORE.get(kind.__name__, {}), **{RENAMED.get(k, k): v for k, v in values.items()}}
    known = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in fields}
    return kind(**known)


def sampling_settings(cfg, prior):
    """(temperature, guidance) a prior samples at by default: its section's in this config, not the copy in its
    checkpoint, so settings calibrated after training apply to the priors already trained. A prior kind this config
    has no section for (one registered elsewhere) keeps its checkpoint's (older checkpoints: the class default)."""
    section = getattr(cfg, prior.kind, None)
    source = section if isinstance(section, PriorConfig) else prior.cfg
    return source.temperature, getattr(source, "guidance", PriorConfig.guidance)


# Named presets: a list of overrides on top of the defaults above.
# The sampling settings of config.py's prior sections were calibrated on MNIST (RESULTS.md); the other datasets sample


def preset_dataset(name):
    """The dataset a preset trains on (its data.dataset assignment, else the default)."""
    chosen = [a.split("=", 1)[1] for a in PRESETS[name] if a.startswith("data.dataset=")]
    return chosen[-1] if chosen else DataConfig.dataset


def tokenizer_preset(dataset, multiscale, preset=None):
    """The preset that trains the tokenizer a hint should name, "" for the default one: the run's own preset or its
    `_var` sibling (tiny -> tiny_var), else the dataset's (VAR's multi-scale one: `<dataset>_var`)."""
    if preset:
        base = preset[:-len("_var")] if preset.endswith("_var") else preset
        name = f"{base}_var" if multiscale else base
        if name in PRESETS and preset_dataset(name) == dataset:
            return "" if name == "mnist" else name
    name = f"{dataset}_var" if multiscale else dataset
    return name if name in PRESETS and name != "mnist" else ""


