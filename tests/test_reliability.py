"""What survives a crash, and what a hostile but fair user gets back: the training scripts killed (kill -9) mid-run and
resumed end bit for bit where an uninterrupted run ends; trained models are never replaced or lost silently; full
disks, damaged files and diverging losses end with one line and leave the last good checkpoint as it was.

Tiny presets on real MNIST (as tests/test_end_to_end.py); every output under tmp_path; one torch thread per process.
The tiny tokenizers and GPT come from conftest.py's session fixtures, copied into each test's folder; the one-line
errors that stop a script before any work are checked through its main(argv) in this process.
"""
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from pipeline import settings
from pipeline.checkpoint import load_vqvae
from pipeline.files import RunLock, remove_stale_temps
from pipeline.token_cache import load_or_build_tokens
from script_runs import ENV, REPO, assert_one_line_error, copy_run, dirs_of, finish, run, run_in_process, start

EPOCHS = 3


@pytest.fixture
def tokenizers(trained_tokenizers):
    """The folder of the trained single-scale tiny tokenizer (vqvae.pt; the session's, read only: tests copy it)."""
    return trained_tokenizers[0] / "ck"


def folder_with_tokenizers(trained_tokenizers, root, gpt=None):
    """root/ck with copies of the trained single-scale and multi-scale tiny tokenizers (and, given the pipeline, of
    its GPT trained on the first); returns root's --set flags."""
    (root / "ck").mkdir(parents=True)
    single, multi = trained_tokenizers
    shutil.copyfile(single / "ck" / "vqvae.pt", root / "ck" / "vqvae.pt")
    shutil.copyfile(multi / "ck" / "vqvae_multiscale.pt", root / "ck" / "vqvae_multiscale.pt")
    if gpt is not None:
        shutil.copyfile(gpt[0] / "ck" / "gpt.pt", root / "ck" / "gpt.pt")
    return dirs_of(root)


def kill_after_first_epoch(script, args, preset):
    """Start a run and kill -9 it the moment it reports its first epoch (whose checkpoint is saved by then): the
    kill lands while the second epoch trains. Returns the epoch its checkpoint holds when it died."""
    process = subprocess.Popen([sys.executable, script, "--preset", preset, *args], cwd=REPO,
                               env={**ENV, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:
        if line.startswith("epoch 1:"):
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"


RUNS = {  # script, its flags, the checkpoint it writes, the preset, the training section
    "vqvae": ("vqvae_train.py", [], "vqvae.pt", "tiny", "vqvae_train"),
    # (the discriminator joins at epoch 2: the kill lands while it trains, and its state must resume too)
    "gpt": ("transformer_train.py", ["--prior", "gpt"], "gpt.pt", "tiny", "gpt_train"),
    "var": ("transformer_train.py", ["--prior", "var"], "var.pt", "tiny_var", "var_train"),
    "diffusion": ("transformer_train.py", ["--prior", "diffusion"], "diffusion.pt", "tiny", "diffusion_train"),
    "diffusion_uniform": ("transformer_train.py", ["--prior", "diffusion", "--set", "diffusion.noise=uniform"],
                          "diffusion_uniform.pt", "tiny", "diffusion_train"),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_killed_and_resumed_equals_uninterrupted_bit_for_bit(trained_tokenizers, tmp_path, name):
    script, flags, checkpoint, preset, section = RUNS[name]
    flags = [*flags, "--set", f"{section}.epochs={EPOCHS}", "--set", f"{section}.sample_every=1"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole_dirs = folder_with_tokenizers(trained_tokenizers, whole)
    killed_dirs = folder_with_tokenizers(trained_tokenizers, killed)
    if checkpoint == "vqvae.pt":  # the tokenizer itself is what trains
        for root in (whole, killed):
            (root / "ck" / "vqvae.pt").unlink()
    uninterrupted = start(script, *whole_dirs, *flags, preset=preset)  # beside the killed and resumed run
    try:
        kill_after_first_epoch(script, [*killed_dirs, *flags], preset)
        died_at = torch.load(killed / "ck" / checkpoint, weights_only=True)["epoch"]
        assert 1 <= died_at < EPOCHS
        resumed = run(script, *killed_dirs, *flags, "--resume", preset=preset)
    finally:
        finish(uninterrupted)
    assert f"resuming after epoch {died_at}" in resumed.stdout

    a = torch.load(whole / "ck" / checkpoint, weights_only=True)
    b = torch.load(killed / "ck" / checkpoint, weights_only=True)
    assert a["epoch"] == b["epoch"] == EPOCHS
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a.get("discriminator", {}).get("model", {}):
        assert torch.equal(a["discriminator"]["model"][key], b["discriminator"]["model"][key]), key
    losses = [k for k in a["history"][0] if k != "seconds"]
    assert [[row[k] for k in losses] for row in a["history"]] == [[row[k] for k in losses] for row in b["history"]]
    assert not list((killed / "ck").glob("*.tmp*")), "a temp file was left behind"


def test_a_second_run_on_the_same_checkpoint_is_refused_while_the_first_holds_it(tmp_path):
    dirs = dirs_of(tmp_path)
    with RunLock(str(tmp_path / "ck" / "vqvae.pt")):  # as a run in progress holds it
        result = run("vqvae_train.py", *dirs, check=False)
    assert_one_line_error(result, "another run", "vqvae.pt", "checkpoint_dir")
    assert not (tmp_path / "ck" / "vqvae.pt").exists()


def test_a_prior_is_not_trained_on_a_tokenizer_that_is_still_training(trained_tokenizers, tmp_path):
    copy_run(trained_tokenizers[0], tmp_path)  # an epoch's snapshot on disk, its run still going
    with RunLock(str(tmp_path / "ck" / "vqvae.pt")):
        result = run_in_process("transformer_train.py", *dirs_of(tmp_path), check=False)
    assert_one_line_error(result, "vqvae.pt is still being trained", "once vqvae_train.py has finished")
    assert not (tmp_path / "ck" / "gpt.pt").exists()


def test_a_killed_run_leaves_no_stuck_lock(tmp_path):
    hold = (f"import time; from pipeline.files import RunLock; RunLock({str(tmp_path / 'ck' / 'vqvae.pt')!r}).__enter__(); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold], cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    run("vqvae_train.py", *dirs_of(tmp_path))  # the kernel dropped the dead run's lock
    assert (tmp_path / "ck" / "vqvae.pt").exists()


def dead_pid():
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_stale_temp_files_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    stale = tmp_path / f"vqvae.tmp{dead_pid()}.pt"  # what a kill -9 mid-save leaves
    live = tmp_path / f"vqvae.tmp{os.getppid()}.pt"  # a running process's file in progress
    other = tmp_path / f"gpt.tmp{dead_pid()}.pt"
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    remove_stale_temps(str(tmp_path / "vqvae.pt"))
    assert not stale.exists() and live.exists() and other.exists()


def full_disk(limit_bytes):
    """A child whose files cannot grow past limit_bytes: writes fail with EFBIG, as on a full disk."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def run_limited(script, *args, limit_bytes, preset="tiny"):
    return subprocess.run([sys.executable, script, "--preset", preset, *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300, preexec_fn=full_disk(limit_bytes))


def test_a_full_disk_while_saving_keeps_the_old_checkpoint_and_says_which_folder(trained_tokenizers, tmp_path):
    dirs = folder_with_tokenizers(trained_tokenizers, tmp_path)
    path = tmp_path / "ck" / "vqvae.pt"
    before = path.read_bytes()
    result = run_limited("vqvae_train.py", *dirs, "--resume", "--set", "vqvae_train.epochs=2", limit_bytes=8192)
    assert_one_line_error(result, "full", str(tmp_path / "ck"))
    assert path.read_bytes() == before
    assert not list((tmp_path / "ck").glob("*.tmp*"))


def test_a_full_disk_while_saving_samples_leaves_no_partial_file(trained_tokenizers, pipeline, tmp_path):
    dirs = folder_with_tokenizers(trained_tokenizers, tmp_path, gpt=pipeline)
    out = tmp_path / "out"
    out.mkdir()
    result = run_limited("generator.py", *dirs, "--n", "200", "--save", str(out / "samples.npz"), limit_bytes=4096)
    assert_one_line_error(result, "full", str(out))
    assert list(out.iterdir()) == []


def test_a_failing_png_write_does_not_cost_the_epochs_checkpoint(tmp_path):
    dirs = dirs_of(tmp_path)
    (tmp_path / "res" / "vqvae" / "recon_epoch001.png").mkdir(parents=True)  # the PNG's path cannot be written
    result = run("vqvae_train.py", *dirs, check=False)
    assert_one_line_error(result, "recon_epoch001.png")
    assert torch.load(tmp_path / "ck" / "vqvae.pt", weights_only=True)["epoch"] == 1


def test_an_unwritable_results_folder_fails_before_training(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = run_in_process("vqvae_train.py", "--set", f"checkpoint_dir={tmp_path / 'ck'}", "--set",
                            f"results_dir={tmp_path / 'file' / 'res'}", check=False)
    assert_one_line_error(result, "is a file, not a folder")
    assert "epoch 1" not in result.stdout


def test_a_diverging_loss_stops_at_once_and_keeps_the_last_good_checkpoint(trained_tokenizers, tmp_path):
    dirs = folder_with_tokenizers(trained_tokenizers, tmp_path)
    path = tmp_path / "ck" / "vqvae.pt"
    before = path.read_bytes()
    result = run("vqvae_train.py", *dirs, "--overwrite", "--set", "vqvae_train.lr=1e3", check=False)
    assert_one_line_error(result, "the loss became", "left as it was", "vqvae_train.lr")
    assert path.read_bytes() == before


def test_a_prior_with_non_finite_weights_draws_nothing(trained_tokenizers, pipeline, tmp_path):
    dirs = folder_with_tokenizers(trained_tokenizers, tmp_path, gpt=pipeline)
    path = tmp_path / "ck" / "gpt.pt"
    ckpt = torch.load(path, weights_only=True)
    first = next(iter(ckpt["model"]))
    ckpt["model"][first] = torch.full_like(ckpt["model"][first], float("nan"))
    torch.save(ckpt, path)
    result = run_in_process("generator.py", *dirs, "--out", str(tmp_path / "grids"), check=False)
    assert_one_line_error(result, "non-finite weights", "retrain")
    assert not (tmp_path / "grids").exists() or not list((tmp_path / "grids").iterdir())


BROKEN_FILES = {
    "empty": (lambda path: path.write_bytes(b""), "empty or cut short"),
    "random bytes": (lambda path: path.write_bytes(os.urandom(5000)), "not a PyTorch file"),
    "a folder": (lambda path: path.mkdir(), "is a folder"),
    "a dict without config": (lambda path: torch.save({"kind": "gpt", "model": {}}, path), "lacks config"),
    "a list": (lambda path: torch.save([1, 2, 3], path), "not a checkpoint of this repo"),
}


@pytest.mark.parametrize("broken", list(BROKEN_FILES))
def test_a_broken_prior_file_is_one_line(tmp_path, broken):
    make, expected = BROKEN_FILES[broken]
    path = tmp_path / "gpt.pt"
    make(path)
    line = assert_one_line_error(run_in_process("generator.py", "--prior", str(path), check=False), str(path), expected)
    assert len(line) < 400 and "weights_only" not in line


def token_cache(tokenizers):
    """The token cache of the tiny tokenizer (train tokens for 512 images), keyed by its fingerprint."""
    tokenizer_id = torch.load(tokenizers / "vqvae.pt", weights_only=True)["tokenizer_id"]
    return [p for p in (REPO_DATA / "tokens").glob(f"*{tokenizer_id}*")]


REPO_DATA = __import__("pathlib").Path(REPO) / "data"


def make_token_cache(tokenizers):
    """The tiny tokenizer's token cache, as transformer_train.py makes it on its first run on that tokenizer (kept
    when it is there and usable)."""
    data_cfg = settings.build_config("tiny", [f"data.root={REPO_DATA}"]).data
    vqvae, ckpt = load_vqvae(str(tokenizers / "vqvae.pt"))
    load_or_build_tokens(data_cfg, ckpt["tokenizer_id"], vqvae.encode_sequence, log=lambda line: None)


@pytest.mark.parametrize("damage", ["not a dict", "random bytes"])
def test_a_damaged_token_cache_is_encoded_again(trained_tokenizers, tokenizers, tmp_path, damage):
    dirs = folder_with_tokenizers(trained_tokenizers, tmp_path)
    make_token_cache(tokenizers)
    (cache,) = token_cache(tokenizers)
    if damage == "not a dict":
        torch.save(torch.zeros(3), cache)
    else:
        cache.write_bytes(os.urandom(1000))
    result = run("transformer_train.py", *dirs, "--overwrite")
    assert "not a usable cache" in result.stdout and "encoding again" in result.stdout
    assert "tokens: loaded from" in run("transformer_train.py", *dirs, "--overwrite").stdout  # rebuilt and usable


def test_a_folder_where_the_token_cache_belongs_is_one_line(trained_tokenizers, tokenizers, tmp_path):
    dirs = folder_with_tokenizers(trained_tokenizers, tmp_path)
    make_token_cache(tokenizers)
    (cache,) = token_cache(tokenizers)
    cache.unlink()
    cache.mkdir()
    try:
        result = run_in_process("transformer_train.py", *dirs, "--overwrite", check=False)
        line = assert_one_line_error(result, "is a folder", "remove it")
        assert "train again" not in line
    finally:
        cache.rmdir()


def test_a_prior_trained_on_another_tokenizer_path_finds_it(tokenizers, tmp_path):
    elsewhere = tmp_path / "tokenizers" / "mine.pt"
    elsewhere.parent.mkdir()
    shutil.copyfile(tokenizers / "vqvae.pt", elsewhere)
    dirs = dirs_of(tmp_path)
    run("transformer_train.py", *dirs, "--vqvae", str(elsewhere))
    assert not (tmp_path / "ck" / "vqvae.pt").exists()
    run("generator.py", *dirs, "--temperature", "1.0")  # finds mine.pt through the path the prior recorded
    assert list((tmp_path / "res" / "generator").glob("*.png"))


def test_resume_with_more_epochs_extends_a_finished_run(trained_tokenizers, pipeline, tmp_path):
    dirs = folder_with_tokenizers(trained_tokenizers, tmp_path, gpt=pipeline)  # its GPT: one epoch, finished
    result = run("transformer_train.py", *dirs, "--resume", "--set", "gpt_train.epochs=2")
    assert "extending the run from 1 to 2 epochs" in result.stdout and "epoch 2:" in result.stdout
    assert torch.load(tmp_path / "ck" / "gpt.pt", weights_only=True)["epoch"] == 2
    fewer = run_in_process("transformer_train.py", *dirs, "--resume", "--set", "gpt_train.epochs=1", check=False)
    assert_one_line_error(fewer, "already trained 2 epochs", "gpt_train.epochs=N")
