"""Server limits and timeouts.

Why named, bounded defaults: every byte from a socket is hostile, so each quantity the peer
controls (request line, header bytes and count, body size, time spent sending them) has a
ceiling here, and the sans-IO core enforces it before allocating more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KIBIBYTE = 1024
MEBIBYTE = 1024 * KIBIBYTE

DEFAULT_MAX_REQUEST_LINE = 8 * KIBIBYTE
DEFAULT_MAX_HEADER_BYTES = 64 * KIBIBYTE
DEFAULT_MAX_HEADER_COUNT = 100
DEFAULT_MAX_BODY_BYTES = 16 * MEBIBYTE
DEFAULT_MAX_DRAIN_BYTES = 256 * KIBIBYTE
DEFAULT_READ_SIZE = 64 * KIBIBYTE
DEFAULT_WRITE_HIGH_WATER = 64 * KIBIBYTE

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 5.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_SEND_TIMEOUT = 30.0
DEFAULT_SHUTDOWN_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Ceilings on what one request may make the server hold."""

    max_request_line: int = DEFAULT_MAX_REQUEST_LINE
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_header_count: int = DEFAULT_MAX_HEADER_COUNT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Unread request body the server will still read and discard to keep a connection alive.
    max_drain_bytes: int = DEFAULT_MAX_DRAIN_BYTES
    read_size: int = DEFAULT_READ_SIZE
    # Bytes queued for a slow reader before `send` waits for the socket to drain.
    write_high_water: int = DEFAULT_WRITE_HIGH_WATER

    def __post_init__(self) -> None:
        for name in ("max_request_line", "max_header_bytes", "max_header_count",
                     "max_body_bytes", "read_size", "write_high_water"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")
        if self.max_drain_bytes < 0:
            raise ValueError(f"Limits.max_drain_bytes must be >= 0, got {self.max_drain_bytes}")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds the server waits for each thing the peer must do."""

    header: float = DEFAULT_HEADER_TIMEOUT  # from a request's first byte to its last header
    idle: float = DEFAULT_IDLE_TIMEOUT  # between requests on a keep-alive connection
    body: float = DEFAULT_BODY_TIMEOUT  # between two reads of a request body
    send: float = DEFAULT_SEND_TIMEOUT  # for a slow reader to accept queued response bytes
    shutdown: float = DEFAULT_SHUTDOWN_TIMEOUT  # for in-flight requests on graceful shutdown

    def __post_init__(self) -> None:
        for name in ("header", "idle", "body", "send", "shutdown"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"Timeouts.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything the connection driver needs besides the application."""

    limits: Limits = field(default_factory=Limits)
    timeouts: Timeouts = field(default_factory=Timeouts)
    server_header: str = "keel"
    access_log: bool = False
