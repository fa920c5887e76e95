"""Every command the docs give runs as written: each ```bash block of README.md and docs/*.md is run by bash itself
(so a syntax error, an unquoted parenthesis or a `~` the shell leaves alone is what a user would meet), with
`python` and `torchrun` replaced by a function that records the arguments the shell passes them. Each command of a
repo script is then parsed by that script's own command line and built into its config, as the script would,
without training anything. And every figure README quotes next to a link into RESULTS.md stands in the section the
link points to."""
import glob
import importlib
import os
import re
import subprocess

import pytest
from PIL import Image

from pipeline import settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", *sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))]
SCRIPTS = ("vqvae_train.py", "transformer_train.py", "generator.py", "evaluate.py", "benchmark.py", "demo.py")
# the shell functions the blocks run with: a repo command prints its arguments, NUL-separated, one per line
RECORDING = """
record() { printf '%s\\0' "$@"; printf '\\n'; }
python() { record "$@"; }
torchrun() { record "$@"; }
pip() { :; }
"""


def bash_blocks(doc):
    text = open(os.path.join(REPO, doc), encoding="utf-8").read()
    return [m.group(1) for m in re.finditer(r"```bash\n(.*?)```", text, re.S)]


def commands_of(block, home):
    """The argument lists bash passes to `python` / `torchrun` in a block, run in an empty folder with HOME=home."""
    result = subprocess.run(["bash", "-c", RECORDING + block], cwd=home, capture_output=True, text=True,
                            env={"HOME": str(home), "PATH": os.environ["PATH"]}, timeout=60)
    assert result.returncode == 0, f"bash cannot run this block:\n{block}\n{result.stderr}"
    return [line.split("\0")[:-1] for line in result.stdout.splitlines() if line]


def script_and_args(argv):
    """(script, its arguments) of a recorded command, or None for a command of no repo script (python -m pytest)."""
    scripts = [i for i, a in enumerate(argv) if os.path.basename(a) in SCRIPTS]
    if not scripts:
        return None
    return os.path.basename(argv[scripts[0]]), argv[scripts[0] + 1:]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home folder holding the folder of images the docs train on (~/pictures/pets: two classes of 6)."""
    home = tmp_path_factory.mktemp("home")
    for kind, colour in (("cat", (200, 0, 0)), ("dog", (0, 0, 200))):
        os.makedirs(home / "pictures" / "pets" / kind)
        for i in range(6):
            Image.new("RGB", (32, 32), colour).save(home / "pictures" / "pets" / kind / f"{i}.png")
    return home


@pytest.mark.parametrize("doc", DOCS)
def test_every_command_in_the_docs_parses_and_builds_its_config(doc, home, monkeypatch):
    monkeypatch.setenv("HOME", str(home))
    checked = 0
    for block in bash_blocks(doc):
        for argv in commands_of(block, home):
            found = script_and_args(argv)
            if found is None:
                continue
            script, args = found
            parser = importlib.import_module(script[:-3]).command_line()
            try:
                parsed = parser.parse_args(args)
            except SystemExit:
                pytest.fail(f"{doc}: `{' '.join(argv)}` does not parse")
            settings.build_config(parsed.preset, parsed.overrides, parsed.seed, parsed.device)
            checked += 1
    assert checked or not bash_blocks(doc) or doc != "README.md"


def test_the_docs_give_commands_to_check():
    assert sum(len(bash_blocks(doc)) for doc in DOCS) >= 4


def results_sections():
    """RESULTS.md's sections by the anchor GitHub gives their heading: {anchor: text up to the next heading}."""
    text = open(os.path.join(REPO, "RESULTS.md"), encoding="utf-8").read()
    parts = re.split(r"^(#{2,4} .*)$", text, flags=re.M)
    sections = {}
    for heading, body in zip(parts[1::2], parts[2::2]):
        title = heading.lstrip("#").strip().lower()
        anchor = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        sections.setdefault(anchor, body)
    return sections


def test_the_figures_readme_quotes_stand_in_the_results_sections_it_links():
    sections = results_sections()
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    missing = []
    for paragraph in re.split(r"\n\s*\n", readme):
        for anchor in re.findall(r"\(RESULTS\.md#([\w\-]+)\)", paragraph):
            assert anchor in sections, f"README links RESULTS.md#{anchor}, which is no heading there"
            text = re.sub(r"\(RESULTS\.md#[\w\-]+\)", "", paragraph)
            figures = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", text)
            missing += [(anchor, f) for f in figures if f not in sections[anchor]]
    assert not missing, missing


def test_results_contents_links_every_section_and_only_sections():
    text = open(os.path.join(REPO, "RESULTS.md"), encoding="utf-8").read()
    contents = text[:text.index("\n## ")]
    linked = set(re.findall(r"\]\(#([\w\-]+)\)", contents))
    headings = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^## (.*)$", text, flags=re.M)}
    assert linked <= headings, f"links to no section: {linked - headings}"
    assert headings <= linked, f"sections the contents do not list: {headings - linked}"
