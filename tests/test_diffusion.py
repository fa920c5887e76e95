"""Discrete-diffusion prior: noise schedule, corruption, bidirectionality, both reverse processes, CFG, inpainting."""
import math

import pytest
import torch

import config
from models.diffusion import DiscreteDiffusion, corrupted_fraction, unmask_schedule

V = 8
NOISES = ["mask", "uniform"]


def tiny_diffusion(noise="mask", grid_shape=(2, 2, 2), n_layer=1, steps=4):
    cfg = config.DiffusionConfig(n_layer=n_layer, n_head=2, d_model=32, dropout=0.0, noise=noise, steps=steps)
    torch.manual_seed(0)
    return DiscreteDiffusion(cfg, grid_shape, V).eval()


def random_batch(model, B=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, model.L), generator=g), torch.randint(0, 10, (B,), generator=g)


def test_corrupted_fraction_is_the_cosine_schedule():
    assert corrupted_fraction(0.0) == 0.0 and corrupted_fraction(1.0) == 1.0
    assert corrupted_fraction(0.5) == pytest.approx(math.sqrt(0.5))
    t = torch.tensor([0.0, 1 / 3, 1.0])
    assert torch.allclose(corrupted_fraction(t), torch.tensor([0.0, 0.5, 1.0]), atol=1e-6)


@pytest.mark.parametrize("noise", NOISES)
def test_corruption_at_t0_changes_nothing_and_at_t1_everything(noise):
    model = tiny_diffusion(noise)
    tokens, _ = random_batch(model, B=16)
    g = torch.Generator().manual_seed(0)
    noisy, corrupted = model.corrupt(tokens, torch.zeros(16), generator=g)
    assert torch.equal(noisy, tokens) and not corrupted.any()
    noisy, corrupted = model.corrupt(tokens, torch.ones(16), generator=g)
    assert corrupted.all()
    if noise == "mask":
        assert (noisy == model.mask_id).all()
    else:
        assert noisy.min() >= 0 and noisy.max() < V and not torch.equal(noisy, tokens)


def test_mask_corruption_masks_exactly_round_fraction_times_L_per_sample():
    model = tiny_diffusion("mask", grid_shape=(4, 4, 1))
    tokens, _ = random_batch(model, B=64)
    t = torch.rand(64, generator=torch.Generator().manual_seed(2))
    t[0] = 1e-4  # a tiny t still masks one position
    noisy, corrupted = model.corrupt(tokens, t, generator=torch.Generator().manual_seed(3))
    expected = torch.round(corrupted_fraction(t) * model.L).long().clamp(min=1)
    assert torch.equal(corrupted.sum(1), expected)
    assert torch.equal(noisy == model.mask_id, corrupted)
    assert torch.equal(noisy[~corrupted], tokens[~corrupted])
    assert len({tuple(row) for row in corrupted.tolist()}) > 32  # positions are drawn, not fixed


@pytest.mark.parametrize("noise", NOISES)
def test_corrupted_share_at_half_time_is_near_the_schedule(noise):
    model = tiny_diffusion(noise, grid_shape=(4, 4, 1))
    tokens, _ = random_batch(model, B=500)
    noisy, corrupted = model.corrupt(tokens, torch.full((500,), 0.5), generator=torch.Generator().manual_seed(0))
    assert abs(corrupted.float().mean().item() - math.sqrt(0.5)) < 0.03
    assert torch.equal(noisy[~corrupted], tokens[~corrupted])
    if noise == "uniform":  # replaced tokens are uniform codes: about 1/V of them equal the old token by chance
        same = (noisy[corrupted] == tokens[corrupted]).float().mean().item()
        assert abs(same - 1 / V) < 0.03


@pytest.mark.parametrize("num_tokens,steps", [(16, 4), (16, 16), (8, 1), (4, 10), (1, 5), (49, 8), (32, 100)])
def test_unmask_schedule_reveals_every_token_in_at_most_steps_passes(num_tokens, steps):
    schedule = unmask_schedule(num_tokens, steps)
    assert sum(schedule) == num_tokens
    assert all(n >= 1 for n in schedule)
    assert len(schedule) <= min(num_tokens, steps)


def test_unmask_schedule_follows_maskgit_cosine():
    # masked after step i: floor(16 cos(pi/2 (i+1)/4)) = 14, 11, 6, 0
    assert unmask_schedule(16, 4) == [2, 3, 5, 6]
    assert unmask_schedule(4, 10) == [1, 1, 1, 1]  # steps revealing nothing are dropped


@pytest.mark.parametrize("steps", [3, 4, 20])
def test_mask_sampling_reveals_every_position_exactly_once(steps):
    model = tiny_diffusion("mask", grid_shape=(2, 3, 2))
    classes = torch.arange(5)
    tokens, process = model.sample(classes, steps=steps, return_process=True,
                                   generator=torch.Generator().manual_seed(0))
    schedule = unmask_schedule(model.L, steps)
    assert len(process) == len(schedule) == model.forward_passes(steps)
    states = torch.stack([torch.full_like(tokens, -1)] + [p["tokens_BL"] for p in process])  # (S+1, B, L)
    revealed = (states[1:] >= 0) & (states[:-1] < 0)
    assert torch.equal(revealed.sum(0), torch.ones_like(tokens))  # each position leaves -1 exactly once
    assert torch.equal(revealed.sum(2), torch.tensor(schedule)[:, None].expand(-1, 5))
    for a, b in zip(states[1:-1], states[2:]):  # once revealed, a token never changes
        assert torch.equal(b[a >= 0], a[a >= 0])
    assert torch.equal(states[-1], tokens)
    assert all(p["x0_BL"].shape == tokens.shape for p in process)


@pytest.mark.parametrize("position", [0, 3])
def test_changing_a_later_token_changes_earlier_logits(position):
    model = tiny_diffusion("mask")
    tokens, classes = random_batch(model)
    t = torch.full((3,), 0.5)
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % V
    a, b = model(tokens, classes, t), model(changed, classes, t)
    assert a.shape == (3, model.L, V)
    assert not torch.allclose(a[:, position], b[:, position], atol=1e-4)


def test_class_noise_level_and_mask_token_all_reach_the_logits():
    model = tiny_diffusion("mask")
    tokens, classes = random_batch(model)
    base = model(tokens, classes, torch.full((3,), 0.5))
    assert not torch.allclose(base, model(tokens, (classes + 1) % 10, torch.full((3,), 0.5)), atol=1e-4)
    assert not torch.allclose(base, model(tokens, classes, torch.full((3,), 0.9)), atol=1e-4)
    masked = tokens.clone()
    masked[:, 2] = model.mask_id
    assert not torch.allclose(base, model(masked, classes, torch.full((3,), 0.5)), atol=1e-4)


def test_each_position_reads_the_logits_of_its_own_codebook():
    model = tiny_diffusion("uniform", grid_shape=(2, 2, 2))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.arange(2 * V, dtype=torch.float32))
    tokens, classes = random_batch(model)
    logits = model(tokens, classes, torch.full((3,), 0.3))
    for s in range(model.L):
        assert torch.equal(logits[0, s], torch.arange(V, dtype=torch.float32) + V * model.book_L[s])


@pytest.mark.parametrize("noise", NOISES)
def test_guidance_one_equals_plain_sampling(noise):
    model = tiny_diffusion(noise)
    classes = torch.arange(8) % 10
    plain = model.sample(classes, generator=torch.Generator().manual_seed(2))
    guided = model.sample(classes, guidance=1.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(plain, guided)


@pytest.mark.parametrize("noise", NOISES)
def test_guidance_changes_conditional_draws_but_not_unconditional_ones(noise):
    model = tiny_diffusion(noise)
    with torch.no_grad():  # make class information strong so that guidance matters
        model.class_emb.weight.mul_(50)
    classes = torch.arange(8)
    plain = model.sample(classes, top_k=1, generator=torch.Generator().manual_seed(0))
    guided = model.sample(classes, top_k=1, guidance=3.0, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(plain, guided)
    uncond = torch.full((8,), model.no_class)
    assert torch.equal(model.sample(uncond, generator=torch.Generator().manual_seed(4)),
                       model.sample(uncond, guidance=3.0, generator=torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("noise", NOISES)
def test_progressive_guidance_rises_over_the_reverse_steps(noise, monkeypatch):
    import models.diffusion as diffusion_module
    scales = []
    original = diffusion_module.guide
    monkeypatch.setattr(diffusion_module, "guide", lambda logits, s: scales.append(s) or original(logits, s))
    model = tiny_diffusion(noise)
    model.sample(torch.arange(4), guidance=3.0, steps=5, generator=torch.Generator().manual_seed(0))
    assert scales == [1.0, 1.5, 2.0, 2.5, 3.0]  # plain conditional first, the full scale at the last step
    scales.clear()
    model.progressive_guidance = False
    model.sample(torch.arange(4), guidance=3.0, steps=5, generator=torch.Generator().manual_seed(0))
    assert scales == [3.0] * 5


@pytest.mark.parametrize("noise", NOISES)
def test_one_step_top_1_sampling_is_the_argmax_prediction(noise):
    model = tiny_diffusion(noise)
    tokens, process = model.sample(torch.arange(4), top_k=1, steps=1, return_process=True,
                                   generator=torch.Generator().manual_seed(0))
    assert len(process) == 1 and torch.equal(tokens, process[0]["x0_BL"])


def test_uniform_reverse_step_is_the_d3pm_posterior():
    """Two steps, t: 1 -> 0.5 -> 0, with a model whose x0 prediction p ignores its input (zeroed head weights)."""
    model = tiny_diffusion("uniform", grid_shape=(2, 2, 2))
    a = 1 - corrupted_fraction(0.5)  # share kept intact at t = 0.5
    classes = torch.arange(500) % 10
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()  # flat p: the last step (s = 0) draws x0 from p itself, keeping x_t only by chance
    tokens, process = model.sample(classes, steps=2, return_process=True, generator=torch.Generator().manual_seed(0))
    kept = (tokens == process[0]["tokens_BL"]).float().mean().item()
    assert abs(kept - 1 / V) < 0.03
    with torch.no_grad():
        model.head.bias.view(-1, V)[:, 3] = 30.0  # p = one-hot(3): from t = 1, x_0.5 is 3 w.p. a + (1 - a)/V
    tokens, process = model.sample(classes, steps=2, return_process=True, generator=torch.Generator().manual_seed(0))
    threes = (process[0]["tokens_BL"] == 3).float().mean().item()
    assert abs(threes - (a + (1 - a) / V)) < 0.03
    assert (tokens == 3).all()  # at s = 0 the posterior is p itself


@pytest.mark.parametrize("noise", NOISES)
def test_same_seed_same_samples_other_seed_other_samples(noise):
    model = tiny_diffusion(noise, grid_shape=(2, 3, 2))
    classes = torch.arange(20) % 10
    a = model.sample(classes, generator=torch.Generator().manual_seed(0))
    b = model.sample(classes, generator=torch.Generator().manual_seed(0))
    c = model.sample(classes, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("grid_shape", [(2, 2, 1), (2, 3, 2)])
def test_samples_are_codes_of_shape_B_L(noise, grid_shape):
    model = tiny_diffusion(noise, grid_shape)
    tokens = model.sample(torch.arange(12) % 10, generator=torch.Generator().manual_seed(0))
    assert tokens.dtype == torch.long and tokens.shape == (12, model.L)
    assert tokens.min() >= 0 and tokens.max() < V
    assert len(tokens.unique()) > 1


@pytest.mark.parametrize("noise", NOISES)
def test_inpainting_never_changes_kept_tokens(noise):
    model = tiny_diffusion(noise, grid_shape=(2, 3, 2))
    known, classes = random_batch(model, B=4, seed=5)
    share_kept = torch.tensor([[0.0], [0.3], [0.7], [1.0]])  # different unknown counts per sample
    keep = torch.rand(4, model.L, generator=torch.Generator().manual_seed(6)) < share_kept
    tokens, process = model.sample(classes, known_BL=known, known_mask_BL=keep, return_process=True,
                                   generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens[keep], known[keep])
    for step in process:
        assert torch.equal(step["tokens_BL"][keep], known[keep])
    assert tokens.min() >= 0 and tokens.max() < V
    assert not torch.equal(tokens[~keep], known[~keep])  # the rest was generated, not copied
    if noise == "mask":  # per sample, every unknown position revealed, in at most `steps` passes
        assert len(process) <= model.cfg.steps


def test_a_known_prefix_is_kept_as_in_the_gpt():
    model = tiny_diffusion("mask", grid_shape=(2, 3, 2))
    prefix = torch.tensor([[3, 1, 4, 1, 5], [2, 7, 1, 6, 2]])
    known = torch.zeros(2, model.L, dtype=torch.long)
    known[:, :5] = prefix
    keep = torch.zeros(2, model.L, dtype=torch.bool)
    keep[:, :5] = True
    out = model.sample(torch.tensor([1, 7]), known_BL=known, known_mask_BL=keep, use_cache=True,
                       generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, model.L) and torch.equal(out[:, :5], prefix)


def test_mask_loss_scores_only_masked_positions():
    model = tiny_diffusion("mask")
    tokens, classes = random_batch(model, B=6)
    torch.manual_seed(3)
    loss = model.loss(tokens, classes)
    torch.manual_seed(3)
    t = 1.0 - torch.rand(6)
    noisy, corrupted = model.corrupt(tokens, t)
    logits = model(noisy, classes, t)
    expected = torch.nn.functional.cross_entropy(logits[corrupted], tokens[corrupted])
    assert loss.dtype == torch.float32 and torch.allclose(loss, expected)
    everywhere = torch.nn.functional.cross_entropy(logits.reshape(-1, V), tokens.reshape(-1))
    assert not torch.allclose(loss, everywhere)


@pytest.mark.parametrize("noise", NOISES)
def test_loss_backpropagates_and_training_lowers_it(noise):
    model = tiny_diffusion(noise, grid_shape=(2, 2, 2)).train()
    tokens, classes = random_batch(model, B=8, seed=7)

    def mean_loss():
        torch.manual_seed(11)
        with torch.no_grad():
            return sum(model.loss(tokens, classes).item() for _ in range(20)) / 20

    before = mean_loss()
    loss = model.loss(tokens, classes)
    assert torch.isfinite(loss) and loss.dim() == 0
    loss.backward()
    assert model.token_emb.weight.grad.abs().sum() > 0 and model.noise_mlp[0].weight.grad.abs().sum() > 0
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(300):
        opt.zero_grad()
        model.loss(tokens, classes).backward()
        opt.step()
    after = mean_loss()
    assert after < 0.6 * before, (before, after)
    # the reverse process turns what was learned into whole sequences: some draws are training sequences
    # (a random model would hit one of 8 out of 8**8 sequences with chance ~1e-6)
    samples = model.eval().sample(classes.repeat(2), temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert sum(tuple(row) in set(map(tuple, tokens.tolist())) for row in samples.tolist()) >= 2
