"""``ferkit serve``: the web page and JSON API (FastAPI + uvicorn), on 127.0.0.1 by default."""

from __future__ import annotations

import argparse
import errno
import socket
import sys

from ferkit.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    from ferkit.cli.predict import add_model_args

    p = sub.add_parser(
        "serve",
        help="web page and API: upload photos or use the live camera",
        description="Serve one page (photo upload and live camera) and a JSON API "
        "(POST /api/predict, GET /api/health, docs at /docs).",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default %(default)s: this computer only; 0.0.0.0 exposes it)",
    )
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default %(default)s)")
    p.add_argument(
        "--max-upload-mb", type=float, default=10.0, help="upload size limit (default %(default)s MB)"
    )
    p.add_argument(
        "--max-video-mb", type=float, default=50.0, help="video upload size limit (default %(default)s MB)"
    )
    p.add_argument(
        "--max-video-seconds",
        type=float,
        default=60.0,
        help="longest video the page and API analyse (default %(default)s s)",
    )
    p.add_argument(
        "--smooth",
        type=float,
        default=0.4,
        metavar="ALPHA",
        help="live camera: weight of the newest frame in each face's moving average",
    )
    p.add_argument(
        "--live-detect-size",
        type=int,
        default=480,
        metavar="PX",
        help="longer side camera frames are shrunk to before detection (default %(default)s)",
    )
    _add_limit_args(p)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_model_args(p)
    # One engine thread per request: requests run in parallel, and ONNX Runtime's spinning worker threads
    # otherwise steal the CPU from face detection (benchmarks/realtime.py: 12 vs 7 frames/s on 2 cores).
    p.set_defaults(func=run, threads=1)


def _add_limit_args(p: argparse.ArgumentParser) -> None:
    """Who may connect and how much the server takes on at once."""
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="URL",
        help="a web page origin (https://host:port) other than this server that may use the "
        "live camera socket; repeat for several, '*' for any (default: this server's "
        "own page)",
    )
    p.add_argument(
        "--max-parallel",
        type=int,
        default=2,
        metavar="N",
        help="uploads/frames decoded and analysed at once (default %(default)s)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=8,
        metavar="N",
        help="more that may wait for a turn; beyond that the answer is 503 + Retry-After "
        "(default %(default)s)",
    )
    p.add_argument(
        "--max-live",
        type=int,
        default=None,
        metavar="N",
        help="live camera sockets open at once, below --max-connections (default: 16, or one less than "
        "--max-connections when that is 16 or fewer; 0: no live camera)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=64,
        metavar="N",
        help="open connections and requests at once; beyond that the answer is 503 (default %(default)s)",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=20.0,
        metavar="S",
        help="seconds a client has to send a request's headers, and again its body (default %(default)g)",
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ferkit.app.protocol import quiet_client_faults, with_header_timeout
    from ferkit.app.server import Settings, create_app
    from ferkit.cli.predict import load_analyzer

    for flag in ("max_upload_mb", "max_video_mb", "max_video_seconds"):
        if not getattr(args, flag) > 0:
            raise InputError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if not 0.0 < args.smooth <= 1.0:
        raise InputError(f"--smooth must be in (0, 1], got {args.smooth}")
    for flag in ("max_parallel", "max_connections"):
        if getattr(args, flag) < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.max_live is None:
        args.max_live = min(16, args.max_connections - 1)
    if args.max_live < 0:
        raise InputError(f"--max-live must be 0 or more, got {args.max_live}")
    if args.max_live >= args.max_connections:
        raise InputError(
            f"--max-live ({args.max_live}) must be below --max-connections ({args.max_connections}), "
            "or open cameras could shut out every other request"
        )
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be between 0 (any free port) and 65535, got {args.port}")
    if args.max_queue < 0:
        raise InputError(f"--max-queue must be 0 or more, got {args.max_queue}")
    if not args.request_timeout > 0:
        raise InputError(f"--request-timeout must be positive, got {args.request_timeout}")
    sock = bind_socket(args.host, args.port)  # a busy port fails here, before anything says "serving"
    try:
        analyzer = load_analyzer(args)  # load the model (and check the detector) now: one-line errors here
        settings = Settings(
            model=args.model,
            backend=args.backend,
            tta=args.tta,
            threads=args.threads,
            detector=args.detector,
            yunet_model=args.yunet_model,
            margin=args.margin,
            detect_size=args.detect_size,
            live_detect_size=args.live_detect_size,
            smooth=args.smooth,
            max_live=args.max_live,
            max_upload_mb=args.max_upload_mb,
            max_video_mb=args.max_video_mb,
            max_video_seconds=args.max_video_seconds,
            max_parallel=args.max_parallel,
            max_queue=args.max_queue,
            request_timeout=args.request_timeout,
            allow_origins=tuple(args.allow_origin),
        )
        app = create_app(settings, recognizer=analyzer.recognizer)
        config = uvicorn.Config(
            app,
            log_level=args.log_level,
            http=with_header_timeout(args.request_timeout),
            ws_max_size=settings.max_upload_bytes + 1024,
            limit_concurrency=args.max_connections,
            timeout_keep_alive=5,
        )
        quiet_client_faults()
        print(
            f"ferkit: serving {getattr(analyzer.recognizer, 'name', 'model')} on "
            f"http://{_url_host(args.host)}:{sock.getsockname()[1]} (Ctrl+C to stop)",
            file=sys.stderr,
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (as uvicorn binds it); OSError with a clear message if taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise InputError(f"--host {host}: not an address of this computer ({e})") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        hint = " (another program is using it: choose one with --port)" if e.errno == errno.EADDRINUSE else ""
        raise OSError(e.errno, f"cannot listen on {_url_host(host)}:{port}: {e.strerror}{hint}") from None
    sock.set_inheritable(True)
    return sock
