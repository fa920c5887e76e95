"""The command line every script shares: --preset, --set, --seed, --device on one parser whose errors are one line,
and the edge where a script turns a UserError into that one line and its exit status."""
import argparse
import sys
from contextlib import contextmanager

from config import PRESETS
from pipeline.errors import UserError
from pipeline.settings import build_config, expand_path


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors (unknown flag, `--n ten`, a missing value) as one `error:` line, like every other
    error of the scripts, instead of a usage block above the message."""

    def error(self, message):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def make_parser(description):
    """The flags every script shares; scripts add their own on top."""
    parser = OneLineParser(description=description)
    parser.add_argument("--preset", default="mnist", help=f"named preset: {', '.join(PRESETS)}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one config field (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: config seed)")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N | mps")
    return parser


# script flags that are shorthands for a config field: `--top-k 5` is `--set sample.top_k=5` for that command
SHORTHANDS = {"top_k": ("sample.top_k", "keep the k most likely codes (0 = all)"),
              "batch_size": ("sample.batch_size", "samples drawn at once")}


def add_shorthand(parser, name):
    field, meaning = SHORTHANDS[name]
    parser.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                        help=f"{meaning}; shorthand for --set {field}=N")


def shorthand_value(cfg, args, name):
    """The flag's value where the user gave it, else its config field's."""
    given = getattr(args, name)
    if given is not None:
        return given
    section, field = SHORTHANDS[name][0].split(".")
    return getattr(getattr(cfg, section), field)


def user_path(text):
    """argparse type of every flag that names a file or folder: ~ and $VARIABLES expanded."""
    return expand_path(text)


def make_training_parser(description):
    """The shared flags and the two every training script has: --resume and --overwrite."""
    parser = make_parser(description)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint's last epoch")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint with a new run")
    return parser


def parse_config(parser, argv=None):
    """Parse argv into (args, config); a bad config ends the script with one line and exit status 2."""
    args = parser.parse_args(argv)
    with one_line_errors():
        cfg = build_config(args.preset, args.overrides, args.seed, args.device)
    return args, cfg


@contextmanager
def one_line_errors():
    """A script's edge: a UserError becomes `<label>: <message>` on stderr and its kind's exit status."""
    try:
        yield
    except UserError as e:
        message = f"{e.label}: {e}"
        if e.exit_status == 1:
            sys.exit(message)  # SystemExit(text): the interpreter prints it to stderr and exits with 1
        print(message, file=sys.stderr)
        sys.exit(e.exit_status)
