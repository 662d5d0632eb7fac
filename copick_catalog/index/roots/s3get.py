"""GETs of small S3 objects through obstore (Rust's ``object_store``): the indexer's hot path on S3.

Why: botocore spends ~4 ms of CPU on each request (endpoint rules, event hooks, signing and parsing
in Python), and a full index of a 2,000-run project makes ~23,000 GETs, so on a two-core machine the
client, not the network, set the pace. obstore makes the same signed request in Rust with the GIL
released, for well under a millisecond of Python CPU, so many GETs run at once from plain threads.

Only payload reads go this way; listings, writes and zarr stores stay on s3fs. The endpoint, region
and credentials are the root's own: read from its s3fs filesystem, credentials resolved by botocore
exactly as s3fs resolves them (keys in fs_args, a profile, the environment, an instance role), so a
config that works with s3fs works here. fs_args this module does not know how to translate
(``s3_additional_kwargs`` for SSE-C keys, say) keep the root on s3fs (:func:`fast_getter` returns None),
and a GET that fails here for any reason but a missing key is retried through s3fs by the caller, whose
error then reaches the user: the fast path can make reads faster, never different.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: fs_args (s3fs keyword arguments) this module translates, or that do not affect a GET.
_KNOWN_ARGS = frozenset(
    {
        "key",
        "secret",
        "token",
        "username",
        "password",
        "anon",
        "endpoint_url",
        "client_kwargs",
        "config_kwargs",
        "use_ssl",
        "profile",
        "requester_pays",
        "use_listings_cache",
        "listings_expiry_time",
        "max_paths",
        "skip_instance_cache",
        "default_block_size",
        "default_fill_cache",
        "default_cache_type",
        "cache_regions",
        "max_concurrency",
        "version_aware",
        "asynchronous",
        "loop",
        "fixed_upload_size",
        "local_expiry_check",
    }
)
_KNOWN_CLIENT_ARGS = frozenset(
    {"region_name", "endpoint_url", "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "use_ssl"}
)
_KNOWN_CONFIG_ARGS = frozenset(
    {
        "max_pool_connections",
        "connect_timeout",
        "read_timeout",
        "retries",
        "region_name",
        "signature_version",
        "s3",
        "request_checksum_calculation",
        "response_checksum_validation",
        "user_agent",
        "user_agent_extra",
    }
)
#: obstore's own retries of a failed GET (transient errors), and how long they may take in all.
RETRIES = 3
RETRY_TIMEOUT_S = 20.0
#: Refresh credentials from botocore this often (botocore itself refreshes role credentials before they expire).
CREDENTIAL_TTL = dt.timedelta(minutes=5)
_S3_CODE = re.compile(r"<Code>([^<]{1,64})</Code>")
_STATUS = re.compile(r"status code: (\d{3}[^:]*)")


class FastGetError(OSError):
    """A GET through obstore failed for a reason other than a missing key; the caller retries through s3fs."""


def unsupported_args(fs_args: dict[str, Any]) -> list[str]:
    """The fs_args a GET through obstore would not honour (empty: the fast path is safe)."""
    bad = [k for k in fs_args if k not in _KNOWN_ARGS]
    bad += [f"client_kwargs.{k}" for k in fs_args.get("client_kwargs") or {} if k not in _KNOWN_CLIENT_ARGS]
    bad += [f"config_kwargs.{k}" for k in fs_args.get("config_kwargs") or {} if k not in _KNOWN_CONFIG_ARGS]
    config = fs_args.get("config_kwargs") or {}
    s3_config = config.get("s3") or {}
    if not isinstance(s3_config, dict) or set(s3_config) - {"addressing_style"}:
        bad.append("config_kwargs.s3")
    if config.get("signature_version") not in (None, "s3v4", "v4"):
        bad.append("config_kwargs.signature_version")
    return bad


def fast_getter(fs: Any, bucket: str, fs_args: dict[str, Any]) -> FastGetter | None:
    """A :class:`FastGetter` for ``bucket`` on ``fs`` (an ``S3FileSystem``), or None to stay on s3fs.

    None when obstore is not installed or the fs_args ask for something it would not do the same way.
    """
    try:
        import obstore  # noqa: F401
    except ImportError:
        log.debug("obstore is not installed: S3 payloads are read through s3fs")
        return None
    bad = unsupported_args(fs_args)
    if bad:
        log.debug("S3 payloads of bucket %s are read through s3fs (fs_args %s)", bucket, ", ".join(sorted(bad)))
        return None
    return FastGetter(fs, bucket, fs_args)


class FastGetter:
    """Signed GETs of one bucket through obstore, safe to call from many threads at once.

    The store is built on first use: it needs s3fs's connected client (region, credentials), and a
    root that only ever lists should not pay for it.
    """

    def __init__(self, fs: Any, bucket: str, fs_args: dict[str, Any]) -> None:
        self.fs = fs
        self.bucket = bucket
        self.fs_args = fs_args
        self._store: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the store

    def store(self) -> Any:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = self._build()
        return self._store

    def _build(self) -> Any:
        from obstore.store import S3Store

        args = self.fs_args
        client_kwargs = dict(args.get("client_kwargs") or {})
        config_kwargs = dict(args.get("config_kwargs") or {})
        self.fs.connect()  # the botocore client: its region is what s3fs would use
        meta = self.fs.s3.meta
        endpoint = args.get("endpoint_url") or client_kwargs.get("endpoint_url")
        options: dict[str, Any] = {}
        if endpoint and str(endpoint).startswith("http://"):
            options["allow_http"] = True
        for ours, theirs in (("connect_timeout", "connect_timeout"), ("read_timeout", "timeout")):
            if config_kwargs.get(ours) is not None:
                options[theirs] = dt.timedelta(seconds=float(config_kwargs[ours]))
        style = (config_kwargs.get("s3") or {}).get("addressing_style", "auto")
        config: dict[str, Any] = {"region": meta.region_name or "us-east-1"}
        if endpoint:
            config["endpoint"] = str(endpoint)
            virtual = style == "virtual"
        else:
            virtual = style != "path" and "." not in self.bucket
        config["virtual_hosted_style_request"] = virtual
        if args.get("requester_pays"):
            config["request_payer"] = True
        provider: Callable[[], dict[str, Any]] | None = None
        if args.get("anon"):
            config["skip_signature"] = True
        else:
            provider = self._credentials
        # a few quick retries: a read that still fails is retried through s3fs (with its own retries)
        retry = {"max_retries": RETRIES, "retry_timeout": dt.timedelta(seconds=RETRY_TIMEOUT_S)}
        return S3Store(
            self.bucket,
            config=config,  # type: ignore[arg-type]
            client_options=options,  # type: ignore[arg-type]
            retry_config=retry,  # type: ignore[arg-type]
            credential_provider=provider,  # type: ignore[arg-type]
        )

    def _credentials(self) -> dict[str, Any]:
        """Credentials for obstore, from the same places s3fs takes them (called by obstore, any thread)."""
        args = self.fs_args
        client_kwargs = args.get("client_kwargs") or {}
        key = args.get("key") or args.get("username") or client_kwargs.get("aws_access_key_id")
        secret = args.get("secret") or args.get("password") or client_kwargs.get("aws_secret_access_key")
        token = args.get("token") or client_kwargs.get("aws_session_token")
        if key and secret:
            return {"access_key_id": key, "secret_access_key": secret, "token": token, "expires_at": None}
        from fsspec.asyn import sync

        async def resolve() -> Any:
            creds = await self.fs.session.get_credentials()
            return None if creds is None else await creds.get_frozen_credentials()

        frozen = sync(self.fs.loop, resolve)
        if frozen is None:
            raise FastGetError("no AWS credentials found (botocore found none for this root)")
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": dt.datetime.now(dt.UTC) + CREDENTIAL_TTL,
        }

    # ------------------------------------------------------------------ reads

    def get(self, key: str, limit: int | None = None) -> bytes:
        """The object's bytes; :class:`ObjectTooLarge` (before its body is read) if it exceeds ``limit``."""
        import obstore

        try:
            result = obstore.get(self.store(), key)
            size = int(result.meta["size"])
            if limit is not None and size > limit:
                raise ObjectTooLarge(size)
            return bytes(result.bytes())
        except ObjectTooLarge:
            raise
        except Exception as exc:
            raise translate(exc, key) from None

    def head_bytes(self, key: str, n: int) -> bytes:
        """The first ``n`` bytes (fewer if the object is shorter; empty for an empty object)."""
        import obstore

        try:
            return bytes(obstore.get(self.store(), key, options={"range": (0, n)}).bytes())
        except Exception as exc:
            err = translate(exc, key)
            if "InvalidRange" in str(err):  # S3 answers 416 to any range of an empty object
                return b""
            raise err from None

    def get_many(self, keys: list[str], limit: int | None = None) -> list[bytes | Exception]:
        """Several objects at once (one round trip of latency, not one per key); failures in place."""
        import obstore

        store = self.store()

        async def one(key: str) -> bytes | Exception:
            try:
                result = await obstore.get_async(store, key)
                size = int(result.meta["size"])
                if limit is not None and size > limit:
                    return ObjectTooLarge(size)
                return bytes(await result.bytes_async())
            except Exception as exc:
                return translate(exc, key)

        async def main() -> list[bytes | Exception]:
            return list(await asyncio.gather(*(one(k) for k in keys)))

        return asyncio.run(main())


class ObjectTooLarge(Exception):
    """The object is larger than the caller's limit; raised before its body is read."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes")
        self.size = size


def translate(exc: BaseException, key: str) -> OSError:
    """A one-line OSError for an obstore failure: FileNotFoundError for a missing key, else FastGetError."""
    text = str(exc)
    first = text.split("\n", 1)[0]
    code = _S3_CODE.search(text)
    status = _STATUS.search(first)
    detail = " ".join(p for p in ((status[1].strip() if status else ""), (code[1] if code else "")) if p)
    if not detail:
        detail = first.split(": <?xml", 1)[0][:200]
    if isinstance(exc, FileNotFoundError) and (code is None or code[1] == "NoSuchKey"):
        return FileNotFoundError(2, f"no such key ({detail})", key)
    return FastGetError(f"GET {key} failed: {type(exc).__name__}: {detail}")


__all__ = ["FastGetError", "FastGetter", "ObjectTooLarge", "fast_getter", "translate", "unsupported_args"]
