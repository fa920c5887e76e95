"""What demo.py's page asks of a loaded model: a grid of samples, edits of a picture inside a painted region, and the
frames of a sample forming; each with the `python generator.py ...` command that draws the same picture.

Drawing goes through the code generator.py uses (sampling.draw_images, the priors' sample(known_BL=...) that
sampling.edit_images calls, sampling.reverse_process_frames), with the same seeds and batches, so the command under a
picture redraws it exactly where generator.py has the flags for what was chosen, and says what differs where not.
What a prior can do is read from its capabilities (edits, reverse_process, sampling_steps), never from its kind.
"""
import os
import shlex
import time
from dataclasses import dataclass, field

import torch

from pipeline import demo_requests, devices, sampling
from pipeline.errors import FlagError

MAX_FRAMES = 50      # frames of a watched sample drawn in token order (a 7x7 grid shows every other cell)
NEUTRAL = 0.4        # the light grey of a token not drawn yet, in the model's [-1, 1] (the grid lines are 0)


@dataclass
class Picture:
    """Images in [-1, 1] (N, C, H, W) laid out nrow to a row, with row names or a title, and how to redraw them."""
    images: torch.Tensor
    nrow: int
    title: str
    row_names: list = None
    command: str = ""
    note: str = ""      # what the command does not reproduce ("" when it redraws exactly this)


@dataclass
class Result:
    pictures: list
    seconds: float
    frames: list = field(default_factory=list)  # watch: one Picture per frame
    summary: str = ""


# --- drawing ---------------------------------------------------------------------------------------------------------

def timed(device, work):
    devices.synchronize(device)
    t0 = time.perf_counter()
    out = work()
    devices.synchronize(device)
    return out, time.perf_counter() - t0


def draw(loaded, values):
    """A grid of samples: one row per class (or one class, or no class), as generator.py's grids draw them."""
    s = demo_requests.sampling_values(values, loaded)
    classes, rows, choice = demo_requests.classes(values, loaded, s.n)
    devices.seed_everything(s.seed)
    images, seconds = timed(loaded.device, lambda: sampling.draw_images(
        loaded.prior, loaded.vqvae, classes, loaded.device, loaded.dtype, s.temperature, top_k=s.top_k,
        guidance=s.guidance, batch_size=loaded.cfg.sample.batch_size, seed=s.seed, use_cache=True, steps=s.steps))
    command, note = grid_command(loaded, s, choice)
    title = f"{len(images)} samples, {describe_choice(choice, loaded)}"
    picture = Picture(images, nrow=columns(choice, s.n), title=title,
                      row_names=rows if choice == demo_requests.ALL else None, command=command, note=note)
    return Result([picture], seconds, summary=f"{len(images)} samples in {seconds:.2f}s")


def columns(choice, n):
    """Every class (or no class): one row of n per class, as generator.py's grids; one class: rows of 10 at most."""
    return n if choice in (demo_requests.ALL, demo_requests.NONE) else min(n, 10)


def describe_choice(choice, loaded):
    if choice == demo_requests.ALL:
        return "one row per class"
    if choice == demo_requests.NONE:
        return "no class (unconditional)"
    return choice


# --- editing ---------------------------------------------------------------------------------------------------------

def redrawn_cells(cells, edit):
    """The token cells an edit re-draws from the painted ones: inpaint and outpaint re-draw what is painted (the
    page starts them at generator.py's centre and border); complete keeps every cell before the first painted one in
    raster order and re-draws the rest, as a prior that writes in raster order can."""
    if edit != "complete":
        return cells
    flat = cells.flatten()
    first = int(flat.nonzero()[0])
    return (torch.arange(len(flat)) >= first).view_as(cells)


def keep_of_cells(vqvae, cells):
    """keep_L over the tokenizer's sequence (True = kept) for re-drawn cells of the finest grid: sampling.keep_mask's
    rule for any region (multi-scale: a token is re-drawn when its cell overlaps the region at all)."""
    if not vqvae.multiscale:
        return ~cells[:, :, None].expand(*vqvae.grid_shape).reshape(-1)
    area = cells[None, None].float()
    per_scale = [~(torch.nn.functional.interpolate(area, size=(s, s), mode="area")[0, 0] > 0).reshape(-1)
                 for s in vqvae.cfg.scales]
    return torch.cat(per_scale)


def edit(loaded, values):
    """Results of re-drawing the painted region of a test image or of a drawn or uploaded picture, side by side
    after the original and its masked view (the rows generator.py --edit writes)."""
    prior, vqvae, device = loaded.prior, loaded.vqvae, loaded.device
    s = demo_requests.sampling_values(values, loaded, results=True)
    kind = demo_requests.edit_kind(values, prior)
    from_test = demo_requests.source(values) == "test"
    if from_test:
        image, label = demo_requests.test_image(values, loaded)
        source = f"test image {values.get('index')}"
    else:
        image = demo_requests.picture(values.get("image"), loaded.image_shape)
        label = edit_class(values, loaded)
        source = "your picture"
    painted = demo_requests.region(values, loaded.image_shape, vqvae.cfg.grid_size)
    cells = redrawn_cells(painted, kind)
    keep_L = keep_of_cells(vqvae, cells).to(device)
    x = demo_requests.to_model_range(image).to(device)

    def work():
        known_BL = vqvae.encode_sequence(x).repeat_interleave(s.n, 0)
        classes = torch.full((s.n,), label, device=device)
        generator = torch.Generator(device=device).manual_seed(s.seed)
        prior.eval()
        with devices.autocast(device, loaded.dtype):
            tokens = prior.sample(classes, temperature=s.temperature, top_k=s.top_k, guidance=s.guidance,
                                  generator=generator, known_BL=known_BL, known_mask_BL=keep_L.expand_as(known_BL),
                                  steps=s.steps, use_cache=True)
            return vqvae.decode_sequence(tokens).float().clamp(-1, 1).cpu()

    devices.seed_everything(s.seed)
    results, seconds = timed(device, work)
    original = x.cpu()
    masked = sampling.masked_view(original, cells)
    exact = from_test and values.get("index") in (0, "0") and \
        torch.equal(cells, loaded.default_region(kind))
    command, note = edit_command(loaded, s, kind, exact)
    row = torch.cat([original, masked, results])
    class_name = loaded.class_names[label] if label < len(loaded.class_names) else "no class"
    picture = Picture(row, nrow=len(row), title=f"{kind}: {source} ({class_name}), original, masked, "
                                                 f"{s.n} results", command=command, note=note)
    return Result([picture], seconds, summary=f"{s.n} results in {seconds:.2f}s")


def edit_class(values, loaded):
    """A drawn picture's class: a class name, or none (the "no class" token)."""
    choice = values.get("class", demo_requests.NONE)
    if choice in (demo_requests.NONE, demo_requests.ALL):
        return loaded.prior.no_class
    if choice not in loaded.class_names:
        raise FlagError(f"{demo_requests.one_line(choice)!r} is not a class of this model")
    return loaded.class_names.index(choice)


# --- watching a sample form ------------------------------------------------------------------------------------------

def watch(loaded, values):
    """The frames of samples forming: a prior with a reverse process gives its states (sampling's
    reverse_process_frames); any other is shown in the order its tokenizer's sequence is written (coarse to fine
    for a multi-scale one, cell by cell in raster order otherwise), its unwritten tokens grey."""
    prior = loaded.prior
    s = demo_requests.sampling_values(values, loaded)
    classes, rows, choice = demo_requests.classes(values, loaded, s.n, most=demo_requests.MAX_WATCHED)
    devices.seed_everything(s.seed)
    if prior.reverse_process:
        for name in ("temperature", "top_k"):
            if name in s.given:
                raise FlagError(f"{sampling.flag(name)} does nothing with the reverse process; generator.py "
                                f"--show-process draws it at temperature 1, with guidance and steps")
        frames, seconds = timed(loaded.device, lambda: sampling.reverse_process_frames(
            prior, loaded.vqvae, classes, loaded.device, loaded.dtype, s.seed, s.steps, s.guidance))
        names = [f"step {i + 1} of {len(frames)}" for i in range(len(frames))]
    else:
        tokens, seconds = timed(loaded.device, lambda: draw_tokens(loaded, classes, s))
        frames, names = sequence_frames(loaded, tokens)
    command, note = watch_command(loaded, s, choice)
    row_names = rows if choice == demo_requests.ALL else None
    pictures = [Picture(frame, nrow=columns(choice, s.n), title=name, row_names=row_names, command=command, note=note)
                for frame, name in zip(frames, names)]
    return Result([pictures[-1]], seconds, frames=pictures,
                  summary=f"{len(frames)} frames of {len(classes)} samples in {seconds:.2f}s")


@torch.no_grad()
def draw_tokens(loaded, classes, s):
    """The token sequences sampling.draw_images would draw for these classes and settings (the same batches and
    generator), before decoding."""
    prior, device = loaded.prior, loaded.device
    prior.eval()
    generator = torch.Generator(device=device).manual_seed(s.seed)
    batch_size = loaded.cfg.sample.batch_size
    chunks = []
    for i in range(0, len(classes), batch_size):
        with devices.autocast(device, loaded.dtype):
            chunks.append(prior.sample(classes[i:i + batch_size].to(device), temperature=s.temperature,
                                       top_k=s.top_k, guidance=s.guidance, generator=generator, use_cache=True,
                                       steps=s.steps))
    return torch.cat(chunks)


@torch.no_grad()
def sequence_frames(loaded, tokens_BL):
    """(frames, names): the images after each part of the sequence is written. A multi-scale tokenizer decodes
    any prefix of its scales (each frame one scale finer); a single-scale one decodes the written cells with the
    rest filled by code 0 and painted grey."""
    vqvae, device = loaded.vqvae, loaded.device
    B = len(tokens_BL)
    C, height, width = loaded.image_shape
    frames, names = [torch.full((B, C, height, width), NEUTRAL)], ["nothing drawn yet"]
    with devices.autocast(device, loaded.dtype):
        if vqvae.multiscale:
            written = 0
            for s in vqvae.cfg.scales:
                written += s * s
                frames.append(vqvae.decode_sequence(tokens_BL[:, :written]).float().clamp(-1, 1).cpu())
                names.append(f"scales up to {s}x{s} ({written} of {tokens_BL.shape[1]} tokens)")
            return frames, names
        H, W, K = vqvae.grid_shape
        cells = H * W
        shown = sorted({round(i * cells / min(cells, MAX_FRAMES)) for i in range(1, min(cells, MAX_FRAMES) + 1)})
        for done in shown:
            partial = tokens_BL.clone()
            partial[:, done * K:] = 0
            image = vqvae.decode_sequence(partial).float().clamp(-1, 1).cpu()
            unwritten = (torch.arange(cells) >= done).view(1, 1, H, W).float()
            grey = torch.nn.functional.interpolate(unwritten, size=(height, width), mode="nearest").bool()
            frames.append(torch.where(grey, torch.full_like(image, NEUTRAL), image))
            names.append(f"{done * K} of {cells * K} tokens")
    return frames, names


# --- the generator.py command of a picture --------------------------------------------------------------------------

def number_text(value):
    return repr(float(value)) if isinstance(value, float) else str(value)


def prior_argument(path):
    """The prior's path as generator.py --prior takes it: relative to the working folder where it lies below it."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else os.path.abspath(path)


def base_command(loaded, s, *flags):
    words = ["python", "generator.py", "--prior", prior_argument(loaded.entry.path), *flags]
    if s.steps is not None:
        words += ["--steps", str(s.steps)]
    words += ["--seed", str(s.seed)]
    for assignment in loaded.overrides:
        words += ["--set", assignment]
    return " ".join(shlex.quote(w) for w in words)


def sampling_flags(loaded, s):
    flags = ["--temperature", number_text(s.temperature), "--cfg", number_text(s.guidance)]
    if s.top_k != loaded.cfg.sample.top_k:
        flags += ["--top-k", str(s.top_k)]
    return flags


def per_class_flags(loaded, n):
    return [] if n == loaded.cfg.sample.per_class else ["--set", f"sample.per_class={n}"]


def grid_command(loaded, s, choice):
    """generator.py's grid at these settings: the same images for every class or none; for one class, its grid of
    every class (generator.py has no flag for a single class)."""
    flags = sampling_flags(loaded, s) + per_class_flags(loaded, s.n)
    if choice == demo_requests.NONE:
        flags.append("--unconditional")
    note = "" if choice in (demo_requests.ALL, demo_requests.NONE) else \
        f"generator.py draws every class: its {choice} row is drawn at these settings, not these very samples"
    return base_command(loaded, s, *flags), note


def edit_command(loaded, s, kind, exact):
    flags = ["--edit", kind, "--edit-images", "1", "--edit-samples", str(s.n)] + sampling_flags(loaded, s)
    note = "" if exact else ("generator.py --edit re-draws its own region of the first test image; this picture's "
                             "image or region was chosen here")
    return base_command(loaded, s, *flags), note


def watch_command(loaded, s, choice):
    if loaded.prior.reverse_process:
        exact = choice == demo_requests.ALL and s.n == 1
        note = "" if exact else "generator.py --show-process draws one sample of every class"
        return base_command(loaded, s, "--show-process", "--cfg", number_text(s.guidance)), note
    command, note = grid_command(loaded, s, choice)
    return command, " ".join(filter(None, [
        "the last frame; generator.py draws the frames of a prior with a reverse process only", note]))
