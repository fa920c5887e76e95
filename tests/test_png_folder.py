"""generator.py --save DIR/: one PNG per sample, named by index and class, which evaluate.py scores as it scores the
npz of the same draw."""
import json
import os

import numpy as np

from script_runs import run_in_process


def test_a_png_folder_of_a_draw_scores_as_its_npz(pipeline, tmp_path):
    root, dirs = pipeline
    folder = tmp_path / "samples"
    result = run_in_process("generator.py", *dirs, "--n", "30", "--save", f"{folder}/")
    assert result.returncode == 0, result.stderr
    names = sorted(os.listdir(folder))
    with np.load(root / "samples.npz") as f:  # the fixture's draw: the same flags and seed
        labels = f["labels"]
    assert len(names) == 30 and all(name.startswith(f"{i:05d}-c{labels[i]}-") for i, name in enumerate(names))
    scores = [json.loads(run_in_process("evaluate.py", *dirs, str(path), "--json").stdout.strip().splitlines()[-1])
              for path in (root / "samples.npz", folder)]
    assert scores[0]["rows"]["samples.npz"] == scores[1]["rows"]["samples"]


def test_a_png_folder_that_holds_files_is_refused_before_drawing(pipeline, tmp_path):
    _, dirs = pipeline
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.png").write_bytes(b"x")
    result = run_in_process("generator.py", *dirs, "--n", "5", "--save", f"{tmp_path / 'full'}/", check=False)
    assert result.returncode == 1 and "holds files already" in result.stderr
    assert os.listdir(tmp_path / "full") == ["mine.png"]
