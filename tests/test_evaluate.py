"""evaluate.py: the metrics against closed forms and toy distributions, the npz checks, score(), and the CLI's errors.

Everything runs on the CPU with an untrained (seeded) Classifier or synthetic features; only the blur/noise
check and the in-process CLI runs read real MNIST (data/, fetched if missing, skipped when it cannot be had).
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import config
from pipeline import data, metrics, settings
import evaluate
from models.classifier import FEATURE_DIM, Classifier
from models.vqvae import VQVAE
from pipeline.errors import DataError, SampleFileError
from pipeline.files import atomic_save

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_ROOT = os.path.join(REPO, "data")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def mnist_test_images(n):
    try:
        return data.load_split(config.DataConfig(root=DATA_ROOT), train=False)[0][:n]
    except DataError as e:
        pytest.skip(f"MNIST unavailable: {e}")


def seeded_classifier(seed=0):
    torch.manual_seed(seed)
    return Classifier().eval()


def whitened(rng, n, d):
    """n x d samples whose sample mean is exactly 0 and sample covariance exactly I (up to rounding)."""
    z = rng.standard_normal((n, d))
    z -= z.mean(0)
    return z @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T))).T


# --- Frechet distance ---------------------------------------------------------------------------------------------

def test_frechet_distance_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 32)) @ rng.standard_normal((32, 32)) + 3.0  # correlated, off-centre
    scale = np.trace(np.cov(x.T))
    assert abs(metrics.frechet_distance(x, x)) < 1e-6 * scale
    assert abs(metrics.frechet_distance(torch.tensor(x, dtype=torch.float32), torch.tensor(x))) < 1e-5 * scale


def test_frechet_distance_of_a_pure_mean_shift_is_the_squared_shift():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((400, 16)) @ rng.standard_normal((16, 16))  # any covariance; b has the same one
    shift = rng.standard_normal(16)
    assert metrics.frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-8, abs=1e-8)


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(2)
    d = 8
    mu_a, mu_b = rng.standard_normal(d), rng.standard_normal(d)
    var_a, var_b = rng.uniform(0.1, 4.0, d), rng.uniform(0.1, 4.0, d)
    a = mu_a + whitened(rng, 300, d) * np.sqrt(var_a)  # sample mean mu_a, sample covariance diag(var_a) exactly
    b = mu_b + whitened(rng, 200, d) * np.sqrt(var_b)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert metrics.frechet_distance(b, a) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_matches_a_reference_for_non_commuting_covariances():
    rng = np.random.default_rng(3)
    d = 6
    a = rng.standard_normal((300, d)) @ rng.standard_normal((d, d)) + 1.0
    b = rng.standard_normal((250, d)) @ rng.standard_normal((d, d))
    cov_a, cov_b = np.cov(a.T), np.cov(b.T)
    # Tr (S_a S_b)^1/2 = sum of the square roots of the (real, non-negative) eigenvalues of S_a S_b
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvals(cov_a @ cov_b).real, 0, None)).sum()
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)
    assert metrics.frechet_distance(b, a) == pytest.approx(expected, rel=1e-7)


def test_frechet_distance_grows_with_added_noise():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2000, 16))
    noise = rng.standard_normal(x.shape)
    fids = [metrics.frechet_distance(x, x + s * noise) for s in (0.0, 0.05, 0.1, 0.3, 1.0, 3.0)]
    assert abs(fids[0]) < 1e-9
    assert all(lo < hi for lo, hi in zip(fids, fids[1:])), fids
    # independent noise of std s on unit Gaussians: the Gaussian fit of b is ~N(0, (1 + s^2) I)
    assert fids[-2] == pytest.approx(16 * (math.sqrt(2) - 1) ** 2, rel=0.15)


def test_classifier_fid_ranks_blurred_and_noised_digits_behind_a_clean_split():
    """Untrained but seeded Classifier: a blur or heavy noise moves the features more than resampling does.

    Checked over seeds 0-3 with 600 digits: blur/halves >= 6.6, noise/halves >= 3.2; asserted at 3x and 2x.
    """
    images = mnist_test_images(600)
    classifier = seeded_classifier(0)
    x = data.to_model_range(images)
    blurred = data.to_uint8(F.avg_pool2d(x, 3, stride=1, padding=1))[:, 0]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    noised = data.to_uint8(x + 0.6 * noise)[:, 0]
    feats = {name: metrics.classify(classifier, imgs, torch.device("cpu"))[1]
             for name, imgs in (("clean", images), ("blurred", blurred), ("noised", noised))}
    assert feats["clean"].shape == (600, FEATURE_DIM)
    h = 300  # first half of the clean digits against the second half of each set: same sample sizes everywhere
    halves = metrics.frechet_distance(feats["clean"][:h], feats["clean"][h:])
    blur = metrics.frechet_distance(feats["clean"][:h], feats["blurred"][h:])
    noisy = metrics.frechet_distance(feats["clean"][:h], feats["noised"][h:])
    assert halves > 0
    assert blur > 3 * halves, (halves, blur)
    assert noisy > 2 * halves, (halves, noisy)


# --- KID ----------------------------------------------------------------------------------------------------------

def test_kid_is_near_zero_for_one_distribution_and_positive_for_shifted_ones():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2000, 8)), rng.standard_normal((2000, 8))
    same = metrics.kernel_inception_distance(a, b, subsets=5, subset_size=1000)
    shifted = metrics.kernel_inception_distance(a, b + 0.5, subsets=5, subset_size=1000)
    wider = metrics.kernel_inception_distance(a, 1.5 * b, subsets=5, subset_size=1000)
    assert abs(same) < 0.02, same  # unbiased: may be slightly negative
    assert shifted > 0.5 and wider > 0.2, (shifted, wider)
    assert metrics.kernel_inception_distance(a, b + 1.0, subsets=5, subset_size=1000) > shifted


def test_kid_matches_a_direct_unbiased_mmd_when_the_subset_is_the_whole_set():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((30, 5)), rng.standard_normal((30, 5)) + 0.3
    m, d = 30, 5

    def k(u, v):
        return (u @ v / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    # with subset_size >= both sets every subset is a permutation of the whole set, and MMD ignores order
    assert metrics.kernel_inception_distance(x, y, subsets=3, subset_size=1000) == pytest.approx(
        xx + yy - 2 * xy, rel=1e-9)


# --- precision / recall -------------------------------------------------------------------------------------------

def test_precision_recall_of_two_samples_of_one_distribution_are_high():
    rng = np.random.default_rng(7)
    precision, recall = metrics.precision_recall(rng.standard_normal((1000, 2)), rng.standard_normal((1000, 2)), k=3)
    assert precision > 0.8 and recall > 0.8, (precision, recall)


def test_precision_recall_of_a_narrow_fake_is_high_precision_low_recall():
    rng = np.random.default_rng(8)
    real, fake = rng.standard_normal((1000, 2)), 0.1 * rng.standard_normal((1000, 2))
    precision, recall = metrics.precision_recall(real, fake, k=3)
    assert precision > 0.95 and recall < 0.2, (precision, recall)
    # swapped roles: the narrow set as "real" is covered, but most of the wide one lies outside it
    precision, recall = metrics.precision_recall(fake, real, k=3)
    assert precision < 0.2 and recall > 0.95, (precision, recall)


def test_precision_recall_of_a_far_away_fake_are_zero():
    rng = np.random.default_rng(9)
    real, fake = rng.standard_normal((1000, 2)), rng.standard_normal((1000, 2)) + 50.0
    assert metrics.precision_recall(real, fake, k=3) == (0.0, 0.0)


def test_precision_recall_by_hand_with_k1():
    real = [[0.0], [1.0], [2.0], [3.0], [10.0]]  # 1-NN radii 1, 1, 1, 1, 7
    fake = [[0.5], [5.5], [20.0]]  # 1-NN radii 5, 5, 14.5
    # 0.5 is within 1 of 0; 5.5 is within 7 of the outlier 10; 20 is 10 away from 10 (> 7): precision 2/3.
    # every real point is within 5 of 0.5 or of 5.5: recall 1.
    precision, recall = metrics.precision_recall(real, fake, k=1)
    assert precision == pytest.approx(2 / 3) and recall == 1.0


def test_knn_chunking_does_not_change_the_result():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(53, 3, generator=g), torch.randn(41, 3, generator=g) * 0.7
    radii = metrics._knn_radii(real, 3)
    assert torch.equal(metrics._knn_radii(real, 3, chunk=7), radii)
    # brute force: sorted distances, column 0 is the point itself
    assert torch.allclose(radii, torch.cdist(real, real).sort(1).values[:, 3])
    assert metrics._inside_manifold(fake, real, radii, chunk=5) == metrics._inside_manifold(fake, real, radii)


# --- read_samples -------------------------------------------------------------------------------------------------

def valid_arrays(n=12):
    rng = np.random.default_rng(10)
    return {"images": rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8), "labels": np.arange(n, dtype=np.int64) % 10}


def test_read_samples_accepts_a_generator_file(tmp_path):
    arrays = valid_arrays()
    path = tmp_path / "ok.npz"
    np.savez_compressed(path, **arrays)
    images, labels = evaluate.read_samples(str(path))
    assert images.dtype == torch.uint8 and images.shape == (12, 1, 28, 28)
    assert labels.dtype == torch.int64 and labels.shape == (12,)
    assert np.array_equal(images.numpy(), arrays["images"]) and np.array_equal(labels.numpy(), arrays["labels"])


def write_garbage(path):
    path.write_bytes(b"this is not an npz file\x00\x01\x02" * 10)


MALFORMED = {
    "missing": (None, "no sample file"),
    "garbage": (write_garbage, "not a readable npz"),
    "no images": ({"labels": valid_arrays()["labels"]}, "lacks the array(s) images"),
    "float images": ({**valid_arrays(), "images": valid_arrays()["images"].astype(np.float32)}, "uint8"),
    "N x 2 x 28 x 28 images": ({**valid_arrays(), "images": np.zeros((12, 2, 28, 28), np.uint8)}, "N x 1 x 28 x 28"),
    "float labels": ({**valid_arrays(), "labels": valid_arrays()["labels"].astype(np.float32)}, "integers"),
    "short labels": ({**valid_arrays(), "labels": valid_arrays()["labels"][:-1]}, "(12,)"),
    "2-d labels": ({**valid_arrays(), "labels": valid_arrays()["labels"][:, None]}, "(12,)"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_read_samples_rejects_malformed_files_with_one_line(tmp_path, case):
    content, expected = MALFORMED[case]
    path = tmp_path / "samples.npz"
    if callable(content):
        content(path)
    elif content is not None:
        np.savez(path, **content)
    with pytest.raises(SampleFileError) as info:
        evaluate.read_samples(str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    assert expected in message, message
    if case == "missing":
        assert "generator.py" in message  # says how to make one


def test_read_samples_rejects_too_few_samples_to_score(tmp_path):
    path = tmp_path / "three.npz"
    np.savez(path, **valid_arrays(3))
    with pytest.raises(SampleFileError):
        evaluate.read_samples(str(path))


# --- score --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scored_setup():
    g = torch.Generator().manual_seed(1)
    classifier = seeded_classifier(1)
    images = torch.randint(0, 256, (40, 28, 28), dtype=torch.uint8, generator=g)
    reference = metrics.classify(classifier, torch.randint(0, 256, (60, 28, 28), dtype=torch.uint8, generator=g),
                                  torch.device("cpu"))[1]
    probs, _ = metrics.classify(classifier, images, torch.device("cpu"))
    return classifier, images, reference, probs.argmax(1)


def test_score_returns_every_figure_in_range(scored_setup):
    classifier, images, reference, predicted = scored_setup
    out = metrics.score(classifier, images, predicted.clone(), reference, torch.device("cpu"))
    assert set(out) == {"n", "fid", "kid_x1000", "precision", "recall", "accuracy", "confidence",
                        "class_entropy_bits", "class_histogram"}
    assert out["n"] == 40 and isinstance(out["n"], int)
    assert math.isfinite(out["fid"]) and out["fid"] >= 0 and math.isfinite(out["kid_x1000"])
    for key in ("precision", "recall", "accuracy"):
        assert 0.0 <= out[key] <= 1.0, (key, out[key])
    assert out["accuracy"] == 1.0  # the labels are the classifier's own predictions
    assert 0.1 - 1e-6 <= out["confidence"] <= 1.0
    assert 0.0 <= out["class_entropy_bits"] <= math.log2(10) + 1e-9
    hist = out["class_histogram"]
    assert len(hist) == 10 and sum(hist) == pytest.approx(1.0, abs=1e-3)
    expected = torch.bincount(predicted, minlength=10).float() / 40
    assert hist == pytest.approx(expected.tolist(), abs=1e-4)
    entropy = -sum(p * math.log2(p) for p in expected.tolist() if p > 0)
    assert out["class_entropy_bits"] == pytest.approx(entropy, abs=1e-5)
    json.dumps(out)  # --json must be able to print it


def test_score_accuracy_counts_only_labelled_samples(scored_setup):
    classifier, images, reference, predicted = scored_setup
    cpu = torch.device("cpu")
    wrong = (predicted + 1) % 10
    odd = torch.arange(40) % 2 == 1
    half_wrong = torch.where(odd, wrong, predicted)
    assert metrics.score(classifier, images, half_wrong, reference, cpu)["accuracy"] == pytest.approx(0.5)
    unlabelled_wrong = torch.where(odd, torch.full_like(predicted, -1), predicted)  # the wrong half unlabelled
    assert metrics.score(classifier, images, unlabelled_wrong, reference, cpu)["accuracy"] == 1.0
    unlabelled_right = torch.where(odd, wrong, torch.full_like(predicted, -1))  # the right half unlabelled
    assert metrics.score(classifier, images, unlabelled_right, reference, cpu)["accuracy"] == 0.0
    assert metrics.score(classifier, images, torch.full((40,), -1), reference, cpu)["accuracy"] is None


def test_score_feeds_the_samples_as_fake_and_the_reference_as_real(monkeypatch):
    """With classify() replaced by fixed features: a narrow sample set has high precision, low recall."""
    rng = np.random.default_rng(11)
    reference = torch.tensor(rng.standard_normal((800, 2)), dtype=torch.float32)
    narrow = torch.tensor(0.1 * rng.standard_normal((400, 2)), dtype=torch.float32)
    probs = torch.full((400, 10), 0.1)
    monkeypatch.setattr(metrics, "classify", lambda model, images, device: (probs, narrow))
    out = metrics.score(None, torch.zeros(400, 28, 28, dtype=torch.uint8), torch.full((400,), -1), reference,
                         torch.device("cpu"))
    assert out["precision"] > 0.95 and out["recall"] < 0.2, out
    assert out["fid"] == pytest.approx(metrics.frechet_distance(narrow, reference))
    scale = reference.pow(2).mean().sqrt()
    assert out["kid_x1000"] == pytest.approx(1000 * metrics.kernel_inception_distance(narrow / scale,
                                                                                         reference / scale))
    assert out["accuracy"] is None and out["confidence"] == pytest.approx(0.1)


@pytest.mark.parametrize("classes, bits", [(1, 0.0), (2, 1.0), (4, 2.0), (10, math.log2(10))])
def test_score_class_entropy_is_in_bits(monkeypatch, classes, bits):
    n = 40
    predicted = torch.arange(n) % classes  # an even spread over `classes` digits
    probs = F.one_hot(predicted, 10).float() * 0.5 + 0.05  # rows sum to 1, argmax = predicted, max 0.55
    feats = torch.randn(n, 3, generator=torch.Generator().manual_seed(classes))
    monkeypatch.setattr(metrics, "classify", lambda model, images, device: (probs, feats))
    out = metrics.score(None, torch.zeros(n, 28, 28, dtype=torch.uint8), predicted, feats, torch.device("cpu"))
    assert out["class_entropy_bits"] == pytest.approx(bits, abs=1e-6)
    assert out["class_histogram"] == pytest.approx([1 / classes] * classes + [0.0] * (10 - classes), abs=1e-4)
    assert out["confidence"] == pytest.approx(0.55) and out["accuracy"] == 1.0


def test_print_table_shows_a_dash_for_missing_accuracy(scored_setup, capsys):
    classifier, images, reference, predicted = scored_setup
    row = metrics.score(classifier, images, torch.full((40,), -1), reference, torch.device("cpu"))
    evaluate.print_table({"unconditional": row})
    header, line = capsys.readouterr().out.strip().splitlines()
    assert header.split()[:3] == ["set", "n", "fid"]
    assert line.split()[0] == "unconditional" and line.split()[1] == "40" and line.split()[6] == "-"


# --- the CLI ------------------------------------------------------------------------------------------------------

def test_cli_without_a_classifier_fails_with_one_line(tmp_path):
    """A dataset with no shipped weights (CIFAR-10) and none built yet; MNIST would use evaluator/mnist.pt."""
    np.savez(tmp_path / "samples.npz", images=np.zeros((8, 3, 32, 32), np.uint8), labels=np.arange(8, dtype=np.int64))
    result = subprocess.run([sys.executable, "evaluate.py", str(tmp_path / "samples.npz"), "--preset", "tiny",
                             "--device", "cpu", "--set", f"checkpoint_dir={tmp_path / 'ck'}",
                             "--set", "data.dataset=cifar10"],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "classifier" in lines[0] and "--train-classifier" in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ck").exists()  # nothing trained or written


@pytest.fixture
def fake_checkpoints(tmp_path):
    """An untrained classifier and tiny VQ-VAE saved where evaluate.py looks for them."""
    cfg = settings.build_config(preset="tiny")
    ck = tmp_path / "ck"
    atomic_save({"kind": "classifier", "model": seeded_classifier(2).state_dict()}, str(ck / "classifier.pt"))
    torch.manual_seed(0)
    atomic_save({"kind": "vqvae", "config": settings.to_dict(cfg.vqvae), "model": VQVAE(cfg.vqvae).state_dict(),
                 "tokenizer_id": "untrained"}, str(ck / "vqvae.pt"))
    return ["--preset", "tiny", "--device", "cpu", "--set", f"checkpoint_dir={ck}", "--set", "run=",
            "--set", f"data.root={DATA_ROOT}"]


def test_main_with_a_missing_sample_file_exits_with_its_message(tmp_path, fake_checkpoints):
    mnist_test_images(1)
    with pytest.raises(SystemExit) as info:
        evaluate.main([str(tmp_path / "nope.npz"), *fake_checkpoints])
    assert str(info.value.code).startswith("error: no sample file") and "\n" not in str(info.value.code)


def test_main_scores_an_npz_with_reference_rows_as_json(tmp_path, fake_checkpoints, capsys):
    mnist_test_images(1)
    path = tmp_path / "samples.npz"
    arrays = valid_arrays(24)
    arrays["labels"][::2] = -1  # half unconditional
    np.savez_compressed(path, **arrays)
    evaluate.main([str(path), "--json", *fake_checkpoints])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["device"] == "cpu"
    assert list(report["rows"]) == ["real train (floor)", "VQ-VAE recon of test (ceiling)", "samples.npz"]
    for name, row in report["rows"].items():
        assert row["n"] == 24, name
        assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1 and row["fid"] >= 0, (name, row)
        assert row["accuracy"] is not None and 0 <= row["accuracy"] <= 1, (name, row)


def test_test_likelihood_matches_the_training_scripts_validation_loss():
    import math
    from models.gpt import GPT
    from models.vqvae import VQVAE
    from transformer_train import validation_loss
    torch.manual_seed(0)
    cfg = settings.build_config(preset="tiny")
    vqvae = VQVAE(cfg.vqvae).eval()
    prior = GPT(cfg.gpt, vqvae.grid_shape, cfg.vqvae.codebook_size).eval()
    images = torch.randint(0, 256, (24, 28, 28), dtype=torch.uint8)
    labels = torch.arange(24) % 10
    tokens = vqvae.encode_sequence(data.to_model_range(images))
    expected = validation_loss(prior, tokens, labels, torch.device("cpu"), None) / math.log(2)
    got = metrics.test_likelihood(prior, vqvae, images, labels, torch.device("cpu"), batch_size=10)
    assert got["bits_per_token"] == pytest.approx(expected, rel=1e-5)
    assert got["bits_per_image"] == pytest.approx(expected * prior.L, rel=1e-5)
    assert 0 < got["bits_per_token"] < 2 * math.log2(cfg.vqvae.codebook_size)


def test_a_classifier_no_better_than_chance_is_said_so():
    """Saved all the same (a user may still want its features), but never silently."""
    labels = torch.tensor([0] * 60 + [1] * 20 + [2] * 20)
    assert "no better than always answering the most common class (60.0%)" in metrics.chance_note(0.61, labels, False)
    assert metrics.chance_note(0.90, labels, False) == ""
    assert "quarter turn (25.0%)" in metrics.chance_note(0.27, labels, True)
    assert metrics.chance_note(0.60, labels, True) == ""
