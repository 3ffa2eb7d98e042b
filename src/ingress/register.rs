//! REGISTER (RFC 3261 §10.3): checks the request, then hands the binding
//! change to the user's ParticipatingFunction, which persists it.

use cpm_actors::{ContactSpec, Register, RegisterError, RegisterRequest, RequestedContacts};
use cpm_sip::caps::Capabilities;
use cpm_sip::params::parse_list;
use cpm_sip::SipUri;

use super::Reply;

/// Option tags we implement (RFC 3261 §8.2.2.3: 420 for anything else in Require).
const SUPPORTED: &[&str] = &["gruu", cpm_actors::cf::urilist::OPTION_TAG];

pub fn handle(reply: Reply) {
    reply.spawn(|r| async move {
        let authenticated = match crate::auth::authenticate(&r) {
            Ok(a) => a,
            Err(resp) => return r.send(*resp).await,
        };
        let req = match build(&r) {
            Ok(req) => req,
            Err(resp) => return r.send(*resp).await,
        };
        // One registers only one's own address.
        if authenticated.is_some_and(|id| id != req.aor) {
            let resp = r
                .builder(403)
                .reason("Forbidden (To is not the authenticated identity)")
                .build();
            return r.send(resp).await;
        }
        let aor = req.aor.clone();
        let result = r.core.dir.send(&aor, Register(req)).await;
        let what = match &result {
            Ok(Ok(o)) => format!("{} live contact(s)", o.contacts.len()),
            Ok(Err(e)) => format!("refused: {e}"),
            Err(e) => format!("unavailable: {e}"),
        };
        let call_id = r.req.call_id().unwrap_or_default();
        r.core
            .env
            .tracer
            .record(call_id, &format!("pf:{aor}"), "registrar", what);
        let resp = match result {
            Ok(Ok(outcome)) => {
                let mut b = r.builder(200);
                for c in outcome.contacts {
                    b = b.header("Contact", c);
                }
                b.header("Supported", "gruu").build()
            }
            Ok(Err(RegisterError::IntervalTooBrief(min))) => {
                r.builder(423).header("Min-Expires", min.to_string()).build()
            }
            Ok(Err(e @ RegisterError::OutOfOrder)) => r.builder(500).reason(&e.to_string()).build(),
            Ok(Err(e)) => {
                tracing::error!(%aor, error = %e, "registration failed");
                r.builder(500)
                    .reason("Server Internal Error (registration not stored)")
                    .build()
            }
            Err(e) => {
                tracing::error!(%aor, error = %e, "registration failed");
                r.actor_unavailable()
            }
        };
        r.send(resp).await
    });
}

/// Turn the REGISTER into a RegisterRequest, or the error response to send.
fn build(r: &Reply) -> Result<RegisterRequest, Box<cpm_sip::Message>> {
    let req = &r.req;
    let env = &r.core.env;
    let err = |code: u16, reason: &str| Box::new(r.builder(code).reason(reason).build());

    if let Some(bad) = unsupported_requires(req) {
        return Err(Box::new(r.builder(420).header("Unsupported", bad).build()));
    }
    let ruri = req.request_uri().ok_or_else(|| err(400, "Bad Request"))?;
    if !env.domains.is_local_host(&ruri.host, ruri.port) {
        return Err(err(404, "Not Found (domain not served here)"));
    }
    let to = req.to().map_err(|_| err(400, "Bad Request (To)"))?;
    let to_uri = SipUri::parse(&to.uri).map_err(|_| err(400, "Bad Request (To URI)"))?;
    let aor = env
        .domains
        .local_aor(&to_uri)
        .ok_or_else(|| err(404, "Not Found (address not served here)"))?;
    if !env.users.is_known(&aor) {
        return Err(err(404, "Not Found (unknown user)"));
    }
    let expires = match req.header("Expires") {
        Some(v) => Some(v.trim().parse::<u32>().map_err(|_| err(400, "Bad Request (Expires)"))?),
        None => None,
    };

    let mut entries = Vec::new();
    for line in req.headers.all("Contact") {
        entries.extend(parse_list(line).map_err(|_| err(400, "Bad Request (Contact)"))?);
    }
    let contacts = if entries.is_empty() {
        RequestedContacts::Fetch
    } else if entries.iter().any(|e| e.uri == "*") {
        // RFC 3261 §10.3 step 6: `*` only alone and with Expires: 0.
        if entries.len() != 1 || expires != Some(0) {
            return Err(err(
                400,
                "Bad Request (Contact: * needs Expires: 0 and no other contact)",
            ));
        }
        RequestedContacts::RemoveAll
    } else {
        let mut specs = Vec::with_capacity(entries.len());
        for entry in entries {
            let uri = SipUri::parse(&entry.uri).map_err(|_| err(400, "Bad Request (Contact URI)"))?;
            if !uri.is_sip_routable() || uri.scheme == "tel" {
                return Err(err(400, "Bad Request (Contact must be a SIP URI)"));
            }
            let expires = match entry.param_value("expires") {
                Some(v) => Some(
                    v.trim()
                        .parse::<u32>()
                        .map_err(|_| err(400, "Bad Request (Contact expires)"))?,
                ),
                None => None,
            };
            let instance = entry.param_value("+sip.instance").map(str::to_string);
            specs.push(ContactSpec {
                caps: Capabilities::from_params(&entry.params),
                uri,
                expires,
                instance,
                entry,
            });
        }
        RequestedContacts::Update(specs)
    };

    let (cseq, _) = req.cseq().map_err(|_| err(400, "Bad Request (CSeq)"))?;
    let gruu = req
        .headers
        .all("Supported")
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("gruu"));
    Ok(RegisterRequest {
        aor,
        contacts,
        expires,
        call_id: req.call_id().unwrap_or_default().to_string(),
        cseq,
        transport: r.source.transport,
        source: r.source.peer,
        gruu,
    })
}

/// Option tags in Require that we do not support, comma-joined.
pub fn unsupported_requires(req: &cpm_sip::Message) -> Option<String> {
    let bad: Vec<&str> = req
        .headers
        .all("Require")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
        .collect();
    (!bad.is_empty()).then(|| bad.join(", "))
}
