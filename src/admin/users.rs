//! Users: inspection (active or passive, from the store without activating
//! them) and provisioning at run time (create, delete, preferences).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use cpm_actors::inspect::{stored_user, SetPreferences};
use cpm_actors::{Aor, LocalDomains, Preferences};
use cpm_sip::SipUri;
use serde::Deserialize;

use super::provisioning::{PolicyUpdate, ProvisionError, UserChange};
use super::{snapshot, AdminState, ApiError, Authorized};

/// Oldest deferred messages listed in a user view.
const DEFERRED_LISTED: usize = 50;
/// Recent trace events listed in a user view.
const RECENT_LISTED: usize = 20;

/// `sip:bob@example.com`, `tel:+1555...`, `bob@example.com` or `bob`
/// (in the primary domain) → the canonical AOR of a local user.
pub fn resolve(domains: &LocalDomains, raw: &str) -> Result<Aor, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ApiError::bad_request("empty user address"));
    }
    let lower = raw.to_ascii_lowercase();
    let text = if ["sip:", "sips:", "tel:"].iter().any(|s| lower.starts_with(s)) {
        raw.to_string()
    } else if raw.contains('@') {
        format!("sip:{raw}")
    } else {
        format!("sip:{raw}@{}", domains.primary())
    };
    let uri =
        SipUri::parse(&text).map_err(|e| ApiError::bad_request(format!("{raw:?} is not a SIP or TEL URI: {e}")))?;
    domains
        .local_aor(&uri)
        .ok_or_else(|| ApiError::bad_request(format!("{raw:?} is not an address of a local domain")))
}

/// Check and canonicalize preferences (as the config loader does).
fn validate(domains: &LocalDomains, mut p: Preferences) -> Result<Preferences, ApiError> {
    let mut from = Vec::with_capacity(p.reject_from.len());
    for a in &p.reject_from {
        let uri = SipUri::parse(a.trim())
            .map_err(|e| ApiError::bad_request(format!("reject_from: {a:?} is not a SIP or TEL URI: {e}")))?;
        if !matches!(uri.scheme.as_str(), "sip" | "sips" | "tel") {
            return Err(ApiError::bad_request(format!(
                "reject_from: {a:?} is not a SIP or TEL URI"
            )));
        }
        from.push(match domains.local_aor(&uri) {
            Some(aor) => aor.as_str().to_string(),
            None => a.trim().to_ascii_lowercase(),
        });
    }
    p.reject_from = from;
    for t in &p.reject_content_types {
        let ok = t
            .split_once('/')
            .is_some_and(|(a, b)| !a.trim().is_empty() && !b.trim().is_empty() && !t.contains(char::is_whitespace));
        if !ok {
            return Err(ApiError::bad_request(format!(
                "reject_content_types: {t:?} is not a media type (type/subtype)"
            )));
        }
    }
    p.reject_content_types = p.reject_content_types.iter().map(|t| t.to_ascii_lowercase()).collect();
    Ok(p)
}

/// A change that could not be stored is not in force: 500, and said so.
pub(super) fn stored_error(what: &impl std::fmt::Display, e: ProvisionError) -> ApiError {
    tracing::error!(%what, error = %e, "run-time provisioning not stored; not applied");
    ApiError::internal(format!("{what}: {e}; the change is not applied"))
}

/// Tell the user's PF, if it is active, about new preferences (a passive
/// user reads them when it is next activated).
fn push_preferences(state: &AdminState, aor: &Aor) {
    if let Some((_, addr)) = state.core.dir.active().into_iter().find(|(a, _)| a == aor) {
        addr.do_send(SetPreferences(state.core.env.users.preferences(aor)));
    }
}

/// GET /api/users
pub async fn list(_: Authorized, state: web::Data<AdminState>) -> HttpResponse {
    let users = state.core.env.users.snapshot();
    let mut provisioned: Vec<&String> = users.provisioned.iter().collect();
    provisioned.sort();
    let mut active: Vec<String> = state
        .core
        .dir
        .active()
        .into_iter()
        .map(|(a, _)| a.to_string())
        .collect();
    active.sort();
    let mut with_bindings = state.core.env.store.aors_with_bindings(10_000).unwrap_or_default();
    with_bindings.sort();
    HttpResponse::Ok().json(serde_json::json!({
        "open": users.open,
        "provisioned": provisioned,
        "active": active,
        "registered": with_bindings,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    address: String,
    preferences: Option<Preferences>,
    /// Digest credentials: only the hashes are stored, never the password.
    password: Option<String>,
    /// Digest realm; default the address's domain (as `cpm user add`).
    realm: Option<String>,
}

/// POST /api/users {"address": "...", "preferences": {...}, "password": "...", "realm": "..."}
pub async fn create(
    _: Authorized,
    state: web::Data<AdminState>,
    body: web::Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    let NewUser {
        address,
        preferences,
        password,
        realm,
    } = body.into_inner();
    let domains = &state.core.env.domains;
    let aor = resolve(domains, &address)?;
    let prefs = preferences.map(|p| validate(domains, p)).transpose()?;
    let credentials = match password {
        Some(pw) if pw.is_empty() => return Err(ApiError::bad_request("empty password")),
        Some(pw) => {
            let realm = match realm {
                Some(r) => r,
                None => aor
                    .as_str()
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_string())
                    .ok_or_else(|| ApiError::bad_request("a tel: address needs a realm"))?,
            };
            if realm.is_empty() || realm.contains(['"', '\\']) {
                return Err(ApiError::bad_request(format!("invalid realm {realm:?}")));
            }
            Some(crate::auth::credential_record(&aor, &realm, &pw))
        }
        None => None,
    };
    // Checked and changed under the one provisioning lock: two requests
    // for the same user cannot both create it.
    let change = state.provisioning.begin().await;
    if state.core.env.users.snapshot().provisioned.contains(aor.as_str()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{aor} is already provisioned"),
        ));
    }
    if let Some(rec) = &credentials {
        // Flushed with the user's record below.
        change
            .store()
            .set_credentials(aor.as_str(), rec)
            .map_err(|e| ApiError::internal(format!("storing credentials: {e}")))?;
    }
    if let Err(e) = change
        .user(aor.as_str(), UserChange::created(prefs), &state.core.env.users)
        .await
    {
        // Not created: no password of a user that does not exist is left behind.
        if credentials.is_some() {
            if let Err(e) = change.store().remove_credentials(aor.as_str()) {
                tracing::error!(%aor, error = %e, "cannot take back the credentials of a user not created");
            }
        }
        return Err(stored_error(&aor, e));
    }
    push_preferences(&state, &aor);
    tracing::info!(%aor, "user provisioned (admin API)");
    Ok(HttpResponse::Created().json(serde_json::json!({ "aor": aor.as_str() })))
}

#[derive(Deserialize)]
pub struct AorPath {
    aor: String,
}

/// DELETE /api/users/{aor}: no longer provisioned (its registrations and
/// queued messages stay in the store until they expire).
pub async fn delete(
    _: Authorized,
    state: web::Data<AdminState>,
    path: web::Path<AorPath>,
) -> Result<HttpResponse, ApiError> {
    let aor = resolve(&state.core.env.domains, &path.aor)?;
    let change = state.provisioning.begin().await;
    let users = state.core.env.users.snapshot();
    if !users.provisioned.contains(aor.as_str()) {
        return Err(ApiError::not_found(format!("{aor} is not provisioned")));
    }
    let open = users.open;
    // The credentials go with the user (flushed with its record).
    if let Err(e) = change.store().remove_credentials(aor.as_str()) {
        tracing::warn!(%aor, error = %e, "cannot remove credentials");
    }
    change
        .user(aor.as_str(), UserChange::deleted(), &state.core.env.users)
        .await
        .map_err(|e| stored_error(&aor, e))?;
    push_preferences(&state, &aor);
    tracing::info!(%aor, "user deprovisioned (admin API)");
    let note = if open {
        "the server runs with --open: any user of a local domain may still register and send"
    } else {
        "new REGISTER and MESSAGE requests of this user are refused from now on"
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({ "deleted": aor.as_str(), "note": note })))
}

/// GET /api/users/{aor}: registrations, deferred queue, stored messages,
/// preferences, whether the PF is active, recent activity.
pub async fn show(
    _: Authorized,
    state: web::Data<AdminState>,
    path: web::Path<AorPath>,
) -> Result<HttpResponse, ApiError> {
    let env = &state.core.env;
    let aor = resolve(&env.domains, &path.aor)?;
    let users = env.users.snapshot();
    let stored = stored_user(env, &aor, DEFERRED_LISTED).map_err(ApiError::internal)?;
    let known = users.is_known(&aor);
    let live = match state.core.dir.active().into_iter().find(|(a, _)| a == &aor) {
        Some((_, addr)) => snapshot(&addr).await.0,
        None => None,
    };
    if !known
        && live.is_none()
        && stored.registrations.is_empty()
        && stored.deferred_count == 0
        && stored.stored_messages == 0
    {
        return Err(ApiError::not_found(format!("{aor} is not a known user")));
    }
    let registrations = match &live {
        Some(s) => serde_json::to_value(&s.registrations),
        None => serde_json::to_value(&stored.registrations),
    }
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let recent = env.tracer.recent_for_actor(&format!("pf:{aor}"), RECENT_LISTED);
    let prefs = users.preferences(&aor).clone();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "aor": aor.as_str(),
        "provisioned": users.provisioned.contains(aor.as_str()),
        "known": known,
        "state": if live.is_some() { "active" } else { "passive" },
        "dnd": live.as_ref().map(|s| s.dnd).or(stored.dnd_runtime).unwrap_or(prefs.dnd),
        "preferences": prefs,
        "registrations": registrations,
        "deferred_count": stored.deferred_count,
        "deferred_bytes": stored.deferred_bytes,
        "deferred": stored.deferred,
        "stored_messages": stored.stored_messages,
        "live": live.map(|s| serde_json::json!({
            "age_ms": s.age_ms,
            "idle_ms": s.idle_ms,
            "in_flight": s.in_flight,
            "pushing": s.pushing,
            "push_retries": s.push_retries,
        })),
        "recent": recent,
    })))
}

/// GET /api/users/{aor}/preferences (the user's own, else the defaults).
pub async fn get_preferences(
    _: Authorized,
    state: web::Data<AdminState>,
    path: web::Path<AorPath>,
) -> Result<HttpResponse, ApiError> {
    let aor = resolve(&state.core.env.domains, &path.aor)?;
    let users = state.core.env.users.snapshot();
    if !users.is_known(&aor) {
        return Err(ApiError::not_found(format!("{aor} is not a known user")));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "aor": aor.as_str(),
        "own": users.preferences.contains_key(aor.as_str()),
        "preferences": users.preferences(&aor),
    })))
}

/// PUT /api/users/{aor}/preferences {every key of [preferences], all optional}
pub async fn put_preferences(
    _: Authorized,
    state: web::Data<AdminState>,
    path: web::Path<AorPath>,
    body: web::Json<Preferences>,
) -> Result<HttpResponse, ApiError> {
    let domains = &state.core.env.domains;
    let aor = resolve(domains, &path.aor)?;
    let prefs = validate(domains, body.into_inner())?;
    let change = state.provisioning.begin().await;
    if !state.core.env.users.is_known(&aor) {
        return Err(ApiError::not_found(format!("{aor} is not a known user")));
    }
    change
        .user(
            aor.as_str(),
            UserChange::preferences(prefs.clone()),
            &state.core.env.users,
        )
        .await
        .map_err(|e| stored_error(&aor, e))?;
    push_preferences(&state, &aor);
    tracing::info!(%aor, "preferences changed (admin API)");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "aor": aor.as_str(), "preferences": prefs })))
}

/// GET /api/policy: the provider policy in force.
pub async fn policy(_: Authorized, state: web::Data<AdminState>) -> HttpResponse {
    let p = state.core.env.policy.get();
    let d = &p.deferred;
    HttpResponse::Ok().json(serde_json::json!({
        "registrar": {
            "min_expires": p.min_expires,
            "max_expires": p.max_expires,
            "default_expires": p.default_expires,
        },
        "messaging": {
            "max_message_size": p.max_message_size,
            "accepted_content_types": p.accepted_content_types,
            "fork_timeout_ms": p.fork_timeout.as_millis() as u64,
            "allow_anonymous": p.allow_anonymous,
            "imdn_retention_s": p.imdn_retention.as_secs(),
        },
        "actors": { "idle_timeout_s": p.idle_timeout.as_secs() },
        "deferred": {
            "default_expiry_s": d.default_expiry.as_secs(),
            "max_expiry_s": d.max_expiry.as_secs(),
            "max_messages": d.max_messages,
            "max_bytes": d.max_bytes,
            "retry_after_s": d.retry_after,
            "on_expiry": d.on_expiry,
            "reminder_interval_s": d.reminder_interval.map(|i| i.as_secs()),
            "push_retry_s": d.push_retry_interval.map(|i| i.as_secs()),
        },
        "domains": { "primary": state.core.env.domains.primary() },
        "all": format!("{p:?}"),
    }))
}

/// PUT /api/policy: replace the provider policy. Same sections and keys as
/// the config file (docs/configuration.md); a key left out takes its
/// default. Validated like the config file; stored (it replaces the config
/// file's policy from then on, restarts included), then in force for what
/// happens next.
pub async fn set_policy(
    _: Authorized,
    state: web::Data<AdminState>,
    body: web::Json<PolicyUpdate>,
) -> Result<HttpResponse, ApiError> {
    let upd = body.into_inner();
    let new_policy = upd.policy().map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    state
        .provisioning
        .begin()
        .await
        .set_policy(&upd, new_policy, &state.core.env.policy)
        .await
        .map_err(|e| stored_error(&"the provider policy", e))?;
    tracing::info!("provider policy replaced (admin API); it replaces the config file's from now on");
    Ok(policy(Authorized, state).await)
}

/// DELETE /api/policy: back to the config file's policy (404 when the API
/// never replaced it).
pub async fn reset_policy(_: Authorized, state: web::Data<AdminState>) -> Result<HttpResponse, ApiError> {
    let cleared = state
        .provisioning
        .begin()
        .await
        .clear_policy(state.file_policy.clone(), &state.core.env.policy)
        .await
        .map_err(|e| stored_error(&"the provider policy", e))?;
    if !cleared {
        return Err(ApiError::not_found("the provider policy is the config file's already"));
    }
    tracing::info!("provider policy back to the config file's (admin API)");
    Ok(policy(Authorized, state).await)
}
