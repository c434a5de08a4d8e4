//! The monitor's HTTP server: the dashboard (embedded HTML/JS/CSS, nothing fetched from
//! elsewhere), the JSON API, live updates as server-sent events, and Prometheus `/metrics`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::IntervalStream;

use crate::shared::Shared;

/// How often `/events` sends the overview.
pub const EVENTS_EVERY_MS: u64 = 1_000;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");
/// Where the page's first data goes (so it renders before any request, and without JS timing).
const INITIAL_MARKER: &str = "/*INITIAL_OVERVIEW*/null";

/// The router of every endpoint.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/api/flows", get(flows))
        .route("/api/health", get(health))
        .route("/api/clearing", get(clearing))
        .route("/api/alerts", get(alerts))
        .route("/api/outcomes", get(outcomes))
        .route("/api/overview", get(overview))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

async fn index(State(shared): State<Shared>) -> Html<String> {
    // `</` would end the script element early; JSON allows `<\/` for it.
    let initial = shared.overview().to_string().replace("</", "<\\/");
    Html(INDEX_HTML.replace(INITIAL_MARKER, &initial))
}

async fn app_js() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS).into_response()
}

async fn style_css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE_CSS).into_response()
}

#[derive(Debug, Deserialize)]
struct FlowsQuery {
    period: Option<String>,
}

async fn flows(State(shared): State<Shared>, Query(query): Query<FlowsQuery>) -> Response {
    match query.period.as_deref() {
        None | Some("hour" | "day" | "month") => Json(shared.flows_view(query.period.as_deref())).into_response(),
        Some(other) => (
            axum::http::StatusCode::BAD_REQUEST,
            format!("period must be hour, day or month, not {other:?}\n"),
        )
            .into_response(),
    }
}

async fn health(State(shared): State<Shared>) -> Json<serde_json::Value> {
    Json(shared.health_view())
}

async fn outcomes(State(shared): State<Shared>) -> Json<serde_json::Value> {
    Json(shared.outcomes_view())
}

async fn clearing(State(shared): State<Shared>) -> Json<serde_json::Value> {
    Json(shared.clearing_view())
}

async fn alerts(State(shared): State<Shared>) -> Json<serde_json::Value> {
    let alerts = shared.alerts();
    Json(serde_json::json!({"count": alerts.len(), "alerts": alerts}))
}

async fn overview(State(shared): State<Shared>) -> Json<serde_json::Value> {
    Json(shared.overview())
}

async fn events(State(shared): State<Shared>) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>> {
    let ticks = IntervalStream::new(tokio::time::interval(Duration::from_millis(EVENTS_EVERY_MS)));
    let stream = ticks.map(move |_| Ok(Event::default().event("overview").data(shared.overview().to_string())));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(State(shared): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        shared.metrics_text(),
    )
        .into_response()
}
