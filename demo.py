"""A page to play with the trained models in a browser: draw samples, edit a picture, watch a sample form.

    python demo.py                              # http://127.0.0.1:8000, the models under checkpoints/
    python demo.py --port 8080                  # another port
    python demo.py --checkpoints ~/runs         # the models under another folder

It finds every trained prior under the folder (any depth: checkpoints/, checkpoints/fashion_mnist/, a run's own
subfolder, ...) with the tokenizer it was trained on, and loads each one when the page first asks for it. Every
picture shows the `python generator.py ...` command that draws it again. The page is served by Python's own HTTP
server and needs nothing from the network.

By default only this machine can open the page (127.0.0.1). --host 0.0.0.0 opens it to every machine that can reach
the port: anyone there can then run the models on this machine's CPU or GPU, with no password.
"""
from pipeline import cli
from pipeline.demo_models import Models
from pipeline.demo_server import make_server
from pipeline.errors import FlagError

PORT = 8000


def command_line():
    """The script's flags (README's commands are parsed with it in the tests)."""
    parser = cli.make_parser("Serve a page to draw, edit and watch samples of the trained models.")
    parser.add_argument("--checkpoints", default="checkpoints", type=cli.user_path, metavar="DIR",
                        help="the folder searched (at any depth) for trained priors (default: checkpoints)")
    parser.add_argument("--port", type=int, default=PORT, help=f"port of the page (default {PORT}; 0: any free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (default 127.0.0.1: this machine only). Any other, such as "
                             "0.0.0.0, exposes the page: anyone who can reach the port can use this machine's "
                             "CPU/GPU through it, with no password or other check")
    parser.add_argument("--quiet", action="store_true", help="no line per request on the terminal")
    return parser


def main(argv=None):
    args, cfg = cli.parse_config(command_line(), argv)
    with cli.one_line_errors():
        if not 0 <= args.port <= 65535:
            raise FlagError(f"--port must be from 0 to 65535 (got {args.port})")
        try:
            server = make_server(Models(args.checkpoints, cfg, args.overrides), args.host, args.port, args.quiet)
        except OSError as e:
            raise FlagError(f"cannot serve on {args.host}:{args.port} ({e.strerror or e}); "
                            f"give another --port (or --host)") from None
    host, port = server.server_address[:2]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"serving on {host}: anyone who can reach port {port} can use this page and the machine's CPU/GPU")
    print(f"the models under {args.checkpoints}: http://{host}:{port}/  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
