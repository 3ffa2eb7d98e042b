//! GET /api/graph: every live actor and its edges, as JSON or Graphviz DOT.

use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use cpm_actors::inspect::SnapshotCf;

use super::{pf_snapshots, AdminState, ApiError, Authorized, Ping, SNAPSHOT_TIMEOUT};

pub const MAILBOX_NOTE: &str = "actix does not expose mailbox lengths; in_flight (PF: requests being worked on; CF: \
     group messages whose copies are on their way) and pending (device: forks not yet answered) are counted by the \
     actors themselves, and rtt_us is the round trip of the snapshot message through the actor's mailbox";

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// Unique: `ingress:N`, `cf:GROUP`, `pf:AOR`, `device:AOR#KEY`.
    pub id: String,
    /// `ingress`, `cf`, `pf` or `device`.
    pub kind: &'static str,
    pub key: String,
    /// Milliseconds since the actor started (None: not known).
    pub age_ms: Option<u64>,
    /// Milliseconds since its last activity (None: not known).
    pub idle_ms: Option<u64>,
    /// Requests the actor is working on (PF in_flight, device pending forks,
    /// CF group messages whose copies are still on their way).
    pub in_flight: Option<usize>,
    /// Round trip of the snapshot message (queue delay), microseconds.
    pub rtt_us: Option<u64>,
    /// Kind-specific details.
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// `registration` (PF → device), `member` (CF → active member PF) or
    /// `member-passive` (CF → a member whose PF is not active: no such node).
    pub kind: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Graph {
    pub generated_at_ms: u64,
    pub uptime_ms: u64,
    pub counts: serde_json::Value,
    pub mailbox_depth: &'static str,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphQuery {
    format: Option<String>,
    /// Only users whose AOR contains this (case-insensitive).
    user: Option<String>,
}

pub async fn build(state: &AdminState, user: Option<&str>) -> Graph {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for (i, addr) in state.ingress.iter().enumerate() {
        let t = Instant::now();
        let alive = tokio::time::timeout(SNAPSHOT_TIMEOUT, addr.send(Ping))
            .await
            .is_ok_and(|r| r.is_ok());
        nodes.push(Node {
            id: format!("ingress:{i}"),
            kind: "ingress",
            key: format!("worker {i}"),
            age_ms: Some(state.started.elapsed().as_millis() as u64),
            idle_ms: None,
            in_flight: None,
            rtt_us: alive.then(|| t.elapsed().as_micros() as u64),
            detail: serde_json::json!({ "alive": alive }),
        });
    }
    let filter = user.map(str::to_ascii_lowercase).filter(|u| !u.is_empty());
    let (mut pfs, mut devices) = (0usize, 0usize);
    for (aor, snap, rtt) in pf_snapshots(state).await {
        if filter
            .as_ref()
            .is_some_and(|f| !aor.as_str().to_ascii_lowercase().contains(f))
        {
            continue;
        }
        pfs += 1;
        let id = format!("pf:{aor}");
        let Some(s) = snap else {
            nodes.push(Node {
                id,
                kind: "pf",
                key: aor.to_string(),
                age_ms: None,
                idle_ms: None,
                in_flight: None,
                rtt_us: None,
                detail: serde_json::json!({ "unresponsive": true }),
            });
            continue;
        };
        for r in &s.registrations {
            devices += 1;
            let dev_id = format!("device:{aor}#{}", r.key);
            edges.push(Edge {
                from: id.clone(),
                to: dev_id.clone(),
                kind: "registration",
            });
            let actor = r.actor.as_ref();
            nodes.push(Node {
                id: dev_id,
                kind: "device",
                key: r.key.clone(),
                age_ms: actor.map(|a| a.age_ms),
                idle_ms: actor.map(|a| a.idle_ms),
                in_flight: actor.map(|a| a.pending),
                rtt_us: None,
                detail: serde_json::json!({
                    "user": aor.as_str(),
                    "contact": r.contact,
                    "transport": r.transport,
                    "expires_in": r.expires_in,
                    "capabilities": r.capabilities,
                    "cpm_capable": r.cpm_capable,
                    "actor_running": actor.is_some(),
                    "forks": actor.map(|a| a.forks),
                    "delivered": actor.map(|a| a.delivered),
                }),
            });
        }
        nodes.push(Node {
            id,
            kind: "pf",
            key: aor.to_string(),
            age_ms: Some(s.age_ms),
            idle_ms: Some(s.idle_ms),
            in_flight: Some(s.in_flight),
            rtt_us: Some(rtt.as_micros() as u64),
            detail: serde_json::json!({
                "registrations": s.registrations.len(),
                "deferred": s.deferred_count,
                "dnd": s.dnd,
                "pushing": s.pushing,
            }),
        });
    }
    let cfs = cf_nodes(state, filter.as_deref(), &mut nodes, &mut edges).await;
    Graph {
        generated_at_ms: cpm_actors::unix_now() * 1000,
        uptime_ms: state.started.elapsed().as_millis() as u64,
        counts: serde_json::json!({
            "ingress": state.ingress.len(),
            "cf": cfs,
            "pf": pfs,
            "device": devices,
            "activations": state.core.dir.activations(),
        }),
        mailbox_depth: MAILBOX_NOTE,
        nodes,
        edges,
    }
}

/// Every live Controlling Function (kept when the group or one of its
/// members matches `filter`), and its edges to the members from the registry.
async fn cf_nodes(state: &AdminState, filter: Option<&str>, nodes: &mut Vec<Node>, edges: &mut Vec<Edge>) -> usize {
    let mut cfs = state.core.dir.active_cfs();
    cfs.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let mut count = 0;
    for (group, addr) in cfs {
        let def = state.core.env.groups.get(group.as_str());
        let members: &[String] = def.as_ref().map_or(&[], |d| &d.members);
        let matches = |s: &str| filter.is_none_or(|f| s.to_ascii_lowercase().contains(f));
        if !matches(group.as_str()) && !members.iter().any(|m| matches(m)) {
            continue;
        }
        count += 1;
        let id = format!("cf:{group}");
        let t = Instant::now();
        let snap = tokio::time::timeout(SNAPSHOT_TIMEOUT, addr.send(SnapshotCf))
            .await
            .ok()
            .and_then(Result::ok);
        let rtt = snap.as_ref().map(|_| t.elapsed().as_micros() as u64);
        let snap = snap.map(|s| s.count_reports(&state.core.env.store));
        let mut passive = 0usize;
        for m in members {
            let active = state.core.dir.is_active(&cpm_actors::Aor::from_canonical(m.as_str()));
            passive += usize::from(!active);
            edges.push(Edge {
                from: id.clone(),
                to: format!("pf:{m}"),
                kind: if active { "member" } else { "member-passive" },
            });
        }
        nodes.push(Node {
            id,
            kind: "cf",
            key: group.to_string(),
            age_ms: snap.as_ref().map(|s| s.age_ms),
            idle_ms: snap.as_ref().map(|s| s.idle_ms),
            in_flight: snap.as_ref().map(|s| s.fanouts),
            rtt_us: rtt,
            detail: serde_json::json!({
                "group": group.as_str(),
                "defined": def.is_some(),
                "members": members.len(),
                "passive_members": passive,
                "pending_reports": snap.as_ref().map(|s| s.pending_reports),
                "copies_in_flight": snap.as_ref().map(|s| s.copies_in_flight),
                "last_activity_ms_ago": snap.as_ref().map(|s| s.idle_ms),
                "unresponsive": snap.is_none(),
            }),
        });
    }
    count
}

pub async fn graph(
    _: Authorized,
    state: web::Data<AdminState>,
    q: web::Query<GraphQuery>,
) -> Result<HttpResponse, ApiError> {
    let format = q.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "dot") {
        return Err(ApiError::bad_request(format!("unknown format {format:?}: json or dot")));
    }
    let g = build(&state, q.user.as_deref()).await;
    Ok(match format {
        "dot" => HttpResponse::Ok()
            .content_type("text/vnd.graphviz; charset=utf-8")
            .body(to_dot(&g)),
        _ => HttpResponse::Ok().json(g),
    })
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn ms(v: Option<u64>) -> String {
    v.map(|m| format!("{:.1}s", Duration::from_millis(m).as_secs_f64()))
        .unwrap_or_else(|| "?".into())
}

/// Graphviz DOT: ingress boxes, CF hexagons, PF ellipses, device notes;
/// PF → device and CF → member edges (dashed to a passive member, drawn as
/// a dashed ellipse).
pub fn to_dot(g: &Graph) -> String {
    let mut out = String::from("digraph cpm {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=10];\n");
    for n in &g.nodes {
        let (shape, label) = match n.kind {
            "ingress" => ("box", format!("SipIngress\n{}", n.key)),
            "cf" => (
                "hexagon, style=filled, fillcolor=\"#e8dcf5\"",
                format!(
                    "CF {}\nage {} idle {}\npending reports {}",
                    n.key,
                    ms(n.age_ms),
                    ms(n.idle_ms),
                    n.in_flight.map_or("?".into(), |v| v.to_string())
                ),
            ),
            "pf" => (
                "ellipse",
                format!(
                    "PF {}\nage {} idle {}\nin flight {}",
                    n.key,
                    ms(n.age_ms),
                    ms(n.idle_ms),
                    n.in_flight.map_or("?".into(), |v| v.to_string())
                ),
            ),
            _ => (
                "note",
                format!(
                    "device {}\n{}",
                    n.key,
                    n.detail.get("contact").and_then(|c| c.as_str()).unwrap_or_default()
                ),
            ),
        };
        out.push_str(&format!(
            "  \"{}\" [shape={shape}, label=\"{}\"];\n",
            dot_escape(&n.id),
            dot_escape(&label)
        ));
    }
    let mut ghosts = std::collections::BTreeSet::new();
    for e in &g.edges {
        let passive = e.kind == "member-passive";
        if passive && !g.nodes.iter().any(|n| n.id == e.to) {
            ghosts.insert(e.to.as_str());
        }
        out.push_str(&format!(
            "  \"{}\" -> \"{}\" [label=\"{}\"{}];\n",
            dot_escape(&e.from),
            dot_escape(&e.to),
            e.kind,
            if passive { ", style=dashed" } else { "" }
        ));
    }
    for id in ghosts {
        let label = format!("PF {}\n(not active)", id.strip_prefix("pf:").unwrap_or(id));
        out.push_str(&format!(
            "  \"{}\" [shape=ellipse, style=dashed, label=\"{}\"];\n",
            dot_escape(id),
            dot_escape(&label)
        ));
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_is_escaped() {
        let g = Graph {
            generated_at_ms: 0,
            uptime_ms: 0,
            counts: serde_json::json!({}),
            mailbox_depth: MAILBOX_NOTE,
            nodes: vec![Node {
                id: "device:sip:b@x#<urn:\"1\">".into(),
                kind: "device",
                key: "<urn:\"1\">".into(),
                age_ms: None,
                idle_ms: None,
                in_flight: None,
                rtt_us: None,
                detail: serde_json::json!({"contact": "<sip:b@1.2.3.4>"}),
            }],
            edges: vec![Edge {
                from: "pf:sip:b@x".into(),
                to: "device:sip:b@x#<urn:\"1\">".into(),
                kind: "registration",
            }],
        };
        let dot = to_dot(&g);
        assert!(dot.starts_with("digraph cpm {"));
        assert!(dot.contains("\"device:sip:b@x#<urn:\\\"1\\\">\" [shape=note"));
        assert!(dot.contains("\"pf:sip:b@x\" -> "));
    }

    #[test]
    fn dot_draws_cf_and_passive_members() {
        let g = Graph {
            generated_at_ms: 0,
            uptime_ms: 0,
            counts: serde_json::json!({}),
            mailbox_depth: MAILBOX_NOTE,
            nodes: vec![Node {
                id: "cf:sip:g@x".into(),
                kind: "cf",
                key: "sip:g@x".into(),
                age_ms: Some(1000),
                idle_ms: Some(0),
                in_flight: Some(1),
                rtt_us: None,
                detail: serde_json::json!({}),
            }],
            edges: vec![Edge {
                from: "cf:sip:g@x".into(),
                to: "pf:sip:c@x".into(),
                kind: "member-passive",
            }],
        };
        let dot = to_dot(&g);
        assert!(dot.contains("\"cf:sip:g@x\" [shape=hexagon"), "{dot}");
        assert!(dot.contains("pending reports 1"), "{dot}");
        assert!(dot.contains("\"cf:sip:g@x\" -> \"pf:sip:c@x\" [label=\"member-passive\", style=dashed]"));
        assert!(dot.contains("\"pf:sip:c@x\" [shape=ellipse, style=dashed"), "{dot}");
    }
}
