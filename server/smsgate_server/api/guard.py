"""The request guard: authenticates each call and turns domain errors into
statuses with details.

Credentials travel as ``authorization: Bearer <app_key>.<app_secret>``. The
authenticated app is put in a context variable for the servicer (``current_app``).
Health and reflection stay open, so probes and ``buf curl`` listing need no token.

The header is parsed strictly: ``Bearer`` (any case, RFC 6750 / RFC 9110
schemes are case-insensitive), one space, and a token of exactly the shape
the server issues; anything else is UNAUTHENTICATED without a Redis look-up.
Verified tokens are cached by app key, with the secret's hash to compare, so
spellings of a header cannot multiply the entries.

A request body that is not protobuf never reaches ``grpc.aio``'s own error
path (UNKNOWN, the parser's text, a traceback per call): the guarded
deserializer hands the handler a marker instead, and the handler answers
INVALID_ARGUMENT (MALFORMED_REQUEST) once the caller is authenticated, so a
caller without credentials learns nothing about the body.

``RequestGuard.guarding(server)`` applies the guard without a gRPC interceptor:
it wraps each method handler once, as it is registered. A ``grpc.aio``
interceptor costs an extra coroutine chain on every call (about 10% of a bare
echo's throughput, bench/RESULTS.md); the wrapped handlers do the same work
for nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from smsgate_server.api.errors import STATUS_DETAILS_KEY, grpc_code_of, to_rpc_status
from smsgate_server.domain.apps import App, hash_secret, parse_token, secret_matches
from smsgate_server.domain.errors import (
    FieldViolation,
    InvalidArgument,
    Reason,
    SmsgateError,
    Unauthenticated,
)
from smsgate_server.logs import RepeatedLog
from smsgate_server.metrics import RPC_SECONDS, RPCS
from smsgate_server.store.apps import AppStore

__all__ = [
    "GuardedServer",
    "RequestGuard",
    "TokenCache",
    "Undecodable",
    "current_app",
    "parse_authorization",
]

log = logging.getLogger("smsgate.api")

_app: contextvars.ContextVar[App] = contextvars.ContextVar("smsgate_app")
_OPEN_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
# Seconds between two log lines of one repeated failure.
LOG_EVERY = 5.0
_bugs = RepeatedLog(log, "unexpected error", every=LOG_EVERY, level=logging.ERROR)
_undecodable = RepeatedLog(log, "request bodies that do not decode", every=LOG_EVERY)


class Undecodable:
    """What a guarded deserializer returns for bytes that are not the request,
    and what another face (api/connect.py) hands the handler for a body it
    could not parse: the violation is answered only once the caller is
    authenticated."""

    __slots__ = ("violation",)

    def __init__(self, violation: FieldViolation) -> None:
        self.violation = violation


_UNDECODABLE = Undecodable(
    FieldViolation("", "the request body is not a valid protobuf request message")
)


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer``, returning _UNDECODABLE where it would raise: grpc.aio
    runs it before any handler, and answers what it raises with UNKNOWN."""
    if deserializer is None:
        return None
    parse = deserializer

    def deserialize(raw: bytes) -> Any:
        try:
            return parse(raw)
        except DecodeError:
            return _UNDECODABLE

    return deserialize


def _check_decoded(request: Any, method: str) -> None:
    """MALFORMED_REQUEST for a body the guarded deserializer could not read."""
    if isinstance(request, Undecodable):
        _undecodable.occurred(method, method=method)
        raise InvalidArgument(request.violation, reason=Reason.MALFORMED_REQUEST)


async def _answer(result: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Run a library's streaming handler from inside a coroutine handler.

    grpc.aio takes either kind: a coroutine that writes with ``context.write``
    (grpc_health's Watch) or an async generator that yields (reflection). The
    wrapper is always a coroutine, so it awaits the first kind and writes what
    the second yields."""
    if inspect.isawaitable(result):
        await result
        return
    async for item in result:
        await context.write(item)


def _refused(request: Any, context: grpc.aio.ServicerContext[Any, Any], name: str) -> bool:
    """Whether ``request`` could not be decoded; if so the call's status says
    MALFORMED_REQUEST."""
    try:
        _check_decoded(request, name)
    except InvalidArgument as exc:
        _fail(context, exc, name)
        return True
    return False


def _open(method: str, handler: Handler) -> Handler:
    """An open method (health Check and Watch, reflection) whose undecodable
    bodies are MALFORMED_REQUEST too, without forking the libraries that serve
    them; no credentials, no metrics."""
    name = method.rsplit("/", 1)[-1]
    tolerant = _tolerant(handler.request_deserializer)
    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        inner: Any = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if _refused(request, context, name):
                return None
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, tolerant, serializer)
    if handler.unary_stream is not None:
        inner_stream: Any = handler.unary_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            if not _refused(request, context, name):
                await _answer(inner_stream(request, context), context)

        return grpc.unary_stream_rpc_method_handler(stream, tolerant, serializer)
    if handler.stream_stream is not None:
        inner_streams: Any = handler.stream_stream

        async def streams(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> None:
            # The library's loop reads the requests: a bad one ends the call
            # through it, with the status set here.
            async def checked() -> AsyncIterator[Any]:
                async for request in requests:
                    _check_decoded(request, name)
                    yield request

            try:
                await _answer(inner_streams(checked(), context), context)
            except InvalidArgument as exc:
                _fail(context, exc, name)

        return grpc.stream_stream_rpc_method_handler(streams, tolerant, serializer)
    return handler


def current_app() -> App:
    """The app making the current call (set by RequestGuard)."""
    return _app.get()


def _fail(context: grpc.aio.ServicerContext[Any, Any], exc: Exception, method: str) -> str:
    """Set the status and details of ``exc`` on the call, which the handler then
    ends without a response; the status code's name.

    Not ``context.abort``: its AbortError sits in a reference cycle with the
    call's frames (and so with the request), which only the cyclic garbage
    collector frees, so hostile megabyte requests would pile up until it ran.
    Nothing here outlives the call."""
    err = _as_error(exc, method)
    code, status = grpc_code_of(err), to_rpc_status(err)
    context.set_code(code)
    context.set_details(status.message)
    context.set_trailing_metadata(((STATUS_DETAILS_KEY, status.SerializeToString()),))
    return code.name


def _as_error(exc: Exception, method: str) -> SmsgateError:
    """What to answer for ``exc``: a domain error (Redis trouble is ``Unavailable``,
    mapped in ``store.errors``) as it is, anything else (a bug) as INTERNAL,
    logged with its traceback."""
    if isinstance(exc, SmsgateError):
        return exc
    # One traceback per interval for each bug and method, then a count.
    _bugs.occurred(f"{method}:{type(exc).__qualname__}", exc=exc, method=method)
    # A plain SmsgateError maps to INTERNAL.
    return SmsgateError("internal error (logged on the server)", reason=Reason.INTERNAL)


class TokenCache:
    """Recently verified tokens by app key, so most calls skip the Redis look-up.

    Keyed by the parsed key only (a valid key is 23 characters) and filled only
    after Redis verified the secret, so it holds at most ``max_size`` real apps;
    the oldest entry makes room for a new one. A revoked app is dropped at once
    (``forget``, from the revocation broadcast), not when its entry expires."""

    def __init__(self, ttl: float, max_size: int = 10_000) -> None:
        self.ttl = ttl
        self.max_size = max_size
        # app key -> (app, hash of its secret, monotonic expiry)
        self._entries: dict[str, tuple[App, str, float]] = {}
        # Counts forgets: a look-up that started before one must not cache
        # what it read, which may be the revoked app.
        self.revision = 0

    def get(self, key: str, secret: str) -> App | None:
        """The app of ``key`` if it was verified with ``secret`` within the ttl."""
        hit = self._entries.get(key)
        if hit is None or hit[2] < time.monotonic() or not secret_matches(secret, hit[1]):
            return None
        return hit[0]

    def put(self, key: str, secret: str, app: App, *, revision: int) -> None:
        """Cache ``app``, read from Redis when ``self.revision`` was ``revision``."""
        if self.ttl <= 0 or revision != self.revision:
            return
        self._entries.pop(key, None)
        if len(self._entries) >= self.max_size:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (app, hash_secret(secret), time.monotonic() + self.ttl)

    def forget(self, key: str) -> None:
        """Drop app ``key``: it was revoked, or its record changed (apps set-region)."""
        self.revision += 1
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Drop every app: revocations may have been missed."""
        self.revision += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class RequestGuard:
    """Authenticates and maps errors for every smsgate RPC."""

    def __init__(self, apps: AppStore, *, cache_seconds: float = 30.0) -> None:
        self.apps = apps
        self.cache = TokenCache(cache_seconds)
        self._wrapped: dict[str, Handler] = {}

    def guarding(self, server: grpc.aio.Server) -> GuardedServer:
        """``server``, with every handler registered through it guarded."""
        return GuardedServer(server, self)

    def handler(self, method: str) -> Handler | None:
        """The guarded handler registered for ``method`` (``/package.Service/Method``)."""
        return self._wrapped.get(method)

    def guard_handler(self, method: str, handler: Handler) -> Handler:
        """The guarded form of ``handler`` (open methods only answer undecodable
        bodies)."""
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            if not method.startswith(_OPEN_PREFIXES):
                wrapped = self._wrap(method, handler)
            else:
                wrapped = _open(method, handler)
            self._wrapped[method] = wrapped
        return wrapped

    async def _authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> App:
        # Binary (-bin) metadata is bytes; "authorization" is text.
        values = [str(v) for k, v in context.invocation_metadata() or () if k == "authorization"]
        if not values:
            raise Unauthenticated(
                "missing credentials: send metadata 'authorization: Bearer <token>'",
                reason=Reason.MISSING_CREDENTIALS,
            )
        parts = parse_authorization(values)
        if parts is None:
            raise Unauthenticated(
                "invalid credentials: send exactly one 'authorization: Bearer <token>'",
                reason=Reason.INVALID_CREDENTIALS,
            )
        app = self.cache.get(*parts)
        if app is not None:
            return app
        revision = self.cache.revision
        app = await self.apps.authenticate(*parts)
        if app is None:
            raise Unauthenticated("invalid credentials", reason=Reason.INVALID_CREDENTIALS)
        self.cache.put(*parts, app, revision=revision)
        return app

    def _wrap(self, method: str, handler: Handler) -> Handler:
        name = method.rsplit("/", 1)[-1]
        # The children of the common labels, looked up once: ``labels()`` per
        # call costs about a microsecond each.
        seconds = RPC_SECONDS.labels(name)
        ok = RPCS.labels(name, "OK")
        if handler.unary_unary is not None:
            inner: Any = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = time.perf_counter()
                code = "OK"
                try:
                    _app.set(await self._authenticate(context))
                    _check_decoded(request, name)
                    return await inner(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    code = _fail(context, exc, name)
                    return None
                finally:
                    seconds.observe(time.perf_counter() - started)
                    (ok if code == "OK" else RPCS.labels(name, code)).inc()

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream

            async def stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                code = "OK"
                try:
                    _app.set(await self._authenticate(context))
                    _check_decoded(request, name)
                    async for item in inner_stream(request, context):
                        yield item
                except asyncio.CancelledError:
                    code = "CANCELLED"
                    raise
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    code = _fail(context, exc, name)
                finally:
                    (ok if code == "OK" else RPCS.labels(name, code)).inc()

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler


def parse_authorization(values: list[str]) -> tuple[str, str] | None:
    """(app key, secret) from the ``authorization`` metadata values: exactly one,
    ``Bearer`` in any case, one space, a well-formed token; None otherwise."""
    if len(values) != 1:
        return None
    scheme, space, token = values[0].partition(" ")
    if not space or scheme.lower() != "bearer":
        return None
    return parse_token(token)


class _GuardedGenericHandler(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, guard: RequestGuard) -> None:
        self.inner = inner
        self.guard = guard

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self.inner.service(handler_call_details)
        if handler is None:
            return None
        return self.guard.guard_handler(handler_call_details.method, handler)


class GuardedServer(grpc.aio.Server):
    """A ``grpc.aio.Server`` whose registered handlers pass through a RequestGuard."""

    def __init__(self, server: grpc.aio.Server, guard: RequestGuard) -> None:
        self.server = server
        self.guard = guard

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]
    ) -> None:
        self.server.add_generic_rpc_handlers(
            tuple(_GuardedGenericHandler(h, self.guard) for h in generic_rpc_handlers)
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, Handler]
    ) -> None:
        self.server.add_registered_method_handlers(
            service_name,
            {
                name: self.guard.guard_handler(f"/{service_name}/{name}", handler)
                for name, handler in method_handlers.items()
            },
        )

    def add_insecure_port(self, address: str) -> int:
        return self.server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self.server.add_secure_port(address, server_credentials)

    async def start(self) -> None:
        await self.server.start()

    async def stop(self, grace: float | None) -> None:
        await self.server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return await self.server.wait_for_termination(timeout)
