//! One trace from a mutation to its pushes: the W3C trace context
//! (`traceparent`, `tracestate`) travels in every message's headers, on
//! either broker. A message made inside a span carries that span's context
//! ([`crate::Envelope::first`]); the span that handles it takes that
//! context as its parent ([`continue_from`]). Without an OpenTelemetry
//! layer installed (no `OTEL_EXPORTER_OTLP_ENDPOINT`) spans have no context:
//! nothing is written, and reading is a map lookup.

use std::collections::BTreeMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header that names a message's trace and parent span.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// The W3C header of vendors' trace state, carried along with it.
pub const HEADER_TRACESTATE: &str = "tracestate";

/// The longest `traceparent` taken (version 00 is 55 characters; later
/// versions may add fields).
const MAX_TRACEPARENT: usize = 256;
/// The longest `tracestate` taken: the W3C limit a vendor must pass on.
/// A longer one is dropped (the trace goes on without it): a client's
/// header must not grow every message its request causes.
const MAX_TRACESTATE: usize = 512;

struct Headers<'a>(&'a mut BTreeMap<String, String>);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct Read<'a>(&'a BTreeMap<String, String>);

impl Extractor for Read<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let limit = match key {
            HEADER_TRACEPARENT => MAX_TRACEPARENT,
            HEADER_TRACESTATE => MAX_TRACESTATE,
            _ => 0,
        };
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|value| value.len() <= limit)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Writes the current span's trace context into `headers` (nothing when
/// the span has none).
pub fn inject_current(headers: &mut BTreeMap<String, String>) {
    let context = tracing::Span::current().context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut Headers(headers));
    }
}

/// The trace context `headers` carry, if any.
pub fn extract(headers: &BTreeMap<String, String>) -> Option<opentelemetry::Context> {
    if !headers.contains_key(HEADER_TRACEPARENT) {
        return None;
    }
    let context = TraceContextPropagator::new().extract(&Read(headers));
    context.span().span_context().is_valid().then_some(context)
}

/// Makes `span` a child of the trace `headers` carry (when they carry one),
/// and records its trace id in the span's `trace_id` field (for logs).
pub fn continue_from(span: &tracing::Span, headers: &BTreeMap<String, String>) {
    if let Some(parent) = extract(headers) {
        // Fails only when the span is disabled: then there is nothing to trace.
        let _ = span.set_parent(parent);
    }
    record_trace_id(span);
}

/// Links `span` to the trace `headers` carry (a batch's other messages).
pub fn link_to(span: &tracing::Span, headers: &BTreeMap<String, String>) {
    if let Some(context) = extract(headers) {
        span.add_link(context.span().span_context().clone());
    }
}

/// Records `span`'s trace id in its `trace_id` field, when it has one.
fn record_trace_id(span: &tracing::Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_survives_the_headers_and_garbage_is_none() {
        let mut headers = BTreeMap::new();
        headers.insert(
            HEADER_TRACEPARENT.to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        );
        let context = extract(&headers).expect("a context");
        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut out = BTreeMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut Headers(&mut out));
        assert_eq!(out[HEADER_TRACEPARENT], headers[HEADER_TRACEPARENT]);
        // A trace state too long to pass on is dropped, the trace kept.
        headers.insert(HEADER_TRACESTATE.to_owned(), "k=v,".repeat(1000));
        let context = extract(&headers).expect("still a context");
        let mut out = BTreeMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut Headers(&mut out));
        assert!(
            out.get(HEADER_TRACESTATE).is_none_or(|s| s.is_empty()),
            "{out:?}"
        );
        headers.insert(HEADER_TRACEPARENT.to_owned(), "0".repeat(300));
        assert!(extract(&headers).is_none());
        headers.insert(
            HEADER_TRACEPARENT.to_owned(),
            "not a traceparent".to_owned(),
        );
        assert!(extract(&headers).is_none());
        assert!(extract(&BTreeMap::new()).is_none());
    }

    #[test]
    fn without_a_layer_nothing_is_written() {
        let mut headers = BTreeMap::new();
        inject_current(&mut headers);
        assert!(headers.is_empty());
    }
}
