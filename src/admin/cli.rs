//! `cpm inspect graph|user AOR|trace ID`: call the admin API, print tables.

use anyhow::{bail, Context as _};
use clap::Subcommand;
use serde_json::Value;

use super::client::{self, encode};

#[derive(Debug, Clone, Subcommand)]
pub enum What {
    /// Every live actor, the PF → device and CF → member edges.
    Graph {
        /// Only users whose address contains this.
        #[arg(long)]
        user: Option<String>,
        /// Print Graphviz DOT instead of a table.
        #[arg(long)]
        dot: bool,
    },
    /// One user: registrations, deferred queue, stored messages, recent activity.
    User { aor: String },
    /// Every hop and decision for a Call-ID (or, if none, a CPIM Message-ID).
    Trace { id: String },
}

pub fn run(what: &What, base: &str, token: Option<&str>) -> anyhow::Result<()> {
    print!("{}", render(what, base, token)?);
    Ok(())
}

/// The text `run` prints.
pub fn render(what: &What, base: &str, token: Option<&str>) -> anyhow::Result<String> {
    match what {
        What::Graph { user, dot } => {
            let mut path = String::from("/api/graph");
            let mut sep = '?';
            if *dot {
                path.push_str("?format=dot");
                sep = '&';
            }
            if let Some(u) = user {
                path.push_str(&format!("{sep}user={}", encode(u)));
            }
            let resp = call(base, &path, token)?;
            if *dot {
                return Ok(resp.body);
            }
            Ok(graph_table(&resp.json()?))
        }
        What::User { aor } => {
            let resp = call(base, &format!("/api/users/{}", encode(aor)), token)?;
            Ok(user_table(&resp.json()?))
        }
        What::Trace { id } => {
            let by_call = client::get(base, &format!("/api/trace?call_id={}", encode(id)), token)?;
            let resp = if by_call.status == 404 {
                call(base, &format!("/api/trace?message_id={}", encode(id)), token)?
            } else {
                check(by_call)?
            };
            Ok(trace_table(&resp.json()?))
        }
    }
}

fn call(base: &str, path: &str, token: Option<&str>) -> anyhow::Result<client::Response> {
    check(client::get(base, path, token).with_context(|| format!("GET {path}"))?)
}

fn check(resp: client::Response) -> anyhow::Result<client::Response> {
    if resp.status >= 400 {
        let msg = resp
            .json()
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| resp.body.clone());
        bail!("admin API answered {}: {msg}", resp.status);
    }
    Ok(resp)
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn secs(v: &Value) -> String {
    v.as_u64()
        .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

fn graph_table(g: &Value) -> String {
    let empty = Vec::new();
    let nodes = g["nodes"].as_array().unwrap_or(&empty);
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let d = &n["detail"];
            let detail = match n["kind"].as_str() {
                Some("pf") => format!(
                    "{} registration(s), deferred {}, dnd {}",
                    s(&d["registrations"]),
                    s(&d["deferred"]),
                    s(&d["dnd"])
                ),
                Some("cf") => format!(
                    "{} member(s), {} not active, pending reports {}, copies in flight {}",
                    s(&d["members"]),
                    s(&d["passive_members"]),
                    s(&d["pending_reports"]),
                    s(&d["copies_in_flight"])
                ),
                Some("device") => format!(
                    "{} {} expires in {}s, actor {}, delivered {}",
                    s(&d["transport"]),
                    s(&d["contact"]),
                    s(&d["expires_in"]),
                    if d["actor_running"].as_bool() == Some(true) {
                        "running"
                    } else {
                        "not started"
                    },
                    s(&d["delivered"])
                ),
                _ => format!("rtt {} µs", s(&n["rtt_us"])),
            };
            vec![
                s(&n["kind"]),
                s(&n["key"]),
                secs(&n["age_ms"]),
                secs(&n["idle_ms"]),
                s(&n["in_flight"]),
                detail,
            ]
        })
        .collect();
    let mut out = table(&["KIND", "KEY", "AGE", "IDLE", "IN-FLIGHT", "DETAIL"], &rows);
    let edges: Vec<Vec<String>> = g["edges"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|e| vec![s(&e["from"]), "->".into(), s(&e["to"]), s(&e["kind"])])
        .collect();
    if !edges.is_empty() {
        out.push('\n');
        out.push_str(&table(&["FROM", "", "TO", "KIND"], &edges));
    }
    out.push_str(&format!("\ncounts: {}\n", g["counts"]));
    out
}

fn user_table(u: &Value) -> String {
    let empty = Vec::new();
    let mut out = format!(
        "user        {}\nstate       {}\nprovisioned {}\ndnd         {}\ndeferred    {} message(s), {} bytes\nstored      {} message(s) in the MSS\n",
        s(&u["aor"]),
        s(&u["state"]),
        s(&u["provisioned"]),
        s(&u["dnd"]),
        s(&u["deferred_count"]),
        s(&u["deferred_bytes"]),
        s(&u["stored_messages"]),
    );
    out.push_str(&format!("preferences {}\n\nregistrations\n", u["preferences"]));
    let regs: Vec<Vec<String>> = u["registrations"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|r| {
            let caps: Vec<String> = r["capabilities"].as_array().unwrap_or(&empty).iter().map(s).collect();
            vec![
                s(&r["key"]),
                s(&r["contact"]),
                s(&r["transport"]),
                format!("{}s", s(&r["expires_in"])),
                caps.join(" "),
            ]
        })
        .collect();
    out.push_str(&table(
        &["KEY", "CONTACT", "TRANSPORT", "EXPIRES", "CAPABILITIES"],
        &regs,
    ));
    let deferred: Vec<Vec<String>> = u["deferred"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|d| {
            vec![
                s(&d["seq"]),
                s(&d["from"]),
                s(&d["content_type"]),
                s(&d["size"]),
                s(&d["expires_at"]),
                d["for_device"].as_str().unwrap_or("any").to_string(),
            ]
        })
        .collect();
    if !deferred.is_empty() {
        out.push_str("\ndeferred queue\n");
        out.push_str(&table(
            &["SEQ", "FROM", "TYPE", "SIZE", "EXPIRES-AT", "FOR-DEVICE"],
            &deferred,
        ));
    }
    let recent: Vec<Vec<String>> = u["recent"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|e| vec![s(&e["call_id"]), s(&e["event"]), s(&e["detail"])])
        .collect();
    if !recent.is_empty() {
        out.push_str("\nrecent activity\n");
        out.push_str(&table(&["CALL-ID", "EVENT", "DETAIL"], &recent));
    }
    out
}

fn trace_table(t: &Value) -> String {
    let empty = Vec::new();
    let events = t["events"].as_array().unwrap_or(&empty);
    let first = events.first().and_then(|e| e["at_ms"].as_u64()).unwrap_or(0);
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let at = e["at_ms"].as_u64().unwrap_or(first);
            vec![
                format!("+{}ms", at.saturating_sub(first)),
                s(&e["call_id"]),
                s(&e["actor"]),
                s(&e["event"]),
                s(&e["detail"]),
            ]
        })
        .collect();
    let mut out = String::new();
    if let Some(ids) = t["message_ids"].as_array().filter(|a| !a.is_empty()) {
        let ids: Vec<String> = ids.iter().map(s).collect();
        out.push_str(&format!("message id(s): {}\n", ids.join(", ")));
    }
    out.push_str(&table(&["T", "CALL-ID", "ACTOR", "EVENT", "DETAIL"], &rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "w".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    w\n");
    }

    #[test]
    fn trace_rows_are_relative() {
        let v = serde_json::json!({"message_ids": ["m1"], "events": [
            {"at_ms": 1000, "call_id": "c", "actor": "ingress", "event": "received", "detail": "MESSAGE"},
            {"at_ms": 1004, "call_id": "c", "actor": "pf:sip:b@x", "event": "forked", "detail": "2"}]});
        let out = trace_table(&v);
        assert!(out.starts_with("message id(s): m1\n"));
        assert!(out.contains("+4ms"));
        assert!(out.contains("forked"));
    }
}
