"""Shared training helpers: the learning-rate schedule, per-epoch RNG, and the --resume config check."""
import math

import pytest
import torch

from pipeline import settings, training

from pipeline.errors import CheckpointError, Diverged
from pipeline.files import atomic_save
from pipeline.training_run import TrainingRun


def test_lr_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    lr = lambda step: training.lr_at(step, total_steps=110, base_lr=1.0, warmup_steps=10, min_ratio=0.1)
    assert lr(0) == pytest.approx(0.1) and lr(4) == pytest.approx(0.5) and lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert lr(110) == pytest.approx(0.1) and lr(500) == pytest.approx(0.1)
    values = [lr(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_lr_without_warmup_starts_at_base():
    assert training.lr_at(0, 100, 2e-3) == pytest.approx(2e-3)
    assert training.lr_at(50, 100, 2e-3, min_ratio=0.0) == pytest.approx(1e-3 * (1 + math.cos(math.pi / 2)))


def test_epoch_generator_is_deterministic_and_differs_by_epoch():
    a = torch.randperm(20, generator=training.epoch_generator(0, 1))
    assert torch.equal(a, torch.randperm(20, generator=training.epoch_generator(0, 1)))
    assert not torch.equal(a, torch.randperm(20, generator=training.epoch_generator(0, 2)))


def test_resume_state_accepts_the_same_config_and_names_what_differs(tmp_path, tiny_cfg):
    tiny_cfg.gpt_train.epochs = 3
    run_cfg = training.run_config(tiny_cfg, "data", "gpt", "gpt_train")
    path = str(tmp_path / "gpt.pt")
    atomic_save({"kind": "gpt", "model": {}, "run_config": run_cfg, "epoch": 2}, path)
    assert training.resume_state(path, "gpt", run_cfg, "gpt_train")["epoch"] == 2
    tiny_cfg.gpt.n_layer = 2
    with pytest.raises(CheckpointError, match=r"differs in: gpt\)"):
        training.resume_state(path, "gpt", training.run_config(tiny_cfg, "data", "gpt", "gpt_train"), "gpt_train")
    with pytest.raises(CheckpointError, match="drop --resume"):
        training.resume_state(str(tmp_path / "missing.pt"), "gpt", run_cfg, "gpt_train")


def test_resume_on_a_folder_that_changed_under_the_same_flags_says_so(tmp_path, tiny_cfg):
    """The flags were the same: telling the user to give the same flags again would send them in a circle."""
    run_cfg = {**training.run_config(tiny_cfg, "data", "gpt", "gpt_train"), "data_key": "folder:pets:aaaa"}
    path = str(tmp_path / "gpt.pt")
    atomic_save({"kind": "gpt", "model": {}, "run_config": run_cfg, "epoch": 1}, path)
    with pytest.raises(CheckpointError, match="files were added, removed or changed since") as caught:
        training.resume_state(path, "gpt", {**run_cfg, "data_key": "folder:pets:bbbb"}, "gpt_train")
    assert "same --preset/--set" not in str(caught.value)


def test_resume_state_extends_a_run_when_only_its_epochs_grow(tmp_path, tiny_cfg, capsys):
    tiny_cfg.gpt_train.epochs = 2
    path = str(tmp_path / "gpt.pt")
    atomic_save({"kind": "gpt", "model": {}, "epoch": 2,
                 "run_config": training.run_config(tiny_cfg, "data", "gpt", "gpt_train")}, path)
    assert training.resume_state(path, "gpt", training.run_config(tiny_cfg, "data", "gpt", "gpt_train"),
                                 "gpt_train") is None  # finished: nothing to do
    assert "nothing to resume" in capsys.readouterr().out
    tiny_cfg.gpt_train.epochs = 5
    assert training.resume_state(path, "gpt", training.run_config(tiny_cfg, "data", "gpt", "gpt_train"),
                                 "gpt_train")["epoch"] == 2
    assert "extending the run from 2 to 5 epochs" in capsys.readouterr().out
    tiny_cfg.gpt_train.epochs = 1
    with pytest.raises(CheckpointError, match="already trained 2 epochs.*gpt_train.epochs=N"):
        training.resume_state(path, "gpt", training.run_config(tiny_cfg, "data", "gpt", "gpt_train"), "gpt_train")


def test_rng_state_round_trips_every_stream():
    import random
    import numpy as np
    state = training.rng_state()
    draws = (torch.rand(3), np.random.rand(3), random.random())
    training.set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], again[0]) and (draws[1] == again[1]).all() and draws[2] == again[2]


def test_a_non_finite_loss_stops_the_run_and_says_what_is_kept(tmp_path, tiny_cfg):
    run = TrainingRun(tiny_cfg, "gpt", str(tmp_path / "a.pt"), str(tmp_path / "res"))
    assert run.loss_value(torch.tensor(1.5), 1) == 1.5
    for bad in (float("nan"), float("inf")):
        with pytest.raises(Diverged, match="epoch 1, step 1;.*nothing was saved.*gpt_train.lr"):
            run.loss_value(torch.tensor(bad), 1)
    (tmp_path / "a.pt").write_bytes(b"x")
    run.step = 8
    with pytest.raises(Diverged, match="epoch 2, step 9;.*left as it was"):
        run.loss_value(torch.tensor(float("nan")), 2)


def test_refuse_overwrite_needs_resume_or_overwrite_for_an_existing_checkpoint(tmp_path):
    path = tmp_path / "vqvae.pt"
    training.refuse_overwrite(str(path), resume=False, overwrite=False)  # nothing there yet: a new run may start
    path.write_bytes(b"trained")
    with pytest.raises(CheckpointError, match="--resume.*--overwrite"):
        training.refuse_overwrite(str(path), resume=False, overwrite=False)
    training.refuse_overwrite(str(path), resume=True, overwrite=False)
    training.refuse_overwrite(str(path), resume=False, overwrite=True)


# --- mixed precision: what amp=auto picks ---------------------------------------------------------------------------

CPU = torch.device("cpu")


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, None)])
def test_amp_auto_on_a_cpu_is_bf16_only_where_the_cpu_has_it(monkeypatch, native, expected):
    from pipeline import devices
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    assert devices.amp_dtype(CPU, "auto") is expected
    assert devices.amp_dtype(CPU, "off") is None  # the explicit settings win either way
    assert devices.amp_dtype(CPU, "bf16") is torch.bfloat16


def test_native_bf16_is_read_from_torchs_cpu_probes_and_is_false_without_them(monkeypatch):
    from pipeline import devices
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert devices.cpu_has_native_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert devices.cpu_has_native_bf16() is True
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name)  # a torch without the probes: float32, the safe choice
    assert devices.cpu_has_native_bf16() is False


def test_the_tokenizer_trains_in_float32_on_a_cpu_unless_asked(monkeypatch):
    from pipeline import devices
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert devices.amp_dtype(CPU, "auto", tokenizer_training=True) is None
    assert devices.amp_dtype(CPU, "bf16", tokenizer_training=True) is torch.bfloat16


def test_resume_does_not_compare_the_sampling_settings():
    a, b = settings.build_config("tiny"), settings.build_config("tiny", ["gpt.temperature=0.7", "gpt.guidance=3"])
    assert training.run_config(a, "gpt", "gpt_train") == training.run_config(b, "gpt", "gpt_train")
    # as in checkpoints from before they existed
    assert {"temperature", "guidance"}.isdisjoint(training.run_config(a, "gpt")["gpt"])
    c = settings.build_config("tiny", ["gpt.d_model=64", "gpt.n_head=2"])
    assert training.run_config(a, "gpt") != training.run_config(c, "gpt")
