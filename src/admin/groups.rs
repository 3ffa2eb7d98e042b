//! Pre-defined groups at run time (the Group XDMS stand-in): list, show,
//! create or replace, delete. The Controlling Function reads the registry for
//! every message, so a change is in force for the next one.

use std::collections::HashSet;

use actix_web::{web, HttpResponse};
use cpm_actors::cf::{GroupDef, Membership, SendPolicy};
use cpm_actors::inspect::{CfSnapshot, SnapshotCf};
use cpm_actors::{Aor, LocalDomains};
use serde::Deserialize;

use super::provisioning::ProvisionError;
use super::users::{resolve, stored_error};
use super::{AdminState, ApiError, Authorized, SNAPSHOT_TIMEOUT};

/// `max_size` when the body does not give one (as in the config file).
const DEFAULT_MAX_SIZE: usize = 100;

/// Service addresses that are routed before groups: a group there could not be reached.
const RESERVED_USERS: [&str; 2] = [
    crate::ingress::group::URI_LIST_SERVICE,
    cpm_actors::pf::notify::SERVICE_USER,
];

/// A SIP address of a local domain (the same short forms as users: `bob`,
/// `bob@example.com`, `sip:bob@example.com`) → its canonical AOR.
fn sip_aor(domains: &LocalDomains, raw: &str, what: &str) -> Result<Aor, ApiError> {
    let aor = resolve(domains, raw).map_err(|e| ApiError::bad_request(format!("{what}: {}", e.message())))?;
    if !aor.as_str().starts_with("sip:") {
        return Err(ApiError::bad_request(format!("{what}: {raw:?} is not a SIP URI")));
    }
    Ok(aor)
}

#[derive(Deserialize)]
pub struct GroupPath {
    uri: String,
}

/// PUT body. `uri`, when given, must name the group of the path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    uri: Option<String>,
    owner: String,
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    send_policy: SendPolicy,
    #[serde(default)]
    membership: Membership,
    max_size: Option<usize>,
}

/// Check and canonicalize a definition.
fn validate(domains: &LocalDomains, uri: &Aor, body: GroupBody) -> Result<GroupDef, ApiError> {
    if let Some(u) = &body.uri {
        let given = sip_aor(domains, u, "uri")?;
        if &given != uri {
            return Err(ApiError::bad_request(format!(
                "uri {given} in the body is not the group of the path ({uri})"
            )));
        }
    }
    let owner = sip_aor(domains, &body.owner, "owner")?;
    let mut seen = HashSet::new();
    let mut members = Vec::with_capacity(body.members.len());
    for m in &body.members {
        let aor = sip_aor(domains, m, "member")?;
        if &aor == uri {
            return Err(ApiError::bad_request(format!(
                "member: the group {uri} cannot be its own member"
            )));
        }
        if seen.insert(aor.clone()) {
            members.push(aor.as_str().to_string());
        }
    }
    let max_size = body.max_size.unwrap_or(DEFAULT_MAX_SIZE);
    if max_size == 0 {
        return Err(ApiError::bad_request("max_size must be at least 1"));
    }
    if members.len() > max_size {
        return Err(ApiError::bad_request(format!(
            "group {uri} has {} members, above its max_size of {max_size}",
            members.len()
        )));
    }
    Ok(GroupDef {
        uri: uri.as_str().to_string(),
        owner: owner.as_str().to_string(),
        members,
        send_policy: body.send_policy,
        membership: body.membership,
        max_size,
    })
}

fn group_uri(state: &AdminState, raw: &str) -> Result<Aor, ApiError> {
    let uri = sip_aor(&state.core.env.domains, raw, "group")?;
    if RESERVED_USERS.contains(&uri.user()) {
        return Err(ApiError::bad_request(format!(
            "group: {uri} is a service address of the server"
        )));
    }
    Ok(uri)
}

/// The live CF of a group, if any, and its snapshot.
async fn live(state: &AdminState, uri: &Aor) -> Option<CfSnapshot> {
    let (_, addr) = state.core.dir.active_cfs().into_iter().find(|(g, _)| g == uri)?;
    let snap = tokio::time::timeout(SNAPSHOT_TIMEOUT, addr.send(SnapshotCf))
        .await
        .ok()?
        .ok()?;
    Some(snap.count_reports(&state.core.env.store))
}

/// GET /api/groups
pub async fn list(_: Authorized, state: web::Data<AdminState>) -> HttpResponse {
    let mut groups = state.core.env.groups.list();
    groups.sort_by(|a, b| a.uri.cmp(&b.uri));
    let active: HashSet<String> = state
        .core
        .dir
        .active_cfs()
        .into_iter()
        .map(|(g, _)| g.to_string())
        .collect();
    let groups: Vec<serde_json::Value> = groups
        .iter()
        .map(|g| {
            let mut v = serde_json::to_value(&**g).unwrap_or_default();
            v["active"] = serde_json::Value::Bool(active.contains(&g.uri));
            v
        })
        .collect();
    HttpResponse::Ok().json(serde_json::json!({
        "group_domain": state.core.env.groups.group_domain,
        "groups": groups,
    }))
}

/// GET /api/groups/{uri}: the definition, and the CF's state when it is active.
pub async fn show(
    _: Authorized,
    state: web::Data<AdminState>,
    path: web::Path<GroupPath>,
) -> Result<HttpResponse, ApiError> {
    let uri = sip_aor(&state.core.env.domains, &path.uri, "group")?;
    let def = state
        .core
        .env
        .groups
        .get(uri.as_str())
        .ok_or_else(|| ApiError::not_found(format!("{uri} is not a group")))?;
    let live = live(&state, &uri).await;
    let mut v = serde_json::to_value(&*def).map_err(|e| ApiError::internal(e.to_string()))?;
    v["active"] = serde_json::Value::Bool(live.is_some());
    v["live"] = serde_json::to_value(live).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(v))
}

/// PUT /api/groups/{uri}: create (201) or replace (200).
pub async fn put(
    _: Authorized,
    state: web::Data<AdminState>,
    path: web::Path<GroupPath>,
    body: web::Json<GroupBody>,
) -> Result<HttpResponse, ApiError> {
    let uri = group_uri(&state, &path.uri)?;
    let def = validate(&state.core.env.domains, &uri, body.into_inner())?;
    let groups = &state.core.env.groups;
    let change = state.provisioning.begin().await;
    let existed = groups.get(uri.as_str()).is_some();
    change.set_group(def.clone(), groups).await.map_err(|e| match e {
        ProvisionError::Group(e) => ApiError::bad_request(e.to_string()),
        e => stored_error(&uri, e),
    })?;
    tracing::info!(group = %uri, members = def.members.len(), existed, "group provisioned (admin API)");
    let mut resp = if existed {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    };
    Ok(resp.json(def))
}

/// DELETE /api/groups/{uri}: messages to it are no longer group messages
/// (reports the CF is still aggregating are finished as before).
pub async fn delete(
    _: Authorized,
    state: web::Data<AdminState>,
    path: web::Path<GroupPath>,
) -> Result<HttpResponse, ApiError> {
    let uri = sip_aor(&state.core.env.domains, &path.uri, "group")?;
    let change = state.provisioning.begin().await;
    change
        .delete_group(uri.as_str(), &state.core.env.groups)
        .await
        .map_err(|e| match e {
            ProvisionError::Group(_) => ApiError::not_found(format!("{uri} is not a group")),
            e => stored_error(&uri, e),
        })?;
    tracing::info!(group = %uri, "group deleted (admin API)");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "deleted": uri.as_str() })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(members: &[&str], max_size: Option<usize>) -> GroupBody {
        GroupBody {
            uri: None,
            owner: "alice".into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            send_policy: SendPolicy::Members,
            membership: Membership::Closed,
            max_size,
        }
    }

    #[test]
    fn members_are_canonical_local_sip_and_counted() {
        let d = LocalDomains::new(&["example.com".into()], &[]);
        let g = Aor::from_canonical("sip:friends@example.com".to_string());
        let def = validate(
            &d,
            &g,
            body(&["bob", "sip:bob@EXAMPLE.com:5060", "carol@example.com"], None),
        )
        .unwrap();
        assert_eq!(def.owner, "sip:alice@example.com");
        assert_eq!(def.members, ["sip:bob@example.com", "sip:carol@example.com"]);
        assert_eq!(def.max_size, DEFAULT_MAX_SIZE);
        assert!(validate(&d, &g, body(&["sip:x@elsewhere.org"], None)).is_err());
        assert!(validate(&d, &g, body(&["tel:+15550100"], None)).is_err());
        assert!(validate(&d, &g, body(&["a", "b", "c"], Some(2)))
            .unwrap_err()
            .message()
            .contains("max_size of 2"));
        assert!(validate(&d, &g, body(&["friends"], None)).is_err());
    }
}
