"""Whether a config holds usable values: each check is (ok, one-line message that says what to change), and
`validate` raises the first failing one as a ConfigError before any work starts."""
import math
import re

from config import prior_sections
from models.vqvae import QUANTIZERS, reachable_grid_sizes
from pipeline.errors import ConfigError

FOLDER_IMAGE_SIZES = range(16, 129, 4)  # data.image_size: a multiple of 4 from 16 to 128 (the classifier pools twice)


def positive_finite(value):
    """A usable temperature or guidance scale: NaN fails every comparison, so `> 0` alone would let inf through."""
    return math.isfinite(value) and value > 0



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
        (v.quantizer in QUANTIZERS, f"vqvae.quantizer must be one of {', '.join(QUANTIZERS)} (got {v.quantizer!r})"),
        (not v.scales or v.quantizer == "vq", "the multi-scale tokenizer (vqvae.scales) has its own quantizer; "
                                              "set vqvae.quantizer=vq"),
        (len(v.fsq_levels) >= 1 and min(v.fsq_levels) >= 3,
         f"vqvae.fsq_levels needs levels of at least 3 each, e.g. (8,5,5,5) (got {v.fsq_levels})"),
        (scales_ok, f"vqvae.scales={v.scales} must increase and end at vqvae.grid_size={v.grid_size}, e.g. (1,2,3,4)"),
        (not v.scales or v.num_codebooks == 1, "the multi-scale tokenizer (vqvae.scales) uses one shared codebook; "
                                               "set vqvae.num_codebooks=1"),
        (0.0 <= v.phi_ratio <= 1.0, f"vqvae.phi_ratio must be in [0, 1] (got {v.phi_ratio})"),
        (v.scale_weighting in ("vectors", "scales"),
         f"vqvae.scale_weighting must be vectors or scales (got {v.scale_weighting!r})"),
        (2 <= v.codebook_size <= 32768, f"vqvae.codebook_size must be in [2, 32768] (got {v.codebook_size}); "
                                         "the token cache stores int16"),
        (v.code_dim >= 1, f"vqvae.code_dim must be at least 1 (got {v.code_dim})"),
        (len(v.channels) == 3 and min(v.channels) >= 1, "vqvae.channels needs three positive widths, e.g. (32,64,128)"),
        (not v.decoder_channels or (len(v.decoder_channels) == 3 and min(v.decoder_channels) >= 1),
         "vqvae.decoder_channels needs three positive widths, e.g. (32,64,128), or () to mirror vqvae.channels"),
        (0.0 < v.ema_decay < 1.0, f"vqvae.ema_decay must be in (0, 1) (got {v.ema_decay})"),
        # the multi-scale quantizer divides by it; 0 turns the first loss into NaN, reported as divergence
        (v.commitment_weight > 0, f"vqvae.commitment_weight must be positive (got {v.commitment_weight})"),
        (v.ssim_weight >= 0 and math.isfinite(v.ssim_weight),
         f"vqvae.ssim_weight must be 0 (off) or positive (got {v.ssim_weight})"),
        (v.dead_code_threshold >= 0, f"vqvae.dead_code_threshold must be 0 (never restart) or positive "
                                     f"(got {v.dead_code_threshold})"),
    ]


def image_size_check(data_cfg):
    """(ok, message) for data.image_size (a folder's images are resized to it; the classifier pools twice)."""
    return (data_cfg.image_size in FOLDER_IMAGE_SIZES,
            f"data.image_size must be a multiple of 4 from 16 to 128 (got {data_cfg.image_size})")


def run_checks(cfg):
    """(ok, message) for sampling, data, device, seed and the tokenizer's training fields."""
    return [
        (re.fullmatch(r"[\w.+-]*", cfg.run) is not None and cfg.run not in (".", ".."),
         f"run={cfg.run!r} must be a plain folder name (letters, digits, . _ + -), e.g. run=rvq"),
        (cfg.diffusion.noise in ("mask", "uniform"),
         f"diffusion.noise must be mask or uniform (got {cfg.diffusion.noise!r})"),
        (cfg.diffusion.steps >= 1, f"diffusion.steps must be at least 1 (got {cfg.diffusion.steps})"),
        (cfg.sample.top_k >= 0, f"sample.top_k must be 0 (off) or positive (got {cfg.sample.top_k})"),
        (len(cfg.sample.temperatures) > 0 and all(map(positive_finite, cfg.sample.temperatures)),
         f"sample.temperatures must be finite numbers above 0 (got {cfg.sample.temperatures})"),
        (cfg.sample.batch_size >= 1 and cfg.sample.per_class >= 1,
         "sample.batch_size and sample.per_class must be at least 1"),
        image_size_check(cfg.data),
        (cfg.data.channels in (1, 3), f"data.channels must be 3 (RGB) or 1 (grey) (got {cfg.data.channels})"),
        (cfg.data.train_limit >= 0 and cfg.data.test_limit >= 0,
         "data.train_limit and data.test_limit must be 0 (all) or positive"),
        (re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device) is not None,
         f"device must be auto, cpu, cuda, cuda:N or mps (got {cfg.device!r})"),
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
            (positive_finite(g.guidance), f"{name}.guidance must be a finite number above 0 (got {g.guidance})"),
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


