"""`keel http serve module:app`, contributed to the `keel` command through `keel.cli`.

Why an import string: worker processes and people both name the application the same way
uvicorn users already know (`package.module:attribute`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from keel.http.app_adapter import is_asgi
from keel.http.config import ServerConfig, Timeouts
from keel.http.errors import HttpError
from keel.http.server.backend import BACKEND_NAMES, DEFAULT_BACKEND
from keel.http.server.run import serve
from keel.http.server.server import (
    ASGI_DEFAULT_BACKEND,
    DEFAULT_HOST,
    DEFAULT_PORT,
    tls_context,
)

MAX_PORT = 65535


def load_app(target: str) -> Any:
    """The object `module:attribute` names (the current directory is importable)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"expected 'module:attribute', got {target!r}",
                                 param_hint="APP")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise click.BadParameter(f"cannot import {module_name!r}: {error}",
                                 param_hint="APP") from None
    app = module
    for part in attribute.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise click.BadParameter(f"module {module_name!r} has no attribute {attribute!r}",
                                     param_hint="APP") from None
    return app


@click.group("http")
def http() -> None:
    """keel.http: serve keel and ASGI applications."""


@http.command("serve")
@click.argument("app")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True,
              type=click.IntRange(0, MAX_PORT), help="TCP port (0 picks a free one).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Worker processes (one per core is typical); they share the port "
                   "with SO_REUSEPORT.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default=None,
              help=f"Event loop to run on [default: {DEFAULT_BACKEND} for keel apps, "
                   f"{ASGI_DEFAULT_BACKEND} for ASGI apps].")
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False),
              help="PEM certificate (chain) to serve HTTPS.")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False),
              help="PEM private key, if not inside --certfile.")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="Log one line per request on keel.http.access.")
@click.option("--idle-timeout", default=Timeouts().idle, show_default=True, type=float,
              help="Seconds a keep-alive connection may stay idle.")
def serve_command(app: str, host: str, port: int, workers: int, backend: str | None,
                  certfile: str | None, keyfile: str | None, access_log: bool,
                  idle_timeout: float) -> None:
    """Serve APP, given as module:attribute (a keel Router or any ASGI 3 application)."""
    application = load_app(app)
    if backend is None:
        backend = ASGI_DEFAULT_BACKEND if is_asgi(application) else DEFAULT_BACKEND
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if access_log:
        logging.getLogger("keel.http.access").setLevel(logging.INFO)
    if keyfile and not certfile:
        raise click.UsageError("--keyfile needs --certfile")
    try:
        context = tls_context(certfile, keyfile) if certfile else None
        config = ServerConfig(timeouts=Timeouts(idle=idle_timeout), access_log=access_log)
        scheme = "https" if context else "http"
        click.echo(f"keel http: serving {app} on {scheme}://{host}:{port} "
                   f"({workers} worker{'s' if workers > 1 else ''}, {backend})", err=True)
        serve(application, host=host, port=port, workers=workers, backend=backend,
              config=config, ssl_context=context)
    except (HttpError, ValueError) as error:
        raise click.ClickException(str(error)) from None
