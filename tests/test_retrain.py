"""benchmark.py --retrain: a preset's tokenizer and GPT trained from nothing by their scripts, then scored; its
RESULTS.md section keeps the others."""
import re

from script_runs import run


def test_retrain_trains_both_stages_and_writes_its_section(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# Results\n\n<!-- mnist -->\n## MNIST\n\nkept\n<!-- /mnist -->\n")
    result = run("benchmark.py", "--retrain", "--report", "--n", "40", "--out", str(out),
                 "--set", f"checkpoint_dir={tmp_path / 'ck'}", "--set", f"results_dir={tmp_path / 'res'}")
    for stage in ("vqvae.pt", "gpt.pt"):  # under the dataset's own folder, if it has one
        assert list((tmp_path / "ck" / "retrain" / "tiny").rglob(stage)), stage
    text = out.read_text()
    assert "kept" in text and "<!-- retrain-tiny -->" in text and "<!-- /retrain-tiny -->" in text
    section = text[text.index("<!-- retrain-tiny -->"):]
    assert re.search(r"\| 1 \| 0\.\d{4} \| \d+% \| \d+ \|", section), "one row per tokenizer epoch"
    ceiling = re.search(r"\| tokenizer reconstructions of the test set \(ceiling\) \| \d+ \| ([\d.]+) \|", section)
    samples = re.search(r"\| GPT samples, T=[\d.]+, g=[\d.]+ .*?\| \d+ \| ([\d.]+) \|", section)
    assert ceiling and samples and float(ceiling.group(1)) > 0 and float(samples.group(1)) > 0
    assert "retrain-tiny" in text and "tokenizer epoch" in result.stdout


def test_retrain_refuses_a_multiscale_preset():
    result = run("benchmark.py", "--retrain", check=False, preset="tiny_var")
    assert result.returncode != 0 and "vqvae.scales" in result.stderr and "Traceback" not in result.stderr
