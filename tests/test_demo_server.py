"""demo.py's server without a browser: the models it finds, and every endpoint (draw, edit, watch) over HTTP on the
tiny checkpoints the suite trains (conftest's `pipeline` and `priors`), each picture checked against what
generator.py draws with the command shown under it; every bad value one line; sizes bounded; a changed checkpoint
read again, a foreign tokenizer refused; requests at once never mixed."""
import base64
import io
import json
import os
import re
import shlex
import shutil
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

import demo
from pipeline import demo_drawing, demo_requests, sampling, settings
from pipeline.demo_models import TRAIN_COMMANDS, Models, checkpoint_files
from pipeline.demo_server import MAX_BODY, make_server
from script_runs import REPO, assert_one_line_error, run_in_process


# --- a server on the suite's tiny checkpoints -------------------------------------------------------------------------

def link_models(pipeline, priors, root):
    """root/: the GPT and its tokenizer at the top, VAR and diffusion with theirs in priors/ (links: read only)."""
    (root / "priors").mkdir(parents=True)
    for name in ("gpt.pt", "vqvae.pt"):
        os.symlink(pipeline[0] / "ck" / name, root / name)
    for name in ("var.pt", "diffusion.pt", "vqvae.pt", "vqvae_multiscale.pt"):
        os.symlink(priors[0] / "ck" / name, root / "priors" / name)
    return root


class Client:
    def __init__(self, root, overrides=()):
        self.models = Models(str(root), settings.build_config("mnist", list(overrides)), list(overrides))
        self.server = make_server(self.models, "127.0.0.1", 0, quiet=True)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def request(self, path, body=None, data=None, headers=None):
        """(status, JSON answer) of a GET (body None) or a POST of body as JSON (or of raw data)."""
        if body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def ok(self, path, body=None):
        status, answer = self.request(path, body)
        assert status == 200, answer
        return answer

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def client(pipeline, priors, tmp_path_factory):
    client = Client(link_models(pipeline, priors, tmp_path_factory.mktemp("demo") / "ck"))
    yield client
    client.close()


def picture_of(answer, index=0, key="pictures"):
    png = answer[key][index]["png"]
    assert png.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png.split(",", 1)[1]))))


def generator_picture(command, out, *extra):
    """What the command under a picture draws: generator.py run (in this process) with its arguments and --out."""
    words = shlex.split(command)
    assert words[:2] == ["python", "generator.py"], command
    run_in_process("generator.py", *words[2:], *extra, "--out", str(out), preset="mnist")
    [png] = [f for f in os.listdir(out) if f.endswith(".png")]
    return np.asarray(Image.open(out / png))


def one_line(status, answer, *fragments):
    assert status == 400, answer
    line = answer["error"]
    assert "\n" not in line and "Traceback" not in line and len(line) < 300, line
    for fragment in fragments:
        assert fragment in line, line
    return line


# --- the models it finds ------------------------------------------------------------------------------------------------

def test_it_lists_every_prior_under_the_folder_by_folder_dataset_and_prior(client):
    listing = client.ok("/api/models")
    labels = {m["id"]: m["label"] for m in listing["models"]}
    assert labels == {"gpt.pt": "mnist · gpt", "priors/diffusion.pt": "priors · mnist · diffusion",
                      "priors/var.pt": "priors · mnist · var"}
    assert listing["train"] == [] and listing["skipped"] == []
    assert {m["preset"] for m in listing["models"]} == {"tiny"}


def test_the_walk_skips_temp_files_and_names_an_unreadable_checkpoint(tmp_path, pipeline):
    shutil.copyfile(pipeline[0] / "ck" / "gpt.pt", tmp_path / "gpt.tmp123.pt")  # a checkpoint being written
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "broken.pt").write_bytes(b"not a checkpoint")
    torch.save({"kind": "gpt", "model": {}, "config": {}}, tmp_path / "deep" / "hand_made.pt")
    os.symlink(tmp_path, tmp_path / "deep" / "loop")  # a link back up the tree is walked once
    assert checkpoint_files(str(tmp_path)) == [str(tmp_path / "deep" / "er" / "broken.pt"),
                                               str(tmp_path / "deep" / "hand_made.pt")]
    entries, skipped = Models(str(tmp_path), settings.build_config("mnist")).scan()
    assert entries == [] and len(skipped) == 2 and all("\n" not in line for line in skipped)
    assert "broken.pt is unreadable" in skipped[0] and "hand_made.pt is not a checkpoint" in skipped[1]


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_with_no_checkpoints_the_page_names_the_two_training_commands(tmp_path, folder):
    if folder == "empty":
        (tmp_path / folder).mkdir()
    client = Client(tmp_path / folder)
    try:
        listing = client.ok("/api/models")
        assert listing["models"] == []
        assert listing["train"] == ["python vqvae_train.py", "python transformer_train.py"] == list(TRAIN_COMMANDS)
        one_line(*client.request("/api/draw", {"model": "gpt.pt"}), "no model 'gpt.pt'")
    finally:
        client.close()


def test_a_model_says_its_defaults_capabilities_and_generator_regions(client, priors):
    for model_id in ("gpt.pt", "priors/var.pt", "priors/diffusion.pt"):
        details = client.ok("/api/model", {"model": model_id})
        loaded = client.models.get(model_id)
        temperature, guidance = settings.sampling_settings(loaded.cfg, loaded.prior)
        assert details["defaults"]["temperature"] == temperature and details["defaults"]["guidance"] == guidance
        assert details["capabilities"]["edits"] == list(loaded.prior.edits)
        assert (details["defaults"]["steps"] is not None) == loaded.prior.sampling_steps
        assert details["classes"] == [str(d) for d in range(10)] and details["image_shape"] == [1, 28, 28]
        assert set(details["regions"]) == set(loaded.prior.edits)
        for edit, pixels in details["regions"].items():  # painted as sent, they are generator.py's cells again
            cells = demo_requests.region({"mask": sum(pixels, [])}, (1, 28, 28), loaded.vqvae.cfg.grid_size)
            assert torch.equal(cells, sampling.redraw_cells(loaded.vqvae.cfg.grid_size, edit))
            assert torch.equal(demo_drawing.keep_of_cells(loaded.vqvae, cells), sampling.keep_mask(loaded.vqvae, edit))


# --- draw, edit, watch: what generator.py draws -----------------------------------------------------------------------

def test_a_grid_is_what_the_generator_command_under_it_draws(client, tmp_path):
    answer = client.ok("/api/draw", {"model": "gpt.pt", "class": "all", "n": "3", "seed": "7", "temperature": "0.9"})
    picture = answer["pictures"][0]
    assert answer["seconds"] > 0 and picture["note"] == "" and "--seed 7" in picture["command"]
    assert np.array_equal(picture_of(answer), generator_picture(picture["command"], tmp_path))


def test_one_class_or_none(client):
    answer = client.ok("/api/draw", {"model": "priors/var.pt", "class": "3", "n": 4})
    assert picture_of(answer).shape[:2] == (32, 4 * 30 + 2)  # one row of 4 tiles (28 pixels and padding)
    assert "its 3 row" in answer["pictures"][0]["note"]
    answer = client.ok("/api/draw", {"model": "priors/diffusion.pt", "class": "none", "n": 1, "steps": 2})
    assert "--unconditional" in answer["pictures"][0]["command"] and "--steps 2" in answer["pictures"][0]["command"]


def test_an_edit_of_generator_region_is_what_generator_edit_draws(client, tmp_path):
    details = client.ok("/api/model", {"model": "priors/var.pt"})
    answer = client.ok("/api/edit", {"model": "priors/var.pt", "edit": "inpaint", "source": "test", "index": 0,
                                     "mask": sum(details["regions"]["inpaint"], []), "n": 2, "seed": 1})
    picture = answer["pictures"][0]
    assert picture["note"] == "" and "--edit inpaint --edit-images 1 --edit-samples 2" in picture["command"]
    assert np.array_equal(picture_of(answer), generator_picture(picture["command"], tmp_path))


def test_an_edit_of_a_painted_region_of_a_drawn_picture(client):
    canvas = Image.new("RGBA", (28, 28), "black")
    canvas.paste((255, 255, 255, 255), (10, 4, 18, 24))  # a stroke
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    image = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    mask = [1 if 14 <= y < 21 and 7 <= x < 14 else 0 for y in range(28) for x in range(28)]  # one cell of 4x4
    for model_id, edit in (("priors/diffusion.pt", "inpaint"), ("priors/var.pt", "outpaint"), ("gpt.pt", "complete")):
        answer = client.ok("/api/edit", {"model": model_id, "edit": edit, "source": "picture", "image": image,
                                         "class": "1", "mask": mask, "n": 3})
        row = picture_of(answer)
        assert row.shape[1] == 5 * 30 + 2  # original, masked, 3 results
        assert answer["pictures"][0]["note"]  # generator.py cannot re-draw this region of this picture
        original = row[2:30, 2:30]
        assert (original[4:24, 10:18] > 200).all() and (original[:4] < 50).all()
    checked = client.ok("/api/image", {"model": "gpt.pt", "source": "picture", "image": image})
    assert checked["png"].startswith("data:image/png")


def test_a_colour_model_reads_a_picture_as_rgb_over_white():
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # transparent, as an emoji's corners
    image.putpixel((1, 2), (255, 0, 0, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    pixels = demo_requests.picture(base64.b64encode(buffer.getvalue()).decode(), (3, 8, 8))
    assert pixels.shape == (3, 8, 8) and pixels.dtype == torch.uint8
    assert pixels[:, 2, 1].tolist() == [255, 0, 0] and pixels[:, 0, 0].tolist() == [255, 255, 255]
    grey = demo_requests.picture(base64.b64encode(buffer.getvalue()).decode(), (1, 8, 8))
    assert grey.shape == (1, 8, 8)


def test_complete_keeps_every_cell_before_the_first_painted_one():
    painted = torch.zeros(4, 4, dtype=torch.bool)
    painted[2, 1] = True
    redrawn = demo_drawing.redrawn_cells(painted, "complete")
    assert redrawn.flatten().tolist() == [False] * 9 + [True] * 7
    assert torch.equal(demo_drawing.redrawn_cells(painted, "inpaint"), painted)


def test_watch_each_prior_form_its_samples(client, tmp_path):
    settings_ = {"class": "all", "n": 1, "seed": 2}
    gpt = client.ok("/api/watch", {"model": "gpt.pt", **settings_})
    assert len(gpt["frames"]) == 4 * 4 + 1  # nothing drawn, then each cell of the 4x4 grid in raster order
    tiles = picture_of(gpt, 0, "frames")[:, -30:]  # the column of tiles: grey lines around light grey squares
    assert set(np.unique(tiles)) == {128, round((demo_drawing.NEUTRAL + 1) * 127.5 + 0.5)}
    drawn = client.ok("/api/draw", {"model": "gpt.pt", **settings_})
    assert np.array_equal(picture_of(gpt, -1, "frames"), picture_of(drawn))  # the last frame is the sample
    var = client.ok("/api/watch", {"model": "priors/var.pt", **settings_})
    assert len(var["frames"]) == 1 + 4 and "scales up to 2x2" in var["frames"][2]["title"]  # coarse to fine
    diffusion = client.ok("/api/watch", {"model": "priors/diffusion.pt", **settings_, "steps": 3})
    assert len(diffusion["frames"]) == 3 and diffusion["pictures"][0]["note"] == ""
    command = diffusion["pictures"][0]["command"]
    assert "--show-process" in command
    run_in_process("generator.py", *shlex.split(command)[2:], "--out", str(tmp_path), preset="mnist")
    strip = np.asarray(Image.open(next(tmp_path.glob("*_strip.png"))))
    assert np.array_equal(strip[:, -30:], picture_of(diffusion, -1, "frames")[:, -30:])  # its last column
    one_line(*client.request("/api/watch", {"model": "priors/diffusion.pt", "temperature": 1.1}),
             "--temperature does nothing with the reverse process")


# --- bad values: one line each, before any model runs -----------------------------------------------------------------

def picture_data(size=(28, 28), mode="L"):
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


FULL_MASK = [1] * 28 * 28
BAD = [  # (endpoint, request values, a fragment of the one line)
    ("draw", {"temperature": "abc"}, "--temperature must be a number"),
    ("draw", {"temperature": -1}, "--temperature must be a finite number above 0"),
    ("draw", {"temperature": "nan"}, "--temperature must be a finite number above 0"),
    ("draw", {"temperature": "inf"}, "--temperature must be a finite number above 0"),
    ("draw", {"guidance": 0}, "--cfg must be a finite number above 0"),
    ("draw", {"top_k": -2}, "--top-k must be at least 0"),
    ("draw", {"top_k": 1.5}, "--top-k must be a whole number"),
    ("draw", {"steps": 4}, "--steps is for priors with reverse steps"),
    ("draw", {"seed": -1}, "--seed must be in [0, 2**32 - 1]"),
    ("draw", {"seed": 2 ** 32}, "--seed must be in [0, 2**32 - 1]"),
    ("draw", {"seed": [1]}, "--seed must be a whole number"),
    ("draw", {"n": 0}, "from 1 to 100"),
    ("draw", {"n": 1_000_000}, "from 1 to 100"),
    ("draw", {"class": "giraffe"}, "'giraffe' is not a class of this model"),
    ("draw", {"class": 3}, "the class must be a class name"),
    ("draw", {"model": "../../etc/passwd"}, "no model"),
    ("draw", {"model": None}, "choose a model first"),
    ("edit", {"edit": "explode"}, "the edit must be one of inpaint, outpaint, complete"),
    ("edit", {"edit": "inpaint"}, "the gpt prior can only --edit complete"),
    ("edit", {"index": 10 ** 6}, "the test image number must be from 0 to 255"),
    ("edit", {"mask": [1, 0]}, "the painted region must be 28x28 values of 0 or 1"),
    ("edit", {"mask": [0] * 28 * 28}, "nothing is painted"),
    ("edit", {"n": 17}, "the number of results must be from 1 to 16"),
    ("edit", {"source": "picture", "image": picture_data((30, 30))}, "the picture is 30x30 pixels"),
    ("edit", {"source": "picture", "image": "data:image/png;base64,@@@"}, "not base64"),
    ("edit", {"source": "picture", "image": base64.b64encode(b"GIF89a not really").decode()}, "could not be read"),
    ("edit", {"source": "picture", "image": ""}, "no picture was given"),
    ("image", {"source": "picture", "image": picture_data((64, 64), "RGB")}, "this model's images are 28x28"),
    ("edit", {"source": "camera"}, "the picture's source must be test or picture"),
    ("watch", {"n": 101}, "from 1 to 100"),
    ("watch", {"n": 11}, "10 classes x 11 samples is more than 100 samples"),
]


@pytest.mark.parametrize("endpoint, values, fragment", BAD, ids=[f"{e}-{f[:30]}" for e, _, f in BAD])
def test_every_bad_value_is_one_line(client, endpoint, values, fragment):
    base = {"model": "gpt.pt", "n": 2}
    if endpoint == "edit":
        base.update(edit="complete", source="test", index=0, mask=FULL_MASK)
    one_line(*client.request(f"/api/{endpoint}", {**base, **values}), fragment)


def test_bad_requests_and_sizes(client):
    one_line(*client.request("/api/draw", data=b"{not json"), "not JSON")
    one_line(*client.request("/api/draw", data=b"[1, 2]"), "a JSON object")
    one_line(*client.request("/api/watch", {"model": "priors/var.pt", "steps": 3}), "the var prior has none")
    one_line(*client.request("/api/draw", {"model": "priors/diffusion.pt", "steps": 10 ** 6}), "at most 1000")
    status, answer = client.request("/api/draw", data=b"{}", headers={"Content-Length": str(MAX_BODY + 1)})
    assert status == 413 and "larger than" in answer["error"]
    status, answer = client.request("/api/nothing", {})
    assert status == 404 and "no endpoint" in answer["error"]


# --- many requests, changing files -----------------------------------------------------------------------------------

def test_requests_at_once_queue_without_mixing(client):
    bodies = [{"model": model, "n": 2, "seed": seed} for seed in (1, 2) for model in ("gpt.pt", "priors/var.pt")]
    alone = [client.ok("/api/draw", body)["pictures"][0]["png"] for body in bodies]
    together = [None] * len(bodies)

    def ask(i):
        together[i] = client.ok("/api/draw", bodies[i])["pictures"][0]["png"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    client.ok("/api/models")  # answered while the draws run
    for thread in threads:
        thread.join()
    assert together == alone


def test_a_changed_checkpoint_is_read_again_and_a_foreign_tokenizer_refused(pipeline, priors, tmp_path):
    for name in ("gpt.pt", "vqvae.pt"):
        shutil.copyfile(pipeline[0] / "ck" / name, tmp_path / name)
    client = Client(tmp_path)
    try:
        assert client.ok("/api/model", {"model": "gpt.pt"})["kind"] == "gpt"
        client.ok("/api/draw", {"model": "gpt.pt", "n": 1})
        shutil.copyfile(priors[0] / "ck" / "diffusion.pt", tmp_path / "gpt.pt")  # retrained as another prior
        assert client.ok("/api/models")["models"][0]["kind"] == "diffusion"
        assert client.ok("/api/draw", {"model": "gpt.pt", "n": 1, "steps": 2})["pictures"]
        ckpt = torch.load(tmp_path / "gpt.pt", weights_only=True)
        ckpt.update(tokenizer_id="0123456789ab", vqvae_path=str(tmp_path / "gone.pt"))  # trained on another one
        torch.save(ckpt, tmp_path / "gpt.pt")
        os.utime(tmp_path / "gpt.pt", ns=(1, 10 ** 18))
        one_line(*client.request("/api/draw", {"model": "gpt.pt", "n": 1}), "was trained on tokenizer 0123456789ab")
    finally:
        client.close()


# --- the page and the command line ------------------------------------------------------------------------------------

def test_the_page_is_served_and_needs_nothing_from_the_network(client):
    for path in ("/", "/demo.js", "/demo.css"):
        with urllib.request.urlopen(client.url + path, timeout=30) as response:
            text = response.read().decode()
            assert response.status == 200
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text), path
        assert not re.search(r"@import|url\(\s*[\"']?(https?:)?//|fetch\(\s*[\"']https?:", text), path
    status, answer = client.request("/nothing")
    assert status == 404


def test_the_command_line():
    parser = demo.command_line()
    args = parser.parse_args([])
    assert (args.host, args.port, args.checkpoints) == ("127.0.0.1", demo.PORT, "checkpoints")
    help_text = " ".join(parser.format_help().split())
    assert "anyone who can reach the port" in help_text and "no password" in help_text
    assert_one_line_error(run_in_process("demo.py", "--port", "70000", check=False), "--port must be from 0 to 65535")
    for doc in ["README.md", *(os.path.join("docs", f) for f in sorted(os.listdir(os.path.join(REPO, "docs"))))]:
        text = open(os.path.join(REPO, doc), encoding="utf-8").read()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for line in block.splitlines():
                if "demo.py" in line:
                    words = shlex.split(line.split("#")[0])
                    parser.parse_args(words[words.index("demo.py") + 1:])
