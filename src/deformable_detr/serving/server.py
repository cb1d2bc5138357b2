"""Running the app under uvicorn: one process, or `workers` processes sharing one listening socket.

With `workers > 1` uvicorn starts each worker by importing `deformable_detr.serving.app:app_from_env`,
so the `ServeConfig` travels as JSON in $DEFORMABLE_DETR_SERVE_CONFIG; every worker loads its own
copy of the model and batches only its own requests (the kernel spreads connections over them).
"""

from __future__ import annotations

import os

import uvicorn

from deformable_detr.serving.app import create_app
from deformable_detr.serving.config import ENV_VAR, ServeConfig
from deformable_detr.serving.runner import ModelRunner, load_runner

# Seconds uvicorn waits for in-flight requests on Ctrl-C / SIGTERM before closing connections.
GRACEFUL_SHUTDOWN_S = 60


def run_server(config: ServeConfig, host: str, port: int, workers: int = 1, runner: ModelRunner | None = None) -> int:
    """Serve `runner` (default: `config.checkpoint` loaded here) until interrupted (Ctrl-C or SIGTERM: stop accepting, finish in-flight requests, exit).

    Raises:
        CheckpointError, ValueError, OSError: the checkpoint cannot be loaded (before anything listens).

    Returns:
        the exit status: 0 after a clean shutdown, 1 when the server could not start (e.g. port in use).
        After a signal uvicorn re-raises it once shut down, so the process ends by that signal (143 for SIGTERM).
    """
    common = dict(host=host, port=port, log_level="info", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    runner = runner or load_runner(config)  # a bad checkpoint is one error line here, not a worker's traceback
    if workers == 1:
        server = uvicorn.Server(uvicorn.Config(create_app(config, runner), **common))
        server.run()
        return 0 if server.started else 1
    del runner  # each worker loads its own copy
    os.environ[ENV_VAR] = config.to_json()
    uvicorn.run("deformable_detr.serving.app:app_from_env", factory=True, workers=workers, **common)
    return 0
