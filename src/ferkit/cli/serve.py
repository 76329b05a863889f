"""``ferkit serve``: the web page and JSON API (FastAPI + uvicorn), on 127.0.0.1 by default."""
from __future__ import annotations

import argparse
import sys

from ferkit.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    from ferkit.cli.predict import add_model_args

    p = sub.add_parser("serve", help="web page and API: upload photos or use the live camera",
                       description="Serve one page (photo upload and live camera) and a JSON API "
                                   "(POST /api/predict, GET /api/health, docs at /docs).")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default %(default)s: this computer only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="upload size limit (default %(default)s MB)")
    p.add_argument("--smooth", type=float, default=0.4, metavar="ALPHA",
                   help="live camera: weight of the newest frame in each face's moving average")
    p.add_argument("--live-detect-size", type=int, default=480, metavar="PX",
                   help="longer side camera frames are shrunk to before detection (default %(default)s)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_model_args(p)
    # One engine thread per request: requests run in parallel, and ONNX Runtime's spinning worker threads
    # otherwise steal the CPU from face detection (benchmarks/realtime.py: 12 vs 7 frames/s on 2 cores).
    p.set_defaults(func=run, threads=1)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ferkit.app.server import Settings, create_app
    from ferkit.cli.predict import load_analyzer

    if args.max_upload_mb <= 0:
        raise InputError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if not 0.0 < args.smooth <= 1.0:
        raise InputError(f"--smooth must be in (0, 1], got {args.smooth}")
    analyzer = load_analyzer(args)  # load the model (and check the detector) now: errors are one line here
    settings = Settings(model=args.model, backend=args.backend, tta=args.tta, threads=args.threads,
                        detector=args.detector, yunet_model=args.yunet_model, margin=args.margin,
                        detect_size=args.detect_size, live_detect_size=args.live_detect_size, smooth=args.smooth,
                        max_upload_mb=args.max_upload_mb)
    app = create_app(settings, recognizer=analyzer.recognizer)
    print(f"ferkit: serving {getattr(analyzer.recognizer, 'name', 'model')} on http://{args.host}:{args.port} "
          "(Ctrl+C to stop)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                ws_max_size=settings.max_upload_bytes + 1024)
    return 0
