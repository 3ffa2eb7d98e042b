//! RFC 4475 / RFC 5118 torture messages (`shared/torture`, see its README)
//! through [`Message::parse`], [`Message::validate_request`],
//! [`Message::to_bytes`] and a second parse.
//!
//! The directory sits beside the repository (`../shared/torture` from the
//! workspace root); the test fails when it is missing, it never skips.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::{Message, Method, ParseError, StartLine};

const TORTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/torture");

/// valid/ files that `parse` + `validate_request` reject, with the reason.
/// Empty: every valid/ message parses and validates. The semantic answers the
/// README lists for some of them (416 for `unkscm`/`novelsc`, 420 for
/// `bext01`, 400 for `unksm2` at a registrar, 405/501 for the unknown
/// methods of `intmeth`/`esc02`, 483 for `zeromf` at a proxy ...) are given
/// by the server's ingress, after validation, not by the wire parser.
const VALID_EXPECTED_FAILURES: &[(&str, &str)] = &[];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// `parse` fails.
    ParseError,
    /// `parse` succeeds, `validate_request` fails.
    Invalid,
    /// Both succeed.
    Accepted,
}

use Outcome::*;

/// What happens to each invalid/ file, and why that is right.
const INVALID: &[(&str, Outcome, &str)] = &[
    (
        "badaspec.dat",
        Accepted,
        "§3.1.2.14: SP inside <> of To. Liberal acceptance allowed; the name-addr \
         parser trims the spaces, so nothing malformed is propagated",
    ),
    (
        "badbranch.dat",
        Accepted,
        "§3.2.1: branch is exactly the magic cookie. The RFC allows the RFC 2543 fallback; \
         the transaction layer keys on branch + sent-by + method",
    ),
    (
        "baddate.dat",
        Accepted,
        "§3.1.2.12: Date in EST. Reject only if Date matters; we never read Date",
    ),
    (
        "baddn.dat",
        ParseError,
        "§3.1.2.15: unquoted non-token display name, and no empty line ends the headers",
    ),
    (
        "badinv01.dat",
        Invalid,
        "§3.1.2.1: `;;,;,,` in Via has empty parameters (Via invalid)",
    ),
    (
        "badvers.dat",
        ParseError,
        "§3.1.2.16: SIP/7.0 (the RFC wants 505; the ingress answers 400 to every parse error)",
    ),
    ("bigcode.dat", ParseError, "§3.1.2.19: status code 4294967301 > 699"),
    (
        "clerr.dat",
        ParseError,
        "§3.1.2.2: Content-Length 9999 > body (UDP: 400)",
    ),
    (
        "escruri.dat",
        Accepted,
        "§3.1.2.11: escaped headers in the Request-URI. Liberal: they are ignored (SipUri drops \
         `?headers`), never forwarded",
    ),
    ("insuf.dat", Invalid, "§3.3.1: no Call-ID, From or To"),
    (
        "ipv6-bad.dat",
        ParseError,
        "RFC 5118 §4.2: IPv6 address without [] (port `db8::10`)",
    ),
    ("ltgtruri.dat", ParseError, "§3.1.2.7: Request-URI enclosed in <>"),
    (
        "lwsruri.dat",
        ParseError,
        "§3.1.2.8: LWS inside the Request-URI (4 request-line elements)",
    ),
    (
        "lwsstart.dat",
        ParseError,
        "§3.1.2.9: several SP between request-line elements",
    ),
    ("mcl01.dat", ParseError, "§3.3.9: two Content-Length headers"),
    ("mismatch01.dat", Invalid, "§3.1.2.17: OPTIONS vs CSeq INVITE"),
    (
        "mismatch02.dat",
        Invalid,
        "§3.1.2.18: NEWMETHOD vs CSeq INVITE (400 acceptable)",
    ),
    (
        "multi01.dat",
        Invalid,
        "§3.3.8: repeated Call-ID, To, From, Max-Forwards, CSeq",
    ),
    ("ncl.dat", ParseError, "§3.1.2.3: Content-Length -999"),
    (
        "quotbal.dat",
        Invalid,
        "§3.1.2.6: unterminated quoted display name in To",
    ),
    (
        "regbadct.dat",
        Accepted,
        "§3.1.2.13: Contact with an escaped header, not in <>. Liberal acceptance allowed: the \
         whole text is the addr-spec (no `;`), the binding keeps the escaped header",
    ),
    ("scalar02.dat", Invalid, "§3.1.2.4: CSeq > 2^32-1"),
    (
        "scalarlg.dat",
        Invalid,
        "§3.1.2.5: a response with CSeq > 2^32-1 (validate_request checks responses too); \
         the server drops stray responses silently",
    ),
    (
        "trws.dat",
        ParseError,
        "§3.1.2.10: SP after SIP/2.0 on the request line",
    ),
];

fn dir(name: &str) -> PathBuf {
    let d = Path::new(TORTURE).join(name);
    assert!(
        d.is_dir(),
        "torture messages missing: {} (shared/ must be checked out beside the repository)",
        d.display()
    );
    d
}

/// (file name, bytes), sorted by name.
fn files(name: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir(name))
        .expect("read torture dir")
        .map(|e| {
            let path = e.expect("dir entry").path();
            let bytes = std::fs::read(&path).expect("read torture file");
            (path.file_name().unwrap().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no files in {name}/");
    out
}

/// Parse, validate, serialize, parse again. The second parse must succeed
/// and agree with the first on the start line, the headers (Content-Length
/// aside: `to_bytes` always writes one, last), the body and the validation
/// result; serializing again gives the same bytes. The same property as
/// `fuzz/fuzz_targets/sip_message.rs`.
fn run(file: &str, data: &[u8]) -> Result<Message, ParseError> {
    let msg = Message::parse(Bytes::copy_from_slice(data))?;
    let validated = msg.validate_request();
    let again = Message::parse(msg.to_bytes()).unwrap_or_else(|e| panic!("{file}: re-parse failed: {e}"));
    assert_eq!(again.start, msg.start, "{file}: start line changed");
    let names = |m: &Message| -> Vec<String> {
        m.headers
            .0
            .iter()
            .filter(|h| h.name != "Content-Length")
            .map(|h| h.name.to_string())
            .collect()
    };
    assert_eq!(names(&again), names(&msg), "{file}: header names changed");
    let values = |m: &Message| -> Vec<String> {
        m.headers
            .0
            .iter()
            .filter(|h| h.name != "Content-Length")
            .map(|h| h.value.to_string())
            .collect()
    };
    assert_eq!(values(&again), values(&msg), "{file}: header values changed");
    assert_eq!(again.body, msg.body, "{file}: body changed");
    assert_eq!(again.validate_request(), validated, "{file}: validation changed");
    assert_eq!(
        again.to_bytes(),
        msg.to_bytes(),
        "{file}: serialization is not a fixpoint"
    );
    validated.map(|_| msg)
}

fn outcome(file: &str, data: &[u8]) -> (Outcome, String) {
    match Message::parse(Bytes::copy_from_slice(data)) {
        Err(e) => (ParseError, e.to_string()),
        Ok(_) => match run(file, data) {
            Ok(_) => (Accepted, String::new()),
            Err(e) => (Invalid, e.to_string()),
        },
    }
}

#[test]
fn valid_messages_parse_and_validate() {
    let mut failures = Vec::new();
    for (file, data) in files("valid") {
        if let Err(e) = run(&file, &data) {
            eprintln!("valid/{file}: {e}");
            failures.push(file);
        }
    }
    let expected: Vec<String> = VALID_EXPECTED_FAILURES.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(failures, expected, "valid/ files rejected by parse or validate_request");
}

#[test]
fn invalid_messages_have_their_documented_outcome() {
    let present = files("invalid");
    let names: Vec<&str> = present.iter().map(|(f, _)| f.as_str()).collect();
    let listed: Vec<&str> = INVALID.iter().map(|(f, _, _)| *f).collect();
    assert_eq!(names, listed, "every invalid/ file needs an entry in INVALID (sorted)");
    let mut wrong = Vec::new();
    for ((file, data), (_, want, why)) in present.iter().zip(INVALID) {
        let (got, err) = outcome(file, data);
        eprintln!("invalid/{file}: {got:?} {err}");
        if got != *want {
            wrong.push(format!("{file}: {got:?} ({err}), expected {want:?}: {why}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

fn valid(file: &str) -> Message {
    let data = std::fs::read(dir("valid").join(file)).expect("read");
    run(file, &data).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn ruri(m: &Message) -> &crate::SipUri {
    m.request_uri().expect("request")
}

#[test]
fn escapes_and_odd_user_parts() {
    // §3.1.1.3: escaped userinfo stays in the user part; `%75se%72` is `user`.
    let m = valid("esc01.dat");
    assert_eq!(ruri(&m).user.as_deref(), Some("sips%3Auser%40example.com"));
    assert_eq!(ruri(&m).host, "example.net");
    assert_eq!(m.to().unwrap().uri, "sip:%75se%72@example.com");
    let to = crate::SipUri::parse(&m.to().unwrap().uri).unwrap();
    assert_eq!(to.user.as_deref(), Some("user"));

    // §3.1.1.9: `;par=u%40example.net` belongs to the user part.
    let m = valid("semiuri.dat");
    assert_eq!(ruri(&m).user.as_deref(), Some("user;par=u%40example.net"));
    assert_eq!(ruri(&m).host, "example.com");
    assert!(ruri(&m).params.is_empty());

    // §3.1.1.2: `?` in the user part, a password, quoted BEL/NUL/DEL.
    let m = valid("intmeth.dat");
    assert_eq!(
        m.method(),
        Some(&Method::Other("!interesting-Method0123456789_*+`.%indeed'~".into()))
    );
    let u = ruri(&m);
    assert_eq!(
        u.user.as_deref(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        u.password.as_deref(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(u.host, "example.com");
    assert_eq!(
        m.to().unwrap().display.as_deref(),
        Some("BEL:\u{7} NUL:\u{0} DEL:\u{7f}")
    );

    // §3.1.1.4: %00 is not a terminator: two distinct contacts.
    let m = valid("escnull.dat");
    let contacts: Vec<String> = m
        .headers
        .all("Contact")
        .flat_map(|v| crate::params::parse_list(v).unwrap())
        .map(|e| e.uri)
        .collect();
    assert_eq!(contacts.len(), 2, "{contacts:?}");
    assert_ne!(contacts[0], contacts[1]);

    // §3.1.1.5: `RE%47IST%45R` is not REGISTER; `C%6Fntact` is not Contact.
    let m = valid("esc02.dat");
    assert_eq!(m.method(), Some(&Method::Other("RE%47IST%45R".into())));
    assert_eq!(m.headers.all("Contact").count(), 2);
}

#[test]
fn ipv6_references() {
    let m = valid("ipv6-good.dat");
    assert_eq!(ruri(&m).host, "[2001:db8::10]");
    assert_eq!(m.top_via().unwrap().host, "[2001:db8::9:1]");

    // §4.3: the port inside the brackets is part of the address.
    let m = valid("port-ambiguous.dat");
    assert_eq!(ruri(&m).host, "[2001:db8::10:5070]");
    assert_eq!(ruri(&m).port, None);
    let m = valid("port-unambiguous.dat");
    assert_eq!(ruri(&m).host, "[2001:db8::10]");
    assert_eq!(ruri(&m).port, Some(5070));

    // §4.5: `received` with and without brackets.
    for (file, received) in [
        ("via-received-param-with-delim.dat", "[2001:db8::9:255]"),
        ("via-received-param-no-delim.dat", "2001:db8::9:255"),
    ] {
        let via = valid(file).top_via().unwrap();
        assert_eq!(
            via.param("received").unwrap().value.as_deref(),
            Some(received),
            "{file}"
        );
    }

    let m = valid("mult-ip-in-header.dat");
    assert_eq!(m.via_count(), 3);
    assert_eq!(m.top_via().unwrap().port, Some(6050));

    // §4.10: both forms are the same address.
    let three = valid("ipv6-bug-abnf-3-colons.dat");
    let two = valid("ipv6-correct-abnf-2-colons.dat");
    assert_eq!(ruri(&three).host, "[2001:db8::c000:201]");
    assert_eq!(ruri(&three).host, ruri(&two).host);

    // SDP bodies are framed by the (corrected) Content-Length.
    for file in ["ipv6-in-sdp.dat", "mult-ip-in-sdp.dat", "ipv4-mapped-ipv6.dat"] {
        let m = valid(file);
        let cl: usize = m.header("Content-Length").unwrap().parse().unwrap();
        assert_eq!(m.body.len(), cl, "{file}");
        assert!(m.body.starts_with(b"v=0"), "{file}");
    }
}

#[test]
fn framing_and_start_lines() {
    // §3.1.1.8: the trailing INVITE-looking octets are not part of the REGISTER.
    let m = valid("dblreq.dat");
    assert_eq!(m.method(), Some(&Method::Register));
    assert!(m.body.is_empty());

    // §3.1.1.11: binary multipart body with NULs, framed by Content-Length.
    let m = valid("mpart01.dat");
    let cl: usize = m.header("Content-Length").unwrap().parse().unwrap();
    assert_eq!(m.body.len(), cl);
    assert!(m.body.contains(&0));

    // §3.4.1: no Content-Length: the body is the rest of the datagram.
    let m = valid("inv2543.dat");
    assert!(m.header("Content-Length").is_none());
    assert!(m.body.starts_with(b"v=0"));

    let m = valid("noreason.dat");
    assert_eq!(
        m.start,
        StartLine::Response {
            code: 100,
            reason: String::new()
        }
    );
    let m = valid("unreason.dat");
    assert!(matches!(&m.start, StartLine::Response { code: 200, reason } if reason.contains("простое")));

    // §3.3.2/§3.3.3: unknown schemes are kept, not routable.
    for file in ["unkscm.dat", "novelsc.dat"] {
        let m = valid(file);
        assert!(!ruri(&m).is_sip_routable(), "{file}");
    }

    // §3.1.1.1: folding, LWS around ':', leading zeros.
    let m = valid("wsinv.dat");
    assert_eq!(m.max_forwards().unwrap(), 68);
    assert_eq!(m.cseq().unwrap(), (9, Method::Invite));
}

#[test]
fn cparam_contact_params() {
    // §3.3.12: without <>, `;unknownparam` is a contact parameter.
    let m = valid("cparam01.dat");
    let c = crate::params::parse_name_addr(m.header("Contact").unwrap()).unwrap();
    assert!(c.has_param("unknownparam"));
    assert!(!c.uri.contains("unknownparam"));
    // §3.3.13: inside <>, it is a URI parameter.
    let m = valid("cparam02.dat");
    let c = crate::params::parse_name_addr(m.header("Contact").unwrap()).unwrap();
    assert!(!c.has_param("unknownparam"));
    assert_eq!(crate::SipUri::parse(&c.uri).unwrap().param("unknownparam"), Some(None));
}
