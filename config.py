"""Every hyperparameter of the repo, as plain dataclasses, and the named presets.

Edit the defaults here, pick a preset with `--preset NAME`, or override any field from the command line of every
script with `--set section.field=value` (repeatable), e.g.

    python vqvae_train.py --set vqvae.num_codebooks=2 --set vqvae_train.epochs=3
    python transformer_train.py --preset mnist_2x2x2 --set gpt.n_layer=2

This file imports only the standard library. Reading and checking these values is pipeline/settings.py's job, and
the measurements behind the defaults are in RESULTS.md.
"""
from dataclasses import dataclass, field, fields


@dataclass
class DataConfig:
    dataset: str = "mnist"          # mnist | fashion_mnist | cifar10 | emoji | folder (the entries of pipeline/datasets.py)
    root: str = "data"              # where the raw files, the decoded-image and the token caches live
    train_limit: int = 0            # use only the first N training images (0 = all); tests use a few hundred
    test_limit: int = 0             # same for the test split
    # data.dataset=folder only: a folder of images (class subfolders = classes; pipeline/image_folder.py
    # says how it is read)
    folder: str = ""
    image_size: int = 32            # images are centre-cropped and resized to this (32: an 8x8 token grid)
    channels: int = 3               # 3 = RGB, 1 = grey
    background: str = "white"       # what transparent pixels are composited over: a colour name or #RRGGBB


@dataclass
class VQVAEConfig:
    grid_size: int = 4              # H = W of the token grid; one of reachable_grid_sizes()
    num_codebooks: int = 1          # K: the latent's channels are split into K chunks, one codebook each
    codebook_size: int = 256        # V: codes per codebook
    # vq: K EMA codebooks, one per chunk of channels | rvq: K EMA codebooks, each quantizing what the ones before it
    # left of the same vector (residual VQ) | fsq: finite scalar quantization, no codebook (models/fsq.py)
    quantizer: str = "vq"
    fsq_levels: tuple = (8, 5, 5, 5)  # fsq: the levels of each channel of a token; V is their product (pipeline/
                                      # settings.py sets codebook_size and code_dim from them)
    code_dim: int = 16              # channels per chunk (so the latent has K * code_dim channels)
    channels: tuple = (16, 32, 64)  # encoder width at full size, half size, and quarter size and below (decoder
                                    # mirrors): 28x28, 14x14, 7x7... for MNIST
    decoder_channels: tuple = ()    # the decoder's widths, same meaning; () = mirror the encoder. The decoder may be
                                    # wider: it is the half that draws the strokes, and only it runs when sampling
    num_res_blocks: int = 2         # residual blocks at the latent resolution, in encoder and decoder
    ema_decay: float = 0.99         # codebooks follow an exponential moving average of their assigned vectors
    commitment_weight: float = 0.25  # beta in ||z - sg(q)||^2
    # a structural term beside the MSE: + ssim_weight * (1 - SSIM(reconstruction, image)) (models/ssim.py); 0 = off.
    # The MSE blurs edges it cannot place; SSIM scores local contrast and structure, which a blur loses
    ssim_weight: float = 0.0
    dead_code_threshold: float = 1.0  # restart a code whose EMA count (assignments per batch) drops below this
    # Multi-scale residual quantization (VAR): () = the single-scale multi-codebook tokenizer above; otherwise
    # increasing side lengths ending at grid_size, e.g. (1, 2, 3, 4), quantized with one shared codebook (K = 1).
    scales: tuple = ()
    phi_ratio: float = 0.5          # VAR's phi: code map -> (1 - r) * map + r * conv3x3(map), one conv per scale
    # how the shared codebook counts the scales' residual vectors (models/quantizer.py): scales = each scale the same
    # share | vectors = each vector once, so the coarse maps, with few vectors, keep few codes alive
    scale_weighting: str = "scales"
    # These follow data.dataset (pipeline/settings.py fills them in; they are never set by hand):
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
    # weight multiplies Taming's adaptive balance, so 1.0 moves the decoder's last layer as much as the MSE does
    gan_weight: float = 0.5
    # the epoch the adversary joins (Taming starts it once the reconstructions are roughly right)
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
    SAMPLING_ONLY = ("temperature", "guidance")  # fields training never reads: --resume does not compare them
    # Sampling temperature and classifier-free guidance scale generator.py, evaluate.py and benchmark.py draw this
    # prior's samples at (--temperature and --cfg override them); each prior has its own best point.
    # Guidance: uncond + s * (cond - uncond); 1.0 = plain conditional
    temperature: float = 1.0
    guidance: float = 1.5


@dataclass
class GPTConfig(PriorConfig):
    """The raster-order GPT (models/gpt.py)."""
    # MNIST's point: nearly every sample readable as its requested digit, for a little FID
    temperature: float = 1.15
    guidance: float = 1.75


@dataclass
class GPTTrainConfig:
    epochs: int = 8
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
    # guidance rises over the scales (models/var.py: guidance_at), as in VAR's reference code; MNIST's point
    temperature: float = 1.1
    guidance: float = 2.5


@dataclass
class DiffusionConfig(PriorConfig):
    """The discrete-diffusion prior (models/diffusion.py): a bidirectional transformer that denoises token grids."""
    noise: str = "mask"            # mask: absorbing state (MaskGIT / VQ-Diffusion); uniform: random codes (D3PM)
    steps: int = 16                # reverse steps at sampling time (generator.py --steps)
    choice_temperature: float = 4.5  # mask: Gumbel noise on confidences when choosing what to keep, annealed to 0
    # guidance rises over the reverse steps (models/diffusion.py: guidance_at), as in Muse; MNIST's point
    temperature: float = 1.2
    guidance: float = 2.0


@dataclass
class SampleConfig:
    top_k: int = 0                 # 0 = no top-k filtering
    batch_size: int = 1000
    temperatures: tuple = (0.1, 0.25, 0.33, 0.5, 0.75, 1.0, 2.0)  # generator.py's sweep, as in the write-up
    per_class: int = 10            # columns per class row in sample grids
    # torch.compile the prior's transformer blocks and the tokenizer's decoder when generator.py, evaluate.py and
    # benchmark.py sample. Off by default: compiling costs tens of seconds per process, which pays off only for large
    # sample sets. Training is never compiled.
    compile: bool = False


@dataclass
class Config:
    preset: str = "mnist"          # the preset this config was built from (build_config sets it; hints name its kin)
    seed: int = 0
    device: str = "auto"           # auto | cpu | cuda | mps
    amp: str = "auto"              # auto | off | bf16 | fp16 (auto: MPS fp16, CUDA bf16/fp16, CPU bf16 if native)
    checkpoint_dir: str = "checkpoints"
    results_dir: str = "_results"
    # a subfolder of the dataset's checkpoints and results, so runs of other recipes sit side by side: by default
    # none for a dataset's own presets (mnist, mnist_var, emoji, ...) and the preset's name for the others
    # (checkpoints/mnist_7x7x1/); --set run=NAME keeps a recipe of your own apart (--set run= : the dataset's folder)
    run: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    vqvae: VQVAEConfig = field(default_factory=VQVAEConfig)
    vqvae_train: VQVAETrainConfig = field(default_factory=VQVAETrainConfig)
    gpt: GPTConfig = field(default_factory=GPTConfig)
    gpt_train: GPTTrainConfig = field(default_factory=GPTTrainConfig)
    var: VARConfig = field(default_factory=VARConfig)
    # a VAR epoch costs more than a GPT epoch (30 tokens per image instead of 16): fewer epochs, about the same time
    var_train: GPTTrainConfig = field(default_factory=lambda: GPTTrainConfig(epochs=5))
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    diffusion_train: GPTTrainConfig = field(default_factory=GPTTrainConfig)  # the GPT's 8: same sequence length
    sample: SampleConfig = field(default_factory=SampleConfig)


def prior_sections(cfg):
    """The token priors a config knows: every section holding a PriorConfig (each with a `<name>_train` section)."""
    return tuple(f.name for f in fields(cfg) if isinstance(getattr(cfg, f.name), PriorConfig))


PRIORS = prior_sections(Config())  # ('gpt', 'var', 'diffusion'); a new prior adds its two sections to Config



# --- presets: each a list of overrides on top of the defaults above, with one line on how it differs --------------

# The prior sections' sampling points are MNIST's; other datasets start from T 1.0, guidance 1.5 until swept
NEUTRAL_SAMPLING = [f"{prior}.{setting}" for prior in PRIORS for setting in ("temperature=1.0", "guidance=1.5")]

# Colour images on a CPU: a wider tokenizer with 1024 codes and no adversary, epochs for thousands of images
EMOJI_MODELS = ["vqvae.codebook_size=1024", "vqvae.channels=(32,64,128)", "vqvae_train.epochs=12",
                "vqvae_train.gan_weight=0", "gpt_train.epochs=20", "var_train.epochs=10", "diffusion_train.epochs=20",
                *NEUTRAL_SAMPLING]

PRESETS = {
    # MNIST with the defaults: 4x4x1 tokens, 256 codes, the adversary from epoch 1
    "mnist": [],
    # MNIST on a 7x7 grid
    "mnist_7x7x1": ["vqvae.grid_size=7"],
    # MNIST with two codebooks per position
    "mnist_4x4x2": ["vqvae.num_codebooks=2"],
    # MNIST on a 2x2 grid with two codebooks
    "mnist_2x2x2": ["vqvae.grid_size=2", "vqvae.num_codebooks=2"],
    # MNIST with VAR's multi-scale residual tokenizer: 1x1, 2x2, 3x3, 4x4 maps = 30 tokens, one shared codebook
    "mnist_var": ["vqvae.scales=(1,2,3,4)"],
    # MNIST with the multi-scale tokenizer up to a 7x7 grid
    "mnist_var_7x7": ["vqvae.grid_size=7", "vqvae.scales=(1,2,3,4,5,7)"],
    # Fashion-MNIST: 7x7x2 tokens of FSQ's 1000 codes, MSE and SSIM without the adversary, batches of 64, a 3-epoch
    # GPT without dropout, its own sampling point
    "fashion_mnist": ["data.dataset=fashion_mnist", "vqvae.grid_size=7", "vqvae.num_codebooks=2", "vqvae.quantizer=fsq",
                      "vqvae.ssim_weight=0.1", "vqvae_train.gan_weight=0", "vqvae_train.batch_size=64", "gpt.dropout=0",
                      "gpt_train.batch_size=64", "gpt_train.epochs=3",
                      "diffusion_train.epochs=2", *NEUTRAL_SAMPLING, "gpt.temperature=1.05", "gpt.guidance=2.0"],
    # Fashion-MNIST with the multi-scale tokenizer on a short 1, 2, 4, 7 plan (70 tokens), 3 VAR epochs
    "fashion_mnist_var": ["data.dataset=fashion_mnist", "vqvae.grid_size=7", "vqvae.scales=(1,2,4,7)",
                          "vqvae_train.gan_weight=0", "var.dropout=0", "var_train.batch_size=128", "var_train.epochs=3",
                          *NEUTRAL_SAMPLING],
    # CIFAR-10 sized for one GPU: 8x8 tokens, 1024 codes, wider convs and 8-layer d=512 priors for 40 epochs
    "cifar10": ["data.dataset=cifar10", "vqvae.grid_size=8", "vqvae.codebook_size=1024", "vqvae.code_dim=32",
                "vqvae.channels=(64,128,256)", "vqvae_train.epochs=30",
                *[f"{p}.{f}" for p in PRIORS for f in ("n_layer=8", "n_head=8", "d_model=512")],
                *[f"{p}_train.{f}" for p in PRIORS for f in ("epochs=40", "lr=6e-4")],
                *NEUTRAL_SAMPLING],
    # CIFAR-10's 8x8 grid with MNIST-sized models and a few epochs, for a CPU
    "cifar10_cpu": ["data.dataset=cifar10", "vqvae.grid_size=8", "vqvae.codebook_size=512", "vqvae.code_dim=16",
                    "vqvae_train.epochs=5", "gpt_train.epochs=3", "var_train.epochs=2", "diffusion_train.epochs=3",
                    *NEUTRAL_SAMPLING],
    # Emoji (32x32 RGB over white, 9 categories): 8x8 tokens with the colour models, the GPT at its own sampling point
    "emoji": ["data.dataset=emoji", "vqvae.grid_size=8", *EMOJI_MODELS, "gpt.temperature=0.9", "gpt.guidance=4.0"],
    # Emoji with the multi-scale tokenizer on a 1, 2, 3, 4, 6, 8 plan, VAR at its own sampling point
    "emoji_var": ["data.dataset=emoji", "vqvae.grid_size=8", *EMOJI_MODELS, "vqvae.scales=(1,2,3,4,6,8)",
                  "var.temperature=0.8", "var.guidance=5.0"],
    # any folder of images (--set data.folder=PATH) with the colour models
    "folder": ["data.dataset=folder", *EMOJI_MODELS],
    # tiny models on a few hundred MNIST images, MSE only: the tests and quick smoke runs
    "tiny": ["data.train_limit=512", "data.test_limit=256", "vqvae.channels=(8,16,16)", "vqvae.num_res_blocks=1",
             "vqvae.codebook_size=32", "vqvae.code_dim=4", "vqvae_train.epochs=1", "vqvae_train.batch_size=64",
             "vqvae_train.gan_start_epoch=2", "vqvae_train.num_show=8", "sample.batch_size=50", "sample.per_class=2",
             "diffusion.steps=4",
             *[f"{p}.{f}" for p in PRIORS for f in ("n_layer=1", "n_head=2", "d_model=32")],
             *[f"{p}_train.{f}" for p in PRIORS for f in ("epochs=1", "batch_size=64", "warmup_steps=2")]],
}
# the tiny models with the multi-scale tokenizer
PRESETS["tiny_var"] = PRESETS["tiny"] + ["vqvae.scales=(1,2,3,4)"]
# CIFAR-10 with VAR's own plan up to 8x8 (155 tokens)
PRESETS["cifar10_var"] = PRESETS["cifar10"] + ["vqvae.scales=(1,2,3,4,5,6,8)"]
