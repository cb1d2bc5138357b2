"""`serve`: the detector behind an HTTP API (FastAPI + uvicorn) with dynamic batching and a web page."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

from .options import add_run_options, apply_threads


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a checkpoint over HTTP: JSON API, web page at /, Prometheus /metrics",
        description="Serve a detector over HTTP. POST /v1/detect and /v1/explain take a multipart `image`; "
        "GET / is a web page; GET /health, /metrics, /v1/model, /openapi.json. Concurrent requests "
        "are batched (up to --batch-size, waiting at most --max-wait-ms). Without --api-key anyone "
        "who can reach the address can use it, so the default address is loopback only.",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="training checkpoint or run folder, save_pretrained folder, official .pth or HF folder",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=10.0,
        help="how long a batch waits for more requests (default 10; 0 = no waiting)",
    )
    parser.add_argument("--max-queue", type=int, default=64, help="waiting requests before 503 (default 64)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body, MB (default 20)")
    add_run_options(parser)  # --batch-size: requests arriving together share a forward, up to this many
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the forward (CUDA graphs on a GPU), compiled for the common image shape before "
        "serving (about a minute on a GPU, minutes on a CPU; the time is logged)",
    )
    parser.add_argument(
        "--attention-backend",
        choices=["auto", "reference", "cpu", "triton"],
        help="deformable-attention operator backend (default: the model's)",
    )
    parser.add_argument(
        "--api-key",
        help="require `Authorization: Bearer KEY` on /v1/* (default: $DEFORMABLE_DETR_API_KEY if set, else no key)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port, each with its own model and batching (default 1)",
    )
    parser.set_defaults(handler=_serve)


def _serve(args) -> int:
    from ..errors import ConfigError
    from ..inference.load import check_exists
    from ..serving.config import ServeConfig
    from ..serving.runner import load_runner
    from ..serving.server import run_server

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise ConfigError(f"serve needs {error.name}; install it with `pip install 'deformable-detr[serve]'`") from None

    if not 1 <= args.port <= 65535 or args.workers < 1:
        raise ConfigError(f"--port must be 1..65535 and --workers >= 1, got {args.port} and {args.workers}")
    check_exists(args.checkpoint)  # the loader's own line, before the port check and the load
    config = ServeConfig(
        checkpoint=str(args.checkpoint),
        device=args.device,
        amp=args.amp,
        compile=args.compile,
        attention_backend=args.attention_backend,
        batch_size=args.batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_upload_mb=args.max_upload_mb,
        api_key=args.api_key or os.environ.get("DEFORMABLE_DETR_API_KEY") or None,
    )
    apply_threads(args.threads)  # before the workers start: they read OMP_NUM_THREADS
    _check_port_free(args.host, args.port)  # before the model loads, which can take a minute
    runner = load_runner(config)  # a bad checkpoint is one error line here, before anything listens
    if config.api_key is None:
        loopback = _is_loopback(args.host)
        print(
            f"no API key: anyone who can reach {args.host}:{args.port} can use the API"
            + ("" if loopback else " -- this address is reachable from other machines; pass --api-key"),
            file=sys.stderr,
        )
    print(
        f"serving {args.checkpoint} on http://{args.host}:{args.port}/ ({args.workers} worker(s), "
        f"batches of up to {args.batch_size}); Ctrl-C stops after the requests in flight",
        file=sys.stderr,
    )
    return run_server(config, args.host, args.port, args.workers, runner)


def _check_port_free(host: str, port: int) -> None:
    """Raise a ConfigError if nothing could listen on (host, port) now (in use, or an unknown host)."""
    import socket

    from ..errors import ConfigError

    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise ConfigError(f"--host {host}: cannot be resolved ({error.strerror})") from None
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as error:
            raise ConfigError(
                f"--port {port}: cannot listen on {host}:{port} ({error.strerror}); stop what uses it or choose "
                "another --port"
            ) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
