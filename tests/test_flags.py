"""Bad command-line input to generator.py and evaluate.py: one `error:` line on stderr and a non-zero exit, never a
traceback, and the line names the flag. The flags are checked before any checkpoint is loaded, but the scripts run
on a real tiny pipeline (conftest.py's, trained once per session, copied here) so that an unchecked flag would go on
to draw, and the test would see it. Plus the config checks that stop a training run before any work.

The refusals run through each script's main(argv) in this process (script_runs.run_in_process: the same exit
status, stdout and stderr); test_the_command_line_prints_what_main_prints checks a sample of them against the real
command line, and the valid flags run as a user runs them.
"""
import errno
import os
import shutil

import numpy as np
import pytest
import torch

from pipeline import sampling, settings
import evaluate
import generator
from models.classifier import Classifier
from pipeline.errors import ConfigError, SampleFileError, WriteError
from pipeline.files import atomic_save
from script_runs import assert_one_line_error, dirs_of, finish, run_in_process, start


@pytest.fixture(scope="module")
def dirs(pipeline, tmp_path_factory):
    """The --set flags of a copy of the tiny pipeline's checkpoints (vqvae.pt, gpt.pt), with an untrained classifier
    beside them so evaluate.py gets as far as drawing."""
    root = tmp_path_factory.mktemp("flags")
    shutil.copytree(pipeline[0] / "ck", root / "ck")
    dirs = dirs_of(root)
    torch.manual_seed(0)
    atomic_save({"kind": "classifier", "dataset": "mnist", "model": Classifier().state_dict()},
                str(root / "ck" / "classifier.pt"))
    return dirs


def write_npz(path, labels):
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 1, 28, 28), dtype=np.uint8)
    np.savez_compressed(path, images=images, labels=np.asarray(labels, dtype=np.int64))
    return str(path)


# --- 1. the sampling flags' values: one check shared by both scripts ------------------------------------------------

BAD_VALUES = [
    ("--temperature", "nan"), ("--temperature", "inf"), ("--temperature", "-1"), ("--temperature", "0"),
    ("--cfg", "nan"), ("--cfg", "inf"), ("--cfg", "-3"),
    ("--top-k", "-1"), ("--steps", "0"), ("--batch-size", "0"), ("--batch-size", "-5"),
]


@pytest.mark.parametrize("name, value", BAD_VALUES, ids=[f"{n}={v}" for n, v in BAD_VALUES])
def test_generator_refuses_a_bad_sampling_value(dirs, name, value):
    assert_one_line_error(run_in_process("generator.py", *dirs, name, value, check=False), name, value)


EVALUATE_BAD_VALUES = [(n, v) for n, v in BAD_VALUES if n != "--top-k"] + [("--n", "3"), ("--n", "0")]  # no --top-k


@pytest.mark.parametrize("name, value", EVALUATE_BAD_VALUES, ids=[f"{n}={v}" for n, v in EVALUATE_BAD_VALUES])
def test_evaluate_refuses_a_bad_sampling_value(dirs, name, value):
    assert_one_line_error(run_in_process("evaluate.py", *dirs, "--no-reference", name, value, check=False), name, value)


@pytest.mark.parametrize("value", ["0", "-2"])
def test_generator_refuses_n_below_one(dirs, tmp_path, value):
    result = run_in_process("generator.py", *dirs, "--n", value, "--save", str(tmp_path / "s.npz"), check=False)
    assert_one_line_error(result, "--n", "at least 1")
    assert not (tmp_path / "s.npz").exists()


def test_both_scripts_use_the_one_shared_check():
    assert evaluate.check_sampling_flags is sampling.check_sampling_flags


@pytest.mark.parametrize("args", [["--temperature", "abc"], ["--n", "1.5"], ["--no-such-flag"], ["--cfg"]],
                         ids=["not a float", "not an int", "unknown", "no value"])
@pytest.mark.parametrize("script", ["generator.py", "evaluate.py"])
def test_argparse_errors_are_one_line(script, args):
    assert_one_line_error(run_in_process(script, *args, check=False), args[0], "--help")


def test_a_bad_edit_choice_is_one_line():
    assert_one_line_error(run_in_process("generator.py", "--edit", "paint", check=False), "--edit", "inpaint")


def test_evaluate_steps_on_a_prior_without_steps_is_one_line(dirs):
    result = run_in_process("evaluate.py", *dirs, "--no-reference", "--steps", "4", "--n", "8", check=False)
    assert_one_line_error(result, "--steps", "gpt")


# --- 2. flags the chosen mode would ignore --------------------------------------------------------------------------

def test_n_without_save_is_refused(dirs, tmp_path):
    result = run_in_process("generator.py", *dirs, "--n", "5", "--out", str(tmp_path), check=False)
    assert_one_line_error(result, "--n", "--save")
    assert not list(tmp_path.iterdir())  # no grids drawn


@pytest.mark.parametrize("args, named", [
    (["--edit-images", "3"], ["--edit-images", "--edit"]),
    (["--edit-samples", "2"], ["--edit-samples", "--edit"]),
    (["--edit", "complete", "--unconditional"], ["--unconditional", "--edit"]),
    (["--edit", "complete", "--batch-size", "10"], ["--batch-size", "--edit"]),
    (["--show-process", "--temperature", "0.5"], ["--temperature", "--show-process"]),
    (["--save", "SAVE", "--out", "OUT"], ["--out", "--save"]),
    (["--save", "SAVE", "--edit", "complete"], ["--save", "--edit", "separate modes"]),
    (["--edit", "complete", "--show-process"], ["--edit", "--show-process", "separate modes"]),
], ids=["edit-images", "edit-samples", "edit+unconditional", "edit+batch-size", "process+temperature", "save+out",
        "save+edit", "edit+process"])
def test_a_flag_the_mode_ignores_is_refused(dirs, tmp_path, args, named):
    paths = {"SAVE": str(tmp_path / "s.npz"), "OUT": str(tmp_path / "out")}
    result = run_in_process("generator.py", *dirs, *[paths.get(a, a) for a in args], check=False)
    assert_one_line_error(result, *named)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args", [["--temperature", "0.5"], ["--n", "8"], ["--batch-size", "4"], ["--cfg", "2"]])
def test_evaluate_refuses_drawing_flags_with_an_npz(tmp_path, args):
    path = write_npz(tmp_path / "s.npz", np.arange(8) % 10)
    result = run_in_process("evaluate.py", path, *args, "--set", f"checkpoint_dir={tmp_path / 'ck'}", check=False)
    assert_one_line_error(result, args[0], "npz")


# --- 3. outputs that cannot be written ------------------------------------------------------------------------------

@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return path


def test_out_through_a_file_is_one_line_naming_the_folder(dirs, a_file):
    result = run_in_process("generator.py", *dirs, "--temperature", "1", "--out", str(a_file / "grids"), check=False)
    assert_one_line_error(result, str(a_file), "not a folder")


def test_out_through_dev_null_is_one_line(dirs):
    assert_one_line_error(run_in_process("generator.py", *dirs, "--out", "/dev/null/x", check=False), "/dev/null")


def test_save_through_a_file_is_one_line_naming_the_folder(dirs, a_file):
    result = run_in_process("generator.py", *dirs, "--n", "4", "--save", str(a_file / "s.npz"), check=False)
    assert_one_line_error(result, str(a_file), "not a folder")


def test_save_onto_a_folder_is_one_line(dirs, tmp_path):
    result = run_in_process("generator.py", *dirs, "--n", "4", "--save", str(tmp_path), check=False)
    assert_one_line_error(result, str(tmp_path), "is a folder")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("mode", ["--out", "--save"])
def test_a_read_only_folder_is_one_line(dirs, tmp_path, mode):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        target = ["--out", str(folder)] if mode == "--out" else ["--n", "4", "--save", str(folder / "s.npz")]
        assert_one_line_error(run_in_process("generator.py", *dirs, *target, check=False), str(folder), "not writable")
    finally:
        folder.chmod(0o700)


def test_an_unwritable_folder_is_found_before_sampling(dirs, tmp_path, monkeypatch, capsys):
    """The same check as above for root, who may write anywhere: the probe file is refused as on a read-only folder."""
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    def never(*args, **kwargs):
        raise AssertionError("sampled before checking the output folder")

    monkeypatch.setattr(sampling.tempfile, "NamedTemporaryFile", refuse)
    monkeypatch.setattr(sampling, "draw_images", never)
    with pytest.raises(SystemExit) as info:
        generator.main(["--preset", "tiny", *dirs, "--device", "cpu", "--out", str(tmp_path / "grids")])
    message = str(info.value.code)
    assert message.startswith("error: cannot write") and "\n" not in message
    assert str(tmp_path / "grids") in message and "not writable" in message


def test_save_npz_writes_atomically_and_reports_write_errors(tmp_path, a_file):
    images, labels = torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.arange(4)
    sampling.save_npz(str(tmp_path / "plain_name"), images, labels)  # no .npz suffix: numpy must not add one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "plain_name"]
    with np.load(tmp_path / "plain_name") as f:
        assert f["images"].shape == (4, 1, 28, 28) and f["labels"].tolist() == [0, 1, 2, 3]
    with pytest.raises(WriteError, match="a_file"):
        sampling.save_npz(str(a_file / "s.npz"), images, labels)


# --- 4. labels of a scored npz ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [42, 10, -7, -2])
def test_evaluate_refuses_labels_outside_the_classes(tmp_path, bad):
    labels = np.arange(8) % 10
    labels[3] = bad
    path = write_npz(tmp_path / "s.npz", labels)
    result = run_in_process("evaluate.py", path, "--set", f"checkpoint_dir={tmp_path / 'ck'}", check=False)
    line = assert_one_line_error(result, path, f"found {bad}", "0..9", "-1")
    assert "labels" in line


def test_read_samples_takes_the_dataset_class_count(tmp_path):
    path = write_npz(tmp_path / "s.npz", [-1, 0, 1, 2, 3, 4])
    assert evaluate.read_samples(path, (1, 28, 28), num_classes=5)[1].tolist() == [-1, 0, 1, 2, 3, 4]
    with pytest.raises(SampleFileError, match=r"0\.\.3 \(found 4, in 1 of 6"):
        evaluate.read_samples(path, (1, 28, 28), num_classes=4)


# --- 5. config values that used to fail after work, or misbehave silently ---------------------------------------------

@pytest.mark.parametrize("override, fragment", [
    ("vqvae_train.num_show=0", "vqvae_train.num_show"),
    ("vqvae_train.num_show=-3", "vqvae_train.num_show"),
    ("vqvae_train.snapshot_steps=(0,100)", "vqvae_train.snapshot_steps"),
    ("vqvae_train.weight_decay=-0.1", "vqvae_train.weight_decay"),
    ("gpt_train.weight_decay=-1", "gpt_train.weight_decay"),
    ("gpt_train.warmup_steps=-5", "gpt_train.warmup_steps"),
    ("var_train.min_lr_ratio=1.5", "var_train.min_lr_ratio"),
    ("diffusion_train.min_lr_ratio=-0.1", "diffusion_train.min_lr_ratio"),
    ("gpt.mlp_ratio=0", "gpt.mlp_ratio"),
    ("vqvae.commitment_weight=0", "vqvae.commitment_weight"),
    ("vqvae.ssim_weight=-0.5", "vqvae.ssim_weight"),
    ("vqvae.dead_code_threshold=-1", "vqvae.dead_code_threshold"),
    ("vqvae.scale_weighting=equal", "vqvae.scale_weighting"),
    ("seed=-1", "seed"),
    ("seed=4294967296", "seed"),
    ("gpt.temperature=inf", "gpt.temperature"),
    ("var.temperature=nan", "var.temperature"),
    ("gpt.guidance=inf", "gpt.guidance"),
    ("diffusion.guidance=0", "diffusion.guidance"),
    ("sample.temperatures=(0.5,nan)", "sample.temperatures"),
])
def test_config_refuses_values_that_would_crash_or_misbehave(override, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        settings.build_config("tiny", [override])
    assert len(str(info.value).splitlines()) == 1


def test_config_accepts_the_edges():
    cfg = settings.build_config("tiny", ["vqvae_train.snapshot_steps=()", "gpt_train.warmup_steps=0",
                                       "gpt_train.min_lr_ratio=1", "gpt_train.weight_decay=0", "seed=4294967295"])
    assert cfg.vqvae_train.snapshot_steps == () and cfg.seed == 2 ** 32 - 1


def config_error_line(result, *fragments):
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("script, args, fragments", [
    ("vqvae_train.py", ["--set", "vqvae_train.num_show=0"], ["vqvae_train.num_show"]),
    ("transformer_train.py", ["--set", "gpt.num_classes=5"], ["gpt.num_classes", "data.dataset"]),
    ("generator.py", ["--seed", "-1"], ["--seed"]),
])
def test_config_errors_stop_a_script_before_any_work(tmp_path, script, args, fragments):
    result = run_in_process(script, "--set", f"checkpoint_dir={tmp_path / 'ck'}",
                            "--set", f"results_dir={tmp_path / 'res'}", *args, check=False)
    config_error_line(result, *fragments)
    assert not list(tmp_path.iterdir())  # nothing trained or written


# --- 6. valid flags still work ---------------------------------------------------------------------------------------

def test_valid_flags_still_work(dirs, tmp_path):
    """As a user runs them, the five runs side by side (each reads the checkpoints and writes its own files)."""
    npz = tmp_path / "s.npz"
    labels = np.arange(8) % 10
    labels[::2] = -1  # unconditional samples stay allowed
    mixed = write_npz(tmp_path / "mixed.npz", labels)
    _, _, _, scored, drawn = finish(
        start("generator.py", *dirs, "--temperature", "0.5", "--top-k", "5", "--cfg", "1", "--batch-size", "7",
              "--n", "9", "--balanced", "--save", str(npz)),
        start("generator.py", *dirs, "--unconditional", "--temperature", "0.75", "--batch-size", "3",
              "--out", str(tmp_path)),
        start("generator.py", *dirs, "--edit", "complete", "--edit-images", "2", "--edit-samples", "1",
              "--top-k", "0", "--no-kv-cache", "--out", str(tmp_path)),
        start("evaluate.py", *dirs, mixed, "--no-reference", "--json"),
        start("evaluate.py", *dirs, "--no-reference", "--json", "--n", "8", "--batch-size", "3",
              "--temperature", "0.5", "--cfg", "1"))
    with np.load(npz) as f:
        assert f["images"].shape == (9, 1, 28, 28) and f["labels"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert (tmp_path / "uncond_temperature_0.75.png").is_file()
    assert (tmp_path / "edit_complete.png").is_file()
    assert '"n": 8' in scored.stdout
    assert '"sampling_images_per_s"' in drawn.stdout


# --- 7. the command line prints what main prints ---------------------------------------------------------------------

def test_the_command_line_prints_what_main_prints(dirs, tmp_path):
    """The checks above call each script's main in this process; a sample of them (a bad value of each script, an
    argparse error, a config error of a training script) through the real command line gives the same exit status,
    the same stderr and the same stdout."""
    cases = [
        ("generator.py", [*dirs, "--temperature", "nan"]),
        ("evaluate.py", [*dirs, "--no-reference", "--cfg", "-3"]),
        ("generator.py", ["--no-such-flag"]),
        ("transformer_train.py", [*dirs_of(tmp_path), "--set", "gpt.num_classes=5"]),
    ]
    processes = [start(script, *args) for script, args in cases]
    in_process = [run_in_process(script, *args, check=False) for script, args in cases]
    for (script, _), real, here in zip(cases, finish(*processes, check=False), in_process):
        assert real.returncode != 0 and (real.returncode, real.stderr, real.stdout) == \
            (here.returncode, here.stderr, here.stdout), script
    assert not list(tmp_path.iterdir())
