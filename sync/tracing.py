"""OpenTelemetry traces, the optional `otel` extra: the only module that imports opentelemetry.

Off unless SYNC_OTEL=true or OTEL_EXPORTER_OTLP_ENDPOINT (or …_TRACES_ENDPOINT) is set. Off,
nothing of opentelemetry is imported and `span()` hands out one shared object that does nothing,
so the job pays a function call per span site and no more.

On, spans go to the TracerProvider already installed (`opentelemetry-instrument`), or to one of
ours exporting OTLP over HTTP/protobuf as the standard OTEL_* variables say. What a span may
carry: names, counts, statuses, URL paths and error texts masked with the secrets registry
(sync.redaction); never a request or response body, a header, a query string or a SQL value.

The state is the process's, as OpenTelemetry's own provider and context are: `start()` by the
CLI, `use()` by tests, `stop()` at exit.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from sync import __version__
from sync.errors import ConfigError, SyncError
from sync.redaction import Secrets

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

log = logging.getLogger(__name__)

SERVICE_NAME = "comm100-sync"
INSTRUMENTATION_NAME = "sync"
INSTALL_HINT = "pip install 'comm100-sync[otel]'"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# Spans still queued at exit get this long to leave: a collector that does not answer must not
# hold `once` for the exporter's own timeout (OTEL_EXPORTER_OTLP_TIMEOUT, 10 s), which the SDK's
# flush and shutdown wait for whatever timeout they are given.
FLUSH_TIMEOUT_SECONDS = 5.0

Attribute = str | bool | int | float
Attributes = Mapping[str, Attribute | None]
Kind = Literal["internal", "client"]
P = ParamSpec("P")
R = TypeVar("R")


class Traced:
    """What a block learns about its span: attributes as they become known, a failure.

    This base does nothing; it is what every span is while tracing is off.
    """

    __slots__ = ()

    def __enter__(self) -> Traced:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def set(self, attributes: Attributes) -> None:
        """Add `attributes` (None values are left out)."""

    def fail(self, error: BaseException | str, description: str | None = None) -> None:
        """Mark the span failed by `error` (or an error.type such as "503"); `description`, a
        text known to be safe, replaces the error's own."""


_OFF = Traced()


class _Tracing:
    # A plain class: a dataclass would cost every start-up a third of a millisecond.
    __slots__ = ("hidden", "owned", "secrets", "tracer")

    def __init__(
        self,
        tracer: Tracer,
        secrets: Secrets,
        hidden: Secrets,
        owned: SdkTracerProvider | None = None,
    ) -> None:
        self.tracer, self.secrets = tracer, secrets
        # Who the accounts are (client ids, emails): logs and errors name them, spans do not.
        self.hidden = hidden
        # Ours to shut down at exit; None when someone else installed the provider.
        self.owned = owned

    def mask(self, text: str) -> str:
        return self.hidden.mask(self.secrets.mask(text))[:500]


_active: _Tracing | None = None


def enabled() -> bool:
    return _active is not None


def wanted(setting: bool | None, environ: Mapping[str, str]) -> str | None:
    """The variable that turns tracing on, or None when it is off.

    SYNC_OTEL, when set, decides; else an OTLP endpoint variable turns it on, unless
    OTEL_SDK_DISABLED=true.
    """
    if setting is not None:
        return "SYNC_OTEL" if setting else None
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    return next((name for name in ENDPOINT_VARIABLES if environ.get(name, "").strip()), None)


def start(reason: str, secrets: Secrets, hidden: Iterable[str] = ()) -> None:
    """Trace from now on: to the global TracerProvider if one is installed, else to ours.

    Error texts are masked with `secrets` (the registry the token provider adds to) and
    `hidden`: values that are no secrets but have no business in a trace.

    Raises:
        ConfigError: the OpenTelemetry packages are not installed (one line, exit 78).
    """
    global _active
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise _missing(reason, exc) from None
    provider = trace.get_tracer_provider()
    owned = None
    if isinstance(provider, trace.ProxyTracerProvider):
        # Nobody installed one (as opentelemetry-instrument would have): install ours.
        owned = _otlp_provider(reason)
        trace.set_tracer_provider(owned)
        provider = owned
    tracer = provider.get_tracer(INSTRUMENTATION_NAME, __version__)
    _active = _Tracing(tracer, secrets, Secrets(hidden), owned)


def _otlp_provider(reason: str) -> SdkTracerProvider:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise _missing(reason, exc) from None
    # Ours, unless OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES say otherwise.
    resource = Resource.create(
        {"service.name": SERVICE_NAME, "service.version": __version__}
    ).merge(OTELResourceDetector().detect())
    # The sampler, limits and exporter settings come from the OTEL_* variables.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _missing(reason: str, exc: ImportError) -> ConfigError:
    return ConfigError(
        f"invalid settings: {reason}: tracing needs the OpenTelemetry packages "
        f"({exc.name or 'opentelemetry'} is not installed): {INSTALL_HINT}, or set SYNC_OTEL=false"
    )


def use(
    provider: TracerProvider, secrets: Secrets | None = None, hidden: Iterable[str] = ()
) -> None:
    """Trace to `provider` without installing it globally (tests: an in-memory exporter)."""
    global _active
    tracer = provider.get_tracer(INSTRUMENTATION_NAME, __version__)
    _active = _Tracing(tracer, secrets if secrets is not None else Secrets(), Secrets(hidden))


def stop(timeout_seconds: float = FLUSH_TIMEOUT_SECONDS) -> None:
    """Send what is queued, within `timeout_seconds`, and stop tracing; our own provider is
    shut down, one installed by someone else only flushed."""
    global _active
    active, _active = _active, None
    if active is None:
        return
    if active.owned is not None:
        provider: Any = active.owned
    else:
        from opentelemetry import trace

        provider = trace.get_tracer_provider()

    def flush() -> None:
        if hasattr(provider, "force_flush"):
            provider.force_flush()
        if active.owned is not None:
            active.owned.shutdown()

    # In a thread of its own, so that the wait is ours to bound; left behind, it dies with
    # the process.
    flushing = threading.Thread(target=flush, name="otel-flush", daemon=True)
    flushing.start()
    flushing.join(timeout_seconds)
    if flushing.is_alive():
        log.warning("the collector took more than %gs: the last spans are lost", timeout_seconds)


def span(name: str, attributes: Attributes | None = None, *, kind: Kind = "internal") -> Traced:
    """A span around the block, a child of the current one; failures leaving it are recorded.

    Use as `with tracing.span("name", {...}) as span:`.
    """
    active = _active
    if active is None:
        return _OFF
    return _LiveSpan(active, name, attributes, kind)


def bind(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn` running in the current trace context wherever it is called (a pool's thread:
    contextvars do not follow work into ThreadPoolExecutor); `fn` itself when tracing is off."""
    if _active is None:
        return fn
    from opentelemetry import context

    captured = context.get_current()

    @functools.wraps(fn)
    def bound(*args: P.args, **kwargs: P.kwargs) -> R:
        token = context.attach(captured)
        try:
            return fn(*args, **kwargs)
        finally:
            context.detach(token)

    return bound


def error_text(error: BaseException, mask: Callable[[str], str]) -> str:
    """The type, and for our own errors the message, masked: never a foreign library's text
    (a driver's message may quote SQL values, a requests error a URL with its query)."""
    kind = type(error).__name__
    if isinstance(error, SyncError):
        return mask(f"{kind}: {error}")
    return kind


class _LiveSpan(Traced):
    __slots__ = ("_active", "_attributes", "_cm", "_failed", "_kind", "_name", "_span")

    def __init__(self, active: _Tracing, name: str, attributes: Attributes | None, kind: Kind):
        self._active, self._name, self._attributes, self._kind = active, name, attributes, kind
        self._span: Span | None = None
        self._cm: AbstractContextManager[Span] | None = None
        self._failed = False

    def __enter__(self) -> Traced:
        from opentelemetry.trace import SpanKind

        self._cm = self._active.tracer.start_as_current_span(
            self._name,
            kind=SpanKind.CLIENT if self._kind == "client" else SpanKind.INTERNAL,
            attributes=_clean(self._attributes or {}),
            # Exceptions are recorded by fail(), masked; the SDK's own would keep the raw text.
            record_exception=False,
            set_status_on_exception=False,
        )
        self._span = self._cm.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        error = exc[1]
        # A failure the block described itself (fail() inside it) keeps that description.
        if isinstance(error, BaseException) and not self._failed:
            self.fail(error)
        assert self._cm is not None
        self._cm.__exit__(*exc)  # type: ignore[arg-type]

    def set(self, attributes: Attributes) -> None:
        if self._span is not None:
            self._span.set_attributes(_clean(attributes))

    def fail(self, error: BaseException | str, description: str | None = None) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self._span
        if span is None:
            return
        self._failed = True
        mask = self._active.mask
        kind = error if isinstance(error, str) else type(error).__name__
        if description:
            text = mask(description)
        else:
            text = kind if isinstance(error, str) else error_text(error, mask)
        span.set_status(Status(StatusCode.ERROR, text))
        span.set_attribute("error.type", kind)
        if not isinstance(error, str):
            span.add_event("exception", {"exception.type": kind, "exception.message": text})


def _clean(attributes: Attributes) -> dict[str, Attribute]:
    return {key: value for key, value in attributes.items() if value is not None}
