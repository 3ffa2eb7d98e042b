//! Notify-and-wait for deferred messages (001 §5.2.2.2 option 1).
//!
//! The seeds leave the mechanism open (docs/decisions.md): the PF sends each
//! registered device a SIP MESSAGE from `sip:deferred-messages@<domain>` whose
//! `application/vnd.cpm.deferred-list+xml` body lists the deferred messages;
//! the client answers with a MESSAGE to that same address carrying
//! `application/vnd.cpm.deferred-action+xml`, one action per message, and
//! gets a 200 whose `application/vnd.cpm.deferred-result+xml` body says what
//! was done.

use std::fmt::Write as _;

use cpm_store::DeferredRecord;
use quick_xml::events::Event;
use quick_xml::Reader;
use thiserror::Error;

use crate::Aor;

/// User part of the service address devices talk to.
pub const SERVICE_USER: &str = "deferred-messages";
pub const LIST_TYPE: &str = "application/vnd.cpm.deferred-list+xml";
pub const ACTION_TYPE: &str = "application/vnd.cpm.deferred-action+xml";
pub const RESULT_TYPE: &str = "application/vnd.cpm.deferred-result+xml";
/// Most actions one request may carry.
pub const MAX_ACTIONS: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Deliver it to the device that asked.
    Retrieve,
    /// Delete it.
    Discard,
    /// Move it to the Message Storage Server.
    Store,
    /// Leave it queued.
    Keep,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        match s {
            "retrieve" => Some(Action::Retrieve),
            "discard" => Some(Action::Discard),
            "store" => Some(Action::Store),
            "keep" => Some(Action::Keep),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionRequest {
    pub actions: Vec<(u64, Action)>,
    /// `<dnd state="on|off"/>`: set or lift do-not-disturb.
    pub dnd: Option<bool>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NotifyError {
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("invalid action element: {0}")]
    Invalid(String),
    #[error("more than {MAX_ACTIONS} actions")]
    TooMany,
}

/// Parse a client's action document:
/// `<deferred-actions><action id="7" do="retrieve"/><dnd state="off"/></deferred-actions>`.
pub fn parse_actions(body: &[u8]) -> Result<ActionRequest, NotifyError> {
    let mut reader = Reader::from_reader(body);
    let mut req = ActionRequest::default();
    let mut root = false;
    let mut buf = Vec::new();
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| NotifyError::Xml(e.to_string()))?;
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let attr = |key: &str| -> Result<Option<String>, NotifyError> {
                    for a in e.attributes() {
                        let a = a.map_err(|e| NotifyError::Xml(e.to_string()))?;
                        if a.key.local_name().as_ref() == key.as_bytes() {
                            let v = a.unescape_value().map_err(|e| NotifyError::Xml(e.to_string()))?;
                            return Ok(Some(v.into_owned()));
                        }
                    }
                    Ok(None)
                };
                match name.as_str() {
                    "deferred-actions" => root = true,
                    "action" if root => {
                        if req.actions.len() >= MAX_ACTIONS {
                            return Err(NotifyError::TooMany);
                        }
                        let id = attr("id")?.and_then(|v| v.trim().parse::<u64>().ok());
                        let act = attr("do")?.and_then(|v| Action::parse(v.trim()));
                        match (id, act) {
                            (Some(id), Some(act)) => req.actions.push((id, act)),
                            _ => {
                                return Err(NotifyError::Invalid(
                                    "action needs id=number and do=retrieve|discard|store|keep".into(),
                                ))
                            }
                        }
                    }
                    "dnd" if root => {
                        req.dnd = match attr("state")?.as_deref() {
                            Some("on") => Some(true),
                            Some("off") => Some(false),
                            _ => return Err(NotifyError::Invalid("dnd needs state=on|off".into())),
                        }
                    }
                    other => return Err(NotifyError::Invalid(format!("unexpected element <{other}>"))),
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !root {
        return Err(NotifyError::Invalid("root element must be <deferred-actions>".into()));
    }
    Ok(req)
}

/// The notification body: one `<message>` per deferred message.
pub fn list_body(user: &Aor, records: &[&DeferredRecord]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(out, "<deferred-messages user=\"{}\">", escape(user.as_str()));
    for r in records {
        let _ = write!(
            out,
            "  <message id=\"{}\" from=\"{}\" date=\"{}\" size=\"{}\" expires=\"{}\"",
            r.seq,
            escape(&r.from),
            rfc3339(r.received_at),
            r.size,
            rfc3339(r.expires_at)
        );
        if let Some(s) = &r.subject {
            let _ = write!(out, " subject=\"{}\"", escape(s));
        }
        out.push_str("/>\n");
    }
    out.push_str("</deferred-messages>\n");
    out
}

/// The 200 body answering an action request.
pub fn result_body(results: &[(u64, &str)], dnd: bool) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<deferred-results>\n");
    for (id, status) in results {
        let _ = writeln!(out, "  <result id=\"{id}\" status=\"{status}\"/>");
    }
    let _ = writeln!(out, "  <dnd state=\"{}\"/>", if dnd { "on" } else { "off" });
    out.push_str("</deferred-results>\n");
    out
}

fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// RFC 3339 UTC from Unix seconds (civil-from-days, H. Hinnant).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actions_and_dnd() {
        let body = br#"<?xml version="1.0"?><deferred-actions>
            <action id="7" do="retrieve"/><action id="8" do="discard"></action>
            <action id="9" do="store"/><action id="10" do="keep"/><dnd state="off"/></deferred-actions>"#;
        let r = parse_actions(body).unwrap();
        assert_eq!(
            r.actions,
            vec![
                (7, Action::Retrieve),
                (8, Action::Discard),
                (9, Action::Store),
                (10, Action::Keep)
            ]
        );
        assert_eq!(r.dnd, Some(false));
    }

    #[test]
    fn rejects_bad_documents() {
        assert!(parse_actions(b"<other/>").is_err());
        assert!(parse_actions(b"<deferred-actions><action id=\"x\" do=\"retrieve\"/></deferred-actions>").is_err());
        assert!(parse_actions(b"<deferred-actions><action id=\"1\" do=\"eat\"/></deferred-actions>").is_err());
        assert!(parse_actions(b"<deferred-actions><dnd/></deferred-actions>").is_err());
        assert!(parse_actions(b"").is_err());
    }

    #[test]
    fn list_escapes_and_dates() {
        let rec = DeferredRecord {
            seq: 3,
            received_at: 1_795_300_000,
            expires_at: 1_795_400_000,
            from: "sip:a&b@x".into(),
            subject: Some("<hi>".into()),
            content_type: "message/cpim".into(),
            size: 12,
            request: vec![],
            target: None,
        };
        let body = list_body(&Aor::from_canonical("sip:bob@x"), &[&rec]);
        assert!(body.contains("from=\"sip:a&amp;b@x\""), "{body}");
        assert!(body.contains("subject=\"&lt;hi&gt;\""), "{body}");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_300_000), "2026-11-21T22:26:40Z");
    }
}
