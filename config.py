"""Every hyperparameter of the repo, as plain dataclasses, plus named presets.

Edit the defaults here, pick a preset with `--preset NAME`, or override any field from the command line of every
script with `--set section.field=value` (repeatable), e.g.

    python vqvae_train.py --set vqvae.num_codebooks=2 --set vqvae_train.epochs=3
    python transformer_train.py --preset mnist_2x2x2 --set gpt.n_layer=2

Invalid values stop the script at start with one line that says what to change.
"""
import argparse
import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field

from datasets import DATASETS, describe
from files import DataError

def reachable_grid_sizes(image_size):
    """Token-grid sizes the encoder can reach: each stride-2 conv maps n -> ceil(n / 2) (28: 14, 7, 4, 2, 1;
    32: 16, 8, 4, 2, 1)."""
    sizes, n = [], image_size
    while n > 1:
        n = (n + 1) // 2
        sizes.append(n)
    return sizes


@dataclass
class DataConfig:
    dataset: str = "mnist"          # mnist | fashion_mnist | cifar10 | emoji | folder (the entries of datasets.py)
    root: str = "data"              # where the raw files, the decoded-image and the token caches live
    train_limit: int = 0            # use only the first N training images (0 = all); tests use a few hundred
    test_limit: int = 0             # same for the test split
    # data.dataset=folder only: a folder of images (class subfolders = classes; image_folder.py says how it is read)
    folder: str = ""
    image_size: int = 32            # images are centre-cropped and resized to this (32: an 8x8 token grid)
    channels: int = 3               # 3 = RGB, 1 = grey
    background: str = "white"       # what transparent pixels are composited over: a colour name or #RRGGBB


@dataclass
class VQVAEConfig:
    grid_size: int = 4              # H = W of the token grid; one of reachable_grid_sizes()
    num_codebooks: int = 1          # K: the latent's channels are split into K chunks, one codebook each
    codebook_size: int = 256        # V: codes per codebook
    code_dim: int = 16              # channels per chunk (so the latent has K * code_dim channels)
    channels: tuple = (16, 32, 64)  # encoder width at full size, half size, and quarter size and below (decoder
                                    # mirrors): 28x28, 14x14, 7x7... for MNIST
    decoder_channels: tuple = ()    # the decoder's widths, same meaning; () = mirror the encoder. The decoder may be
                                    # wider: it is the half that draws the strokes, and only it runs when sampling
    num_res_blocks: int = 2         # residual blocks at the latent resolution, in encoder and decoder
    ema_decay: float = 0.99         # codebooks follow an exponential moving average of their assigned vectors
    commitment_weight: float = 0.25  # beta in ||z - sg(q)||^2
    dead_code_threshold: float = 1.0  # restart a code whose EMA count (assignments per batch) drops below this
    # Multi-scale residual quantization (VAR): () = the single-scale multi-codebook tokenizer above; otherwise
    # increasing side lengths ending at grid_size, e.g. (1, 2, 3, 4), quantized with one shared codebook (K = 1).
    scales: tuple = ()
    phi_ratio: float = 0.5          # VAR's phi: code map -> (1 - r) * map + r * conv3x3(map), one conv per scale
    # These follow data.dataset (build_config fills them in; they are never set by hand):
    image_size: int = 28            # H = W of the images
    image_channels: int = 1         # 1 = grey, 3 = RGB


@dataclass
class VQVAETrainConfig:
    epochs: int = 5
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    sample_every: int = 1           # epochs between reconstruction PNGs
    snapshot_steps: tuple = (20, 100)  # also save reconstructions after these first steps (the blurry start)
    num_show: int = 16              # images in each reconstruction PNG
    # Adversarial loss on the decoder (models/discriminator.py, Taming Transformers' recipe): 0 = MSE only. The
    # weight multiplies Taming's adaptive balance, so 1.0 moves the decoder's last layer as much as the MSE does;
    # 0.5 is the measured choice (RESULTS.md, tokenizer ablations), 1.0 diverged
    gan_weight: float = 0.5
    # the epoch the adversary joins. Taming starts it later, once the reconstructions are roughly right; on MNIST's
    # 5-epoch budget joining from the first epoch measured better (RESULTS.md)
    gan_start_epoch: int = 1
    gan_lr: float = 2e-4            # the discriminator's AdamW learning rate (betas 0.5, 0.9, as in Taming)
    gan_channels: tuple = (32, 64)  # discriminator widths; one stride-2 conv each


@dataclass
class PriorConfig:
    """What every token prior's transformer has: size, dropout, and the class token with its "no class" id."""
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 192
    mlp_ratio: int = 4
    dropout: float = 0.1
    num_classes: int = 10          # follows data.dataset: class ids 0..num_classes-1; id num_classes = "no class"
    class_dropout: float = 0.1     # share of training sequences whose class is replaced by "no class"
    SAMPLING_ONLY = ("temperature", "cfg_scale")  # fields training never reads: --resume does not compare them
    # Sampling temperature and classifier-free guidance scale generator.py, evaluate.py and benchmark.py draw this
    # prior's samples at (--temperature and --cfg override them). Each prior has its own: the best FID sits at a
    # different point for each (RESULTS.md). Guidance: uncond + s * (cond - uncond); 1.0 = plain conditional
    temperature: float = 1.0
    cfg_scale: float = 1.5


@dataclass
class GPTConfig(PriorConfig):
    """The raster-order GPT (models/gpt.py)."""
    # calibrated on MNIST: T 1.2 gives the lowest FID, T 1.15 with stronger guidance keeps nearly every sample
    # readable as its requested digit for a little FID (RESULTS.md, GPT temperature and guidance)
    temperature: float = 1.15
    cfg_scale: float = 1.75


@dataclass
class GPTTrainConfig:
    epochs: int = 8                # still learning at 5 (RESULTS.md, epochs ablation)
    batch_size: int = 256
    lr: float = 2e-3
    min_lr_ratio: float = 0.05     # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 200
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    sample_every: int = 1          # epochs between sample grids


@dataclass
class VARConfig(PriorConfig):
    """The next-scale prior (models/var.py): sized to match the GPT's parameter count (AdaLN adds 6 d^2 per block)."""
    d_model: int = 160
    # guidance rises over the scales (models/var.py: guidance_at), as in VAR's reference code; the point was
    # calibrated on MNIST (RESULTS.md, each prior's guidance)
    temperature: float = 1.1
    cfg_scale: float = 2.5


@dataclass
class DiffusionConfig(PriorConfig):
    """The discrete-diffusion prior (models/diffusion.py): a bidirectional transformer that denoises token grids."""
    noise: str = "mask"            # mask: absorbing state (MaskGIT / VQ-Diffusion); uniform: random codes (D3PM)
    steps: int = 16                # reverse steps at sampling time (generator.py --steps)
    choice_temperature: float = 4.5  # mask: Gumbel noise on confidences when choosing what to keep, annealed to 0
    # guidance rises over the reverse steps (models/diffusion.py: guidance_at), as in Muse; the point was calibrated
    # on MNIST with the mask process (RESULTS.md, each prior's guidance)
    temperature: float = 1.2
    cfg_scale: float = 2.0


@dataclass
class SampleConfig:
    top_k: int = 0                 # 0 = no top-k filtering
    batch_size: int = 1000
    temperatures: tuple = (0.1, 0.25, 0.33, 0.5, 0.75, 1.0, 2.0)  # generator.py's sweep, as in the write-up
    per_class: int = 10            # columns per class row in sample grids
    # torch.compile the prior's transformer blocks and the tokenizer's decoder when generator.py, evaluate.py and
    # benchmark.py sample. Off by default: compiling costs tens of seconds per process, which pays off only for large
    # sample sets (RESULTS.md, sampling speed). Training is not compiled: a compiled training step measured no faster.
    compile: bool = False


@dataclass
class Config:
    preset: str = "mnist"          # the preset this config was built from (build_config sets it; hints name its kin)
    seed: int = 0
    device: str = "auto"           # auto | cpu | cuda | mps
    amp: str = "auto"              # auto | off | bf16 | fp16 (auto: MPS fp16, CUDA bf16/fp16, CPU bf16 if native)
    checkpoint_dir: str = "checkpoints"
    results_dir: str = "_results"
    data: DataConfig = field(default_factory=DataConfig)
    vqvae: VQVAEConfig = field(default_factory=VQVAEConfig)
    vqvae_train: VQVAETrainConfig = field(default_factory=VQVAETrainConfig)
    gpt: GPTConfig = field(default_factory=GPTConfig)
    gpt_train: GPTTrainConfig = field(default_factory=GPTTrainConfig)
    var: VARConfig = field(default_factory=VARConfig)
    # a VAR epoch costs more than a GPT epoch (30 tokens per image instead of 16): 5 take about the GPT's 8 in
    # wall-clock time (RESULTS.md, training)
    var_train: GPTTrainConfig = field(default_factory=lambda: GPTTrainConfig(epochs=5))
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    diffusion_train: GPTTrainConfig = field(default_factory=GPTTrainConfig)  # the GPT's 8: same sequence length
    sample: SampleConfig = field(default_factory=SampleConfig)


def prior_sections(cfg):
    """The token priors a config knows: every section holding a PriorConfig (each with a `<name>_train` section)."""
    return tuple(f.name for f in dataclasses.fields(cfg) if isinstance(getattr(cfg, f.name), PriorConfig))


PRIORS = prior_sections(Config())  # ('gpt', 'var', 'diffusion'); a new prior adds its two sections to Config


def sampling_settings(cfg, prior):
    """(temperature, cfg_scale) a prior samples at by default: its section's in this config, not the copy in its
    checkpoint, so settings calibrated after training apply to the priors already trained. A prior kind this config
    has no section for (one registered elsewhere) keeps its checkpoint's (older checkpoints: the class default)."""
    section = getattr(cfg, prior.kind, None)
    source = section if isinstance(section, PriorConfig) else prior.cfg
    return source.temperature, getattr(source, "cfg_scale", PriorConfig.cfg_scale)


# Named presets: a list of overrides on top of the defaults above.
# The sampling settings of config.py's prior sections were calibrated on MNIST (RESULTS.md); the other datasets sample
# at temperature 1.0 and guidance 1.5 until their own sweeps say otherwise (priors with progressive guidance still ramp)
NEUTRAL_SAMPLING = [f"{prior}.{setting}" for prior in PRIORS for setting in ("temperature=1.0", "cfg_scale=1.5")]

# The colour tokenizer and priors sized for a 2-core CPU: a wider tokenizer than MNIST's (colour and texture), and
# epochs for a dataset of thousands rather than tens of thousands of images; 8x8 tokens for 32x32 emoji (each covers
# 4x4 pixels), and for a folder the grid its image size gives (config.folder_grid_size)
EMOJI_MODELS = ["vqvae.codebook_size=1024", "vqvae.channels=(32,64,128)", "vqvae_train.epochs=12",
                "vqvae_train.gan_weight=0",  # MSE only: the adversary's gain on emoji did not pay its time (RESULTS.md)
                "gpt_train.epochs=20", "var_train.epochs=10", "diffusion_train.epochs=20", *NEUTRAL_SAMPLING]

PRESETS = {
    "mnist": [],  # the default: 4x4x1 tokens
    "mnist_7x7x1": ["vqvae.grid_size=7"],
    "mnist_4x4x2": ["vqvae.num_codebooks=2"],
    "mnist_2x2x2": ["vqvae.grid_size=2", "vqvae.num_codebooks=2"],
    # VAR's multi-scale residual tokenizer: 1x1, 2x2, 3x3, 4x4 maps = 30 tokens, one shared codebook of 256
    "mnist_var": ["vqvae.scales=(1,2,3,4)"],
    "mnist_var_7x7": ["vqvae.grid_size=7", "vqvae.scales=(1,2,3,4,5,7)"],
    # Fashion-MNIST (28x28 grey, 10 kinds of clothing): textures and prints need the 7x7 grid and two codebooks,
    # which halve the reconstructions' FID against one (RESULTS.md); 98 tokens cost ~6x the 4x4 grid's prior time per
    # epoch, so 2 GPT epochs keep the default pipeline (tokenizer + GPT) at about 20 minutes on a 2-core CPU. The
    # tokenizer is MSE only: on clothes the adversary's adaptive weight spikes, knocks the codebook over and never
    # pays back (RESULTS.md, Fashion-MNIST: the tokenizer's adversary). Five tokenizer epochs and two GPT epochs are
    # short runs, so both train in batches of 64: more updates for about the same time per epoch, as these small
    # models keep 2 cores busy at that size; and the GPT without dropout, a regulariser for long runs (RESULTS.md,
    # what each step bought)
    "fashion_mnist": ["data.dataset=fashion_mnist", "vqvae.grid_size=7", "vqvae.num_codebooks=2",
                      "vqvae_train.gan_weight=0", "vqvae_train.batch_size=64", "gpt.dropout=0",
                      "gpt_train.batch_size=64", "gpt_train.epochs=2",
                      "diffusion_train.epochs=2", *NEUTRAL_SAMPLING, "gpt.temperature=1.05", "gpt.cfg_scale=2.0"],
    # VAR on the same 7x7 latent with a short scale plan: 1, 2, 4, 7 = 70 tokens (1, 2, 3, 4, 5, 7 would be 104), so
    # 3 epochs take about the GPT's 2 in wall-clock time; no dropout, batches of 128 (the GPT's recipe before it moved to
    # batches of 64, which this preset's tokenizer and VAR have not been measured with)
    "fashion_mnist_var": ["data.dataset=fashion_mnist", "vqvae.grid_size=7", "vqvae.scales=(1,2,4,7)",
                          "vqvae_train.gan_weight=0", "var.dropout=0", "var_train.batch_size=128", "var_train.epochs=3",
                          *NEUTRAL_SAMPLING],
    # CIFAR-10 (32x32 RGB), sized for one GPU: 8x8 tokens (each covers a 4x4 patch), 1024 codes, wider convs and
    # transformers (docs/how-it-works.md: why these). Its tokenizer keeps the default adversary, unmeasured on
    # CIFAR-10 (none can be fetched where the figures come from)
    "cifar10": ["data.dataset=cifar10", "vqvae.grid_size=8", "vqvae.codebook_size=1024", "vqvae.code_dim=32",
                "vqvae.channels=(64,128,256)", "vqvae_train.epochs=30",
                *[f"{p}.{f}" for p in PRIORS for f in ("n_layer=8", "n_head=8", "d_model=512")],
                *[f"{p}_train.{f}" for p in PRIORS for f in ("epochs=40", "lr=6e-4")],
                *NEUTRAL_SAMPLING],  # MNIST's calibrated settings do not carry over
    # the same 8x8 grid with the MNIST-sized models and a few epochs: about half an hour on a 2-core CPU
    "cifar10_cpu": ["data.dataset=cifar10", "vqvae.grid_size=8", "vqvae.codebook_size=512", "vqvae.code_dim=16",
                    "vqvae_train.epochs=5", "gpt_train.epochs=3", "var_train.epochs=2", "diffusion_train.epochs=3",
                    *NEUTRAL_SAMPLING],
    # Emoji (32x32 RGB over white, 9 unbalanced categories, 7.5k images from npm): the colour default for a CPU.
    # The same models train on any folder of images with --preset folder --set data.folder=PATH
    "emoji": ["data.dataset=emoji", "vqvae.grid_size=8", *EMOJI_MODELS],
    "emoji_var": ["data.dataset=emoji", "vqvae.grid_size=8", *EMOJI_MODELS, "vqvae.scales=(1,2,3,4,6,8)"],
    "folder": ["data.dataset=folder", *EMOJI_MODELS],
    # tiny models on a few hundred images: the end-to-end test and quick smoke runs
    "tiny": ["data.train_limit=512", "data.test_limit=256", "vqvae.channels=(8,16,16)", "vqvae.num_res_blocks=1",
             "vqvae.codebook_size=32", "vqvae.code_dim=4", "vqvae_train.epochs=1", "vqvae_train.batch_size=64",
             "vqvae_train.gan_start_epoch=2",  # MSE only: an adversary from the first step blurs a 1-epoch tokenizer
             "vqvae_train.num_show=8", "sample.batch_size=50", "sample.per_class=2", "diffusion.steps=4",
             *[f"{p}.{f}" for p in PRIORS for f in ("n_layer=1", "n_head=2", "d_model=32")],
             *[f"{p}_train.{f}" for p in PRIORS for f in ("epochs=1", "batch_size=64", "warmup_steps=2")]],
}
PRESETS["tiny_var"] = PRESETS["tiny"] + ["vqvae.scales=(1,2,3,4)"]
PRESETS["cifar10_var"] = PRESETS["cifar10"] + ["vqvae.scales=(1,2,3,4,5,6,8)"]  # VAR's own plan up to 8x8: 155 tokens


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


class ConfigError(ValueError):
    """A bad configuration value; scripts print its message as one line and exit."""


def positive_finite(value):
    """A usable temperature or guidance scale: NaN fails every comparison, so `> 0` alone would let inf through."""
    return math.isfinite(value) and value > 0


def _parse_value(text, current):
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
MOVED = {"sample.cfg_scale": "each prior has its own guidance scale; set gpt.cfg_scale, var.cfg_scale or "
                             "diffusion.cfg_scale (or pass --cfg to the sampling scripts)"}


def apply_override(cfg, assignment):
    """Apply one 'section.field=value' (or top-level 'field=value') string to cfg in place."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.field=value")
    path, text = assignment.split("=", 1)
    path = path.strip()
    *sections, name = path.split(".")
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
        setattr(target, name, _parse_value(text.strip(), current))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def validate(cfg):
    """Raise ConfigError with a one-line message for the first invalid value."""
    checks = run_checks(cfg) + tokenizer_checks(cfg) + prior_checks(cfg) + schedule_checks(cfg)
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return cfg


def tokenizer_checks(cfg):
    """(ok, message) for the tokenizer's fields."""
    v = cfg.vqvae
    grids = reachable_grid_sizes(v.image_size)
    scales_ok = (not v.scales or (min(v.scales) >= 1 and list(v.scales) == sorted(set(v.scales))
                                  and v.scales[-1] == v.grid_size))
    return [
        (v.grid_size in grids, f"vqvae.grid_size={v.grid_size} cannot be reached from {v.image_size}x{v.image_size}; "
                               f"choose one of {grids}"),
        (v.num_codebooks >= 1, f"vqvae.num_codebooks must be at least 1 (got {v.num_codebooks})"),
        (scales_ok, f"vqvae.scales={v.scales} must increase and end at vqvae.grid_size={v.grid_size}, e.g. (1,2,3,4)"),
        (not v.scales or v.num_codebooks == 1, "the multi-scale tokenizer (vqvae.scales) uses one shared codebook; "
                                               "set vqvae.num_codebooks=1"),
        (0.0 <= v.phi_ratio <= 1.0, f"vqvae.phi_ratio must be in [0, 1] (got {v.phi_ratio})"),
        (2 <= v.codebook_size <= 32768, f"vqvae.codebook_size must be in [2, 32768] (got {v.codebook_size}); "
                                         "the token cache stores int16"),
        (v.code_dim >= 1, f"vqvae.code_dim must be at least 1 (got {v.code_dim})"),
        (len(v.channels) == 3 and min(v.channels) >= 1, "vqvae.channels needs three positive widths, e.g. (32,64,128)"),
        (not v.decoder_channels or (len(v.decoder_channels) == 3 and min(v.decoder_channels) >= 1),
         "vqvae.decoder_channels needs three positive widths, e.g. (32,64,128), or () to mirror vqvae.channels"),
        (0.0 < v.ema_decay < 1.0, f"vqvae.ema_decay must be in (0, 1) (got {v.ema_decay})"),
        # the multi-scale quantizer divides by it; 0 turns the first loss into NaN, reported as divergence
        (v.commitment_weight > 0, f"vqvae.commitment_weight must be positive (got {v.commitment_weight})"),
        (v.dead_code_threshold >= 0, f"vqvae.dead_code_threshold must be 0 (never restart) or positive "
                                     f"(got {v.dead_code_threshold})"),
    ]


def run_checks(cfg):
    """(ok, message) for sampling, data, device, seed and the tokenizer's training fields."""
    return [
        (cfg.diffusion.noise in ("mask", "uniform"),
         f"diffusion.noise must be mask or uniform (got {cfg.diffusion.noise!r})"),
        (cfg.diffusion.steps >= 1, f"diffusion.steps must be at least 1 (got {cfg.diffusion.steps})"),
        (cfg.sample.top_k >= 0, f"sample.top_k must be 0 (off) or positive (got {cfg.sample.top_k})"),
        (len(cfg.sample.temperatures) > 0 and all(map(positive_finite, cfg.sample.temperatures)),
         f"sample.temperatures must be finite numbers above 0 (got {cfg.sample.temperatures})"),
        (cfg.sample.batch_size >= 1 and cfg.sample.per_class >= 1,
         "sample.batch_size and sample.per_class must be at least 1"),
        (cfg.data.image_size in FOLDER_IMAGE_SIZES,
         f"data.image_size must be a multiple of 4 from 16 to 128 (got {cfg.data.image_size})"),
        (cfg.data.channels in (1, 3), f"data.channels must be 3 (RGB) or 1 (grey) (got {cfg.data.channels})"),
        (cfg.data.train_limit >= 0 and cfg.data.test_limit >= 0,
         "data.train_limit and data.test_limit must be 0 (all) or positive"),
        (cfg.device in ("auto", "cpu", "cuda", "mps"), f"device must be auto, cpu, cuda or mps (got {cfg.device!r})"),
        (cfg.amp in ("auto", "off", "bf16", "fp16"), f"amp must be auto, off, bf16 or fp16 (got {cfg.amp!r})"),
        (0 <= cfg.seed < 2 ** 32, f"seed (--seed) must be in [0, 2**32 - 1], numpy's range (got {cfg.seed})"),
        # 0 would crash after a whole epoch, a negative count would silently show all but that many
        (cfg.vqvae_train.num_show >= 1, f"vqvae_train.num_show must be at least 1 (got {cfg.vqvae_train.num_show})"),
        # steps count from 1: a snapshot at 0 or below would never be taken
        (all(s >= 1 for s in cfg.vqvae_train.snapshot_steps),
         f"vqvae_train.snapshot_steps must be step numbers of at least 1 (got {cfg.vqvae_train.snapshot_steps})"),
        (cfg.vqvae_train.gan_weight >= 0 and math.isfinite(cfg.vqvae_train.gan_weight),
         f"vqvae_train.gan_weight must be 0 (off) or positive (got {cfg.vqvae_train.gan_weight})"),
        (cfg.vqvae_train.gan_start_epoch >= 1,
         f"vqvae_train.gan_start_epoch must be at least 1 (got {cfg.vqvae_train.gan_start_epoch})"),
        (cfg.vqvae_train.gan_lr > 0, f"vqvae_train.gan_lr must be positive (got {cfg.vqvae_train.gan_lr})"),
        (len(cfg.vqvae_train.gan_channels) >= 1 and min(cfg.vqvae_train.gan_channels) >= 1,
         f"vqvae_train.gan_channels needs positive widths, e.g. (32,64) (got {cfg.vqvae_train.gan_channels})"),
    ]


def prior_checks(cfg):
    """(ok, message) for every prior section's transformer and sampling fields."""
    checks = []
    for name in prior_sections(cfg):
        g = getattr(cfg, name)
        checks += [
            (g.d_model % g.n_head == 0, f"{name}.d_model={g.d_model} must be divisible by {name}.n_head={g.n_head}"),
            (g.n_layer >= 1 and g.n_head >= 1, f"{name}.n_layer and {name}.n_head must be at least 1"),
            (0.0 <= g.dropout < 1.0 and 0.0 <= g.class_dropout <= 1.0,
             f"{name}.dropout and {name}.class_dropout must be in [0, 1)"),
            (g.mlp_ratio >= 1, f"{name}.mlp_ratio must be at least 1 (got {g.mlp_ratio}); 0 drops the MLPs"),
            (positive_finite(g.temperature), f"{name}.temperature must be a finite number above 0 "
                                             f"(got {g.temperature})"),
            (positive_finite(g.cfg_scale), f"{name}.cfg_scale must be a finite number above 0 (got {g.cfg_scale})"),
        ]
    return checks


def schedule_checks(cfg):
    """(ok, message) for every training section's optimizer and schedule fields."""
    checks = []
    sections = (("vqvae_train", cfg.vqvae_train), *((f"{p}_train", getattr(cfg, f"{p}_train")) for p in prior_sections(cfg)))
    for name, section in sections:
        checks += [
            (section.lr > 0, f"{name}.lr must be positive (got {section.lr})"),
            (section.epochs >= 1, f"{name}.epochs must be at least 1 (got {section.epochs})"),
            (section.batch_size >= 1, f"{name}.batch_size must be at least 1 (got {section.batch_size})"),
            (section.sample_every >= 1, f"{name}.sample_every must be at least 1 (got {section.sample_every})"),
            # AdamW refuses a negative decay with a traceback, and only when the optimizer is built
            (section.weight_decay >= 0, f"{name}.weight_decay must be 0 or positive (got {section.weight_decay})"),
        ]
        if hasattr(section, "grad_clip"):  # the priors' sections: a zero or negative norm would stop learning
            checks += [
                (section.grad_clip > 0, f"{name}.grad_clip must be positive (got {section.grad_clip})"),
                # a negative warmup starts the cosine part-way; a ratio outside [0, 1] ends below 0 or above lr
                (section.warmup_steps >= 0, f"{name}.warmup_steps must be 0 or more (got {section.warmup_steps})"),
                (0.0 <= section.min_lr_ratio <= 1.0,
                 f"{name}.min_lr_ratio must be in [0, 1] (got {section.min_lr_ratio})"),
            ]
    return checks


FOLDER_ONLY = ("data.folder", "data.image_size", "data.channels", "data.background")
FOLDER_IMAGE_SIZES = range(16, 129, 4)  # data.image_size: a multiple of 4 from 16 to 128 (the classifier pools twice)


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
    if cfg.data.dataset != "folder":
        given = [a.split("=", 1)[0].strip() for a in assignments]
        stray = [name for name in FOLDER_ONLY if name in given]
        if stray:
            raise ConfigError(f"{stray[0]} is read only with data.dataset=folder (data.dataset={cfg.data.dataset} "
                              f"has its own images)")
    try:
        spec = describe(cfg.data)
    except DataError as e:
        raise ConfigError(str(e)) from None
    following = {"vqvae.image_size", "vqvae.image_channels", *(f"{p}.num_classes" for p in prior_sections(cfg))}
    for assignment in assignments:
        name = assignment.split("=", 1)[0].strip()
        if name in following:
            raise ConfigError(f"{name} follows the dataset ({spec.name}: {spec.channels}x{spec.image_size}x"
                              f"{spec.image_size}, {spec.num_classes} classes); choose data.dataset instead")
    cfg.vqvae.image_size, cfg.vqvae.image_channels = spec.image_size, spec.channels
    grid_given = any(a.split("=", 1)[0].strip() == "vqvae.grid_size" for a in [*PRESETS[cfg.preset], *assignments])
    if cfg.data.dataset == "folder" and not grid_given:
        cfg.vqvae.grid_size = folder_grid_size(spec.image_size)
        if cfg.vqvae.scales and cfg.vqvae.scales[-1] != cfg.vqvae.grid_size:  # a multi-scale plan up to that grid
            cfg.vqvae.scales = tuple(s for s in (1, 2, 3, 4, 5, 6, 8) if s <= cfg.vqvae.grid_size)
    for name in prior_sections(cfg):
        getattr(cfg, name).num_classes = spec.num_classes
    if spec.folder:
        cfg.checkpoint_dir = os.path.join(cfg.checkpoint_dir, spec.folder)
        cfg.results_dir = os.path.join(cfg.results_dir, spec.folder)
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
    return validate(follow_dataset(cfg, overrides))


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors (unknown flag, `--n ten`, a missing value) as one `error:` line, like every other
    error of the scripts, instead of a usage block above the message."""

    def error(self, message):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def make_parser(description):
    """The flags every script shares; scripts add their own on top."""
    parser = OneLineParser(description=description)
    parser.add_argument("--preset", default="mnist", help=f"named preset: {', '.join(PRESETS)}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one config field (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: config seed)")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    return parser


def parse_config(parser, argv=None):
    """Parse argv; on a bad config print one line and exit with status 2."""
    args = parser.parse_args(argv)
    try:
        cfg = build_config(args.preset, args.overrides, args.seed, args.device)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
    return args, cfg


def to_dict(section):
    return dataclasses.asdict(section)


def from_dict(kind, values):
    """Rebuild a config dataclass from a checkpoint's dict (tuples come back as lists)."""
    fields = {f.name: f for f in dataclasses.fields(kind)}
    known = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in fields}
    return kind(**known)
