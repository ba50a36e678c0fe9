"""``stablecnn serve RUN_DIR_OR_CHECKPOINT``: a page to draw or drop a picture on, and the JSON API.

Loads the model once (:class:`stablecnn.serve.Predictor`), binds ``--host`` (127.0.0.1 by
default, this machine only; any other address prints a warning) and ``--port`` (8000; 0 picks a
free one), prints the URL and serves until Ctrl-C, which stops it with status 0. See
:mod:`stablecnn.serve.server` for the routes and statuses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def port_number(text: str) -> int:
    """A TCP port 0-65535 (0: a free port the system picks), or an argparse error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0-65535, got {value}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``serve CKPT [--host H] [--port P] [--log-requests]`` on ``subparsers``."""
    from stablecnn.serve.inputs import MAX_BODY_BYTES

    parser = subparsers.add_parser(
        "serve",
        help="serve a page to draw or drop a picture on and the model's JSON API",
        description="Serve a web page where you draw (mouse, touch or pen) or drop a picture and "
        "the model names it as you draw: a bar per class, the 28 x 28 input a grey model "
        "sees after the MNIST framing (as `stablecnn predict` frames pictures), the first "
        "convolution's feature maps and a model card. The page and its script ship with "
        "stablecnn and load nothing from elsewhere. The JSON API: GET /api/model, and POST "
        '/api/predict with {"image": "data:image/png;base64,..."}, {"pixels": [[28 rows of '
        '28 values 0-255]]} (add "feature_maps": true for the first convolution\'s output) or '
        f"a picture's bytes as image/png, image/jpeg, ...; bodies up to {MAX_BODY_BYTES:,} "
        "bytes. Nothing is written to disk. Ctrl-C stops the server.",
    )
    parser.add_argument("checkpoint", type=Path, help="a checkpoint .npz or a run directory")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 or another "
        "address lets other machines in, with a warning: there is no login and no TLS)",
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=8000,
        help="TCP port (default 8000; 0: a free port, printed)",
    )
    parser.add_argument(
        "--log-requests",
        action="store_true",
        help="print a line per request on stderr",
    )
    parser.set_defaults(func=cmd_serve)
    return parser


def cmd_serve(args) -> int:
    from stablecnn.serve import Predictor, exposure_warning, make_server

    predictor = Predictor.load(args.checkpoint)
    server = make_server(predictor, args.host, args.port, log_requests=args.log_requests)
    warning = exposure_warning(args.host)
    if warning:
        print(f"stablecnn serve: {warning}", file=sys.stderr)
    card, about = predictor.card, []
    if card["dataset"]:
        about.append(card["dataset"])
    if card["test_accuracy"] is not None:
        tta = f" with test-time augmentation {card['test_tta']}" if card["test_tta"] else ""
        about.append(f"test accuracy {100 * card['test_accuracy']:.2f}%{tta}")
    name = f"{card['name']} ({', '.join(about)})" if about else card["name"]
    print(f"serving {name} from {args.checkpoint} at {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stablecnn serve: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
