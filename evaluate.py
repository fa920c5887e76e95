"""Quality figures for generated images, computed with the repo's own classifier of the dataset.

    python evaluate.py samples.npz                        # score an npz from generator.py --save
    python evaluate.py my_images.npy                      # ... any uint8 array (no labels: no accuracy row)
    python evaluate.py my_pngs/                           # ... a folder of PNG files
    python evaluate.py --n 10000 --temperature 1.0        # draw from checkpoints/gpt.pt + vqvae.pt, then score
    python evaluate.py --prior var                        # ... from checkpoints/var.pt + vqvae_multiscale.pt
    python evaluate.py samples.npz --prior var            # score a file; reference rows from VAR's tokenizer
    python evaluate.py samples.npz --json                 # one JSON line instead of the table
    python evaluate.py --reconstructions                  # the tokenizer alone: FID, accuracy, PSNR, SSIM, code use
    python evaluate.py --reconstructions --save recon.npz # ... and its reconstructions as generator.py's npz
    python evaluate.py --train-classifier                 # rebuild the classifier: checkpoints/classifier.pt
    python evaluate.py samples.npz --classifier checkpoints/classifier.pt   # score with the rebuilt one

The classifier's weights ship with the repo (evaluator/mnist.pt, evaluator/fashion_mnist.pt; their SHA-256 is
checked before use), so figures compare across machines; other datasets use the one --train-classifier builds.

The metrics (FID, KID, precision/recall, class accuracy, confidence, class entropy, test likelihood) are
described where they are computed, in metrics.py.
Reference rows give the numbers meaning: real training images (the floor) and VQ-VAE reconstructions of the test
set (the best any prior on this tokenizer can do).
"""
import json
import os
import sys
import time

import torch

import config
from pipeline import cli, data, datasets, devices, metrics, sampling, settings, tokenizer_metrics
from pipeline.checkpoint import check_dataset, default_path, load_pair, load_vqvae, prior_path, tokenizer_path

from pipeline.errors import FlagError
from pipeline.image_files import MIN_SAMPLES, read_images
from pipeline.sampling import check_sampling_flags, flag


DRAW_N = 10_000  # default of --n
DRAWING_FLAGS = ("n", "temperature", "steps", "cfg", "batch_size", "balanced")  # read only when evaluate.py draws the samples


# --- reports ------------------------------------------------------------------------------------------------------

def read_samples(path, image_shape=None, num_classes=None):
    """images (uint8 N x C x H x W) and labels (int64 N: a class id, or -1 when unconditional or not given) from an
    npz, a .npy or a folder of PNGs (image_files.py), checked. Shape and classes default to the default dataset's."""
    spec = datasets.entry(config.DataConfig.dataset)
    return read_images(path, tuple(spec.image_shape if image_shape is None else image_shape),
                       spec.num_classes if num_classes is None else num_classes)


def print_table(rows):
    columns = ("n", "fid", "kid_x1000", "precision", "recall", "accuracy", "confidence", "class_entropy_bits")
    print(f"{'set':<34}" + "".join(f"{c:>12}" for c in columns))
    for name, row in rows.items():
        cells = "".join(f"{row[c]:>12}" if isinstance(row[c], int) else
                        (f"{row[c]:>12.4f}" if row[c] is not None else f"{'-':>12}") for c in columns)
        print(f"{name:<34}{cells}")


def command_line():
    """The script's flags (README's and docs' commands are parsed with it in the tests)."""
    parser = cli.make_parser("Score generated images with the repo's classifier of the dataset.")
    parser.add_argument("samples", nargs="?", type=cli.user_path, help="npz from generator.py --save (omit to draw from checkpoints)")
    parser.add_argument("--train-classifier", action="store_true",
                        help="(re)build the classifier in the checkpoint folder (checkpoints/classifier.pt)")
    parser.add_argument("--classifier", default=None, type=cli.user_path,
                        help="classifier weights to score with (default: the shipped evaluator/<dataset>.pt, else "
                             "the checkpoint folder's classifier.pt)")
    parser.add_argument("--n", type=int, default=None, help=f"samples to draw when no npz is given (default {DRAW_N})")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature when drawing")
    parser.add_argument("--prior", default="gpt", type=cli.user_path, help="gpt | var | diffusion, or a prior checkpoint path")
    parser.add_argument("--vqvae", default=None, type=cli.user_path, help="tokenizer checkpoint (default: the one beside the prior)")
    parser.add_argument("--steps", type=int, default=None, help="diffusion: reverse steps when drawing")
    parser.add_argument("--cfg", type=float, default=None,
                        help="guidance scale when drawing (default: the prior's own, e.g. gpt.guidance)")
    cli.add_shorthand(parser, "batch_size")
    parser.add_argument("--balanced", action="store_true", default=None,
                        help="when drawing: the same number of samples of every class (default: each class in its "
                             "share of the training images, as FID compares distributions)")
    parser.add_argument("--reconstructions", action="store_true",
                        help="score the tokenizer on its own: its reconstructions of the test split (FID, accuracy, "
                             "PSNR, SSIM, code use and perplexity); --vqvae picks the checkpoint")
    parser.add_argument("--save", default=None, type=cli.user_path, metavar="FILE.npz",
                        help="--reconstructions: also write them as an npz (images, labels), as generator.py --save")
    parser.add_argument("--no-reference", action="store_true", help="skip the real-data and reconstruction rows")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    return parser


def main(argv=None):
    args, cfg = cli.parse_config(command_line(), argv)
    with cli.one_line_errors():
        check_flags(args)
        report = score(cfg, args)
    if report is None:
        return
    if args.json:
        print(json.dumps(report))
        return
    print(f"classifier: {report['classifier']}")
    print_table(report["rows"])
    if "tokenizer" in report:
        print_tokenizer(report["tokenizer"])
    if "likelihood" in report:
        print(f"prior test NLL: {report['likelihood']['bits_per_token']:.3f} bits/token, "
              f"{report['likelihood']['bits_per_image']:.1f} bits/image")


def print_tokenizer(stats):
    use = " ".join(f"{u:.0%}/{p:.0f}" for u, p in zip(stats["usage"], stats["perplexity"]))
    print(f"tokenizer {stats['path']} ({stats['quantizer']}, {stats['tokens']} tokens, {stats['codes']} codes, {stats['bits_per_token']:.2f} "
          f"bits per token): val MSE {stats['val_mse']:.5f}, PSNR {stats['psnr']:.2f} dB, SSIM {stats['ssim']:.4f}, "
          f"code use/perplexity {use}")
    if stats.get("saved"):
        print(f"reconstructions -> {stats['saved']}")


def check_flags(args):
    """The drawing flags' values (generator.py's check; --n at least MIN_SAMPLES), and none of them given when
    nothing is drawn: ignoring `--temperature` on an npz would report numbers the user did not ask for."""
    check_sampling_flags(args, min_n=MIN_SAMPLES)
    if args.save and not args.reconstructions:
        raise FlagError("--save writes the tokenizer's reconstructions; add --reconstructions (samples of a prior: "
                        "generator.py --save)")
    if args.reconstructions and args.samples:
        raise FlagError("--reconstructions scores the tokenizer's own reconstructions; give no sample file")
    if args.samples or args.train_classifier or args.reconstructions:
        where = ("when scoring an npz" if args.samples else "when scoring reconstructions" if args.reconstructions
                 else "when only training the classifier")
        for name in DRAWING_FLAGS:
            if getattr(args, name) is not None:
                raise FlagError(f"{flag(name)} does nothing {where}; it is read when evaluate.py draws its own "
                                f"samples (no npz given)")


def score(cfg, args):
    """The report evaluate.py prints: the classifier trained (--train-classifier), and the samples scored against
    the real test images (and the reconstructions' ceiling), drawn from checkpoints when no file is given."""
    device = devices.pick_device(cfg.device)
    if args.train_classifier:
        metrics.train_classifier(cfg, default_path(cfg, "classifier"))
        if not args.samples:
            return None
    if args.reconstructions:
        return score_reconstructions(cfg, args, device)
    path = prior_path(cfg, args.prior or "gpt")
    prior = vqvae = None  # each checkpoint is loaded once and serves every row that needs it
    if not args.samples:  # drawn here: on the dataset, and at the settings, of the preset the prior was trained with
        prior, vqvae, ckpt = load_pair(path, args.vqvae, device, compile=cfg.sample.compile)
        trained = settings.config_of_checkpoint(cfg, ckpt, args.overrides)
        check_dataset(ckpt, path, trained.data.dataset)
        if trained is not cfg:
            print(f"{path} was trained with --preset {trained.preset}: drawing with its dataset and settings",
                  file=sys.stderr)
        cfg = trained
    spec = datasets.spec_of(cfg.data)
    # checked before any work
    samples = read_samples(args.samples, spec.image_shape, spec.num_classes) if args.samples else None
    scoring_with = metrics.classifier_path(cfg, getattr(args, "classifier", None))
    classifier = metrics.load_classifier(scoring_with, device, spec)
    test_images, test_labels = data.load_split(cfg.data, train=False)
    _, test_feats = metrics.classify(classifier, test_images, device)
    rows, info = {}, {"device": str(device), "classifier": os.path.relpath(scoring_with)}
    if samples is not None and os.path.exists(path):
        prior, vqvae, _ = load_pair(path, args.vqvae, device, dataset=spec.name, compile=cfg.sample.compile)
    if prior is not None:
        sampling.check_steps(prior, args.steps)
        if prior.exact_likelihood:
            info["likelihood"] = metrics.test_likelihood(prior, vqvae, test_images, test_labels, device)
    elif os.path.exists(args.vqvae or tokenizer_path(cfg, multiscale=False)):  # reference rows without a prior
        vqvae, _ = load_vqvae(args.vqvae or tokenizer_path(cfg, multiscale=False), device, dataset=spec.name)
    if samples is not None:
        images, labels = samples
        name = os.path.basename(args.samples)
    else:
        n = args.n or DRAW_N
        temperature, guidance = sampling.sampling_point(cfg, prior, args)
        batch_size = cli.shorthand_value(cfg, args, "batch_size")
        proportions = None if args.balanced else data.class_proportions(cfg.data)
        classes, labels = sampling.class_ids(n, prior, unconditional=False, proportions=proportions)
        t0 = time.time()
        images = data.to_uint8(sampling.draw_images(prior, vqvae, classes, device, devices.amp_dtype(device, cfg.amp),
                                           temperature, cfg.sample.top_k, guidance, batch_size,
                                           cfg.seed, steps=args.steps, progress=True))
        info["sampling_images_per_s"] = n / (time.time() - t0)
        name = f"samples (T={temperature})"
    n = len(images)
    if not args.no_reference:
        train_images, train_labels = data.load_split(cfg.data, train=True)
        train_labels, test_labels = (without_labels_if_unlabelled(spec, lab) for lab in (train_labels, test_labels))
        rows["real train (floor)"] = metrics.score(classifier, train_images[:n], train_labels[:n], test_feats, device)
        if vqvae is not None:
            test_recon = metrics.reconstructions(vqvae, test_images[:n], device)
            rows["VQ-VAE recon of test (ceiling)"] = metrics.score(classifier, test_recon, test_labels[:n], test_feats, device)
    rows[name] = metrics.score(classifier, images, without_labels_if_unlabelled(spec, labels), test_feats, device)
    return {"rows": rows, **info}


def score_reconstructions(cfg, args, device):
    """--reconstructions: the tokenizer judged on its own, on the whole test split, as a prior's samples are."""
    spec = datasets.spec_of(cfg.data)
    if args.save:
        sampling.check_writable(args.save)
    path = args.vqvae or tokenizer_path(cfg, multiscale=bool(cfg.vqvae.scales))
    vqvae, _ = load_vqvae(path, device, dataset=spec.name)
    scoring_with = metrics.classifier_path(cfg, args.classifier)
    classifier = metrics.load_classifier(scoring_with, device, spec)
    test_images, test_labels = data.load_split(cfg.data, train=False)
    test_labels = without_labels_if_unlabelled(spec, test_labels)
    _, test_feats = metrics.classify(classifier, test_images, device)
    recon, row, stats = tokenizer_metrics.judge(vqvae, classifier, test_images, test_labels, test_feats, device)
    rows = {}
    if not args.no_reference:
        train_images, train_labels = data.load_split(cfg.data, train=True)
        n = len(test_images)
        rows["real train (floor)"] = metrics.score(classifier, train_images[:n],
                                                   without_labels_if_unlabelled(spec, train_labels[:n]), test_feats,
                                                   device)
    rows["reconstructions of test"] = row
    stats = {"path": path, **stats}
    if args.save:
        sampling.save_npz(args.save, recon, test_labels)
        stats["saved"] = args.save
    return {"rows": rows, "tokenizer": stats, "device": str(device), "classifier": os.path.relpath(scoring_with)}


def without_labels_if_unlabelled(spec, labels):
    """A dataset of one class has nothing to read a class from (its classifier learned quarter turns): no accuracy."""
    return torch.full_like(labels, -1) if spec.num_classes == 1 else labels


if __name__ == "__main__":
    main()
