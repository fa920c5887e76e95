"""Drawing images from a prior and its tokenizer: sample sets, class draws, zero-shot edits, and the frames of a
diffusion prior's reverse process; plus the checks of the sampling flags every drawing script shares.

generator.py, evaluate.py, benchmark.py and transformer_train.py (its per-epoch grids) all draw through here.
"""
import os
import shutil
import tempfile

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from pipeline import checks, data, devices, files, settings

from models.prior import priors_with
from pipeline.errors import CheckpointError, FlagError, WriteError

EDITS = ("inpaint", "outpaint", "complete")


def flag(name):
    return "--" + name.replace("_", "-")


def check_sampling_flags(args, min_n=1):
    """The sampling flags' values, for every script that draws (generator.py, evaluate.py): each one the script has
    and the user gave must be usable. Checked before any checkpoint is loaded, so a typo costs no time."""
    for name in ("temperature", "cfg"):
        value = getattr(args, name, None)
        if value is not None and not checks.positive_finite(value):
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
def draw_images(prior, vqvae, classes_N, device, dtype, temperature=1.0, top_k=0, guidance=1.0, batch_size=1000,
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
            tokens_BL = prior.sample(classes, temperature=temperature, top_k=top_k, guidance=guidance,
                                     generator=generator, use_cache=use_cache, steps=steps)
            images = vqvae.decode_sequence(tokens_BL)
        chunks.append(images.float().clamp(-1, 1).cpu())
    prior.train(was_training)
    return torch.cat(chunks)


def sampling_point(cfg, prior, args):
    """(temperature, guidance) to draw at: --temperature / --cfg where given, else the prior's own from config."""
    temperature, guidance = settings.sampling_settings(cfg, prior)
    return (temperature if args.temperature is None else args.temperature,
            guidance if args.cfg is None else args.cfg)


def class_ids(n, prior, unconditional, proportions=None):
    """Class ids for n samples, and the labels to record for them (-1 = none): all "no class" when unconditional;
    with proportions (each class's share, classes_C summing to 1, e.g. data.class_proportions) the count of each
    class follows them, the classes spread evenly through the sequence; else cycling 0..num_classes-1."""
    if unconditional:
        return torch.full((n,), prior.no_class), torch.full((n,), -1)
    if proportions is None:
        cycle = torch.arange(n) % prior.cfg.num_classes
        return cycle, cycle
    counts = proportional_counts(n, proportions)
    # class c's j-th sample sits at (j + 0.5) / count_c of the way through: any stretch holds each class in its share
    place = torch.cat([(torch.arange(int(k)) + 0.5) / int(k) for k in counts])
    classes = torch.repeat_interleave(torch.arange(len(counts)), counts)
    classes = classes[torch.argsort(place, stable=True)]  # ties keep class order: repeat_interleave sorted by class
    return classes, classes.clone()


def proportional_counts(n, proportions):
    """n split into whole counts in the given proportions (largest remainders), summing to n."""
    exact = proportions.double() / proportions.sum() * n
    counts = exact.floor().long()
    remainders = (exact - counts).tolist()
    for c in sorted(range(len(counts)), key=lambda c: (-remainders[c], c))[:n - int(counts.sum())]:
        counts[c] += 1
    return counts


def save_npz(path, images_uint8, labels_N):
    """images (uint8 N x C x H x W) and labels (int64) to an npz, atomically; a WriteError when it cannot be
    written."""
    arrays = dict(images=images_uint8.numpy(), labels=labels_N.numpy().astype(np.int64))

    def write(tmp_path):
        with open(tmp_path, "wb") as f:  # a file object: numpy appends no .npz to a --save name without one
            np.savez_compressed(f, **arrays)

    files.atomic_write(path, write)


def is_png_folder(path):
    """--save DIR/ (a trailing slash) writes one PNG per sample; any other name writes an npz."""
    return path.endswith(("/", os.sep))


def png_name(index, label, class_names, digits):
    """`00042-c3-dress.png`: the sample's index first (the folder sorts in the order an npz would hold), then its
    class id and name (`00042-uncond.png` without one)."""
    if label < 0:
        return f"{index:0{digits}d}-uncond.png"
    slug = "".join(ch if ch.isalnum() else "-" for ch in class_names[label].lower()).strip("-")
    return f"{index:0{digits}d}-c{label}-{slug}.png"


def save_png_folder(path, images_uint8, labels_N, class_names):
    """One PNG per sample into a new (or empty) folder: written into a temp folder beside it, then renamed, so a
    failure leaves no half-filled folder; evaluate.py reads the class ids back from the names."""
    folder = path.rstrip("/" + os.sep)
    tmp_folder = f"{folder}.tmp{os.getpid()}"
    digits = max(5, len(str(len(images_uint8) - 1)))
    try:
        os.makedirs(tmp_folder)
        for i, (image_CHW, label) in enumerate(zip(images_uint8.numpy(), labels_N.tolist())):
            pixels = image_CHW[0] if image_CHW.shape[0] == 1 else image_CHW.transpose(1, 2, 0)
            Image.fromarray(pixels).save(os.path.join(tmp_folder, png_name(i, label, class_names, digits)))
        os.replace(tmp_folder, folder)  # onto a missing or empty folder
    except OSError as e:
        raise WriteError(files.describe_os_error(e, path)) from None
    finally:
        shutil.rmtree(tmp_folder, ignore_errors=True)


def check_writable(path):
    """Fail in one line before any sampling when `path` cannot be written (a file where a folder should be, a
    read-only folder, a PNG folder that already holds files), rather than after minutes of drawing. A probe file,
    since os.access says yes to root."""
    if is_png_folder(path):
        if os.path.isdir(path) and os.listdir(path):
            raise WriteError(f"cannot write {path}: the folder holds files already; give a new or empty folder")
        path = path.rstrip("/" + os.sep)  # its parent must take the folder
    elif os.path.isdir(path):
        raise WriteError(f"cannot write {path}: it is a folder; give a file name, "
                         f"e.g. {os.path.join(path, 'samples.npz')}, or {path.rstrip(os.sep)}/ for one PNG per sample")
    files.make_folder(path)
    try:
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(os.path.abspath(path)), prefix=".write_check"):
            pass
    except OSError as e:
        raise WriteError(files.describe_os_error(e, path)) from None


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
                guidance, seed, steps=None, use_cache=True):
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
        tokens = prior.sample(classes, temperature=temperature, top_k=top_k, guidance=guidance, generator=generator,
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
def reverse_process_frames(prior, vqvae, classes, device, dtype, seed, steps=None, guidance=1.0):
    """One image batch per reverse step: what the tokens look like as they are denoised.

    uniform: the current noisy tokens x_t, decoded as they are (random codes pieced together like a jigsaw);
    mask: the tokens revealed so far, with the still-masked cells filled by that step's prediction and dimmed."""
    prior.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    with devices.autocast(device, dtype):
        _, process = prior.sample(classes.to(device), guidance=guidance, generator=generator, steps=steps,
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
