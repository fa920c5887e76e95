"""Zero-shot editing in generator.py: which cells and tokens an edit re-draws (redraw_cells, keep_mask), and
edit_images with each prior (raster GPT: completion only; VAR and diffusion: inpaint, outpaint, complete)."""
import math

import pytest
import torch

from pipeline import data, sampling, settings

from models.diffusion import DiscreteDiffusion
from models.gpt import GPT
from models.var import VAR
from models.vqvae import VQVAE
from pipeline.errors import CheckpointError

CPU = torch.device("cpu")
N_IMAGES, SAMPLES = 3, 2


# --- fixtures ----------------------------------------------------------------------------------------------------

def make_vqvae(preset="tiny", *overrides):
    """A tokenizer after one training forward pass (codebook initialised from encoder outputs), in eval mode."""
    cfg = settings.build_config(preset, list(overrides))
    torch.manual_seed(0)
    model = VQVAE(cfg.vqvae)
    model.train()(torch.rand(16, 1, 28, 28) * 2 - 1)
    return model.eval(), cfg


@pytest.fixture(scope="module")
def test_digits():
    images, labels = data.load_split(settings.build_config("tiny").data, train=False)
    return images[:N_IMAGES], labels[:N_IMAGES]


@pytest.fixture(scope="module")
def single_scale():
    return make_vqvae("tiny")


@pytest.fixture(scope="module")
def multi_scale():
    return make_vqvae("tiny_var")


def record_sample(monkeypatch, prior):
    """Wrap prior.sample: every call's keyword arguments and returned tokens."""
    calls = []
    original = prior.sample

    def recording(*args, **kwargs):
        tokens = original(*args, **kwargs)
        calls.append({"args": args, "kwargs": kwargs, "tokens": tokens.clone()})
        return tokens

    monkeypatch.setattr(prior, "sample", recording)
    return calls


def run_edit(prior, vqvae, digits, edit, seed=0):
    images, labels = digits
    return sampling.edit_images(prior, vqvae, images, labels, edit, CPU, None, SAMPLES, temperature=1.0, top_k=0,
                                 guidance=1.5, seed=seed)


def check_grid(grid, columns, vqvae, digits, edit):
    """Rows of [original, masked, results]: the right count, pixels in [-1, 1], originals and masks in place."""
    images, _ = digits
    assert columns == SAMPLES + 2
    assert grid.shape == (N_IMAGES * (SAMPLES + 2), 1, 28, 28)
    assert grid.min() >= -1 and grid.max() <= 1
    x = data.to_model_range(images)
    assert torch.equal(grid[0::columns], x)
    cells = sampling.redraw_cells(vqvae.cfg.grid_size, edit)
    pixels = torch.nn.functional.interpolate(cells[None, None].float(), size=(28, 28), mode="nearest")[0, 0].bool()
    masked = grid[1::columns]
    assert (masked[:, :, pixels] == 0).all()  # the re-drawn region is painted grey
    assert torch.equal(masked[:, :, ~pixels], x[:, :, ~pixels])
    return grid


def overlap_keep(grid_size, scales, cells):
    """The area rule of keep_mask, written out: a token of scale s covers [i*h/s, (i+1)*h/s) x [j*h/s, ...) of the
    finest grid and is kept only if no re-drawn cell overlaps that square."""
    keep = []
    for s in scales:
        step = grid_size / s
        for i in range(s):
            for j in range(s):
                rows = [r for r in range(grid_size) if r < (i + 1) * step and r + 1 > i * step]
                cols = [c for c in range(grid_size) if c < (j + 1) * step and c + 1 > j * step]
                keep.append(not any(cells[r, c] for r in rows for c in cols))
    return torch.tensor(keep)


# --- redraw_cells / keep_mask ------------------------------------------------------------------------------------

def test_inpaint_redraws_the_centre_and_keeps_the_border_on_a_4x4_grid():
    cells = sampling.redraw_cells(4, "inpaint")
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:3, 1:3] = True
    assert torch.equal(cells, expected)


@pytest.mark.parametrize("grid_size", [14, 7, 4])
def test_inpaint_outpaint_and_complete_cells(grid_size):
    inpaint = sampling.redraw_cells(grid_size, "inpaint")
    outpaint = sampling.redraw_cells(grid_size, "outpaint")
    complete = sampling.redraw_cells(grid_size, "complete")
    assert inpaint.shape == (grid_size, grid_size) and inpaint.dtype == torch.bool
    border = torch.ones(grid_size, grid_size, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert not inpaint[border].any()             # the border is kept
    c = grid_size // 2
    assert inpaint[c, c] and inpaint[c - 1 + grid_size % 2, c - 1 + grid_size % 2]  # the centre is re-drawn
    assert torch.equal(inpaint, inpaint.flip(0)) and torch.equal(inpaint, inpaint.t())  # a centred square
    assert torch.equal(outpaint, ~inpaint)
    assert not complete[:grid_size // 2].any() and complete[grid_size // 2:].all()


@pytest.mark.parametrize("grid_size", [1, 2])
def test_grids_without_a_centre_are_refused_with_a_clear_error(grid_size):
    with pytest.raises(CheckpointError, match="at least 4x4"):
        sampling.redraw_cells(grid_size, "inpaint")


@pytest.mark.parametrize("edit", sampling.EDITS)
def test_single_scale_keep_mask_follows_the_cells_for_every_codebook(edit):
    vqvae, _ = make_vqvae("tiny", "vqvae.num_codebooks=2")
    keep = sampling.keep_mask(vqvae, edit)
    H, W, K = vqvae.grid_shape
    assert keep.shape == (H * W * K,) and keep.dtype == torch.bool
    cells = sampling.redraw_cells(H, edit)
    for pos in range(H * W * K):  # raster order, codebooks innermost
        r, c = pos // (W * K), (pos // K) % W
        assert keep[pos] == (not cells[r, c])


def test_complete_keeps_a_prefix_of_the_raster_sequence(single_scale):
    for vqvae in (single_scale[0], make_vqvae("tiny", "vqvae.num_codebooks=2")[0],
                  make_vqvae("tiny", "vqvae.grid_size=7")[0]):
        keep = sampling.keep_mask(vqvae, "complete")
        n = int(keep.sum())
        H, W, K = vqvae.grid_shape
        assert n == (H // 2) * W * K
        assert keep[:n].all() and not keep[n:].any()  # what the GPT's prefix_BT needs


def test_multi_scale_keep_mask_on_the_tiny_var_scales(multi_scale):
    vqvae, _ = multi_scale
    per_scale = {}
    for edit in sampling.EDITS:
        keep = sampling.keep_mask(vqvae, edit)
        assert keep.shape == (30,) and keep.dtype == torch.bool
        pieces = keep.split([1, 4, 9, 16])
        per_scale[edit] = [int(p.sum()) for p in pieces]
        finest = ~sampling.redraw_cells(4, edit).reshape(-1)
        assert torch.equal(pieces[-1], finest)  # the finest scale is the grid itself
    assert per_scale["inpaint"] == [0, 0, 0, 12]  # the 1x1 map (and every coarse cell) overlaps the centre
    assert per_scale["outpaint"] == [0, 0, 1, 4]  # only the middle cell of the 3x3 map lies inside the centre
    assert per_scale["complete"] == [0, 2, 3, 8]


@pytest.mark.parametrize("preset", ["tiny_var", "mnist_var_7x7"])
@pytest.mark.parametrize("edit", sampling.EDITS)
def test_multi_scale_keep_mask_follows_the_overlap_rule(preset, edit):
    cfg = settings.build_config(preset)
    vqvae = VQVAE(cfg.vqvae)
    keep = sampling.keep_mask(vqvae, edit)
    assert len(keep) == vqvae.sequence_length
    expected = overlap_keep(cfg.vqvae.grid_size, cfg.vqvae.scales, sampling.redraw_cells(cfg.vqvae.grid_size, edit))
    assert torch.equal(keep, expected)
    if edit == "inpaint":
        assert not keep[0]  # the 1x1 scale always covers the re-drawn centre


# --- edit_images with the raster GPT -----------------------------------------------------------------------------

@pytest.fixture
def tiny_gpt(single_scale):
    vqvae, cfg = single_scale
    torch.manual_seed(1)
    return GPT(cfg.gpt, vqvae.grid_shape, cfg.vqvae.codebook_size).eval()


def test_gpt_completion_keeps_the_first_tokens(monkeypatch, tiny_gpt, single_scale, test_digits):
    vqvae, _ = single_scale
    calls = record_sample(monkeypatch, tiny_gpt)
    grid, columns = run_edit(tiny_gpt, vqvae, test_digits, "complete")
    check_grid(grid, columns, vqvae, test_digits, "complete")
    assert len(calls) == 1
    real = vqvae.encode_sequence(data.to_model_range(test_digits[0])).repeat_interleave(SAMPLES, 0)
    known, keep = calls[0]["kwargs"]["known_BL"], calls[0]["kwargs"]["known_mask_BL"]
    assert keep.shape == (N_IMAGES * SAMPLES, 16) and keep[:, :8].all() and not keep[:, 8:].any()  # top two rows
    assert torch.equal(known[:, :8], real[:, :8])
    tokens = calls[0]["tokens"]
    assert torch.equal(tokens[:, :8], real[:, :8])
    assert not torch.equal(tokens[:, 8:], real[:, 8:])  # the bottom half is drawn
    results = torch.cat([grid[i * columns + 2:(i + 1) * columns] for i in range(N_IMAGES)])
    assert torch.allclose(results, vqvae.decode_sequence(tokens).clamp(-1, 1), atol=1e-6)


@pytest.mark.parametrize("edit", ["inpaint", "outpaint"])
def test_gpt_refuses_inpaint_and_outpaint(tiny_gpt, single_scale, test_digits, edit):
    with pytest.raises(CheckpointError) as info:
        run_edit(tiny_gpt, single_scale[0], test_digits, edit)
    message = str(info.value)
    assert "var" in message and "diffusion" in message and len(message.splitlines()) == 1


def test_unknown_edit_is_refused(tiny_gpt, single_scale, test_digits):
    with pytest.raises(ValueError, match="inpaint"):
        run_edit(tiny_gpt, single_scale[0], test_digits, "erase")


# --- edit_images with VAR and diffusion --------------------------------------------------------------------------

def tiny_prior(kind, single_scale, multi_scale):
    if kind == "var":
        vqvae, cfg = multi_scale
        torch.manual_seed(1)
        return VAR.from_tokenizer(cfg.var, vqvae.token_info(), vqvae).eval(), vqvae
    vqvae, cfg = single_scale
    noise = kind.split("_")[1]
    dcfg = settings.build_config("tiny", [f"diffusion.noise={noise}"]).diffusion
    torch.manual_seed(1)
    return DiscreteDiffusion(dcfg, vqvae.grid_shape, cfg.vqvae.codebook_size).eval(), vqvae


@pytest.mark.parametrize("edit", sampling.EDITS)
@pytest.mark.parametrize("kind", ["var", "diffusion_mask", "diffusion_uniform"])
def test_edit_images_keeps_the_real_tokens(monkeypatch, kind, edit, single_scale, multi_scale, test_digits):
    prior, vqvae = tiny_prior(kind, single_scale, multi_scale)
    calls = record_sample(monkeypatch, prior)
    grid, columns = run_edit(prior, vqvae, test_digits, edit)
    check_grid(grid, columns, vqvae, test_digits, edit)
    assert len(calls) == 1
    kwargs, tokens = calls[0]["kwargs"], calls[0]["tokens"]
    real = vqvae.encode_sequence(data.to_model_range(test_digits[0])).repeat_interleave(SAMPLES, 0)
    keep = sampling.keep_mask(vqvae, edit)
    assert torch.equal(kwargs["known_BL"], real)
    assert torch.equal(kwargs["known_mask_BL"], keep.expand_as(real))
    assert tokens.shape == real.shape
    assert torch.equal(tokens[:, keep], real[:, keep])      # every kept token is the real image's
    assert not torch.equal(tokens[:, ~keep], real[:, ~keep])  # the rest is drawn anew
    results = torch.cat([grid[i * columns + 2:(i + 1) * columns] for i in range(N_IMAGES)])
    assert torch.allclose(results, vqvae.decode_sequence(tokens).clamp(-1, 1), atol=1e-6)


@pytest.mark.parametrize("kind", ["var", "diffusion_mask", "diffusion_uniform"])
def test_sample_with_keep_mask_keeps_the_real_tokens(kind, single_scale, multi_scale, test_digits):
    prior, vqvae = tiny_prior(kind, single_scale, multi_scale)
    images, labels = test_digits
    real = vqvae.encode_sequence(data.to_model_range(images))
    for edit in sampling.EDITS:
        keep = sampling.keep_mask(vqvae, edit).expand_as(real)
        tokens = prior.sample(labels, guidance=2.0, generator=torch.Generator().manual_seed(0), known_BL=real,
                              known_mask_BL=keep)
        assert torch.equal(tokens[keep], real[keep])
        assert tokens.min() >= 0 and tokens.max() < vqvae.cfg.codebook_size


def test_edit_images_is_reproducible_with_the_same_seed(single_scale, multi_scale, test_digits):
    prior, vqvae = tiny_prior("var", single_scale, multi_scale)
    a, _ = run_edit(prior, vqvae, test_digits, "inpaint", seed=3)
    b, _ = run_edit(prior, vqvae, test_digits, "inpaint", seed=3)
    c, _ = run_edit(prior, vqvae, test_digits, "inpaint", seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


# --- draw_images with every prior ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["var", "diffusion_mask", "diffusion_uniform"])
def test_draw_images_with_each_prior(kind, single_scale, multi_scale):
    prior, vqvae = tiny_prior(kind, single_scale, multi_scale)
    classes = torch.arange(7) % 10
    steps = 3 if prior.sampling_steps else None  # steps given to a prior without them is an error
    images = sampling.draw_images(prior, vqvae, classes, CPU, None, guidance=1.5, batch_size=4, seed=0, steps=steps)
    assert images.shape == (7, 1, 28, 28) and images.min() >= -1 and images.max() <= 1
    again = sampling.draw_images(prior, vqvae, classes, CPU, None, guidance=1.5, batch_size=4, seed=0, steps=steps,
                                  use_cache=False)
    assert torch.equal(images, again)  # same seed; VAR with and without its KV cache, diffusion ignores the flag
    assert math.isfinite(images.sum().item())
