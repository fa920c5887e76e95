"""How good a set of images is: FID, KID and precision/recall in the feature space of the repo's own classifier,
the share read as the requested class, and the classifier itself (shipped weights checked by SHA-256, or trained
here). evaluate.py reports these; benchmark.py puts them into RESULTS.md.

Metrics, all in the classifier's 128-d penultimate feature space, against the dataset's test set:
  FID   Frechet distance between Gaussian fits (Heusel et al. 2017), the classifier standing in for Inception
  KID   unbiased squared MMD with the cubic polynomial kernel (Binkowski et al. 2018), x1000, on features divided
        by the test set's RMS feature value
  precision / recall   k-NN manifold estimates, k=3 (Kynkaanniemi et al. 2019)
  accuracy   share of samples the classifier reads as the class they were conditioned on
  confidence, class entropy   mean max-softmax, and entropy (bits) of the predicted-class histogram
  likelihood   the prior's test-set negative log-likelihood, bits per token and bits per image (priors with an
               exact likelihood)
"""
import hashlib
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import config
from models.classifier import ROTATIONS, Classifier
from pipeline import data, datasets, devices
from pipeline.checkpoint import check_dataset, default_path, load_checkpoint
from pipeline.errors import CheckpointError
from pipeline.files import atomic_save


# --- the metrics (pure functions on feature arrays) --------------------------------------------------------------

def frechet_distance(feats_a, feats_b):
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), computed in float64 through symmetric eigenproblems."""
    a, b = torch.as_tensor(feats_a, dtype=torch.float64), torch.as_tensor(feats_b, dtype=torch.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    w, V = torch.linalg.eigh(cov_a)
    sqrt_a = V @ torch.diag(w.clamp_min(0).sqrt()) @ V.T
    # Tr (S_a S_b)^1/2 = Tr (S_a^1/2 S_b S_a^1/2)^1/2, and the latter matrix is symmetric PSD
    tr_sqrt = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * tr_sqrt)


def kernel_inception_distance(feats_a, feats_b, subsets=10, subset_size=1000, seed=0):
    """Mean over random subsets of the unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3."""
    a, b = torch.as_tensor(feats_a, dtype=torch.float64), torch.as_tensor(feats_b, dtype=torch.float64)
    d, m = a.shape[1], min(subset_size, len(a), len(b))
    rng = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=rng)[:m]]
        y = b[torch.randperm(len(b), generator=rng)[:m]]
        k_xx, k_yy, k_xy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        mmd = ((k_xx.sum() - k_xx.diag().sum()) / (m * (m - 1)) + (k_yy.sum() - k_yy.diag().sum()) / (m * (m - 1))
               - 2 * k_xy.mean())
        values.append(float(mmd))
    return float(np.mean(values))


def _knn_radii(feats, k, chunk=2000):
    """Distance from every point to its k-th nearest neighbour within the same set (itself excluded)."""
    radii = []
    for i in range(0, len(feats), chunk):
        dist = torch.cdist(feats[i:i + chunk], feats)
        radii.append(dist.kthvalue(k + 1, dim=1).values)  # k+1: the point itself is at distance 0
    return torch.cat(radii)


def _inside_manifold(queries, support, radii, chunk=2000):
    """Share of queries that fall within the k-NN ball of at least one support point."""
    inside = 0
    for i in range(0, len(queries), chunk):
        dist = torch.cdist(queries[i:i + chunk], support)
        inside += (dist <= radii[None]).any(1).sum().item()
    return inside / len(queries)


def precision_recall(real, fake, k=3):
    """Improved precision (fake inside the real manifold) and recall (real inside the fake manifold). A set too small
    for k neighbours (a folder with a handful of validation images) uses as many as it has."""
    real, fake = torch.as_tensor(real, dtype=torch.float32), torch.as_tensor(fake, dtype=torch.float32)
    k = min(k, len(real) - 1, len(fake) - 1)
    if k < 1:
        return float("nan"), float("nan")
    precision = _inside_manifold(fake, real, _knn_radii(real, k))
    recall = _inside_manifold(real, fake, _knn_radii(fake, k))
    return precision, recall


# --- the classifier -----------------------------------------------------------------------------------------------

# training images the classifier sees: MNIST's 4 epochs, more epochs for smaller datasets, at most MAX_EPOCHS
CLASSIFIER_IMAGE_PASSES, CLASSIFIER_MAX_EPOCHS = 240_000, 40


def classifier_batch(images_uint8, labels, rotations, size, rng):
    """A training batch in [-1, 1], shifted by up to 2 pixels; with rotations, each image turned by a random quarter
    turn that becomes its label (the task of a dataset with one class: it has no labels to learn features from)."""
    x = data.to_model_range(images_uint8)
    shift = torch.randint(-2, 3, (2,), generator=rng).tolist()
    x = torch.roll(F.pad(x, (2, 2, 2, 2), value=-1.0), shifts=shift, dims=(2, 3))[..., 2:2 + size, 2:2 + size]
    if rotations:
        labels = torch.randint(0, ROTATIONS, (len(x),), generator=rng)
        x = torch.stack([torch.rot90(image, int(k), dims=(1, 2)) for image, k in zip(x, labels)])
    return x, labels


def classifier_accuracy(model, images_uint8, labels, rotations, device):
    """Test accuracy: of the class, or with rotations of each test image's quarter turn (all four, each image)."""
    if not rotations:
        return classify(model, images_uint8, device)[0].argmax(1).eq(labels).float().mean().item()
    turned = [torch.rot90(images_uint8, k, dims=(2, 3)) for k in range(ROTATIONS)]
    hits = [classify(model, images, device)[0].argmax(1).eq(k).float() for k, images in enumerate(turned)]
    return torch.cat(hits).mean().item()


def chance_note(accuracy, labels, rotations):
    """'' for a classifier that learned something; else a warning line: its accuracy is within two standard errors
    of always answering the most common class (or quarter turn), so figures scored with it would mean little."""
    n = len(labels) * (ROTATIONS if rotations else 1)
    chance = 1 / ROTATIONS if rotations else torch.bincount(labels).max().item() / len(labels)
    if accuracy > chance + 2 * math.sqrt(chance * (1 - chance) / n):
        return ""
    return (f"warning: the classifier reads {accuracy:.1%} of {n} validation items right, no better than always "
            f"answering the most common {'quarter turn' if rotations else 'class'} ({chance:.1%}): FID and accuracy "
            f"scored with it would mean little; it needs more images, or classes that differ more")


def train_classifier(cfg, path, batch_size=128):
    """Train the feature network once on the dataset's training split (random +-2 px shifts; a dataset of one class
    learns to tell quarter turns apart instead, Gidaris et al. 2018), report test accuracy, save atomically."""
    devices.seed_everything(cfg.seed)
    device = devices.pick_device(cfg.device)
    train_images, train_labels = data.load_split(cfg.data, train=True)
    test_images, test_labels = data.load_split(cfg.data, train=False)
    spec = datasets.spec_of(cfg.data)
    rotations = spec.num_classes == 1
    epochs = min(CLASSIFIER_MAX_EPOCHS, max(4, math.ceil(CLASSIFIER_IMAGE_PASSES / len(train_images))))
    model = Classifier.for_dataset(spec).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    total = epochs * math.ceil(len(train_images) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=total)
    for epoch in range(1, epochs + 1):
        model.train()
        rng = torch.Generator().manual_seed(cfg.seed + epoch)
        for batch in tqdm(data.batch_indices(len(train_images), batch_size, rng), desc=f"classifier epoch {epoch}",
                          leave=False):
            x, y = classifier_batch(train_images[batch], train_labels[batch], rotations, spec.image_size, rng)
            loss = F.cross_entropy(model(x.to(device))[0], y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        accuracy = classifier_accuracy(model, test_images, test_labels, rotations, device)
        print(f"classifier epoch {epoch}: test accuracy {accuracy:.4f}{' (quarter turns)' * rotations}")
    atomic_save({"kind": "classifier", "dataset": spec.key, "task": "rotations" if rotations else "classes",
                 "model": {k: v.cpu() for k, v in model.state_dict().items()}, "test_accuracy": accuracy}, path)
    print(f"classifier: {path} (test accuracy {accuracy:.2%})")
    note = chance_note(accuracy, test_labels, rotations)
    if note:
        print(note, file=sys.stderr)
    return model.eval()


# The evaluator's weights ship with the repo for the datasets below, with their SHA-256: every machine then scores
# with the same feature network, as every paper's FID uses the same Inception weights, and figures compare across
# machines. `--train-classifier` rebuilds one in the checkpoint folder (RESULTS.md says how close a rebuild comes).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder above pipeline/
EVALUATOR_DIR = os.path.join(REPO, "evaluator")
SHIPPED_SHA256 = {
    "mnist": "7e3abb5339fb6878f5845b8da4d8fc8f9c41940c31ea540ce92750c4c2667093",
    "fashion_mnist": "6f7d415a6291016c8c900ce1e5f52c244ce85fc5a7564c176b8dec97058d4110",
    "emoji": "44557638b059c072fc680332662e70ca3e94c747f9e4a8ef0c3b9191e5d840d1",
}


def shipped_path(dataset):
    return os.path.join(EVALUATOR_DIR, f"{dataset}.pt") if dataset in SHIPPED_SHA256 else None


def classifier_path(cfg, chosen=None):
    """--classifier PATH; else the dataset's shipped weights; else the one --train-classifier builds in the
    checkpoint folder."""
    return chosen or shipped_path(cfg.data.dataset) or default_path(cfg, "classifier")


def verify_shipped(path, dataset):
    """The shipped weights must be the recorded ones: a changed file would move every figure without a word."""
    shipped = shipped_path(dataset)
    if shipped is None or os.path.abspath(path) != shipped or not os.path.isfile(path):
        return
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != SHIPPED_SHA256[dataset]:
        raise CheckpointError(f"{path} does not match its recorded SHA-256 ({digest[:12]}... instead of "
                              f"{SHIPPED_SHA256[dataset][:12]}...); restore it with: git checkout -- {path}")


def load_classifier(path, device, spec=config.DataConfig.dataset):
    """The evaluator's classifier of a dataset (its Dataset, or the name of a built-in one), refusing one of another
    dataset (or of a folder of images as it was before it changed) and shipped weights that changed."""
    spec = datasets.entry(spec) if isinstance(spec, str) else spec
    preset = "" if spec.name == config.DataConfig.dataset else f" --set data.dataset={spec.name}"
    verify_shipped(path, spec.name)
    ckpt = load_checkpoint(path, "classifier", hint=f"; build it with: python evaluate.py --train-classifier{preset}")
    check_dataset(ckpt, path, spec.key)
    model = Classifier.for_dataset(spec)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


@torch.no_grad()
def classify(model, images_uint8, device, batch_size=1000):
    """(softmax probabilities N x classes, features N x 128) for uint8 images N x C x H x W."""
    model.eval()
    probs, feats = [], []
    for i in range(0, len(images_uint8), batch_size):
        logits, f = model(data.to_model_range(images_uint8[i:i + batch_size]).to(device))
        probs.append(logits.softmax(1).cpu())
        feats.append(f.cpu())
    return torch.cat(probs), torch.cat(feats)


def score(classifier, images_uint8, labels, reference_feats, device):
    """All metrics of one image set against the reference (test-set) features."""
    probs, feats = classify(classifier, images_uint8, device)
    predicted = probs.argmax(1)
    hist = torch.bincount(predicted, minlength=probs.shape[1]).float() / len(predicted)
    conditioned = labels >= 0
    precision, recall = precision_recall(reference_feats, feats)
    # The cubic kernel assumes features of order one (as Inception's are); ours are unbounded ReLU activations, so
    # both sets are divided by one fixed number, the reference set's RMS feature value.
    scale = reference_feats.pow(2).mean().sqrt()
    return {
        "n": len(images_uint8),
        "fid": frechet_distance(feats, reference_feats),
        "kid_x1000": 1000 * kernel_inception_distance(feats / scale, reference_feats / scale),
        "precision": precision, "recall": recall,
        "accuracy": predicted[conditioned].eq(labels[conditioned]).float().mean().item() if conditioned.any() else None,
        "confidence": probs.max(1).values.mean().item(),
        "class_entropy_bits": float(-(hist * hist.clamp_min(1e-12).log2()).sum()) + 0.0,  # + 0.0: no "-0.0"
        "class_histogram": [round(h, 4) for h in hist.tolist()],
    }


@torch.no_grad()
def reconstructions(vqvae, images_uint8, device, batch_size=1000):
    out = [data.to_uint8(vqvae.decode(vqvae.encode(data.to_model_range(images_uint8[i:i + batch_size]).to(device)))
                         ).cpu() for i in range(0, len(images_uint8), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def test_likelihood(prior, vqvae, images_uint8, labels, device, batch_size=1000):
    """The prior's negative log-likelihood of the test set's tokens given their class: bits per token and per image.
    Only for priors with an exact likelihood (GPT, VAR): their forward gives teacher-forced logits_BLV."""
    nats, count = 0.0, 0
    for i in range(0, len(images_uint8), batch_size):
        tokens = vqvae.encode_sequence(data.to_model_range(images_uint8[i:i + batch_size]).to(device))
        logits = prior(tokens, labels[i:i + batch_size].to(device))
        nats += F.cross_entropy(logits.float().reshape(-1, prior.V), tokens.reshape(-1), reduction="sum").item()
        count += tokens.numel()
    bits_per_token = nats / count / math.log(2)
    return {"bits_per_token": bits_per_token, "bits_per_image": bits_per_token * prior.L}
