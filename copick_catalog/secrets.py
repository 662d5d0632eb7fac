"""Credentials never reach the catalog, a message or a log: redaction by pattern, in one place.

Configs carry credentials in ``*_fs_args`` (s3fs ``key``/``secret``, ``client_kwargs``, HTTP
``headers.Authorization``, a ``sessionToken``) and sometimes in URLs (``s3://KEY:SECRET@bucket/p``,
``https://user:pass@host``). A fixed list of key names misses most of these, so a key is secret when
its name *says* so (token, secret, password, passphrase, credential, authorization, api/private/access
key, cookie, signature, or exactly ``key``), and every URL loses its user info. :func:`redact` cleans a
structure before it is stored or printed; :func:`secret_values` collects the strings to scrub from
free text (exception messages), and :class:`LogScrubber` does the same for the storage libraries'
log records (botocore logs request headers at DEBUG).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

MASK = "***"

_SECRET_NAME = re.compile(
    r"secret|token|passw|passphrase|credential|authori[sz]ation|api[_-]?key|private[_-]?key|access[_-]?key"
    r"|cookie|signature|^key$|^pwd$",
    re.IGNORECASE,
)
#: ``scheme://user[:password]@`` at the start of a URL, or inside text.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<info>[^/@\s:]+(?::[^/@\s]*)?)@")


def is_secret_key(name: object) -> bool:
    """Whether a mapping key names a credential (``secret_access_key``, ``sessionToken``, ``key``, …)."""
    return isinstance(name, str) and bool(_SECRET_NAME.search(name))


def redact_url(text: str) -> str:
    """``text`` with the user info of every URL in it replaced by ``***`` (``s3://***@bucket/p``)."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)


def redact(value: Any) -> Any:
    """A copy of nested config data with secret-named entries masked and URL user info removed."""
    if isinstance(value, dict):
        return {k: (MASK if is_secret_key(k) and v not in (None, "", {}, []) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_url(value)
    return value


def secret_values(value: Any) -> list[str]:
    """Every credential string inside nested data (values under secret keys, URL user info), longest first."""
    out: set[str] = set()

    def walk(v: Any, secret: bool) -> None:
        if isinstance(v, dict):
            for k, item in v.items():
                walk(item, secret or is_secret_key(k))
        elif isinstance(v, list | tuple):
            for item in v:
                walk(item, secret)
        elif isinstance(v, str) and v:
            if secret:
                out.add(v)
            for m in _USERINFO.finditer(v):
                out.add(m["info"])
                out.update(p for p in m["info"].split(":", 1) if len(p) >= 4)

    walk(value, False)
    return sorted(out, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` and any URL user info replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return redact_url(text)


class LogScrubber(logging.Filter):
    """Replaces known credentials in records of the storage libraries' loggers with ``***``.

    botocore logs every request's headers at DEBUG (the ``Authorization`` header names the access
    key id, ``x-amz-security-token`` carries a session token), and S3 error bodies can echo the key
    id; a user who turns on DEBUG logging to chase a problem must not leak credentials into a log.
    """

    PREFIXES = ("botocore", "aiobotocore", "s3fs", "aiohttp", "urllib3", "fsspec")

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    def add(self, secrets: Iterable[str]) -> None:
        """Scrub these too, and attach to every storage logger that exists by now."""
        self.secrets = sorted(set(self.secrets) | set(secrets), key=len, reverse=True)
        # Logger filters apply only to records of that very logger, so attach to each one.
        for name, logger in list(logging.root.manager.loggerDict.items()):
            if (
                isinstance(logger, logging.Logger)
                and name.split(".")[0] in self.PREFIXES
                and self not in logger.filters
            ):
                logger.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = scrub(message, self.secrets)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


#: The one scrubber every root registers its credentials with.
LOG_SCRUBBER = LogScrubber()

__all__ = ["LOG_SCRUBBER", "MASK", "LogScrubber", "is_secret_key", "redact", "redact_url", "scrub", "secret_values"]
