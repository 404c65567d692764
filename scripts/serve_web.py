#!/usr/bin/env python
"""Serve the webcam page on localhost (`make serve-web`): web/ with the model `make web` exported.

Open the printed URL in a browser, start the webcam or pick an image or video: boxes and FPS are drawn
live. Everything is served from this machine (no CDN): the page works offline. Ctrl-C stops it.
Browsers allow the camera on http://localhost and http://127.0.0.1 only (or over https).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder: the repo's utils/

PROG = Path(__file__).name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from utils.export.web import DEFAULT_PORT, WEB_MODEL_DIR

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; keep it local, the camera needs localhost (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="port, 0 for any free one (default: %(default)s)")
    parser.add_argument("--model-dir", type=Path, default=WEB_MODEL_DIR,
                        help="exported model folder served as /model/ (default: %(default)s, made by `make web`)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.common.errors import UserError, report
    from utils.export.web import check_site, make_server

    try:
        check_site(model_dir=args.model_dir)
        server = make_server(args.host, args.port, model_dir=args.model_dir, verbose=args.verbose)
    except UserError as exc:
        return report(PROG, exc)
    except OSError as exc:
        return report(PROG, UserError(f"{args.host}:{args.port}: cannot listen ({exc.strerror or exc}); "
                                      f"pass another --port (make serve-web PORT=...)"))
    host, port = server.server_address[:2]
    print(f"Serving the webcam page at http://{'localhost' if host == '127.0.0.1' else host}:{port}/ "
          f"(Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(f"{PROG}: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
