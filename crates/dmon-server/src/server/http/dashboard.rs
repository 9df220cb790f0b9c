//! The dashboard at `GET /`: one page, its script and its style embedded
//! in the binary (no CDN, no build step), and the two small JSON routes it
//! reads besides the index's WebSocket subscription:
//!
//! - `GET /stats`: the `dmon stats` JSON (counters, sinks, and every stream
//!   node's `in`, `out`, `errors` by path); the page polls it for per-node
//!   rates.
//! - `GET /series?query=Q&minutes=M`: the recent (receive time, metric)
//!   points of each matching (host, service), from the recent-traffic ring
//!   (`--recent-minutes`), bounded in series and points; the page draws its
//!   sparklines from it, then goes on with the subscription's events.
//!
//! The page treats events as untrusted (text only, never markup) and is
//! served with a Content-Security-Policy that allows only its own origin.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query as Params, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::{parse_query, shutting_down, HttpError, Shared};
use crate::recent::Series;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// Series in one `/series` answer: those heard from last are kept, and the
/// answer says `"truncated": true`. The page shows as many rows at most.
pub const MAX_SERIES: usize = 500;
/// Points per series in one `/series` answer, the newest.
pub const MAX_POINTS: usize = 300;

/// `/stats` renderings at once. Taking the node counters visits every node,
/// and one held up by a lock must not pile up blocking threads.
static STATS_AT_ONCE: Semaphore = Semaphore::const_new(2);
/// How long `/stats` waits for the node counters before answering 503.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// Same origin only: scripts, styles and connections (the WebSocket
/// included) from the page's own server, no frames, no inline code.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The dashboard's routes, merged into the listener's router.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(page))
        .route("/dashboard.js", get(script))
        .route("/dashboard.css", get(style))
        .route("/routes", get(routes))
        .route("/stats", get(stats))
        .route("/series", get(series))
}

/// Headers every dashboard answer carries.
fn guarded(content_type: &'static str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    // Assets change with the binary; answers change all the time.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn page() -> Response {
    guarded("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    guarded("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    guarded("text/css; charset=utf-8", STYLE)
}

/// The routes, as text: what `GET /` answered before the dashboard.
async fn routes() -> Response {
    guarded(
        "text/plain; charset=utf-8",
        "dmon\n\
         GET /                                    the dashboard (HTML)\n\
         GET /index?query=Q                       the index's events matching Q, as JSON\n\
         GET /index?subscribe=true&query=Q        (WebSocket) current matches, then each match as it is indexed\n\
         GET /index/sse?subscribe=true&query=Q    the same as server-sent events (or /index with Accept: text/event-stream)\n\
         GET /stats                               dmon's counters and every stream node's, as JSON (as `dmon stats`)\n\
         GET /series?query=Q&minutes=M            recent metrics of each matching host and service, as JSON\n\
         GET /metrics                             Prometheus metrics\n\
         GET /routes                              this list\n",
    )
}

fn json(body: String) -> Response {
    guarded("application/json", body)
}

/// `GET /stats`: `dmon stats`'s JSON.
async fn stats(State(shared): State<Arc<Shared>>) -> Result<Response, HttpError> {
    let Ok(permit) = STATS_AT_ONCE.try_acquire() else {
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node counters are being taken for other clients; retry later",
        ));
    };
    let pipeline = Arc::clone(&shared.pipeline);
    let taking = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        serde_json::to_string(&pipeline.stats())
    });
    match tokio::time::timeout(STATS_TIMEOUT, taking).await {
        Ok(Ok(Ok(body))) => Ok(json(body)),
        Ok(Ok(Err(e))) => Err(HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("stats failed: {e}"),
        )),
        Ok(Err(e)) => Err(HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("stats failed: {e}"),
        )),
        Err(_) => {
            let busy = shared.pipeline.counters();
            Err(HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the node counters did not come within {STATS_TIMEOUT:?}: a node holds them up \
                     (dispatch busy for {:.1} s in {})",
                    busy.dispatch_busy_secs,
                    busy.dispatch_busy_in.as_deref().unwrap_or("nothing")
                ),
            ))
        }
    }
}

#[derive(Deserialize)]
pub struct SeriesParams {
    query: Option<String>,
    minutes: Option<String>,
}

/// `GET /series`' answer.
#[derive(Serialize)]
struct SeriesAnswer {
    /// The server's clock (seconds), so a client can place its own points
    /// beside these.
    now: f64,
    /// Points received at this time or later.
    since: f64,
    /// The ring's window (`--recent-minutes` in seconds); 0 when it is off,
    /// and then there are no points.
    window_secs: f64,
    max_series: usize,
    max_points: usize,
    /// More series matched than `max_series`.
    truncated: bool,
    series: Vec<Series>,
}

/// `minutes` as a number of minutes, positive and finite.
fn parse_minutes(text: &str) -> Result<f64, HttpError> {
    match text.trim().parse::<f64>() {
        Ok(m) if m > 0.0 && m.is_finite() => Ok(m),
        _ => Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            format!("minutes={text:?}: expected a positive number of minutes"),
        )),
    }
}

/// `GET /series`: the recent points of each (host, service) whose received
/// events match the query.
async fn series(
    State(shared): State<Arc<Shared>>,
    Params(params): Params<SeriesParams>,
) -> Result<Response, HttpError> {
    let Some(text) = params.query else {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "missing the query parameter: /series?query=Q&minutes=M, e.g. query=true \
             (URL-encoded Riemann query)",
        ));
    };
    let minutes = params.minutes.as_deref().map(parse_minutes).transpose()?;
    let query = parse_query(&shared, text).await?;
    let queried = Arc::clone(&query);
    let window_secs = shared.pipeline.recent.window_secs();
    // Defaults to, and is capped by, what the ring keeps.
    let secs = minutes.map_or(window_secs, |m| (m * 60.0).min(window_secs));
    let now = shared.pipeline.context().now();
    let since = now - secs;
    // A pass over the ring is a search's worth of work: it waits its turn
    // with the searches.
    let Ok(_searching) = shared.searches.acquire().await else {
        return Err(shutting_down());
    };
    let pipeline = Arc::clone(&shared.pipeline);
    let found = tokio::task::spawn_blocking(move || {
        pipeline
            .recent
            .series_matching(since, MAX_SERIES, MAX_POINTS, |e| query.matches(e))
    })
    .await
    .map_err(|e| {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("series failed: {e}"),
        )
    })?;
    let answer = SeriesAnswer {
        now,
        since,
        window_secs,
        max_series: MAX_SERIES,
        max_points: MAX_POINTS,
        truncated: found.truncated,
        series: found.series,
    };
    serde_json::to_string(&answer)
        .map(|body| super::with_warnings(json(body), &queried))
        .map_err(|e| {
            HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("series failed: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_are_positive_and_finite() {
        assert_eq!(parse_minutes("2.5").unwrap(), 2.5);
        assert_eq!(parse_minutes(" 1 ").unwrap(), 1.0);
        for bad in ["0", "-1", "NaN", "inf", "", "five"] {
            let e = parse_minutes(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.message.contains("positive number of minutes"), "{bad}");
        }
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        // Embedded assets only: no absolute URLs in the page or its script,
        // and no inline script or style the CSP would refuse.
        for asset in [PAGE, SCRIPT, STYLE] {
            // SVG's namespace is a name, never fetched.
            let asset = asset.replace("http://www.w3.org/2000/svg", "");
            assert!(!asset.contains("http://") && !asset.contains("https://"));
        }
        assert!(PAGE.contains(r#"<script src="/dashboard.js""#));
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert!(!PAGE.contains("<style") && !PAGE.contains(" style="));
        // Event data goes in as text.
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("insertAdjacentHTML"));
    }
}
