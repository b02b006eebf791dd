"""Structured logs: one JSON object a line on stderr (or a console rendering for humans).

botocore, urllib3 and APScheduler log through the same pipeline (held at INFO or above). A redaction
processor is the second line of defence of I7: the first is that events never carry secret material.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from rotator.events import ClockSkew, Event, KeyDisabled

# An AWS secret access key is 40 characters of base64; session tokens are longer. A 40-character
# run of that alphabet that is not an access key id (AKIA/ASIA...) is masked wherever it appears.
_SECRET_LIKE = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_SECRET_FIELDS = re.compile(r"secret|password|token|credential", re.IGNORECASE)
# Library loggers, held at INFO or above whatever --log-level says; botocore's INFO lines (where
# it found credentials, which endpoint) are chatter, so it starts at WARNING.
_FLOORS = {
    "botocore": logging.WARNING,
    "boto3": logging.WARNING,
    "urllib3": logging.WARNING,
    "apscheduler": logging.INFO,
}


# Whatever follows a field named like a secret key in XML, JSON or key=value text, however short (a
# response cut off mid-key leaves fewer than 40 characters for the pattern above to catch).
_SECRET_VALUE = re.compile(
    r"(?P<name>(?:SecretAccessKey|secret_access_key|SessionToken|aws_session_token)['\"]?\s*(?:>|:|=)\s*['\"]?)"
    r"[^<'\"\s,}]+",
)


def redact_text(text: str) -> str:
    return _SECRET_LIKE.sub("[REDACTED]", _SECRET_VALUE.sub(r"\g<name>[REDACTED]", text))


def _redacted_traceback(sio: TextIO, exc_info: Any) -> None:
    """structlog's plain traceback (no locals), redacted like every other field (I7)."""
    buffer = io.StringIO()
    structlog.dev.plain_traceback(buffer, exc_info)
    sio.write(redact_text(buffer.getvalue()))


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: ("[REDACTED]" if _is_secret_field(k, v) else _redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def _is_secret_field(key: object, value: object) -> bool:
    return isinstance(key, str) and bool(_SECRET_FIELDS.search(key)) and isinstance(value, str) and key != "secret"


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-looking values and secret-named fields."""
    for key in list(event_dict):
        value = event_dict[key]
        event_dict[key] = "[REDACTED]" if _is_secret_field(key, value) else _redact(value)
    return event_dict


def configure(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog and route stdlib logging through it. Idempotent."""
    stream = stream or sys.stderr
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    handler = logging.StreamHandler(stream)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        timestamper,
    ]
    renderer: Any
    if fmt == "console":
        # plain_traceback: with rich or better-exceptions installed, the default formatter would print
        # every frame's local variables, and a local can hold a secret access key (I7).
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty(), exception_formatter=_redacted_traceback)
        exc_processors: list[Any] = []
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        # Tracebacks as structured data, without local variables (they could hold secrets).
        exc_processors = [
            structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
        ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            *exc_processors,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_LineLoggerFactory(handler),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exc_processors,
            redact,
            renderer,
        ],
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name, floor in _FLOORS.items():
        logging.getLogger(name).setLevel(max(numeric, floor))
    # What would otherwise reach stderr as plain text goes through the same pipeline: warnings, and an
    # exception that ends a thread (the HTTP server's handler errors are logged by the server itself).
    logging.captureWarnings(True)
    threading.excepthook = _thread_exception


def _thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    thread = args.thread.name if args.thread is not None else ""
    error = args.exc_value if args.exc_value is not None else args.exc_type()
    logging.getLogger("rotator").error("thread.crashed", exc_info=error, extra={"thread": thread})


class _LineLogger:
    """structlog's output: one write per line under the stdlib handler's lock.

    structlog's PrintLogger writes a line and its newline in two calls under a lock of its own, so a
    stdlib record (botocore, APScheduler) from another thread could land in between and break the
    one-JSON-object-a-line contract. Sharing the handler's lock serialises both paths.
    """

    def __init__(self, handler: logging.StreamHandler[TextIO]) -> None:
        self._handler = handler

    def msg(self, message: str) -> None:
        self._handler.acquire()
        try:
            self._handler.stream.write(message + "\n")
            self._handler.stream.flush()
        finally:
            self._handler.release()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


class _LineLoggerFactory:
    def __init__(self, handler: logging.StreamHandler[TextIO]) -> None:
        self._handler = handler

    def __call__(self, *_args: Any) -> _LineLogger:
        return _LineLogger(self._handler)


def log_subscriber(event: Event) -> None:
    """Write an event as one log line: ``event`` is its stable dotted name."""
    if event.name in ("aws.call", "inventory.snapshot"):
        return
    level = event.level
    if (isinstance(event, KeyDisabled) and event.loud) or (isinstance(event, ClockSkew) and not event.plausible):
        level = "warning"
    logger = structlog.get_logger("rotator")
    getattr(logger, level)(event.name, **event.fields())
