//! The HTTP face: GraphQL over HTTP (per the GraphQL-over-HTTP spec), the
//! websocket endpoint (graphql-transport-ws and legacy graphql-ws), the
//! playground, the SDL, health, readiness and metrics.

use std::sync::atomic::Ordering;

use std::net::IpAddr;
use std::sync::Arc;

use async_graphql::ServerError;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType,
};
use std::time::Duration;

use async_graphql::http::WebSocketProtocols;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use uuid::Uuid;

use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::clients::{Peer, RateLimits, SocketCounts};
use crate::documents::{self, Checked, Documents, Hash};
use crate::graphql::{ApiError, MallSchema, RequestContext};
use crate::identity::{AuthError, Identity};
use crate::metrics::RequestOutcome;
use crate::playground;
use crate::state::AppState;
use axum::Extension;
use mallbots_contracts::ErrorCode;
use mallbots_platform::propagation::{HEADER_TRACEPARENT, HEADER_TRACESTATE};
use std::num::NonZeroUsize;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tracing::Instrument;

/// Shared by every request (one `Arc` clone each).
struct Http {
    app: AppState,
    schema: MallSchema,
    ws_schema: MallSchema,
    rate: Arc<RateLimits>,
    sockets: Arc<SocketCounts>,
    /// Subscriptions executed once for every socket that asks for the same.
    shared: Arc<crate::shared::Shared>,
    /// Parsed documents by their SHA-256: sent as text or, with Apollo's
    /// automatic persisted queries, named by the hash alone.
    documents: Documents,
}

/// Answers smaller than this go out as they are.
const COMPRESS_ABOVE_BYTES: u16 = 1024;

/// Documents kept parsed (the least recently used go), each at most this
/// long, and all together in at most this much memory: a bound on what any
/// client can make the cache hold.
const KEPT_DOCUMENTS: NonZeroUsize = NonZeroUsize::new(1000).expect("not zero");
const KEPT_DOCUMENT_TEXT: usize = 8 * 1024;
const KEPT_DOCUMENTS_MEMORY: usize = 32 * 1024 * 1024;

/// The schema with the limits of `app`'s settings.
fn limited_schema(app: &AppState, introspection: bool) -> MallSchema {
    let settings = &app.settings;
    let builder = crate::graphql::builder()
        .limit_depth(settings.max_query_depth)
        .limit_complexity(settings.max_query_complexity)
        .limit_directives(settings.max_directives)
        .data(app.clone());
    if introspection {
        builder.finish()
    } else {
        builder.disable_introspection().finish()
    }
}

pub fn router(app: AppState) -> Router {
    let settings = &app.settings;
    // HTTP decides per request (operators may introspect); websockets
    // execute on one schema per connection, so with INTROSPECTION=false
    // theirs has none for anyone.
    let schema = limited_schema(&app, true);
    let ws_schema = if settings.introspection {
        schema.clone()
    } else {
        limited_schema(&app, false)
    };
    let max_body = app.settings.max_body_bytes;
    let cors = cors(settings, app.auth.is_open());
    let rate = Arc::new(RateLimits::new(
        settings.rate_limit_per_second,
        settings.rate_limit_burst,
    ));
    let sockets = SocketCounts::new(settings.ws_max_connections);
    let shared = crate::shared::Shared::new(
        ws_schema.clone(),
        app.metrics.clone(),
        settings.subscription_buffer,
        Some(app.live.clone()),
    );
    Router::new()
        .route("/", get(playground::page))
        .route("/graphiql/{name}", get(playground::asset))
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphql/ws", get(graphql_ws))
        .route("/schema.graphql", get(sdl))
        .route("/asyncapi.json", get(asyncapi))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        // A body sent slower than this is cut off (the headers' own
        // deadline is the server's, see serve.rs).
        .layer(RequestBodyTimeoutLayer::new(settings.http_read_timeout()))
        // Large answers (a page of a hundred orders) gzipped for clients
        // that accept it; small ones are not worth the CPU.
        .layer(
            CompressionLayer::new().compress_when(
                SizeAbove::new(COMPRESS_ABOVE_BYTES)
                    .and(NotForContentType::const_new("text/event-stream")),
            ),
        )
        .layer(cors)
        .with_state(Arc::new(Http {
            app,
            schema,
            ws_schema,
            rate,
            sockets,
            shared,
            documents: Documents::new(KEPT_DOCUMENTS, KEPT_DOCUMENT_TEXT, KEPT_DOCUMENTS_MEMORY),
        }))
}

/// Which web pages may call the API from a browser: the listed origins; with
/// none listed, any while the gateway is open and none once it verifies
/// tokens (a page elsewhere must not act with a visitor's credentials).
fn cors(settings: &crate::config::Settings, open: bool) -> CorsLayer {
    let listed: Vec<HeaderValue> = settings
        .cors_origins
        .iter()
        .filter(|o| !o.trim().is_empty())
        .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
        .collect();
    if listed.is_empty() && open {
        return CorsLayer::permissive();
    }
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(listed))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static(IDEMPOTENCY_KEY),
            HeaderName::from_static("consistency-token"),
            HeaderName::from_static("x-request-id"),
        ])
}

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

/// The request's context from its headers, with the identity they prove.
fn request_context(headers: &HeaderMap, identity: Identity) -> RequestContext {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    RequestContext {
        correlation_id: text("x-request-id")
            .and_then(|v| Uuid::parse_str(v).ok())
            .unwrap_or_else(Uuid::now_v7),
        identity,
        idempotency_key: text(IDEMPOTENCY_KEY).map(str::to_owned),
    }
}

/// The `Authorization` header as text (a header that is not text is no
/// bearer token either); more than one is refused, not picked from.
fn authorization(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let value = single(headers, header::AUTHORIZATION.as_str()).map_err(|_| AuthError::Several)?;
    Ok(value.map(|v| v.to_str().unwrap_or("?")))
}

/// An invalid or expired token: 401 with `WWW-Authenticate: Bearer`.
fn unauthenticated(err: &AuthError, graphql_response: bool) -> Response {
    let err = ApiError::new(ErrorCode::Unauthenticated, err.to_string());
    let mut response = coded_error_response(StatusCode::UNAUTHORIZED, &err, graphql_response);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    response
}

/// A client over its request rate: 429 with `Retry-After` (whole seconds).
fn rate_limited(wait: Duration, graphql_response: bool) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let err = ApiError::new(
        ErrorCode::RateLimited,
        format!("too many requests: retry in {seconds} s"),
    );
    let mut response = coded_error_response(StatusCode::TOO_MANY_REQUESTS, &err, graphql_response);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

/// Who the request is from, and whether it may be served now.
fn admit(http: &Http, headers: &HeaderMap, client: IpAddr) -> Result<Identity, Box<Response>> {
    let graphql_response = wants_graphql_response(headers);
    let identity = authorization(headers)
        .and_then(|token| http.app.auth.identify(token))
        .map_err(|err| {
            // Bad tokens count against their address: guessing is rate
            // limited too.
            let address = crate::clients::key(&Identity::ANONYMOUS, client);
            Box::new(match http.rate.check(&address) {
                Ok(()) => unauthenticated(&err, graphql_response),
                Err(wait) => rate_limited(wait, graphql_response),
            })
        })?;
    http.rate
        .check(&crate::clients::key(&identity, client))
        .map_err(|wait| Box::new(rate_limited(wait, graphql_response)))?;
    Ok(identity)
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The longest idempotency key taken.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// An `Idempotency-Key` header that cannot be used, and why.
/// The one value of header `name`, if sent; two are refused (which one
/// would count is anybody's guess).
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a HeaderValue>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::bad_input(format!(
            "send one {name} header, not several"
        )));
    }
    Ok(first)
}

fn bad_idempotency_key(headers: &HeaderMap) -> Option<ApiError> {
    let value = match single(headers, IDEMPOTENCY_KEY) {
        Ok(value) => value?,
        Err(err) => return Some(err),
    };
    let fine = value.to_str().is_ok_and(|key| {
        !key.is_empty()
            && key.len() <= MAX_IDEMPOTENCY_KEY
            && key.bytes().all(|b| b.is_ascii_graphic())
    });
    (!fine).then(|| {
        ApiError::bad_input(format!(
            "the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        ))
    })
}

/// Whether the client asked for `application/graphql-response+json`.
fn wants_graphql_response(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(GRAPHQL_RESPONSE))
}

/// A request refused before execution, with the error's code.
fn coded_error_response(status: StatusCode, err: &ApiError, graphql_response: bool) -> Response {
    let body = serde_json::json!({
        "errors": [{
            "message": crate::limits::cut(err.message.clone()),
            "extensions": { "code": err.code.as_str() },
        }]
    });
    errors_body(status, body, graphql_response)
}

/// A request refused before it was read as GraphQL (no execution
/// happened): BAD_USER_INPUT.
fn error_response(status: StatusCode, message: &str, graphql_response: bool) -> Response {
    coded_error_response(status, &ApiError::bad_input(message), graphql_response)
}

/// The answer to a request refused before it ran: under plain JSON with
/// `data: null`, as async-graphql's own such refusals (a parse error)
/// have, so that clients see one shape; under graphql-response+json
/// without `data` (GraphQL over HTTP).
fn errors_body(
    status: StatusCode,
    mut body: serde_json::Value,
    graphql_response: bool,
) -> Response {
    let kind = if graphql_response {
        GRAPHQL_RESPONSE
    } else {
        if let Some(fields) = body.as_object_mut() {
            fields.insert("data".to_owned(), serde_json::Value::Null);
        }
        JSON
    };
    (status, [(header::CONTENT_TYPE, kind)], body.to_string()).into_response()
}

/// The hash of the document a request names, and whether the request sent
/// that hash alone: its text's, or the SHA-256 that Apollo's automatic
/// persisted queries send (`extensions.persistedQuery`), which must be the
/// text's when both come. A document is checked like any other on every
/// use (limits, introspection, mutations), whoever sent it first.
fn named_document(request: &mut async_graphql::Request) -> Result<(Hash, bool), ApiError> {
    #[derive(serde::Deserialize)]
    struct Persisted {
        version: i32,
        #[serde(rename = "sha256Hash")]
        hash: String,
    }
    let Some(value) = request.extensions.remove("persistedQuery") else {
        return Ok((documents::hash(&request.query), false));
    };
    let wanted = async_graphql::from_value::<Persisted>(value)
        .ok()
        .filter(|p| p.version == 1)
        .and_then(|p| documents::from_hex(&p.hash))
        .ok_or_else(|| {
            ApiError::bad_input(
                "extensions.persistedQuery is {version: 1, sha256Hash: <64 hex digits>}",
            )
        })?;
    if request.query.is_empty() {
        return Ok((wanted, true));
    }
    if documents::hash(&request.query) != wanted {
        return Err(ApiError::bad_input(
            "extensions.persistedQuery.sha256Hash is not the query's SHA-256",
        ));
    }
    Ok((wanted, false))
}

/// A request's document, kept from an earlier request or parsed for this
/// one (`checked` is `None` when it does not parse).
struct Found {
    key: Hash,
    checked: Option<Arc<Checked>>,
    kept: bool,
}

impl Http {
    /// The document `query` (whose hash is `key`), parsed at most once.
    fn find(&self, key: Hash, query: &str) -> Found {
        match self.documents.get(&key) {
            Some(kept) => Found {
                key,
                checked: Some(kept),
                kept: true,
            },
            None => Found {
                key,
                checked: Checked::parse(query, &self.app.settings).map(Arc::new),
                kept: false,
            },
        }
    }
}

/// Whether an executed request's answer holds errors (for caching it and
/// counting it); a request refused before it ran has none.
#[derive(Clone, Copy)]
struct Answered {
    errors: bool,
    /// It did not parse or validate: it never ran.
    invalid: bool,
}

/// The W3C trace context headers of a request, as text.
fn trace_headers(headers: &HeaderMap) -> std::collections::BTreeMap<String, String> {
    [HEADER_TRACEPARENT, HEADER_TRACESTATE]
        .into_iter()
        .filter_map(|name| {
            let value = single(headers, name).ok().flatten()?.to_str().ok()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// [`execute_in`] within the request's span: every line its work logs
/// (its commands sent and awaited too) carries its correlation id.
/// `found`: its document, when the caller looked it up already.
async fn execute(
    http: &Http,
    headers: &HeaderMap,
    (identity, client): (Identity, IpAddr),
    (request, found): (async_graphql::Request, Option<Found>),
) -> Response {
    let context = request_context(headers, identity);
    let operation = request.operation_name.as_deref().unwrap_or("");
    let span = tracing::info_span!(
        "request",
        correlation_id = %context.correlation_id,
        operation,
        trace_id = tracing::field::Empty,
        otel.name = if operation.is_empty() {
            "graphql".to_owned()
        } else {
            format!("graphql {operation}")
        },
        otel.kind = "server",
    );
    // A client's own trace (W3C `traceparent`) goes on through this request.
    mallbots_platform::propagation::continue_from(&span, &trace_headers(headers));
    let started = std::time::Instant::now();
    let mut operation = request.operation_name.clone();
    let response = execute_in(
        http,
        headers,
        (context, client),
        (request, found),
        &mut operation,
    )
    .instrument(span)
    .await;
    let outcome = match response.extensions().get::<Answered>() {
        Some(Answered { invalid: true, .. }) | None => RequestOutcome::refused,
        Some(Answered { errors: true, .. }) => RequestOutcome::error,
        Some(_) => RequestOutcome::ok,
    };
    http.app
        .metrics
        .request(operation.as_deref(), outcome, started.elapsed());
    response
}

async fn execute_in(
    http: &Http,
    headers: &HeaderMap,
    (context, client): (RequestContext, IpAddr),
    (mut request, found): (async_graphql::Request, Option<Found>),
    operation: &mut Option<String>,
) -> Response {
    let identity = context.identity.clone();
    let graphql_response = wants_graphql_response(headers);
    // Parsed once, or not at all when kept from an earlier request: the
    // request carries the document, and execution uses it. Every refusal
    // that needs only the document comes before any wait.
    let Found { key, checked, kept } = match found {
        Some(found) => found,
        None => match named_document(&mut request) {
            Err(err) => {
                return coded_error_response(StatusCode::BAD_REQUEST, &err, graphql_response);
            }
            Ok((key, false)) => http.find(key, &request.query),
            Ok((key, true)) => match http.documents.get(&key) {
                Some(kept) => Found {
                    key,
                    checked: Some(kept),
                    kept: true,
                },
                // A hash alone, of a document not kept: the protocol's cue
                // to send the query (Apollo's link reads it from a 200).
                None => {
                    let err =
                        ApiError::new(ErrorCode::PersistedQueryNotFound, "PersistedQueryNotFound");
                    return coded_error_response(StatusCode::OK, &err, graphql_response);
                }
            },
        },
    };
    let settings = &http.app.settings;
    let len = request.query.len();
    if let Some(checked) = &checked {
        http.app.metrics.document(kept);
        request.set_parsed_query(checked.document.clone());
    }
    let parsed = checked.is_some();
    let (oversized, mutations, introspects) = checked.as_deref().map_or((None, 0, false), |c| {
        (c.oversized.clone(), c.mutations, c.introspects)
    });
    if operation.is_none() {
        *operation = checked.as_ref().and_then(|c| c.operation_name.clone());
    }
    let trusted = identity.actor.is_some_and(|a| a.is_trusted());
    // `introspects` looks at every selection and fragment: nothing else
    // reaches the schema's own fields.
    if !settings.introspection && !trusted && introspects {
        let err = ApiError::new(
            ErrorCode::Forbidden,
            "introspection is off here (INTROSPECTION=false): operators only",
        );
        return coded_error_response(StatusCode::FORBIDDEN, &err, graphql_response);
    }
    if let Some((message, limit)) = oversized {
        let body = serde_json::json!({ "errors": [crate::limits::too_complex(&message, limit)] });
        // Like any validation error: a 400 under graphql-response+json.
        let status = if graphql_response {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        return errors_body(status, body, graphql_response);
    }
    // Each mutation beyond the first counts as a request of its own.
    if mutations > 1 {
        let key = crate::clients::key(&identity, client);
        let more = u32::try_from(mutations - 1).unwrap_or(u32::MAX);
        if let Err(wait) = http.rate.check_n(&key, more) {
            return rate_limited(wait, graphql_response);
        }
    }
    if let Some(err) = bad_idempotency_key(headers) {
        return coded_error_response(StatusCode::BAD_REQUEST, &err, graphql_response);
    }
    let token = match single(headers, "consistency-token") {
        Ok(token) => token,
        Err(err) => return coded_error_response(StatusCode::BAD_REQUEST, &err, graphql_response),
    };
    if let Some(token) = token {
        let waited = match token.to_str() {
            Ok(token) => {
                let app = &http.app;
                let limit = Duration::from_millis(app.settings.consistency_timeout_ms);
                crate::consistency::wait(&app.readers, &app.databases, limit, token).await
            }
            Err(_) => Err(ApiError::bad_input("the consistency token is not text")),
        };
        if let Err(err) = waited {
            let status = match err.code {
                ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
                ErrorCode::BadUserInput => StatusCode::BAD_REQUEST,
                ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return coded_error_response(status, &err, graphql_response);
        }
    }
    let mut response = http.schema.execute(request.data(context)).await;
    crate::limits::code_errors(&mut response, settings, parsed);
    // Parse and validation errors carry no path and stop execution (no data):
    // under graphql-response+json they are a 400; under plain JSON a 200.
    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response
            .errors
            .iter()
            .all(|e: &ServerError| e.path.is_empty());
    let unavailable = unavailable(&response);
    // Kept only once it ran without a request error (one that fails to
    // parse or validate is not).
    if !kept
        && let Some(checked) = checked
        && !request_error
    {
        http.documents.keep(key, len, checked);
    }
    let answered = Answered {
        errors: !response.errors.is_empty(),
        invalid: request_error,
    };
    let status = if unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else if request_error && graphql_response {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let kind = if graphql_response {
        GRAPHQL_RESPONSE
    } else {
        JSON
    };
    // A request error (the document never ran) has no `data` entry under
    // graphql-response+json (GraphQL over HTTP); under plain JSON it keeps
    // `data: null`, which older clients expect.
    let serialized = if request_error && graphql_response {
        serde_json::to_value(&response).map(|mut body| {
            if let Some(fields) = body.as_object_mut() {
                fields.remove("data");
            }
            body.to_string()
        })
    } else {
        serde_json::to_string(&response)
    };
    match serialized {
        Ok(body) if unavailable => (
            status,
            [(header::CONTENT_TYPE, kind), (header::RETRY_AFTER, "1")],
            Extension(answered),
            body,
        )
            .into_response(),
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, kind)],
            Extension(answered),
            body,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "cannot serialize a GraphQL response");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
                graphql_response,
            )
        }
    }
}

async fn graphql_post(
    State(http): State<Arc<Http>>,
    ConnectInfo(Peer(client)): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let max = http.app.settings.max_body_bytes;
            let message = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                format!("the body is larger than {max} bytes")
            } else {
                "the body could not be read".to_owned()
            };
            return error_response(
                rejection.status(),
                &message,
                wants_graphql_response(&headers),
            );
        }
    };
    let identity = match admit(&http, &headers, client.ip()) {
        Ok(identity) => identity,
        Err(refused) => return *refused,
    };
    let graphql_response = wants_graphql_response(&headers);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The media type itself, whatever its parameters (`; charset=utf-8`).
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(JSON) {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request as application/json",
            graphql_response,
        );
    }
    // One operation per request: a JSON array (a batch) or any other
    // non-object is refused before it is read as a request.
    let refusal = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => None,
        None => Some("the body is empty: send one GraphQL request, a JSON object"),
        Some(b'[') => Some("batches are not accepted: send one GraphQL request, a JSON object"),
        Some(_) => Some("the body must be one GraphQL request, a JSON object"),
    };
    if let Some(refusal) = refusal {
        return coded_error_response(
            StatusCode::BAD_REQUEST,
            &ApiError::bad_input(refusal),
            graphql_response,
        );
    }
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("the body is not a GraphQL request: {err}"),
                graphql_response,
            );
        }
    };
    // A request names its document (or, persisted, its document's hash).
    if request.query.is_empty() && !request.extensions.contains_key("persistedQuery") {
        return coded_error_response(
            StatusCode::BAD_REQUEST,
            &ApiError::bad_input("the request has no query"),
            graphql_response,
        );
    }
    execute(&http, &headers, (identity, client.ip()), (request, None)).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    query: Option<String>,
    variables: Option<String>,
    operation_name: Option<String>,
}

/// The operation `name` picks in `document`, as async-graphql picks it: by
/// name, else the document's only operation (named or not).
fn operation(document: &ExecutableDocument, name: Option<&str>) -> Option<OperationDefinition> {
    match (&document.operations, name) {
        (DocumentOperations::Single(op), _) => Some(op.node.clone()),
        (DocumentOperations::Multiple(ops), Some(name)) => ops
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, op)| op.node.clone()),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| op.node.clone())
        }
        _ => None,
    }
}

/// Fields whose answer is the same for every client: the catalog.
const PUBLIC_FIELDS: [&str; 5] = ["store", "stores", "product", "catalog", "__typename"];

/// How long a shared cache may keep a public catalog answer.
const PUBLIC_MAX_AGE_SECS: u32 = 5;

/// Whether `operation` reads only the public catalog (its top-level fields,
/// by name; any spread or inline fragment makes it not).
fn reads_only_public(operation: &OperationDefinition) -> bool {
    use async_graphql::parser::types::Selection;
    operation.ty == OperationType::Query
        && operation
            .selection_set
            .node
            .items
            .iter()
            .all(|item| match &item.node {
                Selection::Field(field) => PUBLIC_FIELDS.contains(&field.node.name.node.as_str()),
                _ => false,
            })
}

/// Whether a dependency being down left the request with no answer at all:
/// the server's state, not the request's, so 503 with Retry-After tells
/// clients and proxies to come back. Once any top-level field answered (a
/// mutation that was applied, even if its payload could not read its entity
/// back, or one of two mutations) there is no 503: a client or proxy
/// retrying on it would apply that again.
fn unavailable(response: &async_graphql::Response) -> bool {
    use async_graphql::Value;
    let code = Value::from(ErrorCode::Unavailable.as_str());
    let any_unavailable = response
        .errors
        .iter()
        .any(|e| e.extensions.as_ref().and_then(|x| x.get("code")) == Some(&code));
    let answered = match &response.data {
        Value::Object(fields) => fields.values().any(|v| *v != Value::Null),
        _ => false,
    };
    any_unavailable && !answered
}

/// `GET /graphql`: [`answer_get`], and how long caches may keep its answer:
/// a catalog read answered without an error, a few seconds (by anyone
/// without a token; by its client with one); anything else, not at all.
async fn graphql_get(
    State(http): State<Arc<Http>>,
    connect: ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(params): Query<GetParams>,
) -> Response {
    // The document is found (or parsed) once, here: for the cache headers
    // and for answer_get, which executes it.
    let found = params
        .query
        .as_deref()
        .map(|q| http.find(documents::hash(q), q));
    let picked = found
        .as_ref()
        .and_then(|f| f.checked.as_ref())
        .and_then(|c| operation(&c.document, params.operation_name.as_deref()));
    let public = picked.as_ref().is_some_and(reads_only_public);
    let mut response = answer_get(&http, connect, &headers, params, (picked, found)).await;
    let clean = response.status().is_success()
        && response
            .extensions()
            .get::<Answered>()
            .is_some_and(|a| !a.errors);
    let cache = match (clean && public, headers.contains_key(header::AUTHORIZATION)) {
        (true, false) => format!("public, max-age={PUBLIC_MAX_AGE_SECS}"),
        (true, true) => format!("private, max-age={PUBLIC_MAX_AGE_SECS}"),
        (false, _) => "no-store".to_owned(),
    };
    let response_headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&cache) {
        response_headers.insert(header::CACHE_CONTROL, value);
    }
    response_headers.insert(
        header::VARY,
        HeaderValue::from_static("authorization, consistency-token, accept"),
    );
    response
}

/// `picked`: the operation the query's `operationName` picks in `found`,
/// the query's document.
async fn answer_get(
    http: &Http,
    ConnectInfo(Peer(client)): ConnectInfo<Peer>,
    headers: &HeaderMap,
    params: GetParams,
    (picked, found): (Option<OperationDefinition>, Option<Found>),
) -> Response {
    let identity = match admit(http, headers, client.ip()) {
        Ok(identity) => identity,
        Err(refused) => return *refused,
    };
    let graphql_response = wants_graphql_response(headers);
    let Some(query) = params.query else {
        return error_response(StatusCode::BAD_REQUEST, "missing query", graphql_response);
    };
    if picked.as_ref().map(|op| op.ty) == Some(OperationType::Mutation) {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "mutations are sent with POST",
            graphql_response,
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let mut request = async_graphql::Request::new(query);
    if let Some(name) = params.operation_name {
        request = request.operation_name(name);
    }
    if let Some(variables) = params.variables {
        match serde_json::from_str(&variables) {
            Ok(vars) => request = request.variables(vars),
            Err(_) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "variables is not a JSON object",
                    graphql_response,
                );
            }
        }
    }
    execute(http, headers, (identity, client.ip()), (request, found)).await
}

/// The websocket library's read and write buffers per connection (128 KiB
/// each by default, most of an idle subscription's memory). Larger messages
/// still pass, in more system calls. The read buffer is allocated whole for
/// every connection; clients send little (a subscribe, a ping), so it is the
/// smaller one.
const WEBSOCKET_READ_BUFFER: usize = 1024;
const WEBSOCKET_WRITE_BUFFER: usize = 4 * 1024;

async fn graphql_ws(
    State(http): State<Arc<Http>>,
    ConnectInfo(Peer(client)): ConnectInfo<Peer>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(protocol) = websocket_protocol(&headers) else {
        return (
            StatusCode::BAD_REQUEST,
            "ask for the graphql-transport-ws (or legacy graphql-ws) subprotocol",
        )
            .into_response();
    };
    // The upgrade counts as a request; its token (if any) is checked at
    // `connection_init`, where the protocol carries it.
    if let Err(wait) = http
        .rate
        .check(&crate::clients::key(&Identity::ANONYMOUS, client.ip()))
    {
        return rate_limited(wait, false);
    }
    let door = crate::ws::Door {
        auth: http.app.auth.clone(),
        sockets: http.sockets.clone(),
        client: client.ip(),
        // Several headers: none is used (connection_init must carry one).
        header: authorization(&headers).ok().flatten().map(str::to_owned),
        context: request_context(&headers, Identity::ANONYMOUS),
        settings: http.app.settings.clone(),
        rate: http.rate.clone(),
        shared: http.shared.clone(),
    };
    let limits = crate::ws::Limits {
        init_timeout: Duration::from_millis(http.app.settings.ws_init_timeout_ms),
        max_subscriptions: http.app.settings.ws_max_subscriptions,
    };
    let stopping = http.app.stopping.clone();
    let max_frame = http.app.settings.max_body_bytes;
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .read_buffer_size(WEBSOCKET_READ_BUFFER)
        .write_buffer_size(WEBSOCKET_WRITE_BUFFER)
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_upgrade(move |socket| async move {
            let _open = http.app.metrics.websocket();
            crate::ws::serve(
                socket,
                http.ws_schema.clone(),
                protocol,
                door,
                limits,
                stopping,
            )
            .await
        })
}

/// A method a path does not take: 405 with a coded body.
async fn method_not_allowed(headers: HeaderMap) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "this path does not take that method",
        wants_graphql_response(&headers),
    )
}

/// The first GraphQL subprotocol the client offers that we speak.
fn websocket_protocol(headers: &HeaderMap) -> Option<WebSocketProtocols> {
    headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?
        .split(',')
        .find_map(|p| p.trim().parse().ok())
}

/// The message contracts (AsyncAPI 3), made once.
async fn asyncapi() -> impl IntoResponse {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.get_or_init(crate::asyncapi::document).as_str(),
    )
}

async fn sdl(State(http): State<Arc<Http>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        http.schema.sdl(),
    )
}

async fn ready(State(http): State<Arc<Http>>) -> Response {
    let app = &http.app;
    let stopping = app.stopping.is_triggered() || app.draining.load(Ordering::Relaxed);
    readiness(stopping, app.broker.as_ref(), &app.databases).await
}

/// `/readyz`: 200 "ready" while the process can do its work (not shutting
/// down, the broker connected, each of `databases` answering), else 503 and
/// everything that is wrong, one cause a line (an operator with several
/// modules on several servers sees at once which are down).
async fn readiness(
    stopping: bool,
    broker: &dyn mallbots_platform::Broker,
    databases: &[(&'static str, sea_orm::DatabaseConnection)],
) -> Response {
    if stopping {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    // All at once, each bounded: the answer comes within a second even when
    // every database is down.
    let pings = databases
        .iter()
        .map(|(name, db)| async move { (*name, mallbots_platform::db::ping(db).await) });
    let (broker, pinged) = tokio::join!(broker.check(), futures_util::future::join_all(pings));
    let causes: Vec<String> = broker
        .err()
        .map(|err| format!("broker: {err}"))
        .into_iter()
        .chain(pinged.into_iter().filter_map(|(name, pinged)| {
            pinged.err().map(|err| format!("database of {name}: {err}"))
        }))
        .collect();
    if causes.is_empty() {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, causes.join("\n")).into_response()
    }
}

/// The routes of a process that runs modules but no gateway: `/metrics`
/// (its consumers, and the outboxes and read models of its modules),
/// `/healthz`, and `/readyz` (its broker and its modules' databases).
pub fn metrics_only(
    metrics: Arc<crate::metrics::Metrics>,
    broker: Arc<dyn mallbots_platform::Broker>,
    modules: Vec<(&'static str, sea_orm::DatabaseConnection)>,
    sources: Vec<(&'static str, sea_orm::DatabaseConnection)>,
    readers: crate::consistency::Readers,
    stopping: mallbots_platform::Shutdown,
) -> Router {
    let (modules, sources, readers) = (Arc::new(modules), Arc::new(sources), Arc::new(readers));
    let ready = {
        let (broker, modules) = (broker.clone(), modules.clone());
        move || async move { readiness(stopping.is_triggered(), broker.as_ref(), &modules).await }
    };
    let scrape = move || {
        let (metrics, broker, modules, sources, readers) = (
            metrics.clone(),
            broker.clone(),
            modules.clone(),
            sources.clone(),
            readers.clone(),
        );
        async move {
            let text = metrics
                .scrape(broker.as_ref(), &modules, &sources, &readers)
                .await;
            ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
        }
    };
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
}

/// What a process's door answers while it starts (waits for the broker or
/// the databases, migrates): alive (`/healthz` 200), not ready (`/readyz`
/// 503), and any other request `UNAVAILABLE` with `Retry-After: 1`, each
/// saying what it waits for.
pub fn starting(phase: crate::serve::Starting) -> Router {
    let (alive, waiting) = (phase.clone(), phase.clone());
    let routes = Router::new()
        .route(
            "/healthz",
            get(move || async move { format!("ok, starting: {}", alive.now()) }),
        )
        .route(
            "/readyz",
            get(move || async move {
                let why = format!("starting: {}", waiting.now());
                (StatusCode::SERVICE_UNAVAILABLE, why)
            }),
        );
    routes.fallback(move |headers: HeaderMap| async move {
        let err = ApiError::new(
            ErrorCode::Unavailable,
            format!("the service is starting ({}): retry shortly", phase.now()),
        );
        let status = StatusCode::SERVICE_UNAVAILABLE;
        let mut response = coded_error_response(status, &err, wants_graphql_response(&headers));
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1));
        response
    })
}

async fn metrics(
    State(http): State<Arc<Http>>,
    ConnectInfo(Peer(client)): ConnectInfo<Peer>,
) -> Response {
    // Rate limited per address like any request: a scrape is cheap, a
    // flood of them is not.
    let address = crate::clients::key(&Identity::ANONYMOUS, client.ip());
    if let Err(wait) = http.rate.check(&address) {
        return rate_limited(wait, false);
    }
    let app = &http.app;
    let text = app
        .metrics
        .scrape(app.broker.as_ref(), &app.databases, &[], &app.readers)
        .await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

#[cfg(test)]
mod tests {
    use async_graphql::{ErrorExtensionValues, PathSegment, Response, ServerError, value};

    use super::*;

    fn failed(path: &[&str], code: ErrorCode) -> ServerError {
        let mut error = ServerError::new("failed", None);
        error.path = path
            .iter()
            .map(|f| PathSegment::Field((*f).to_owned()))
            .collect();
        let mut extensions = ErrorExtensionValues::default();
        extensions.set("code", code.as_str());
        error.extensions = Some(extensions);
        error
    }

    fn answer(data: async_graphql::Value, error: ServerError) -> Response {
        let mut response = Response::new(data);
        response.errors.push(error);
        response
    }

    #[test]
    fn a_field_lost_to_an_outage_is_a_503() {
        let read = answer(
            value!({ "store": null }),
            failed(&["store"], ErrorCode::Unavailable),
        );
        assert!(unavailable(&read));
        let refused = answer(
            value!({ "increaseProductPrice": null }),
            failed(&["increaseProductPrice"], ErrorCode::Unavailable),
        );
        assert!(unavailable(&refused));
        let whole = answer(
            async_graphql::Value::Null,
            failed(&[], ErrorCode::Unavailable),
        );
        assert!(unavailable(&whole));
    }

    #[test]
    fn an_answered_field_makes_no_503() {
        let applied = answer(
            value!({ "increaseProductPrice": { "id": "p", "product": null } }),
            failed(&["increaseProductPrice", "product"], ErrorCode::Unavailable),
        );
        assert!(!unavailable(&applied));
        // Two mutations, one applied: a retry would apply it again.
        let one_of_two = answer(
            value!({ "a": { "id": "p" }, "b": null }),
            failed(&["b"], ErrorCode::Unavailable),
        );
        assert!(!unavailable(&one_of_two));
        let internal = answer(
            value!({ "store": null }),
            failed(&["store"], ErrorCode::Internal),
        );
        assert!(!unavailable(&internal));
    }
}
