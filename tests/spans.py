"""Finished spans as a tree, for the tracing tests: an in-memory exporter behind sync.tracing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sync import tracing
from sync.redaction import Secrets


class Recorded:
    """The spans finished so far, and the provider they were recorded by."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    @property
    def spans(self) -> Sequence[ReadableSpan]:
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans if span.name == name]

    def one(self, name: str, **attributes: Any) -> ReadableSpan:
        matching = [
            span
            for span in self.named(name)
            if all(span.attributes.get(f"sync.{k}") == v for k, v in attributes.items())
        ]
        assert len(matching) == 1, (name, attributes, [s.attributes for s in self.named(name)])
        return matching[0]

    def roots(self) -> list[ReadableSpan]:
        return [span for span in self.spans if span.parent is None]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        assert parent.context is not None
        return sorted(
            (
                span
                for span in self.spans
                if span.parent is not None and span.parent.span_id == parent.context.span_id
            ),
            key=lambda span: span.start_time or 0,
        )

    def parent(self, child: ReadableSpan) -> ReadableSpan | None:
        if child.parent is None:
            return None
        return next(
            (s for s in self.spans if s.context and s.context.span_id == child.parent.span_id),
            None,
        )

    def render(self) -> str:
        """The tree as indented lines: name and the attributes worth reading."""
        lines: list[str] = []

        def walk(span: ReadableSpan, depth: int) -> None:
            shown = {
                key: value
                for key, value in (span.attributes or {}).items()
                if key.startswith(("sync.", "http.", "url.path", "url.template", "db.system"))
                and key not in ("sync.store.operation", "db.system.name")
            }
            status = span.status.status_code.name
            flag = f" [{status}: {span.status.description}]" if status == "ERROR" else ""
            lines.append(f"{'  ' * depth}{span.name} {shown}{flag}")
            for child in self.children(span):
                walk(child, depth + 1)

        for root in sorted(self.roots(), key=lambda span: span.start_time or 0):
            walk(root, 0)
        return "\n".join(lines)


def every_text(span: ReadableSpan) -> Iterator[str]:
    """Everything a span would carry to a collector, as text: name, status, attributes,
    events and their attributes, links, the resource."""
    yield span.name
    yield span.status.description or ""
    for attributes in (
        span.attributes,
        span.resource.attributes,
        *(event.attributes for event in span.events),
        *(link.attributes for link in span.links),
    ):
        for key, value in (attributes or {}).items():
            yield key
            yield str(value)
    for event in span.events:
        yield event.name


@contextmanager
def recording(secrets: Secrets | None = None, hidden: Iterable[str] = ()) -> Iterator[Recorded]:
    """sync.tracing on, into memory, for the block."""
    recorded = Recorded()
    tracing.use(recorded.provider, secrets, hidden)
    try:
        yield recorded
    finally:
        tracing.stop()
        recorded.provider.shutdown()
