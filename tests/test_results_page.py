"""Every section of RESULTS.md says which commit and date its figures were measured at.

A `## ` section passes when, within its first three lines of text (blank lines and marker comments not counted), it
names a commit (`commit abc1234`, or `commits abc1234 … def5678` for figures measured over several commits: 7 to 40
hex digits) and a date (YYYY-MM-DD). Two forms meet that:

- a section `benchmark.py` writes sits between its marker comments (`<!-- NAME -->` … `<!-- /NAME -->`) and opens
  with "Produced by `COMMAND` on DATE (commit X)"; `benchmark.py` rewrites it, so its text is checked as written;
- every other section opens with "Measured at commit X (DATE)." and, where the recipe it measured is no longer the
  default, says so in the same sentence ("... the figures are not today's defaults").

Not checked: "How these figures were measured", which describes the method (machine, torch version, the evaluator,
how classes are drawn) and holds no figures of its own, and the contents list above the first section.

Pure text (and `git cat-file` where the history is there): no torch, no training.
"""
import os
import re
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "RESULTS.md")

METHOD_SECTIONS = {"How these figures were measured"}
COMMIT = re.compile(r"\bcommits? ([0-9a-f]{7,40})\b")
DATE = re.compile(r"\b\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])\b")
OPEN_MARKER = re.compile(r"^<!-- ([\w-]+) -->$")
CLOSE_MARKER = re.compile(r"^<!-- /([\w-]+) -->$")


def read_page():
    with open(RESULTS, encoding="utf-8") as f:
        return f.read()


def sections(text):
    """[(heading, inside marker comments, first three lines of text, whole body)] for every `## ` section."""
    found, markers, current = [], [], None
    for line in text.splitlines():
        if OPEN_MARKER.match(line.strip()):
            markers.append(OPEN_MARKER.match(line.strip()).group(1))
            continue
        if CLOSE_MARKER.match(line.strip()):
            name = CLOSE_MARKER.match(line.strip()).group(1)
            assert markers and markers[-1] == name, f"RESULTS.md: <!-- /{name} --> closes no open marker"
            markers.pop()
            continue
        if line.startswith("## "):
            current = {"heading": line[3:].strip(), "generated": bool(markers), "lines": []}
            found.append(current)
        elif current is not None:
            current["lines"].append(line)
    assert not markers, f"RESULTS.md: markers never closed: {markers}"
    return [(s["heading"], s["generated"], [l for l in s["lines"] if l.strip()][:3], "\n".join(s["lines"]))
            for s in found]


def undated_sections(text):
    """The headings of the sections that do not say, in their first three lines, a commit and a date."""
    missing = []
    for heading, generated, head, _ in sections(text):
        if heading in METHOD_SECTIONS:
            continue
        produced = [line for line in head if line.startswith("Produced by")]
        lines = produced if generated and produced else head
        opening = " ".join(lines)
        if not (COMMIT.search(opening) and DATE.search(opening)):
            missing.append(heading)
    return missing


def test_every_section_says_its_commit_and_date():
    missing = undated_sections(read_page())
    assert not missing, ("RESULTS.md sections that do not open with the commit and date they were measured at "
                         f"(\"Measured at commit abc1234 (2026-11-28).\"): {missing}")


def test_the_check_fails_on_a_section_without_them():
    text = read_page()
    assert not undated_sections(text)
    for heading in ("The yardstick: how much the evaluator's classifier moves the figures", "MNIST"):
        start = text.index(f"\n## {heading}\n")
        body_start = start + len(f"\n## {heading}\n")
        first = next(line for line in text[body_start:].splitlines() if line.strip())
        without = text[:body_start] + text[body_start:].replace(first + "\n", "", 1)
        assert undated_sections(without) == [heading]
    undated_first_line = text.replace("Measured at commit 5333bed (2026-11-27)", "Measured at commit 5333bed", 1)
    assert undated_sections(undated_first_line) == [
        "Ablation: the adversarial tokenizer (MNIST, default commands, same machine and seed)"]


def test_a_section_on_an_earlier_default_calls_no_row_the_default():
    """Where a section's opening says its figures are not today's defaults, its tables say "(the default then)"."""
    wrong = []
    for heading, _, head, body in sections(read_page()):
        if "not today's default" in " ".join(head) or "not for today's default" in " ".join(head):
            rows = [line for line in body.splitlines() if line.startswith("|")]
            wrong += [(heading, row[:80]) for row in rows if re.search(r"\((the )?default\)", row)]
    assert not wrong, wrong


def git_history():
    """True when RESULTS.md sits in a full git history, where every commit it names can be looked up."""
    try:
        inside = subprocess.run(["git", "-C", REPO, "rev-parse", "--is-shallow-repository"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return inside.returncode == 0 and inside.stdout.strip() == "false"


def test_the_commits_named_are_in_the_history():
    if not git_history():
        pytest.skip("no full git history here to look the commits up in")
    named = set()
    for heading, _, head, _ in sections(read_page()):
        if heading not in METHOD_SECTIONS:
            opening = " ".join(head)
            named |= set(COMMIT.findall(opening))
            named |= set(re.findall(r"commits [0-9a-f]{7,40} … ([0-9a-f]{7,40})", opening))
    unknown = [c for c in sorted(named)
               if subprocess.run(["git", "-C", REPO, "cat-file", "-e", f"{c}^{{commit}}"],
                                 capture_output=True).returncode != 0]
    assert not unknown, f"RESULTS.md names commits that are not in the history: {unknown}"
