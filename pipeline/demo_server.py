"""demo.py's web server: the page (pipeline/page/) and its JSON endpoints, on the standard library's threaded HTTP
server. Each request gets its own thread, so the page stays responsive while a model runs; the model calls take one
lock, so requests that arrive together run one after the other and never share a model's state. A bad value is a
UserError whose one line goes back as {"error": ...}; anything else is a bug, logged with its traceback on the
server's terminal and answered with one line too.

    GET  /                  the page (and /demo.js, /demo.css beside it)
    GET  /api/models        the prior checkpoints found under the folder (and, with none, how to train one)
    POST /api/model         one model's classes, defaults, capabilities and default edit regions (loads it)
    POST /api/image         a test image, or a drawn or uploaded picture checked and read as the model reads it
    POST /api/draw          a grid of samples          (each answer: PNG data URLs, the seconds the model took,
    POST /api/edit          a picture's edits            and the generator.py command of each picture)
    POST /api/watch         the frames of samples forming
"""
import base64
import io
import json
import os
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import torch

from pipeline import data, demo_drawing, demo_requests, figures
from pipeline.demo_models import TRAIN_COMMANDS
from pipeline.errors import FlagError, UserError

PAGE_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page")
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/demo.js": ("demo.js", "text/javascript; charset=utf-8"),
          "/demo.css": ("demo.css", "text/css; charset=utf-8")}
MAX_BODY = 4 * 2 ** 20  # bytes of one request: a drawn picture and its mask take a few kilobytes


def png_data_url(picture):
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def picture_json(picture, file_name):
    image = figures.grid_picture(picture.images, picture.nrow, picture.row_names)
    return {"png": png_data_url(image), "title": picture.title, "command": picture.command, "note": picture.note,
            "file": file_name}


def pixel_region(cells, shape):
    """A region of token cells as pixels (rows of 0/1): a pixel is painted when every cell it falls in is in the
    region, so demo_requests.region reads back exactly these cells."""
    _, height, width = shape
    grid = cells.shape[0]

    def cells_of(p, size):  # the cells whose adaptive pooling window holds pixel p
        return [i for i in range(grid) if (i * size) // grid <= p < -(-((i + 1) * size) // grid)]

    rows = [cells_of(y, height) for y in range(height)]
    cols = [cells_of(x, width) for x in range(width)]
    return [[int(all(bool(cells[i, j]) for i in rows[y] for j in cols[x])) for x in range(width)]
            for y in range(height)]


class Demo:
    """What the endpoints answer from: the models, and the lock every model call takes."""

    def __init__(self, models):
        self.models = models
        self.lock = threading.Lock()

    def list_models(self, values=None):
        entries, skipped = self.models.scan()
        return {"root": self.models.root, "models": [e.listing() for e in entries], "skipped": skipped,
                "train": [] if entries else list(TRAIN_COMMANDS)}

    def loaded(self, values):
        model_id = values.get("model")
        if not isinstance(model_id, str) or not model_id:
            raise FlagError("choose a model first")
        return self.models.get(model_id)

    def model(self, values):
        with self.lock:
            loaded = self.loaded(values)
            details = self.models.details(loaded)
            details["regions"] = {edit: pixel_region(loaded.default_region(edit), loaded.image_shape)
                                  for edit in loaded.prior.edits}
            return details

    def image(self, values):
        """The picture an edit starts from, as the model reads it: a test image (with its class), or a drawn or
        uploaded one checked for its size and readability."""
        with self.lock:
            loaded = self.loaded(values)
            if demo_requests.source(values) == "test":
                image, label = demo_requests.test_image(values, loaded)
                answer = {"class": loaded.class_names[label], "count": len(loaded.test_images()[0])}
            else:
                image = demo_requests.picture(values.get("image"), loaded.image_shape)
                answer = {}
            picture = figures.grid_picture(data.to_model_range(image[None]), nrow=1)
            # grid_picture pads each image by 2 pixels; the page wants the picture itself
            picture = picture.crop((2, 2, 2 + image.shape[2], 2 + image.shape[1]))
            return {**answer, "png": png_data_url(picture)}

    def run(self, values, work, mode):
        with self.lock:
            loaded = self.loaded(values)
            result = work(loaded, values)
        stem = f"{loaded.entry.name}_{mode}"
        pictures = [picture_json(p, f"{stem}.png") for p in result.pictures]
        frames = [picture_json(p, f"{stem}_frame{i:02d}.png") for i, p in enumerate(result.frames)]
        return {"seconds": result.seconds, "summary": result.summary, "pictures": pictures, "frames": frames}

    def draw(self, values):
        return self.run(values, demo_drawing.draw, "samples")

    def edit(self, values):
        return self.run(values, demo_drawing.edit, "edit")

    def watch(self, values):
        return self.run(values, demo_drawing.watch, "watch")


ENDPOINTS = {"/api/model": Demo.model, "/api/image": Demo.image, "/api/draw": Demo.draw, "/api/edit": Demo.edit,
             "/api/watch": Demo.watch}


def error_line(e):
    return " ".join(str(e).split()) or type(e).__name__


class Handler(BaseHTTPRequestHandler):
    demo = None        # the Demo this server answers from (make_server sets it on a subclass)
    quiet = False
    server_version = "demo"

    def do_GET(self):
        path = urlsplit(self.path).path
        if path in STATIC:
            name, content_type = STATIC[path]
            with open(os.path.join(PAGE_FOLDER, name), "rb") as f:
                self.send(HTTPStatus.OK, f.read(), content_type)
        elif path == "/api/models":
            self.answer(lambda: self.demo.list_models())
        else:
            self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no page at {path}"})

    def do_POST(self):
        path = urlsplit(self.path).path
        if path not in ENDPOINTS:
            return self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {path}"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            return self.send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                  {"error": f"the request is larger than {MAX_BODY // 2 ** 20} MB; give a smaller "
                                            f"picture"})
        try:
            values = json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, UnicodeDecodeError):
            return self.send_json(HTTPStatus.BAD_REQUEST, {"error": "the request is not JSON"})
        if not isinstance(values, dict):
            return self.send_json(HTTPStatus.BAD_REQUEST, {"error": "the request must be a JSON object"})
        self.answer(lambda: ENDPOINTS[path](self.demo, values))

    def answer(self, work):
        try:
            body = work()
        except UserError as e:
            return self.send_json(HTTPStatus.BAD_REQUEST, {"error": error_line(e)})
        except Exception as e:  # a bug: its traceback on the server's terminal, one line on the page
            traceback.print_exc(file=sys.stderr)
            return self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR,
                                  {"error": f"internal error ({type(e).__name__}: {error_line(e)[:200]}); "
                                            f"the server's terminal has the details"})
        self.send_json(HTTPStatus.OK, body)

    def send_json(self, status, body):
        self.send(status, json.dumps(body, allow_nan=False).encode(), "application/json")

    def send(self, status, payload, content_type):
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(payload)
        except ConnectionError:  # the page went away before its answer
            pass

    def log_message(self, format, *args):
        if not self.quiet:
            super().log_message(format, *args)


def make_server(models, host="127.0.0.1", port=0, quiet=False):
    """A ThreadingHTTPServer for the page (port 0: any free port; server.server_address says which)."""
    figures.grid_picture(torch.zeros(1, 1, 4, 4), nrow=1, row_names=["0"])  # its imports and font, before any request
    handler = type("DemoHandler", (Handler,), {"demo": Demo(models), "quiet": quiet})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server

