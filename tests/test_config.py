"""Config: presets, --set overrides (typed parsing), validation errors, and the one-line error of the scripts."""
import subprocess
import sys

import pytest
import torch

import config
from config import PRIORS, GPTConfig
from models.vqvae import reachable_grid_sizes
from pipeline import devices, settings
from pipeline.errors import ConfigError, DeviceError
from pipeline.settings import build_config, sampling_settings


def test_defaults_and_tiny_preset():
    cfg = build_config()
    assert cfg.vqvae.grid_size == 4 and cfg.vqvae.num_codebooks == 1
    tiny = build_config("tiny")
    assert tiny.vqvae.channels == (8, 16, 16) and tiny.gpt.d_model == 32 and tiny.data.train_limit == 512


def test_named_presets_set_the_grid():
    cfg = build_config("mnist_2x2x2")
    assert (cfg.vqvae.grid_size, cfg.vqvae.num_codebooks) == (2, 2)
    assert build_config("mnist_7x7x1").vqvae.grid_size == 7


def test_overrides_come_after_the_preset_and_flags_after_overrides():
    cfg = build_config("mnist_2x2x2", ["vqvae.grid_size=7", "seed=3"], seed=11, device="cpu")
    assert cfg.vqvae.grid_size == 7 and cfg.vqvae.num_codebooks == 2
    assert cfg.seed == 11 and cfg.device == "cpu"


def test_overrides_parse_to_the_field_type():
    cfg = build_config("tiny", ["vqvae.channels=(4, 8,12)", "sample.temperatures=[0.5,1]", "vqvae_train.lr=1e-3",
                                "gpt.n_layer=3", "data.root=/some/where", "amp=off"])
    assert cfg.vqvae.channels == (4, 8, 12) and all(type(c) is int for c in cfg.vqvae.channels)
    assert cfg.sample.temperatures == (0.5, 1.0) and all(type(t) is float for t in cfg.sample.temperatures)
    assert cfg.vqvae_train.lr == 1e-3 and type(cfg.gpt.n_layer) is int and cfg.gpt.n_layer == 3
    assert cfg.data.root == "/some/where" and cfg.amp == "off"


def test_bool_values_parse():
    # no field of Config is a bool yet, so the parser is checked directly
    for text, value in [("true", True), ("True", True), ("1", True), ("false", False), ("0", False)]:
        assert settings.parse_value(text, False) is value
    with pytest.raises(ConfigError):
        settings.parse_value("yes", True)


def test_overrides_do_not_leak_between_configs():
    build_config("tiny", ["vqvae.channels=(1,2,3)"])
    assert build_config("tiny").vqvae.channels == (8, 16, 16)
    assert config.Config().vqvae.channels == (16, 32, 64)


@pytest.mark.parametrize("override,fragment", [
    ("vqvae.grid_size=5", "grid_size=5"),
    ("vqvae.grid_size=28", "grid_size=28"),
    ("vqvae.num_codebooks=0", "num_codebooks"),
    ("vqvae.codebook_size=1", "codebook_size"),
    ("vqvae.channels=(8,16)", "channels"),
    ("vqvae.ema_decay=1.0", "ema_decay"),
    ("vqvae_train.lr=-1", "vqvae_train.lr"),
    ("gpt_train.lr=0", "gpt_train.lr"),
    ("gpt_train.epochs=0", "gpt_train.epochs"),
    ("gpt_train.grad_clip=0", "gpt_train.grad_clip"),
    ("diffusion_train.grad_clip=-1", "diffusion_train.grad_clip"),
    ("gpt.d_model=33", "divisible"),
    ("gpt.dropout=1.0", "dropout"),
    ("diffusion.temperature=0", "diffusion.temperature"),
    ("sample.top_k=-1", "top_k"),
    ("device=tpu", "device"),
    ("device=cuda:x", "cuda:N"),
    ("amp=fp8", "amp"),
    ("data.dataset=cifar", "dataset"),
])
def test_invalid_values_raise_config_error(override, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        build_config("tiny", [override])
    assert len(str(info.value).splitlines()) == 1


def test_grid_error_lists_the_reachable_sizes():
    with pytest.raises(ConfigError, match=r"\[14, 7, 4, 2, 1\]"):
        build_config(overrides=["vqvae.grid_size=5"])


@pytest.mark.parametrize("override,fragment", [
    ("vqvae.no_such_field=1", "unknown config field"),
    ("nosection.grid_size=1", "unknown config section"),
    ("vqvae=1", "is a section"),
    ("vqvae.grid_size", "must look like"),
    ("vqvae.grid_size=four", "cannot read 'four' as int"),
    ("vqvae.grid_size=4.0", "cannot read"),
    ("vqvae_train.lr=fast", "cannot read"),
    ("vqvae.channels=(8,x,16)", "cannot read"),
])
def test_bad_overrides_raise_config_error(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_config("tiny", [override])


def test_unknown_preset_raises_config_error():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        build_config("huge")


def test_reachable_grid_sizes():
    assert reachable_grid_sizes(28) == [14, 7, 4, 2, 1]
    assert reachable_grid_sizes(32) == [16, 8, 4, 2, 1]
    assert reachable_grid_sizes(8) == [4, 2, 1]


def test_from_dict_restores_tuples_and_ignores_unknown_keys():
    cfg = build_config("tiny").vqvae
    values = {**settings.to_dict(cfg), "channels": list(cfg.channels), "removed_field": 1}
    assert settings.from_dict(config.VQVAEConfig, values) == cfg


def test_script_prints_one_line_config_error_and_exits_nonzero(repo_root):
    result = subprocess.run([sys.executable, "vqvae_train.py", "--set", "vqvae.grid_size=5"], cwd=repo_root,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("config error:") and "grid_size=5" in lines[0]
    assert "Traceback" not in result.stderr


# --- the multi-scale tokenizer and the VAR / diffusion sections --------------------------------------------------

@pytest.mark.parametrize("overrides,fragment", [
    (["vqvae.scales=(2,1,4)"], "must increase"),
    (["vqvae.scales=(1,2,2,4)"], "must increase"),
    (["vqvae.scales=(0,2,4)"], "must increase"),
    (["vqvae.scales=(1,2,3)"], "end at vqvae.grid_size=4"),
    (["vqvae.scales=(1,2,3,4,5)"], "end at vqvae.grid_size=4"),
    (["vqvae.grid_size=7", "vqvae.scales=(1,2,3,4)"], "end at vqvae.grid_size=7"),
    (["vqvae.scales=(1,2,3,4)", "vqvae.num_codebooks=2"], "num_codebooks=1"),
    (["vqvae.phi_ratio=1.5"], "phi_ratio"),
])
def test_invalid_scales_raise_config_error(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        build_config("tiny", overrides)
    assert len(str(info.value).splitlines()) == 1


def test_valid_scales_pass():
    assert build_config("tiny", ["vqvae.scales=(4)"]).vqvae.scales == (4,)  # one scale: a plain residual VQ
    assert build_config("tiny", ["vqvae.grid_size=2", "vqvae.scales=(1,2)"]).vqvae.scales == (1, 2)
    assert build_config("mnist_var", ["vqvae.scales=()"]).vqvae.scales == ()  # back to the single-scale tokenizer


def test_var_presets_build():
    cfg = build_config("mnist_var")
    assert cfg.vqvae.scales == (1, 2, 3, 4) and cfg.vqvae.grid_size == 4 and cfg.vqvae.num_codebooks == 1
    cfg = build_config("mnist_var_7x7")
    assert cfg.vqvae.scales == (1, 2, 3, 4, 5, 7) and cfg.vqvae.grid_size == 7
    tiny = build_config("tiny_var")
    assert tiny.vqvae.scales == (1, 2, 3, 4) and tiny.vqvae.channels == (8, 16, 16) and tiny.var.d_model == 32
    assert build_config("tiny").vqvae.scales == () and build_config().vqvae.scales == ()


def test_scales_override_parses_to_ints():
    cfg = build_config("tiny", ["vqvae.scales=(1,2,4)"])
    assert cfg.vqvae.scales == (1, 2, 4) and all(type(s) is int for s in cfg.vqvae.scales)
    assert build_config("tiny", ["vqvae.scales=[1, 3,4]"]).vqvae.scales == (1, 3, 4)
    with pytest.raises(ConfigError, match="cannot read"):
        build_config("tiny", ["vqvae.scales=(1,2.5,4)"])
    assert config.Config().vqvae.scales == ()  # the override did not leak into the defaults


@pytest.mark.parametrize("override,fragment", [
    ("diffusion.noise=gaussian", "diffusion.noise"),
    ("diffusion.steps=0", "diffusion.steps"),
    ("var.d_model=33", "var.d_model=33"),
    ("var.n_layer=0", "var.n_layer"),
    ("var.class_dropout=1.5", "var.dropout"),
    ("diffusion.d_model=31", "diffusion.d_model=31"),
    ("var_train.lr=0", "var_train.lr"),
    ("diffusion_train.epochs=0", "diffusion_train.epochs"),
    ("diffusion_train.batch_size=0", "diffusion_train.batch_size"),
])
def test_invalid_prior_values_raise_config_error(override, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        build_config("tiny", [override])
    assert len(str(info.value).splitlines()) == 1


def test_diffusion_noise_accepts_both_processes():
    assert build_config("tiny", ["diffusion.noise=uniform"]).diffusion.noise == "uniform"
    assert build_config("tiny").diffusion.noise == "mask"
    assert build_config("tiny").diffusion.steps == 4 and build_config().diffusion.steps == 16


def test_each_prior_samples_at_its_own_sections_temperature_and_guidance():
    cfg = build_config("tiny", ["gpt.temperature=1.37", "var.temperature=1.13", "diffusion.temperature=0.83",
                                "gpt.guidance=2.5", "var.guidance=1.25", "diffusion.guidance=3"])
    trained_at = build_config("tiny")  # the copy inside a checkpoint is not what decides
    priors = {kind: type("Prior", (), {"kind": kind, "cfg": getattr(trained_at, kind)})() for kind in PRIORS}
    assert {kind: sampling_settings(cfg, p) for kind, p in priors.items()} == \
        {"gpt": (1.37, 2.5), "var": (1.13, 1.25), "diffusion": (0.83, 3.0)}
    # a kind without a section here keeps its checkpoint's; one saved before per-prior guidance gets the default
    elsewhere = type("Prior", (), {"kind": "toy", "cfg": type("Cfg", (), {"temperature": 0.7})()})()
    assert sampling_settings(cfg, elsewhere) == (0.7, 1.5)


def test_the_moved_global_guidance_field_says_where_it_went():
    with pytest.raises(ConfigError, match="gpt.guidance") as info:
        build_config("tiny", ["sample.cfg_scale=2"])
    assert len(str(info.value).splitlines()) == 1


def test_the_renamed_guidance_field_still_answers_to_its_old_name():
    assert build_config("tiny", ["gpt.cfg_scale=2.25"]).gpt.guidance == 2.25
    assert settings.from_dict(GPTConfig, {"cfg_scale": 3.0, "n_layer": 2}).guidance == 3.0  # an older checkpoint



def test_any_cuda_device_of_several_is_a_valid_choice_and_a_missing_one_is_one_line():
    assert build_config("tiny", ["device=cuda:1"]).device == "cuda:1"
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="--device cuda:1 was asked for"):
            devices.pick_device("cuda:1")


# --- runs of different presets side by side --------------------------------------------------------------------------

@pytest.mark.parametrize("preset, folder", [
    ("mnist", "checkpoints"), ("mnist_var", "checkpoints"), ("mnist_7x7x1", "checkpoints/mnist_7x7x1"),
    ("mnist_4x4x2", "checkpoints/mnist_4x4x2"), ("fashion_mnist", "checkpoints/fashion_mnist"),
    ("fashion_mnist_var", "checkpoints/fashion_mnist"), ("cifar10_cpu", "checkpoints/cifar10/cifar10_cpu"),
    ("tiny", "checkpoints/tiny"), ("tiny_var", "checkpoints/tiny")])
def test_each_preset_writes_into_its_own_run_folder(preset, folder):
    """A dataset's own presets (and their _var siblings, whose files have other names) keep the dataset's folder;
    every other preset gets a folder named by it, so trying another grid never overwrites the default's run."""
    cfg = build_config(preset)
    assert cfg.checkpoint_dir == folder and cfg.results_dir == folder.replace("checkpoints", "_results")


def test_a_run_name_keeps_a_recipe_of_ones_own_apart():
    assert build_config("mnist", ["run=rvq"]).checkpoint_dir == "checkpoints/rvq"
    assert build_config("emoji", ["run=rvq"]).checkpoint_dir == "checkpoints/emoji/rvq"
    assert build_config("tiny", ["run="]).checkpoint_dir == "checkpoints"  # the dataset's folder itself
    for bad in ("../x", "a/b", ".."):
        with pytest.raises(ConfigError, match="plain folder name"):
            build_config("mnist", [f"run={bad}"])


def test_a_checkpoint_samples_with_the_preset_it_was_trained_with():
    """Its dataset and the sampling settings its preset defines, under this command's overrides; the command's
    config itself when they agree."""
    mnist = build_config("mnist")
    fashion_ckpt = {"preset": "fashion_mnist", "dataset": "fashion_mnist"}
    found = settings.config_of_checkpoint(mnist, fashion_ckpt)
    assert found.data.dataset == "fashion_mnist" and found.preset == "fashion_mnist"
    assert (found.gpt.temperature, found.gpt.guidance) == (build_config("fashion_mnist").gpt.temperature,
                                                            build_config("fashion_mnist").gpt.guidance)
    assert (found.gpt.temperature, found.gpt.guidance) != (mnist.gpt.temperature, mnist.gpt.guidance)
    mine = settings.config_of_checkpoint(mnist, fashion_ckpt, ["gpt.temperature=0.5"])
    assert mine.gpt.temperature == 0.5 and mine.data.dataset == "fashion_mnist"
    assert settings.config_of_checkpoint(mnist, {"preset": "mnist", "dataset": "mnist"}) is mnist
    # older checkpoints record no preset: the command's on the same dataset, else that dataset's own
    assert settings.config_of_checkpoint(mnist, {"dataset": "mnist"}) is mnist
    assert settings.config_of_checkpoint(mnist, {"dataset": "emoji"}).preset == "emoji"
    # a preset trained on another dataset by --set keeps that dataset
    tiny_fashion = settings.config_of_checkpoint(build_config("tiny"), {"preset": "tiny", "dataset": "fashion_mnist"})
    assert tiny_fashion.preset == "tiny" and tiny_fashion.data.dataset == "fashion_mnist"
    # an explicit data.dataset is the user's (the checkpoint's loader refuses a contradiction)
    assert settings.config_of_checkpoint(mnist, fashion_ckpt, ["data.dataset=mnist"]) is mnist
