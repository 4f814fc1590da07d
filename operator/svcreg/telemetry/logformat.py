"""Log formats for ``svcreg run``: text for a terminal (the default), JSON for collectors.

A JSON line carries ``time`` (RFC 3339, UTC), ``level``, ``logger`` and ``message``, the
request fields an access log line adds through ``extra`` (``request_id``, ``method``,
``route``, ``status``, ``caller``, ``latency_ms``), and ``exception`` when there is one.
"""

from __future__ import annotations

import datetime
import json
import logging

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = ("request_id", "method", "route", "path", "status", "caller", "latency_ms")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: int | str, log_format: str) -> None:
    """Root logging for the process: ``log_format`` is TEXT or JSON."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format.upper() == "JSON" else logging.Formatter(TEXT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
