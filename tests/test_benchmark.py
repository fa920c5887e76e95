"""benchmark.py: the timer, the sampling/training speed rows on tiny in-process models, and the sweep plot."""
import os
import time

import numpy as np
import pytest
import torch
from pipeline import data, figures, settings
from PIL import Image

import benchmark
from models.gpt import GPT
from models.vqvae import VQVAE
from pipeline.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_timed_reports_the_median_and_spread_and_excludes_warmup(monkeypatch):
    """A fake clock that each call of fn advances by a set duration: the figures are exact."""
    clock = [0.0]
    durations = iter([50.0, 1.0, 3.0, 2.0, 10.0])  # the warm-up first: slowest of all, and must not be counted
    calls = []

    def fn():
        calls.append(1)
        clock[0] += next(durations)

    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: clock[0])
    median, (lo, hi) = benchmark.timed(fn, repeats=4, warmup=1)
    assert len(calls) == 5
    assert median == 2.5  # the median of 1, 3, 2, 10 (their mean would be 4)
    assert (lo, hi) == (1.0, 10.0)
    assert lo <= median <= hi


def test_timed_measures_real_time():
    median, (lo, hi) = benchmark.timed(lambda: time.sleep(0.01), repeats=3, warmup=0)
    assert 0.01 <= lo <= median <= hi < 1.0


@pytest.mark.parametrize("repeats, warmup", [(1, 0), (2, 3), (5, 1)])
def test_timed_calls_fn_repeats_plus_warmup_times(repeats, warmup):
    calls = []
    median, (lo, hi) = benchmark.timed(lambda: calls.append(1), repeats=repeats, warmup=warmup)
    assert len(calls) == repeats + warmup
    assert 0 <= lo <= median <= hi


@pytest.fixture(scope="module")
def tiny_models():
    cfg = settings.build_config(preset="tiny")
    torch.manual_seed(0)
    vqvae = VQVAE(cfg.vqvae).eval()
    prior = GPT(cfg.gpt, (4, 4, 1), cfg.vqvae.codebook_size).eval()
    return cfg, prior, vqvae


def test_sampling_speed_rows_on_tiny_models(tiny_models):
    _, prior, vqvae = tiny_models
    rows = benchmark.sampling_speed(prior, vqvae, torch.device("cpu"), None, [1, 4], repeats=1)
    assert [r["batch"] for r in rows] == [1, 4]
    for row in rows:
        for key in ("kv", "no_kv"):
            assert np.isfinite(row[key]) and row[key] > 0, row
            lo, hi = row[key + "_spread"]
            assert 0 < lo <= row[key] <= hi, row
            assert row[key] * row[key + "_seconds"] == pytest.approx(row["batch"])  # images/s = batch / seconds
    assert not prior.training  # draw_images restores the mode it found


def test_training_speed_leaves_the_given_models_untouched(tiny_models, monkeypatch):
    cfg, prior, vqvae = tiny_models
    cfg = settings.build_config(preset="tiny", overrides=[f"data.root={os.path.join(REPO, 'data')}"])
    try:
        data.load_split(cfg.data, train=True)
    except DataError as e:
        pytest.skip(f"MNIST unavailable: {e}")
    before = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in (("gpt", prior), ("vq", vqvae))}
    # on a CPU with native bf16 (as if this one had it): the prior in bf16, the tokenizer in float32 as it trains
    monkeypatch.setattr(benchmark.devices, "cpu_has_native_bf16", lambda: True)
    out = benchmark.training_speed(prior, vqvae, cfg, torch.device("cpu"), torch.bfloat16, repeats=1, steps=2)
    assert set(out) == {"vqvae", "gpt"}
    assert out["gpt"]["dtype"] is torch.bfloat16 and out["vqvae"]["dtype"] is None
    for row in out.values():
        assert row["images_per_s"] > 0 and row["spread"][0] <= row["images_per_s"] <= row["spread"][1]
    for name, m in (("gpt", prior), ("vq", vqvae)):
        after = m.state_dict()
        assert all(torch.equal(before[name][k], after[k]) for k in after), f"training_speed changed the {name} weights"


def test_plot_sweep_writes_a_png(tmp_path):
    rows = [{"temperature": 0.5, "fid": 12.0, "precision": 0.9, "recall": 0.3, "accuracy": 0.95},
            {"temperature": 1.0, "fid": 4.5, "precision": 0.7, "recall": 0.6, "accuracy": 0.85}]
    path = tmp_path / "nested" / "dir" / "sweep.png"  # folders that do not exist yet
    figures.plot_sweep(rows, str(path))
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1080, 420)  # 9 x 3.5 inches at 120 dpi
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 5  # something was drawn
