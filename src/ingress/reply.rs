//! Answering a request: through its server transaction, on the flow it came in.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use cpm_actors::{trace, TransportKind};
use cpm_sip::{Message, Method, ParseError, ResponseBuilder};

use super::Core;
use crate::transaction::ServerKey;
use crate::transport::Source;

pub struct Reply {
    pub core: Arc<Core>,
    pub req: Arc<Message>,
    pub source: Source,
    key: Option<ServerKey>,
    /// When the request arrived (latency metrics).
    started: std::time::Instant,
}

impl Reply {
    /// `arrived`: the kernel's receive time (UDP with receive stamps), so
    /// that the latency metrics include the wait in the socket buffer and
    /// the worker's queue, which is where a busy server's latency grows;
    /// None: now.
    pub fn new(
        core: Arc<Core>,
        req: Arc<Message>,
        source: Source,
        key: Option<ServerKey>,
        arrived: Option<std::time::Instant>,
    ) -> Reply {
        // `<method> from <peer> over <transport:?>`, written without the
        // formatter (trace::push_addr).
        let method = req.method().map_or("", Method::as_str);
        let call_id = req.call_id().unwrap_or_default();
        core.env.tracer.record_with(call_id, "ingress", "received", |what| {
            what.push_str(method);
            what.push_str(" from ");
            trace::push_addr(what, source.peer);
            what.push_str(" over ");
            what.push_str(transport_debug(source.transport));
        });
        let started = arrived.unwrap_or_else(std::time::Instant::now);
        Reply {
            core,
            req,
            source,
            key,
            started,
        }
    }

    pub fn builder(&self, code: u16) -> ResponseBuilder {
        ResponseBuilder::new(&self.req, code, &self.core.to_tag)
    }

    /// 503 with Retry-After: the actor that owns the request (a user's PF,
    /// a group's CF) could not be reached just now (stopping, or its
    /// mailbox closed); a retry a little later finds a fresh one.
    pub fn actor_unavailable(&self) -> Message {
        self.builder(503).header("Retry-After", "5").build()
    }

    /// 404 for a temporary GRUU whose device has registered again with
    /// another Call-ID (RFC 5627 §3.2): it names nothing any more.
    pub fn stale_gruu(&self) -> Message {
        self.builder(404)
            .reason("Not Found (temporary GRUU no longer valid)")
            .build()
    }

    /// Send a response and record it in the server transaction.
    pub async fn send(&self, resp: Message) {
        let status = resp.status().unwrap_or(500);
        let method = self.req.method().map_or("", Method::as_str);
        let tracer = &self.core.env.tracer;
        tracer.responded(
            self.req.call_id().unwrap_or_default(),
            method,
            status,
            self.started.elapsed(),
        );
        let data = resp.to_bytes();
        if let Some(key) = &self.key {
            self.core
                .server_tx
                .responded(key, status, data.clone(), self.source.transport);
        }
        if let Err(e) = self.core.transports.reply(&self.source, data).await {
            tracing::warn!(peer = %self.source.peer, error = %e, status, "cannot send response");
        }
    }

    pub async fn status(&self, code: u16) {
        self.send(self.builder(code).build()).await
    }

    /// Run `work` on the current arbiter; it answers through this Reply.
    pub fn spawn<F, Fut>(self, work: F)
    where
        F: FnOnce(Reply) -> Fut,
        Fut: Future<Output = ()> + 'static,
    {
        // Boxed: tokio moves a task's future by value several times (into
        // its cell, and the whole stage again when it finishes), which for
        // a MESSAGE's 2.6 KB future cost more than the one allocation.
        actix_rt::spawn(Box::pin(work(self)));
    }

    pub fn spawn_status(self, code: u16) {
        self.spawn(move |r| async move { r.status(code).await });
    }

    pub fn spawn_status_reason(self, code: u16, reason: &str) {
        let reason = reason.to_string();
        self.spawn(move |r| async move {
            let resp = r.builder(code).reason(&reason).build();
            r.send(resp).await
        });
    }

    /// 503 with the configured Retry-After: load shed by overload protection.
    pub fn spawn_overloaded(self) {
        let after = self.core.retry_after_s;
        self.spawn_with(503, move |b| b.header("Retry-After", after.to_string()));
    }

    pub fn spawn_with(self, code: u16, f: impl FnOnce(ResponseBuilder) -> ResponseBuilder + 'static) {
        self.spawn(move |r| async move {
            let resp = f(r.builder(code)).build();
            r.send(resp).await
        });
    }
}

/// What `{:?}` writes for a transport (tested against it).
fn transport_debug(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Udp => "Udp",
        TransportKind::Tcp => "Tcp",
        TransportKind::Tls => "Tls",
        TransportKind::Memory => "Memory",
    }
}

/// Build a 400 from the raw lines of a message rsip could not parse, if it
/// has what a response needs (RFC 3261 §8.2.6.2).
pub fn salvage_400(data: &[u8], e: &ParseError, to_tag: &str) -> Option<Bytes> {
    let text = String::from_utf8_lossy(data);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.split("\r\n");
    let start = lines.next()?;
    if start.split(' ').count() < 3 {
        return None;
    }
    let mut keep = Vec::new();
    let (mut via, mut to_has_tag) = (false, true);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = cpm_sip::canonical_name(name.trim());
        match name.as_str() {
            "Via" | "From" | "Call-ID" | "CSeq" => {}
            "To" => to_has_tag = value.contains(";tag="),
            _ => continue,
        }
        via |= name == "Via";
        let mut v = value.trim().to_string();
        if name == "To" && !to_has_tag {
            v.push_str(&format!(";tag={to_tag}"));
        }
        keep.push(format!("{name}: {v}\r\n"));
    }
    if !via || keep.len() < 5 {
        return None;
    }
    // RFC 3261 §8.2.2: a request in another SIP version gets 505.
    let (code, reason) = if *e == ParseError::Syntax("SIP version".into()) {
        (505, "Version Not Supported".to_string())
    } else {
        (400, format!("Bad Request ({e})"))
    };
    let reason: String = reason.chars().filter(|c| !c.is_control()).take(120).collect();
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    keep.iter().for_each(|l| out.push_str(l));
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names_are_their_debug_text() {
        for kind in [
            TransportKind::Udp,
            TransportKind::Tcp,
            TransportKind::Tls,
            TransportKind::Memory,
        ] {
            assert_eq!(transport_debug(kind), format!("{kind:?}"));
        }
    }

    #[test]
    fn salvages_a_400_from_broken_request() {
        let raw = b"MESSAGE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 999\r\n\r\nshort";
        let e = ParseError::ContentLength {
            declared: 999,
            actual: 5,
        };
        let resp = salvage_400(raw, &e, "t").unwrap();
        let m = Message::parse(resp).unwrap();
        assert_eq!(m.status(), Some(400));
        assert_eq!(m.to().unwrap().tag(), Some("t"));
    }

    #[test]
    fn other_sip_version_is_505() {
        let raw = b"OPTIONS sip:b@x SIP/7.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let e = Message::parse(Bytes::from_static(raw)).unwrap_err();
        let resp = Message::parse(salvage_400(raw, &e, "t").unwrap()).unwrap();
        assert_eq!(resp.status(), Some(505));
    }

    #[test]
    fn gives_up_without_headers() {
        assert!(salvage_400(b"garbage\r\n\r\n", &ParseError::Empty, "t").is_none());
        assert!(salvage_400(b"A B C\r\nVia: x\r\n\r\n", &ParseError::Empty, "t").is_none());
    }
}
