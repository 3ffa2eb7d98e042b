//! Admin HTTP server (actix-web): inspection of the live actor graph, users
//! and message traces, provisioning of users and groups at run time,
//! Prometheus metrics and the graph web page. Endpoints and examples: docs/admin.md.
//!
//! Authentication: when a token is configured every endpoint except
//! `/health` and the static page (which holds no data and asks for the
//! token itself) needs `Authorization: Bearer TOKEN`, else 401. A
//! non-loopback address is refused without a token.

pub mod cli;
pub mod client;
mod graph;
mod groups;
mod metrics;
pub mod provisioning;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, App, FromRequest, HttpRequest, HttpResponse, HttpServer, ResponseError};
use cpm_actors::inspect::{PfSnapshot, SnapshotPf};
use cpm_actors::{Aor, ParticipatingFunction};
use serde::Serialize;

use crate::ingress::{Core, SipIngress};

/// `--admin` / `--admin-token`.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    pub listen: SocketAddr,
    pub token: Option<String>,
}

impl AdminOptions {
    /// A non-loopback address needs a token.
    pub fn check(&self) -> anyhow::Result<()> {
        let has_token = self.token.as_deref().is_some_and(|t| !t.is_empty());
        anyhow::ensure!(
            self.listen.ip().is_loopback() || has_token,
            "refusing to bind the admin API to non-loopback {} without a token (--admin-token or CPM_ADMIN_TOKEN)",
            self.listen
        );
        Ok(())
    }
}

/// What every handler shares.
pub struct AdminState {
    pub core: Arc<Core>,
    pub ingress: Vec<Addr<SipIngress>>,
    pub started: Instant,
    token: Option<String>,
    /// Users, preferences, groups and policy changed here, stored before in force.
    provisioning: provisioning::Provisioning,
    /// What DELETE /api/policy goes back to.
    file_policy: cpm_actors::Policy,
}

/// How long a handler waits for one actor's snapshot.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// Parse `--admin`: `HOST:PORT`, or `off`.
pub fn parse_listen(s: &str) -> Result<Option<SocketAddr>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| format!("--admin {s:?}: expected HOST:PORT or off ({e})"))
}

/// Bind and start the admin server on the current actix System; returns the
/// bound address (port 0 picks one).
pub fn start(opts: AdminOptions, server: &crate::server::Server) -> anyhow::Result<SocketAddr> {
    let (core, ingress) = (server.core.clone(), server.ingress.clone());
    opts.check()?;
    let token = opts.token.filter(|t| !t.is_empty());
    let state = web::Data::new(AdminState {
        provisioning: provisioning::Provisioning::new(core.env.store.clone()),
        file_policy: server.file_policy.clone(),
        core,
        ingress,
        started: Instant::now(),
        token,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(64 * 1024)
                    .error_handler(|e, _| ApiError::bad_request(format!("bad JSON body: {e}")).into()),
            )
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::bad_request(format!("bad query: {e}")).into()),
            )
            .app_data(
                web::PathConfig::default().error_handler(|e, _| ApiError::bad_request(format!("bad path: {e}")).into()),
            )
            .route("/health", web::get().to(health))
            .route("/", web::get().to(page))
            .route("/metrics", web::get().to(metrics::metrics))
            .route("/api/graph", web::get().to(graph::graph))
            .route("/api/trace", web::get().to(trace))
            .route("/api/trace/recent", web::get().to(trace_recent))
            .route("/api/policy", web::get().to(users::policy))
            .route("/api/policy", web::put().to(users::set_policy))
            .route("/api/policy", web::delete().to(users::reset_policy))
            .route("/api/users", web::get().to(users::list))
            .route("/api/users", web::post().to(users::create))
            .route("/api/users/{aor}", web::get().to(users::show))
            .route("/api/users/{aor}", web::delete().to(users::delete))
            .route("/api/users/{aor}/preferences", web::get().to(users::get_preferences))
            .route("/api/users/{aor}/preferences", web::put().to(users::put_preferences))
            .route("/api/groups", web::get().to(groups::list))
            .route("/api/groups/{uri}", web::get().to(groups::show))
            .route("/api/groups/{uri}", web::put().to(groups::put))
            .route("/api/groups/{uri}", web::delete().to(groups::delete))
            .default_service(web::to(not_found))
    })
    .workers(1)
    .disable_signals()
    .bind(opts.listen)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("admin server bound no address"))?;
    actix_rt::spawn(server.run());
    tracing::info!(%addr, "admin API listening");
    Ok(addr)
}

/// A JSON error: `{"error": "..."}` with the status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            resp.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"cpm-admin\""));
        }
        resp.json(serde_json::json!({ "error": self.message }))
    }
}

/// Extractor: the request carries the configured bearer token (or none is configured).
pub struct Authorized;

impl FromRequest for Authorized {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Authorized, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(check_token(req))
    }
}

fn check_token(req: &HttpRequest) -> Result<Authorized, ApiError> {
    let state = req
        .app_data::<web::Data<AdminState>>()
        .ok_or_else(|| ApiError::internal("admin state missing"))?;
    let Some(expected) = &state.token else {
        return Ok(Authorized);
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(Authorized),
        Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid bearer token")),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer token",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 200 while the store acknowledges writes as durable, 503 once a flush
/// failed (until one succeeds): deferred messages, registrations and
/// reports are then refused with 500, so an operator or orchestrator must
/// know. No token needed, and no detail beyond the store's error.
async fn health(state: web::Data<AdminState>) -> HttpResponse {
    match state.core.env.store.health().failing {
        None => HttpResponse::Ok().json(serde_json::json!({ "status": "ok" })),
        Some(error) => HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "status": "failing",
            "store": error,
        })),
    }
}

const PAGE: &str = include_str!("static/index.html");

/// The graph page: static HTML/JS/SVG, no data in it (it calls the API).
async fn page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(PAGE)
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "no such endpoint: {} {}",
        req.method(),
        req.path()
    )))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceQuery {
    call_id: Option<String>,
    message_id: Option<String>,
}

#[derive(Serialize)]
struct TraceReply {
    call_id: Option<String>,
    message_id: Option<String>,
    /// Message ids linked to the Call-ID (CPIM imdn.Message-ID).
    message_ids: Vec<String>,
    events: Vec<cpm_actors::TraceEvent>,
}

/// GET /api/trace?call_id=...|message_id=...
async fn trace(
    _: Authorized,
    state: web::Data<AdminState>,
    q: web::Query<TraceQuery>,
) -> Result<HttpResponse, ApiError> {
    let tracer = &state.core.env.tracer;
    let q = q.into_inner();
    let (events, message_ids) = match (&q.call_id, &q.message_id) {
        (Some(c), None) if !c.trim().is_empty() => (tracer.by_call_id(c.trim()), tracer.message_ids(c.trim())),
        (None, Some(m)) if !m.trim().is_empty() => (tracer.by_message_id(m.trim()), vec![m.trim().to_string()]),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one non-empty query parameter: call_id or message_id",
            ))
        }
    };
    if events.is_empty() {
        let sampled = match tracer.sampling() {
            1 => String::new(),
            n => format!("; under the current load it records 1 call in {n}"),
        };
        return Err(ApiError::not_found(format!(
            "no trace events for {} (the trace keeps the last {} events{sampled})",
            q.call_id.as_deref().or(q.message_id.as_deref()).unwrap_or_default(),
            tracer.capacity()
        )));
    }
    Ok(HttpResponse::Ok().json(TraceReply {
        call_id: q.call_id,
        message_id: q.message_id,
        message_ids,
        events,
    }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RecentQuery {
    limit: Option<usize>,
}

/// GET /api/trace/recent?limit=N (default 100, at most 10000).
async fn trace_recent(
    _: Authorized,
    state: web::Data<AdminState>,
    q: web::Query<RecentQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    let events = state.core.env.tracer.recent(limit);
    Ok(HttpResponse::Ok().json(serde_json::json!({ "events": events })))
}

/// Snapshots of every live PF (those that do not answer in time are left out).
pub(crate) async fn pf_snapshots(state: &AdminState) -> Vec<(Aor, Option<PfSnapshot>, Duration)> {
    let pfs = state.core.dir.active();
    let asks = pfs.into_iter().map(|(aor, addr)| async move {
        let (snap, rtt) = snapshot(&addr).await;
        (aor, snap, rtt)
    });
    let mut out = futures::future::join_all(asks).await;
    out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    out
}

pub(crate) async fn snapshot(addr: &Addr<ParticipatingFunction>) -> (Option<PfSnapshot>, Duration) {
    let t = Instant::now();
    let snap = tokio::time::timeout(SNAPSHOT_TIMEOUT, addr.send(SnapshotPf))
        .await
        .ok()
        .and_then(Result::ok);
    (snap, t.elapsed())
}

/// Round trip to an ingress actor (its queue delay).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Ping;

impl Handler<Ping> for SipIngress {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}
