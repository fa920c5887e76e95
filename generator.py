"""Draw images from trained checkpoints: any prior (raster GPT, VAR, discrete diffusion) and its tokenizer.

    python generator.py                                   # temperature sweep grids from checkpoints/gpt.pt
    python generator.py --prior var                       # ... from checkpoints/var.pt (a kind or a path)
    python generator.py --prior diffusion --steps 8       # 8 reverse steps
    python generator.py --temperature 0.75 --top-k 50     # one grid
    python generator.py --n 10000 --save samples.npz      # N samples for evaluation (classes in the data's shares)
    python generator.py --n 100 --save samples/           # ... or one PNG per sample, named by index and class
    python generator.py --unconditional                   # ignore classes ("no class" token)
    python generator.py --prior var --edit inpaint        # zero-shot editing of real test images
    python generator.py --preset fashion_mnist            # from checkpoints/fashion_mnist/gpt.pt
    python generator.py --prior diffusion --show-process  # the reverse process as a strip and a GIF

The four modes (grids, --save, --edit, --show-process) are separate, and a flag the chosen mode would ignore
(--n without --save, --edit-images without --edit, ...) is refused in one line rather than dropped.

The prior's kind is read from its checkpoint; the tokenizer defaults to the one beside it (vqvae.pt, or
vqvae_multiscale.pt for VAR). Grid rows are named by class. The npz holds `images` (uint8, N x C x H x W, 0 = black)
and `labels` (int64, the class each sample was conditioned on, or -1 when unconditional).

Editing (`--edit`), on the first test images, conditioned on their true class: `inpaint` re-draws the centre of the
token grid, `outpaint` keeps the centre and re-draws the border, `complete` keeps the top half of the rows. The
raster GPT can only `complete` (it cannot look at tokens after the one it draws); VAR teacher-forces the kept tokens
at every scale; diffusion starts with only the re-drawn tokens corrupted. Each grid row: original, masked, results.
"""
import os
import time
from types import SimpleNamespace

import torch

from models.prior import priors_with
from pipeline import cli, data, datasets, devices, figures, sampling, settings
from pipeline.checkpoint import check_dataset, load_pair, prior_path
from pipeline.errors import CheckpointError, FlagError
from pipeline.sampling import EDITS, check_sampling_flags, flag

SAVE_N, EDIT_IMAGES, EDIT_SAMPLES = 10_000, 8, 4  # defaults of --n, --edit-images, --edit-samples


# --- the script ------------------------------------------------------------------------------------------------------

# What each mode does, and the flags that only some modes read: a flag given to a mode that ignores it is refused,
# since dropping it silently hides a mistake (`--n 5` without --save drew the full grids). --cfg, --steps and the
# shared flags are read by every mode.
MODES = {"grids": "when drawing grids", "save": "with --save", "edit": "with --edit",
         "show_process": "with --show-process"}
READ_BY = {
    "temperature": ("grids", "save", "edit"),
    "top_k": ("grids", "save", "edit"),
    "no_kv_cache": ("grids", "save", "edit"),
    "unconditional": ("grids", "save"),  # editing conditions on each test image's own class
    "batch_size": ("grids", "save"),
    "n": ("save",),
    "balanced": ("save",),
    "edit_images": ("edit",),
    "edit_samples": ("edit",),
    "out": ("grids", "edit", "show_process"),  # --save names its own file
}


def chosen_mode(args):
    """grids, save, edit or show_process; more than one mode flag is refused rather than one of them dropped."""
    given = [mode for mode in ("save", "edit", "show_process") if getattr(args, mode) not in (None, False)]
    if len(given) > 1:
        raise FlagError(f"{' and '.join(flag(m) for m in given)} are separate modes; give one of them")
    return given[0] if given else "grids"


def check_flags(args):
    """Every flag's value (the shared sampling check and the edit counts), and that the chosen mode reads it."""
    check_sampling_flags(args)
    for name in ("edit_images", "edit_samples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise FlagError(f"{flag(name)} must be at least 1 (got {value})")
    mode = chosen_mode(args)
    for name, modes in READ_BY.items():
        if mode not in modes and getattr(args, name) not in (None, False):
            readers = [MODES[m] for m in modes]
            readers = " or ".join(filter(None, [", ".join(readers[:-1]), readers[-1]]))
            raise FlagError(f"{flag(name)} does nothing {MODES[mode]}; it is read {readers}")
    return mode


def command_line():
    """The script's flags (README's and docs' commands are parsed with it in the tests)."""
    parser = cli.make_parser("Draw samples from a trained prior + VQ-VAE.")
    parser.add_argument("--prior", default="gpt", type=cli.user_path, help="gpt | var | diffusion, or a prior checkpoint path "
                                                       "(default: checkpoints/gpt.pt)")
    parser.add_argument("--vqvae", default=None, type=cli.user_path, help="tokenizer checkpoint (default: the one beside the prior)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="one temperature (default: the sweep in config.sample.temperatures for grids, "
                             "the prior's own, e.g. gpt.temperature, for --save and --edit)")
    cli.add_shorthand(parser, "top_k")
    parser.add_argument("--cfg", type=float, default=None,
                        help="classifier-free guidance scale (1 = off; default: the prior's own, e.g. gpt.guidance)")
    parser.add_argument("--steps", type=int, default=None, help="diffusion: reverse steps (default: diffusion.steps)")
    parser.add_argument("--unconditional", action="store_true", help='draw with the "no class" token')
    parser.add_argument("--n", type=int, default=None, help=f"number of samples for --save (default {SAVE_N})")
    parser.add_argument("--save", default=None, type=cli.user_path, metavar="FILE.npz|DIR/",
                        help="write N samples to an npz, or with a trailing slash one PNG per sample into a new folder")
    parser.add_argument("--balanced", action="store_true",
                        help="--save: the same number of samples of every class, cycling through them (default: "
                             "each class in its share of the training images, as FID compares distributions)")
    cli.add_shorthand(parser, "batch_size")
    parser.add_argument("--no-kv-cache", action="store_true", help="GPT/VAR: recompute the prefix every step (slow)")
    parser.add_argument("--edit", choices=EDITS, default=None, help="zero-shot editing of real test images")
    parser.add_argument("--edit-images", type=int, default=None, help=f"test images to edit (default {EDIT_IMAGES})")
    parser.add_argument("--edit-samples", type=int, default=None,
                        help=f"results per edited image (default {EDIT_SAMPLES})")
    parser.add_argument("--show-process", action="store_true", help="diffusion: save the reverse process (PNG + GIF)")
    parser.add_argument("--out", default=None, type=cli.user_path, help="folder for grids (default: _results/generator)")
    return parser


def main(argv=None):
    args, cfg = cli.parse_config(command_line(), argv)
    with cli.one_line_errors():
        generate(cfg, args, check_flags(args))


def generate(cfg, args, mode):
    devices.seed_everything(cfg.seed)
    device = devices.pick_device(cfg.device)
    path = prior_path(cfg, args.prior)
    prior, vqvae, ckpt = load_pair(path, args.vqvae, device, compile=cfg.sample.compile)
    cfg = trained_config(cfg, ckpt, path, args)
    dtype = devices.amp_dtype(device, cfg.amp)
    sampling.check_steps(prior, args.steps)
    temperature, guidance = sampling.sampling_point(cfg, prior, args)
    top_k, batch_size = cli.shorthand_value(cfg, args, "top_k"), cli.shorthand_value(cfg, args, "batch_size")
    run = SimpleNamespace(
        cfg=cfg, args=args, prior=prior, vqvae=vqvae, device=device, dtype=dtype, temperature=temperature,
        guidance=guidance, top_k=top_k, class_names=datasets.spec_of(cfg.data).class_names,
        options=dict(top_k=top_k, guidance=guidance, batch_size=batch_size, seed=cfg.seed,
                     use_cache=not args.no_kv_cache, steps=args.steps),
        out_dir=args.out or os.path.join(cfg.results_dir, "generator"), tag=prior.output_prefix)
    print(f"{prior.kind} prior trained {ckpt['epoch']} epochs; {devices.in_words(device, dtype)}")
    {"show_process": show_process, "edit": edit, "save": save, "grids": grids}[mode](run)


def trained_config(cfg, ckpt, path, args):
    """The preset the prior was trained with, under this command's overrides (its dataset, class names and sampling
    settings); said in a line when it is not the preset this command names."""
    trained = settings.config_of_checkpoint(cfg, ckpt, args.overrides)
    check_dataset(ckpt, path, trained.data.dataset)  # a --set data.dataset= that contradicts the checkpoint
    if trained is not cfg:
        print(f"{path} was trained with --preset {trained.preset}: drawing with its dataset and settings")
    return trained


def show_process(run):
    """The diffusion prior's reverse process, one row per class: a strip PNG and a GIF."""
    prior = run.prior
    if not prior.reverse_process:
        raise CheckpointError(f"--show-process needs a prior with a reverse process "
                              f"(--prior {' or --prior '.join(priors_with(lambda c: c.reverse_process))})")
    prefix = os.path.join(run.out_dir, f"{run.tag}reverse_process")
    sampling.check_writable(f"{prefix}_strip.png")
    frames = sampling.reverse_process_frames(prior, run.vqvae, torch.arange(len(run.class_names)), run.device,
                                             run.dtype, run.cfg.seed, run.args.steps, run.guidance)
    paths = figures.save_reverse_process(frames, run.class_names, prefix)
    print(f"reverse process ({prior.forward_passes(run.args.steps)} steps) -> {', '.join(paths)}")


def edit(run):
    """Zero-shot edits of the first test images: one row per image (original, masked, results)."""
    args = run.args
    sampling.check_edit(run.prior, args.edit)  # before the folder is made
    path = os.path.join(run.out_dir, f"{run.tag}edit_{args.edit}.png")
    sampling.check_writable(path)
    count = args.edit_images or EDIT_IMAGES
    samples = args.edit_samples or EDIT_SAMPLES
    images, labels = data.load_split(run.cfg.data, train=False)
    grid, columns = sampling.edit_images(run.prior, run.vqvae, images[:count], labels[:count], args.edit, run.device,
                                         run.dtype, samples, run.temperature, run.top_k, run.guidance, run.cfg.seed,
                                         steps=args.steps, use_cache=not args.no_kv_cache)
    figures.save_image_grid(grid, path, nrow=columns)
    print(f"{args.edit}: {len(grid) // columns} test images x {samples} results -> {path} "
          f"(columns: original, masked, results)")


def save(run):
    """N samples into an npz or a folder of PNGs, for evaluate.py."""
    args = run.args
    sampling.check_writable(args.save)
    n = args.n or SAVE_N
    proportions = None if args.balanced or args.unconditional else data.class_proportions(run.cfg.data)
    classes, labels = sampling.class_ids(n, run.prior, args.unconditional, proportions)
    t0 = time.time()
    images = sampling.draw_images(run.prior, run.vqvae, classes, run.device, run.dtype, run.temperature,
                                  progress=True, **run.options)
    seconds = time.time() - t0
    if sampling.is_png_folder(args.save):
        sampling.save_png_folder(args.save, data.to_uint8(images), labels, run.class_names)
    else:
        sampling.save_npz(args.save, data.to_uint8(images), labels)
    print(f"{n} samples at temperature {run.temperature} in {seconds:.1f}s ({n / seconds:.0f} images/s) -> {args.save}")


def grids(run):
    """One grid per temperature of the sweep (or --temperature), one row per class."""
    args, class_names = run.args, run.class_names
    temperatures = run.cfg.sample.temperatures if args.temperature is None else (args.temperature,)
    uncond = "uncond_" if args.unconditional else ""
    paths = [os.path.join(run.out_dir, f"{run.tag}{uncond}temperature_{t:.2f}.png") for t in temperatures]
    sampling.check_writable(paths[0])
    per_class = run.cfg.sample.per_class
    num_classes = len(class_names)
    classes, _ = sampling.class_ids(num_classes * per_class, run.prior, args.unconditional)
    if not args.unconditional:
        classes = classes.view(per_class, num_classes).t().flatten()  # row r = class r
    for temperature, path in zip(temperatures, paths):
        t0 = time.time()
        images = sampling.draw_images(run.prior, run.vqvae, classes, run.device, run.dtype, temperature, **run.options)
        seconds = time.time() - t0
        figures.save_image_grid(images, path, nrow=per_class, row_names=None if args.unconditional else class_names)
        print(f"temperature {temperature:.2f}: {len(classes)} samples in {seconds:.2f}s -> {path}")

if __name__ == "__main__":
    main()
