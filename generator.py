"""Draw images from trained checkpoints: any prior (raster GPT, VAR, discrete diffusion) and its tokenizer.

    python generator.py                                   # temperature sweep grids from checkpoints/gpt.pt
    python generator.py --prior var                       # ... from checkpoints/var.pt (a kind or a path)
    python generator.py --prior diffusion --steps 8       # 8 reverse steps
    python generator.py --temperature 0.75 --top-k 50     # one grid
    python generator.py --n 10000 --save samples.npz      # N samples for evaluation (classes cycle 0..9)
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
import sys
import tempfile
import time

import numpy as np
import torch
from tqdm import tqdm

import config
import data
import files
import training
from checkpoint import CheckpointError, load_pair, prior_path
from models import device as devices
from models.prior import priors_with

EDITS = ("inpaint", "outpaint", "complete")
SAVE_N, EDIT_IMAGES, EDIT_SAMPLES = 10_000, 8, 4  # defaults of --n, --edit-images, --edit-samples


class FlagError(ValueError):
    """A bad or pointless command-line flag; scripts print its message as one line."""


def flag(name):
    return "--" + name.replace("_", "-")


def check_sampling_flags(args, min_n=1):
    """The sampling flags' values, for every script that draws (generator.py, evaluate.py): each one the script has
    and the user gave must be usable. Checked before any checkpoint is loaded, so a typo costs no time."""
    for name in ("temperature", "cfg"):
        value = getattr(args, name, None)
        if value is not None and not config.positive_finite(value):
            raise FlagError(f"{flag(name)} must be a finite number above 0 (got {value})")
    for name, low in (("top_k", 0), ("steps", 1), ("batch_size", 1), ("n", min_n)):
        value = getattr(args, name, None)
        if value is not None and value < low:
            raise FlagError(f"{flag(name)} must be at least {low} (got {value})")


def check_steps(prior, steps):
    """--steps only for priors with reverse steps (the others' sample() would raise a ValueError)."""
    if steps is not None and not prior.sampling_steps:
        kinds = ", ".join(priors_with(lambda c: c.sampling_steps))
        raise CheckpointError(f"--steps is for priors with reverse steps ({kinds}); the {prior.kind} prior has none")


@torch.no_grad()
def draw_images(prior, vqvae, classes_N, device, dtype, temperature=1.0, top_k=0, cfg_scale=1.0, batch_size=1000,
                seed=0, use_cache=True, steps=None, progress=False):
    """Sample token sequences for the given class ids and decode them: images in [-1, 1], (N, C, H, W), on the CPU.

    use_cache: KV cache on/off (priors with one); steps: reverse steps (priors with them; None = their config)."""
    was_training = prior.training
    prior.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    chunks = []
    bar = tqdm(range(0, len(classes_N), batch_size), desc="sampling", leave=False,
               disable=None if progress else True)  # None: a bar on a terminal, none into a pipe or a log file
    for i in bar:
        classes = classes_N[i:i + batch_size].to(device)
        with devices.autocast(device, dtype):
            tokens_BL = prior.sample(classes, temperature=temperature, top_k=top_k, cfg_scale=cfg_scale,
                                     generator=generator, use_cache=use_cache, steps=steps)
            images = vqvae.decode_sequence(tokens_BL)
        chunks.append(images.float().clamp(-1, 1).cpu())
    prior.train(was_training)
    return torch.cat(chunks)


def sampling_point(cfg, prior, args):
    """(temperature, cfg_scale) to draw at: --temperature / --cfg where given, else the prior's own from config."""
    temperature, cfg_scale = config.sampling_settings(cfg, prior)
    return (temperature if args.temperature is None else args.temperature,
            cfg_scale if args.cfg is None else args.cfg)


def class_ids(n, prior, unconditional):
    """Classes cycling 0..num_classes-1 (or all "no class"), and the labels to record for them (-1 = none)."""
    cycle = torch.arange(n) % prior.cfg.num_classes
    if unconditional:
        return torch.full((n,), prior.no_class), torch.full((n,), -1)
    return cycle, cycle


def save_npz(path, images_N1HW, labels_N):
    """images (uint8) and labels (int64) to an npz, atomically; a files.WriteError when it cannot be written."""
    arrays = dict(images=data.to_uint8(images_N1HW).numpy(), labels=labels_N.numpy().astype(np.int64))

    def write(tmp_path):
        with open(tmp_path, "wb") as f:  # a file object: numpy appends no .npz to a --save name without one
            np.savez_compressed(f, **arrays)

    files.atomic_write(path, write)


def check_writable(path):
    """Fail in one line before any sampling when `path` cannot be written (a file where a folder should be, a
    read-only folder), rather than after minutes of drawing. A probe file, since os.access says yes to root."""
    if os.path.isdir(path):
        raise files.WriteError(f"cannot write {path}: it is a folder; give a file name, "
                               f"e.g. {os.path.join(path, 'samples.npz')}")
    files.make_folder(path)
    try:
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(os.path.abspath(path)), prefix=".write_check"):
            pass
    except OSError as e:
        raise files.WriteError(files.describe_os_error(e, path)) from None


# --- editing ---------------------------------------------------------------------------------------------------------

def redraw_cells(grid_size, edit):
    """(h, h) bool on the finest token grid: True where the edit re-draws."""
    if grid_size < 4:
        raise CheckpointError(f"editing needs a token grid of at least 4x4 (this tokenizer's is {grid_size}x{grid_size})")
    cells = torch.zeros(grid_size, grid_size, dtype=torch.bool)
    lo = int(grid_size / 4 + 0.5)  # the centre half: 4 -> cells 1..2, 7 -> 2..4, 14 -> 4..9
    if edit == "complete":
        cells[grid_size // 2:] = True
    else:
        cells[lo:grid_size - lo, lo:grid_size - lo] = True
        if edit == "outpaint":
            cells = ~cells
    return cells


def keep_mask(vqvae, edit):
    """keep_L bool over the tokenizer's sequence: True = the token is kept from the real image.

    Multi-scale: at each scale a token is re-drawn when its cell overlaps the re-drawn region at all."""
    cells = redraw_cells(vqvae.cfg.grid_size, edit)
    if not vqvae.multiscale:
        return ~cells[:, :, None].expand(*vqvae.grid_shape).reshape(-1)
    area = cells[None, None].float()
    per_scale = [~(torch.nn.functional.interpolate(area, size=(s, s), mode="area")[0, 0] > 0).reshape(-1)
                 for s in vqvae.cfg.scales]
    return torch.cat(per_scale)


def masked_view(images_B1HW, cells_hh):
    """The originals with the re-drawn region painted grey (what the prior is asked to fill)."""
    pixels = torch.nn.functional.interpolate(cells_hh[None, None].float(), size=images_B1HW.shape[-2:], mode="nearest")
    return torch.where(pixels.bool(), torch.zeros_like(images_B1HW), images_B1HW)


def check_edit(prior, edit):
    """The edit exists and this prior can do it."""
    if edit not in EDITS:
        raise ValueError(f"--edit must be one of {', '.join(EDITS)}")
    if edit not in prior.edits:
        raise CheckpointError(f"the {prior.kind} prior can only --edit {' or '.join(prior.edits) or 'nothing'}; "
                              f"{edit} needs --prior {' or --prior '.join(priors_with(lambda c: edit in c.edits))}")


@torch.no_grad()
def edit_images(prior, vqvae, images_uint8, labels, edit, device, dtype, samples_per_image, temperature, top_k,
                cfg_scale, seed, steps=None, use_cache=True):
    """Rows of [original, masked, result 1..n] for each image; returns (images, columns per row).

    steps: reverse steps (priors with them; None = their config); use_cache: KV cache on/off (priors with one)."""
    check_edit(prior, edit)
    x = data.to_model_range(images_uint8).to(device)
    known_BL = vqvae.encode_sequence(x).repeat_interleave(samples_per_image, 0)
    classes = labels.to(device).repeat_interleave(samples_per_image)
    keep_L = keep_mask(vqvae, edit).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    prior.eval()
    with devices.autocast(device, dtype):
        tokens = prior.sample(classes, temperature=temperature, top_k=top_k, cfg_scale=cfg_scale, generator=generator,
                              known_BL=known_BL, known_mask_BL=keep_L.expand_as(known_BL), steps=steps,
                              use_cache=use_cache)
        results = vqvae.decode_sequence(tokens).float().clamp(-1, 1).cpu()
    x = x.cpu()
    masked = masked_view(x, redraw_cells(vqvae.cfg.grid_size, edit))
    rows = [torch.cat([x[i:i + 1], masked[i:i + 1], results[i * samples_per_image:(i + 1) * samples_per_image]])
            for i in range(len(x))]
    return torch.cat(rows), samples_per_image + 2


# --- the diffusion prior's reverse process --------------------------------------------------------------------------

@torch.no_grad()
def reverse_process_frames(prior, vqvae, classes, device, dtype, seed, steps=None, cfg_scale=1.0):
    """One image batch per reverse step: what the tokens look like as they are denoised.

    uniform: the current noisy tokens x_t, decoded as they are (random codes pieced together like a jigsaw);
    mask: the tokens revealed so far, with the still-masked cells filled by that step's prediction and dimmed."""
    prior.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    with devices.autocast(device, dtype):
        _, process = prior.sample(classes.to(device), cfg_scale=cfg_scale, generator=generator, steps=steps,
                                  return_process=True)
        frames = []
        for state in process:
            tokens = state["tokens_BL"]
            masked = tokens < 0
            image = vqvae.decode_sequence(torch.where(masked, state["x0_BL"], tokens)).float().clamp(-1, 1).cpu()
            if masked.any():
                H, W, K = vqvae.grid_shape
                cells = masked.view(-1, H, W, K).any(-1).float()[:, None].cpu()
                dim = torch.nn.functional.interpolate(cells, size=image.shape[-2:], mode="nearest")
                image = torch.where(dim.bool(), -1 + 0.35 * (image + 1), image)
            frames.append(image)
    return frames


def save_reverse_process(prior, vqvae, device, dtype, path_prefix, seed, steps=None, cfg_scale=1.0, class_names=None):
    """PATH_strip.png (one row per class, one column per reverse step) and PATH.gif (the same, animated)."""
    from PIL import Image
    names = class_names or [str(c) for c in range(prior.cfg.num_classes)]
    frames = reverse_process_frames(prior, vqvae, torch.arange(len(names)), device, dtype, seed, steps, cfg_scale)
    strip = torch.stack(frames, dim=1).flatten(0, 1)  # row = class, column = step
    training.save_image_grid(strip, f"{path_prefix}_strip.png", nrow=len(frames), row_names=names)
    pictures = []
    for frame in frames + [frames[-1]] * 3:  # hold the final images a moment before the loop restarts
        picture = training.grid_picture(frame, nrow=len(names))
        pictures.append(picture.resize((picture.width * 3, picture.height * 3), Image.NEAREST))
    training.save_picture(pictures[0], f"{path_prefix}.gif", save_all=True, append_images=pictures[1:], duration=250,
                          loop=0)
    return f"{path_prefix}_strip.png", f"{path_prefix}.gif"


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


def main(argv=None):
    parser = config.make_parser("Draw samples from a trained prior + VQ-VAE.")
    parser.add_argument("--prior", default="gpt", help="gpt | var | diffusion, or a prior checkpoint path "
                                                       "(default: checkpoints/gpt.pt)")
    parser.add_argument("--vqvae", default=None, help="tokenizer checkpoint (default: the one beside the prior)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="one temperature (default: the sweep in config.sample.temperatures for grids, "
                             "the prior's own, e.g. gpt.temperature, for --save and --edit)")
    parser.add_argument("--top-k", type=int, default=None, help="keep the k most likely codes (0 = all)")
    parser.add_argument("--cfg", type=float, default=None,
                        help="classifier-free guidance scale (1 = off; default: the prior's own, e.g. gpt.cfg_scale)")
    parser.add_argument("--steps", type=int, default=None, help="diffusion: reverse steps (default: diffusion.steps)")
    parser.add_argument("--unconditional", action="store_true", help='draw with the "no class" token')
    parser.add_argument("--n", type=int, default=None, help=f"number of samples for --save (default {SAVE_N})")
    parser.add_argument("--save", default=None, metavar="FILE.npz", help="write N samples to an npz")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="samples drawn at once (default: config.sample.batch_size)")
    parser.add_argument("--no-kv-cache", action="store_true", help="GPT/VAR: recompute the prefix every step (slow)")
    parser.add_argument("--edit", choices=EDITS, default=None, help="zero-shot editing of real test images")
    parser.add_argument("--edit-images", type=int, default=None, help=f"test images to edit (default {EDIT_IMAGES})")
    parser.add_argument("--edit-samples", type=int, default=None,
                        help=f"results per edited image (default {EDIT_SAMPLES})")
    parser.add_argument("--show-process", action="store_true", help="diffusion: save the reverse process (PNG + GIF)")
    parser.add_argument("--out", default=None, help="folder for grids (default: _results/generator)")
    args, cfg = config.parse_config(parser, argv)
    try:
        generate(cfg, args, check_flags(args))
    except (FlagError, CheckpointError, data.DataError, files.WriteError) as e:
        sys.exit(f"error: {e}")


def generate(cfg, args, mode):
    devices.seed_everything(cfg.seed)
    device = devices.pick_device(cfg.device)
    dtype = devices.amp_dtype(device, cfg.amp)
    prior, vqvae, ckpt = load_pair(prior_path(cfg, args.prior), args.vqvae, device, dataset=cfg.data.dataset,
                                   compile=cfg.sample.compile)
    check_steps(prior, args.steps)
    class_names = data.dataset(cfg.data.dataset).class_names
    temperature, cfg_scale = sampling_point(cfg, prior, args)
    top_k = cfg.sample.top_k if args.top_k is None else args.top_k
    batch_size = cfg.sample.batch_size if args.batch_size is None else args.batch_size
    options = dict(top_k=top_k, cfg_scale=cfg_scale, batch_size=batch_size, seed=cfg.seed,
                   use_cache=not args.no_kv_cache, steps=args.steps)
    out_dir = args.out or os.path.join(cfg.results_dir, "generator")
    tag = prior.output_prefix
    print(f"{prior.kind} prior trained {ckpt['epoch']} epochs; {devices.describe(device, dtype)}")

    if mode == "show_process":
        if not prior.reverse_process:
            raise CheckpointError(f"--show-process needs a prior with a reverse process "
                                  f"(--prior {' or --prior '.join(priors_with(lambda c: c.reverse_process))})")
        prefix = os.path.join(out_dir, f"{tag}reverse_process")
        check_writable(f"{prefix}_strip.png")
        paths = save_reverse_process(prior, vqvae, device, dtype, prefix, cfg.seed, args.steps, cfg_scale, class_names)
        print(f"reverse process ({prior.forward_passes(args.steps)} steps) -> {', '.join(paths)}")
        return

    if mode == "edit":
        check_edit(prior, args.edit)  # before the folder is made
        path = os.path.join(out_dir, f"{tag}edit_{args.edit}.png")
        check_writable(path)
        count = args.edit_images or EDIT_IMAGES
        samples = args.edit_samples or EDIT_SAMPLES
        images, labels = data.load_split(cfg.data, train=False)
        grid, columns = edit_images(prior, vqvae, images[:count], labels[:count], args.edit, device, dtype, samples,
                                    temperature, top_k, cfg_scale, cfg.seed, steps=args.steps,
                                    use_cache=not args.no_kv_cache)
        training.save_image_grid(grid, path, nrow=columns)
        print(f"{args.edit}: {len(grid) // columns} test images x {samples} results -> {path} "
              f"(columns: original, masked, results)")
        return

    if mode == "save":
        check_writable(args.save)
        n = args.n or SAVE_N
        classes, labels = class_ids(n, prior, args.unconditional)
        t0 = time.time()
        images = draw_images(prior, vqvae, classes, device, dtype, temperature, progress=True, **options)
        seconds = time.time() - t0
        save_npz(args.save, images, labels)
        print(f"{n} samples at temperature {temperature} in {seconds:.1f}s ({n / seconds:.0f} images/s) -> {args.save}")
        return

    temperatures = cfg.sample.temperatures if args.temperature is None else (args.temperature,)
    uncond = "uncond_" if args.unconditional else ""
    paths = [os.path.join(out_dir, f"{tag}{uncond}temperature_{t:.2f}.png") for t in temperatures]
    check_writable(paths[0])
    per_class = cfg.sample.per_class
    num_classes = len(class_names)
    classes, _ = class_ids(num_classes * per_class, prior, args.unconditional)
    if not args.unconditional:
        classes = classes.view(per_class, num_classes).t().flatten()  # row r = class r
    for temperature, path in zip(temperatures, paths):
        t0 = time.time()
        images = draw_images(prior, vqvae, classes, device, dtype, temperature, **options)
        seconds = time.time() - t0
        training.save_image_grid(images, path, nrow=per_class, row_names=None if args.unconditional else class_names)
        print(f"temperature {temperature:.2f}: {len(classes)} samples in {seconds:.2f}s -> {path}")


if __name__ == "__main__":
    main()
