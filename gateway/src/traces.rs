//! OpenTelemetry traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, every span
//! the system opens (requests, message handling, relays, pushes) goes out
//! over OTLP (HTTP, JSON) to that collector, batched. Unset: no exporter,
//! and spans carry no trace context, so nothing is added to messages.
//! The standard `OTEL_*` variables apply (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_SCHEDULE_DELAY`, ...).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The variable that turns traces on, with the collector's base URL.
pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// A tracer provider exporting to the collector, when one is configured.
/// Built on a thread of its own: its HTTP client may not be made (nor
/// dropped) on the async runtime's threads.
pub fn provider() -> Result<Option<SdkTracerProvider>, String> {
    let Some(endpoint) = std::env::var(ENDPOINT).ok().filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    std::thread::spawn(move || {
        // The exporter reads the endpoint variables itself (the base URL,
        // to which it adds /v1/traces, or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).
        let exporter = SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| format!("cannot export traces to {endpoint}: {e}"))?;
        let mut resource = Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name("mallbots");
        }
        Ok(Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource.build())
                .build(),
        ))
    })
    .join()
    .map_err(|_| "the trace exporter's set-up panicked".to_owned())?
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of
/// `provider`.
pub fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("mallbots"))
}

/// How long the exit waits for the last spans to go out: a collector that
/// does not answer must not hold up a shutdown.
const FLUSH_AT_MOST: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends what is still batched, within [`FLUSH_AT_MOST`], then stops (at
/// exit), off the runtime's threads.
pub async fn flush(provider: SdkTracerProvider) {
    let stopped = tokio::task::spawn_blocking(move || {
        let result = provider.shutdown_with_timeout(FLUSH_AT_MOST);
        drop(provider);
        result
    })
    .await;
    match stopped {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "traces not all exported at exit"),
        Err(err) => tracing::warn!(error = %err, "traces not all exported at exit"),
    }
}
