//! RFC 5438 `message/imdn+xml`: delivery, display and processing reports.
//!
//! ```xml
//! <?xml version="1.0" encoding="UTF-8"?>
//! <imdn xmlns="urn:ietf:params:xml:ns:imdn">
//!   <message-id>34jk324j</message-id>
//!   <datetime>2008-04-04T12:16:49-05:00</datetime>
//!   <recipient-uri>im:bob@example.com</recipient-uri>
//!   <original-recipient-uri>im:bob@example.com</original-recipient-uri>
//!   <delivery-notification>
//!     <status>
//!       <delivered/>
//!     </status>
//!   </delivery-notification>
//! </imdn>
//! ```
//!
//! Parsing goes by local names: any namespace prefix is accepted and the
//! namespace itself is not checked. Unknown elements (extensions) are skipped
//! wherever they are; inside `<status>` a known status wins over an unknown
//! one, which is kept as [`Status::Other`]. Text values are trimmed. Documents
//! over [`MAX_SIZE`] bytes are refused unread. Whatever [`Imdn::parse`]
//! accepts, [`Imdn::to_xml`] writes back to something that parses to the same
//! value.
//!
//! An IMDN always travels inside CPIM (RFC 5438 §7.1): [`report`] builds that
//! body, [`parse_report`] recognises one.

use std::fmt::Write as _;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use thiserror::Error;

use crate::cpim::{Cpim, CpimHeader, IMDN_NS};
use crate::text::media_type;

/// Media type of an IMDN document.
pub const CONTENT_TYPE: &str = "message/imdn+xml";
/// XML namespace of the document (RFC 5438 §7.2.1).
pub const XML_NS: &str = "urn:ietf:params:xml:ns:imdn";
/// Largest document [`Imdn::parse`] reads.
pub const MAX_SIZE: usize = 64 * 1024;

/// Which notification a report carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Delivery,
    Display,
    Processing,
}

impl Kind {
    /// The XML element: `delivery-notification`...
    pub fn element(self) -> &'static str {
        match self {
            Kind::Delivery => "delivery-notification",
            Kind::Display => "display-notification",
            Kind::Processing => "processing-notification",
        }
    }
}

/// The element inside `<status>`. RFC 5438 allows `delivered`, `failed`,
/// `forbidden`, `error` for delivery; `displayed`, `forbidden`, `error` for
/// display; `processed`, `stored`, `forbidden`, `error` for processing. The
/// parser does not enforce the pairing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Delivered,
    Failed,
    Forbidden,
    Error,
    Displayed,
    Processed,
    Stored,
    /// An extension status: its element's local name.
    Other(String),
}

impl Status {
    /// The element name. For [`Status::Other`] this is the stored name, which
    /// [`Imdn::to_xml`] only writes when it is a plain XML name (letters,
    /// digits, `-`, `_`, `.`, not starting with a digit, `-` or `.`);
    /// otherwise it writes `error`.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Forbidden => "forbidden",
            Status::Error => "error",
            Status::Displayed => "displayed",
            Status::Processed => "processed",
            Status::Stored => "stored",
            Status::Other(name) => name,
        }
    }

    fn from_name(name: &str) -> Status {
        match name {
            "delivered" => Status::Delivered,
            "failed" => Status::Failed,
            "forbidden" => Status::Forbidden,
            "error" => Status::Error,
            "displayed" => Status::Displayed,
            "processed" => Status::Processed,
            "stored" => Status::Stored,
            other => Status::Other(other.to_string()),
        }
    }
}

/// One IMDN document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imdn {
    /// `imdn.Message-ID` of the message this reports on.
    pub message_id: String,
    /// `DateTime` of the message this reports on.
    pub datetime: String,
    pub recipient_uri: Option<String>,
    pub original_recipient_uri: Option<String>,
    pub subject: Option<String>,
    pub kind: Kind,
    pub status: Status,
}

#[derive(Error, Debug, Clone, PartialEq, Eq)]
pub enum ImdnError {
    #[error("IMDN document larger than {MAX_SIZE} bytes")]
    TooLarge,
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("root element is not <imdn>")]
    NotImdn,
    #[error("missing or empty <{0}>")]
    Missing(&'static str),
    #[error("more than one <{0}>")]
    Duplicate(&'static str),
    #[error("no delivery-, display- or processing-notification")]
    MissingNotification,
    #[error("more than one notification element")]
    MultipleNotifications,
    #[error("notification without a status")]
    MissingStatus,
}

const FIELDS: [&str; 5] = [
    "message-id",
    "datetime",
    "recipient-uri",
    "original-recipient-uri",
    "subject",
];

/// What an open element is, seen from the parser.
#[derive(Clone, Copy)]
enum Ctx {
    Root,
    /// Index into [`FIELDS`].
    Field(usize),
    Notification,
    Status,
    /// Unknown element, or anything inside a text field or a status value.
    Skip,
}

#[derive(Default)]
struct Parser {
    root_seen: bool,
    fields: [Option<String>; 5],
    text: String,
    kind: Option<Kind>,
    status: Option<Status>,
}

fn xml_err(e: impl std::fmt::Display) -> ImdnError {
    ImdnError::Xml(e.to_string())
}

impl Parser {
    fn open(&mut self, e: &BytesStart<'_>, parent: Option<Ctx>) -> Result<Ctx, ImdnError> {
        let local = e.local_name();
        let name = local.as_ref();
        Ok(match parent {
            None if self.root_seen => return Err(ImdnError::Xml("more than one root element".into())),
            None if name == b"imdn" => {
                self.root_seen = true;
                Ctx::Root
            }
            None => return Err(ImdnError::NotImdn),
            Some(Ctx::Root) => {
                if let Some(i) = FIELDS.iter().position(|f| f.as_bytes() == name) {
                    if self.fields[i].is_some() {
                        return Err(ImdnError::Duplicate(FIELDS[i]));
                    }
                    self.text.clear();
                    return Ok(Ctx::Field(i));
                }
                let kind = match name {
                    b"delivery-notification" => Kind::Delivery,
                    b"display-notification" => Kind::Display,
                    b"processing-notification" => Kind::Processing,
                    _ => return Ok(Ctx::Skip),
                };
                if self.kind.replace(kind).is_some() {
                    return Err(ImdnError::MultipleNotifications);
                }
                Ctx::Notification
            }
            Some(Ctx::Notification) if name == b"status" => Ctx::Status,
            Some(Ctx::Status) => {
                // A name we could not write back is ignored like any unknown
                // element would be.
                if let Some(status) = std::str::from_utf8(name).ok().filter(|n| is_name(n)) {
                    let status = Status::from_name(status);
                    let better = match &self.status {
                        None => true,
                        Some(Status::Other(_)) => !matches!(status, Status::Other(_)),
                        Some(_) => false,
                    };
                    if better {
                        self.status = Some(status);
                    }
                }
                Ctx::Skip
            }
            Some(_) => Ctx::Skip,
        })
    }

    fn close(&mut self, ctx: Ctx) {
        if let Ctx::Field(i) = ctx {
            self.fields[i] = Some(self.text.trim().to_string());
            self.text.clear();
        }
    }

    fn finish(self) -> Result<Imdn, ImdnError> {
        if !self.root_seen {
            return Err(ImdnError::NotImdn);
        }
        let [message_id, datetime, recipient_uri, original_recipient_uri, subject] = self.fields;
        let required = |v: Option<String>, name| v.filter(|v| !v.is_empty()).ok_or(ImdnError::Missing(name));
        Ok(Imdn {
            message_id: required(message_id, FIELDS[0])?,
            datetime: required(datetime, FIELDS[1])?,
            recipient_uri,
            original_recipient_uri,
            subject,
            kind: self.kind.ok_or(ImdnError::MissingNotification)?,
            status: self.status.ok_or(ImdnError::MissingStatus)?,
        })
    }
}

/// A plain XML name we can write as an element: letters, digits, `-`, `_`,
/// `.`, starting with a letter or `_`.
fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Imdn {
    /// Parse an IMDN document (see the module docs for what is tolerated).
    pub fn parse(xml: &[u8]) -> Result<Imdn, ImdnError> {
        if xml.len() > MAX_SIZE {
            return Err(ImdnError::TooLarge);
        }
        let mut reader = Reader::from_reader(xml);
        let mut stack: Vec<Ctx> = Vec::new();
        let mut p = Parser::default();
        loop {
            match reader.read_event().map_err(xml_err)? {
                Event::Start(e) => {
                    let ctx = p.open(&e, stack.last().copied())?;
                    stack.push(ctx);
                }
                Event::Empty(e) => {
                    let ctx = p.open(&e, stack.last().copied())?;
                    p.close(ctx);
                }
                Event::End(_) => {
                    let ctx = stack.pop().ok_or_else(|| ImdnError::Xml("unmatched end tag".into()))?;
                    p.close(ctx);
                }
                Event::Text(t) => match stack.last() {
                    Some(Ctx::Field(_)) => p.text.push_str(&t.unescape().map_err(xml_err)?),
                    None if !t.iter().all(u8::is_ascii_whitespace) => {
                        return Err(ImdnError::Xml("text outside the root element".into()))
                    }
                    _ => {}
                },
                Event::CData(c) => match stack.last() {
                    Some(Ctx::Field(_)) => p.text.push_str(&c.decode().map_err(xml_err)?),
                    None => return Err(ImdnError::Xml("CDATA outside the root element".into())),
                    _ => {}
                },
                Event::Eof => break,
                // Declaration, comments, processing instructions, DOCTYPE
                // (never expanded).
                _ => {}
            }
        }
        if !stack.is_empty() {
            return Err(ImdnError::Xml("unexpected end of document".into()));
        }
        p.finish()
    }

    /// The document, namespace declared on the root, values escaped.
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(320 + self.message_id.len() + self.datetime.len());
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(out, "<imdn xmlns=\"{XML_NS}\">");
        let optional = [
            (FIELDS[2], &self.recipient_uri),
            (FIELDS[3], &self.original_recipient_uri),
            (FIELDS[4], &self.subject),
        ];
        let fields = [(FIELDS[0], Some(&self.message_id)), (FIELDS[1], Some(&self.datetime))]
            .into_iter()
            .chain(optional.into_iter().map(|(n, v)| (n, v.as_ref())));
        for (name, value) in fields {
            if let Some(value) = value {
                let _ = writeln!(out, "  <{name}>{}</{name}>", quick_xml::escape::escape(value.as_str()));
            }
        }
        let kind = self.kind.element();
        let status = match self.status.as_str() {
            s if is_name(s) => s,
            _ => Status::Error.as_str(),
        };
        let _ = write!(
            out,
            "  <{kind}>\n    <status>\n      <{status}/>\n    </status>\n  </{kind}>\n</imdn>\n"
        );
        out
    }
}

/// A complete report body (what goes in a SIP MESSAGE with Content-Type
/// `message/cpim`): CPIM headers `From`, `To`, `NS: imdn <urn:ietf:params:imdn>`,
/// `imdn.Message-ID: report_id`, `DateTime: datetime` (the report's own; the
/// reported message's is `imdn.datetime`), content headers
/// `Content-Type: message/imdn+xml` and `Content-Disposition: notification`,
/// then the XML. `from` and `to` are CPIM address values (`Bob <sip:b@x>`); a
/// bare URI is put in angle brackets.
pub fn report(from: &str, to: &str, report_id: &str, datetime: &str, imdn: &Imdn) -> Cpim {
    let address = |v: &str| {
        let v = v.trim();
        if v.contains('<') {
            v.to_string()
        } else {
            format!("<{v}>")
        }
    };
    Cpim {
        headers: vec![
            CpimHeader::new("From", &address(from)),
            CpimHeader::new("To", &address(to)),
            CpimHeader::new("NS", &format!("imdn <{IMDN_NS}>")),
            CpimHeader::new("imdn.Message-ID", report_id),
            CpimHeader::new("DateTime", datetime),
        ],
        content_headers: vec![
            CpimHeader::new("Content-Type", CONTENT_TYPE),
            CpimHeader::new("Content-Disposition", "notification"),
        ],
        body: imdn.to_xml().into(),
    }
}

/// Is this SIP MESSAGE body (with its SIP Content-Type) an IMDN report? It is
/// when the SIP type is `message/cpim`, the CPIM content type is
/// `message/imdn+xml` (parameters and case ignored; `Content-Disposition` is
/// not required) and the document parses. Returns the parsed CPIM and IMDN.
pub fn parse_report(sip_content_type: Option<&str>, body: &[u8]) -> Option<(Cpim, Imdn)> {
    if !media_type_is(sip_content_type?, crate::cpim::CONTENT_TYPE) {
        return None;
    }
    let cpim = Cpim::parse(body).ok()?;
    let imdn = report_of(&cpim)?;
    Some((cpim, imdn))
}

/// The IMDN an already parsed CPIM message carries, if it is a report
/// (saves a second parse when the caller needs the CPIM anyway).
pub fn report_of(cpim: &Cpim) -> Option<Imdn> {
    if !media_type_is(cpim.content_type()?, CONTENT_TYPE) {
        return None;
    }
    Imdn::parse(&cpim.body).ok()
}

fn media_type_is(value: &str, expected: &str) -> bool {
    media_type(value).eq_ignore_ascii_case(expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpim::mutate::XorShift;

    /// RFC 5438 §9 (A.2): Bob's delivery notification, as a full CPIM body.
    const RFC5438_DELIVERY: &str = "From: Bob <im:bob@example.com>\r\n\
        To: Alice <im:alice@example.com>\r\n\
        NS: imdn <urn:ietf:params:imdn>\r\n\
        imdn.Message-ID: d834jied93rf\r\n\
        DateTime: 2008-04-04T12:16:49-05:00\r\n\
        \r\n\
        Content-type: message/imdn+xml\r\n\
        Content-Disposition: notification\r\n\
        Content-length: 364\r\n\
        \r\n\
        <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
        <imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\n\
        \x20  <message-id>34jk324j</message-id>\n\
        \x20  <datetime>2008-04-04T12:16:49-05:00</datetime>\n\
        \x20  <recipient-uri>im:bob@example.com</recipient-uri>\n\
        \x20  <original-recipient-uri>im:bob@example.com</original-recipient-uri>\n\
        \x20  <delivery-notification>\n\
        \x20     <status>\n\
        \x20        <delivered/>\n\
        \x20     </status>\n\
        \x20  </delivery-notification>\n\
        </imdn>\n";

    /// RFC 5438 §9 (A.3): the display notification, with a subject.
    const RFC5438_DISPLAY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
        <imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\n\
        \x20  <message-id>34jk324j</message-id>\n\
        \x20  <datetime>2008-04-04T12:16:49-05:00</datetime>\n\
        \x20  <recipient-uri>im:bob@example.com</recipient-uri>\n\
        \x20  <original-recipient-uri>im:bob@example.com</original-recipient-uri>\n\
        \x20  <subject>Hello World!</subject>\n\
        \x20  <display-notification>\n\
        \x20     <status>\n\
        \x20        <displayed/>\n\
        \x20     </status>\n\
        \x20  </display-notification>\n\
        </imdn>\n";

    /// An RCS client's display report: one line, no recipient, prefixed
    /// elements.
    const RCS_DISPLAYED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rcs:imdn \
        xmlns:rcs=\"urn:ietf:params:xml:ns:imdn\"><rcs:message-id>Mq8FWrGbmRz7H1vJ</rcs:message-id>\
        <rcs:datetime>2024-03-01T10:20:30.000Z</rcs:datetime><rcs:display-notification><rcs:status>\
        <rcs:displayed/></rcs:status></rcs:display-notification></rcs:imdn>";

    fn imdn(kind: Kind, status: Status) -> Imdn {
        Imdn {
            message_id: "34jk324j".into(),
            datetime: "2008-04-04T12:16:49-05:00".into(),
            recipient_uri: Some("im:bob@example.com".into()),
            original_recipient_uri: None,
            subject: None,
            kind,
            status,
        }
    }

    #[test]
    fn parses_rfc5438_delivery_report() {
        let (cpim, n) = parse_report(Some("message/cpim"), RFC5438_DELIVERY.as_bytes()).unwrap();
        assert_eq!(cpim.imdn_message_id(), Some("d834jied93rf"));
        assert_eq!(
            n,
            Imdn {
                original_recipient_uri: Some("im:bob@example.com".into()),
                ..imdn(Kind::Delivery, Status::Delivered)
            }
        );
    }

    #[test]
    fn parses_rfc5438_display_notification() {
        let n = Imdn::parse(RFC5438_DISPLAY.as_bytes()).unwrap();
        assert_eq!(n.kind, Kind::Display);
        assert_eq!(n.status, Status::Displayed);
        assert_eq!(n.subject.as_deref(), Some("Hello World!"));
        assert_eq!(n.original_recipient_uri.as_deref(), Some("im:bob@example.com"));
    }

    #[test]
    fn parses_prefixed_rcs_report() {
        let n = Imdn::parse(RCS_DISPLAYED.as_bytes()).unwrap();
        // Some clients start the document with a UTF-8 byte order mark.
        let with_bom = [&b"\xEF\xBB\xBF"[..], RCS_DISPLAYED.as_bytes()].concat();
        assert_eq!(Imdn::parse(&with_bom).as_ref(), Ok(&n));
        assert_eq!(n.message_id, "Mq8FWrGbmRz7H1vJ");
        assert_eq!(n.datetime, "2024-03-01T10:20:30.000Z");
        assert_eq!(n.recipient_uri, None);
        assert_eq!((n.kind, n.status), (Kind::Display, Status::Displayed));
    }

    #[test]
    fn every_kind_and_status_roundtrips() {
        let cases = [
            (Kind::Delivery, Status::Delivered),
            (Kind::Delivery, Status::Failed),
            (Kind::Delivery, Status::Forbidden),
            (Kind::Delivery, Status::Error),
            (Kind::Display, Status::Displayed),
            (Kind::Processing, Status::Processed),
            (Kind::Processing, Status::Stored),
            (Kind::Processing, Status::Other("x-queued".into())),
        ];
        for (kind, status) in cases {
            let n = Imdn {
                original_recipient_uri: Some("sip:+33600000000@example.com;user=phone".into()),
                subject: Some("a < b && \"c\" > 'd' ]]>".into()),
                ..imdn(kind, status)
            };
            let xml = n.to_xml();
            assert!(
                xml.contains("a &lt; b &amp;&amp; &quot;c&quot; &gt; &apos;d&apos; ]]&gt;"),
                "{xml}"
            );
            assert_eq!(Imdn::parse(xml.as_bytes()), Ok(n));
        }
    }

    #[test]
    fn to_xml_matches_the_rfc_layout() {
        let xml = imdn(Kind::Delivery, Status::Delivered).to_xml();
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\n\
             \x20 <message-id>34jk324j</message-id>\n\
             \x20 <datetime>2008-04-04T12:16:49-05:00</datetime>\n\
             \x20 <recipient-uri>im:bob@example.com</recipient-uri>\n\
             \x20 <delivery-notification>\n\
             \x20   <status>\n\
             \x20     <delivered/>\n\
             \x20   </status>\n\
             \x20 </delivery-notification>\n\
             </imdn>\n"
        );
        // An extension status that is not an XML name is written as error.
        let odd = imdn(Kind::Delivery, Status::Other("a b".into())).to_xml();
        assert!(odd.contains("<error/>"));
    }

    #[test]
    fn tolerates_extensions_comments_and_cdata() {
        let xml = br#"<?xml version="1.0"?>
            <!-- a comment --><!DOCTYPE imdn>
            <imdn xmlns="urn:ietf:params:xml:ns:imdn" xmlns:x="urn:example:ext">
              <x:trace hop="1"><x:deep>ignored</x:deep></x:trace>
              <message-id><![CDATA[id<1>]]></message-id>
              <datetime> 2024-01-01T00:00:00Z <x:note>skipped</x:note></datetime>
              <delivery-notification>
                <x:reason>none</x:reason>
                <status><x:vendor-status/><failed/><delivered/></status>
              </delivery-notification>
              <x:after/>
            </imdn>"#;
        let n = Imdn::parse(xml).unwrap();
        assert_eq!(n.message_id, "id<1>");
        assert_eq!(n.datetime, "2024-01-01T00:00:00Z");
        // The first known status wins over the unknown one before it.
        assert_eq!(n.status, Status::Failed);
        assert_eq!(Imdn::parse(n.to_xml().as_bytes()), Ok(n));

        let only_ext = br#"<imdn><message-id>m</message-id><datetime>d</datetime>
            <processing-notification><status><p:queued xmlns:p="urn:x"/></status></processing-notification></imdn>"#;
        let n = Imdn::parse(only_ext).unwrap();
        assert_eq!(n.status, Status::Other("queued".into()));
        assert_eq!(Imdn::parse(n.to_xml().as_bytes()), Ok(n));
    }

    #[test]
    fn malformed_documents() {
        use ImdnError::*;
        let ok_tail = "<delivery-notification><status><delivered/></status></delivery-notification>";
        let doc = |inner: &str| format!("<imdn>{inner}</imdn>");
        let cases: Vec<(String, ImdnError)> = vec![
            (String::new(), NotImdn),
            ("<!-- nothing -->".into(), NotImdn),
            ("<other/>".into(), NotImdn),
            (doc(&format!("<datetime>d</datetime>{ok_tail}")), Missing("message-id")),
            (doc(&format!("<message-id> </message-id><datetime>d</datetime>{ok_tail}")), Missing("message-id")),
            (doc(&format!("<message-id>m</message-id>{ok_tail}")), Missing("datetime")),
            (doc("<message-id>m</message-id><datetime>d</datetime>"), MissingNotification),
            (
                doc("<message-id>m</message-id><datetime>d</datetime><display-notification/>"),
                MissingStatus,
            ),
            (
                doc("<message-id>m</message-id><datetime>d</datetime><display-notification><status/></display-notification>"),
                MissingStatus,
            ),
            (
                doc(&format!("<message-id>m</message-id><message-id>n</message-id><datetime>d</datetime>{ok_tail}")),
                Duplicate("message-id"),
            ),
            (
                doc(&format!("<message-id>m</message-id><datetime>d</datetime>{ok_tail}{ok_tail}")),
                MultipleNotifications,
            ),
        ];
        for (xml, err) in cases {
            assert_eq!(Imdn::parse(xml.as_bytes()), Err(err), "{xml}");
        }
        let valid = doc(&format!("<message-id>m</message-id><datetime>d</datetime>{ok_tail}"));
        assert!(Imdn::parse(valid.as_bytes()).is_ok());
        for broken in [
            valid.replace("</imdn>", ""),
            valid.replace("</datetime>", "</date>"),
            valid.replace(">m<", ">&bogus;<"),
            format!("{valid}<imdn/>"),
            format!("{valid}trailing"),
            format!("junk{valid}"),
            valid.replace("<message-id>", "<message-id"),
        ] {
            assert!(matches!(Imdn::parse(broken.as_bytes()), Err(Xml(_))), "{broken}");
        }
    }

    #[test]
    fn size_limit() {
        let padding = " ".repeat(MAX_SIZE);
        let big = format!("{RFC5438_DISPLAY}{padding}");
        assert_eq!(Imdn::parse(big.as_bytes()), Err(ImdnError::TooLarge));
        let just = format!("{RFC5438_DISPLAY}{}", &padding[RFC5438_DISPLAY.len()..]);
        assert_eq!(just.len(), MAX_SIZE);
        assert!(Imdn::parse(just.as_bytes()).is_ok());
    }

    #[test]
    fn report_builds_a_complete_body() {
        let n = imdn(Kind::Display, Status::Displayed);
        let cpim = report(
            "sip:bob@example.com",
            "Alice <sip:alice@example.com>",
            "rep-1",
            "2024-03-01T10:21:00Z",
            &n,
        );
        let bytes = cpim.to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with(
            "From: <sip:bob@example.com>\r\n\
             To: Alice <sip:alice@example.com>\r\n\
             NS: imdn <urn:ietf:params:imdn>\r\n\
             imdn.Message-ID: rep-1\r\n\
             DateTime: 2024-03-01T10:21:00Z\r\n\
             \r\n\
             Content-Type: message/imdn+xml\r\n\
             Content-Disposition: notification\r\n\
             \r\n\
             <?xml"
        ));
        let (parsed, back) = parse_report(Some("Message/CPIM; charset=utf-8"), &bytes).unwrap();
        assert_eq!(parsed, cpim);
        assert_eq!(back, n);
        assert_eq!(parsed.imdn_message_id(), Some("rep-1"));
        // Line breaks in arguments cannot inject headers.
        let evil = report("sip:a@x\r\nEvil: 1", "sip:b@x", "id\nX: y", "now", &n);
        let again = Cpim::parse(&evil.to_bytes()).unwrap();
        assert_eq!(again, evil);
        assert_eq!(again.header("Evil"), None);
        assert_eq!(again.header("X"), None);
    }

    #[test]
    fn parse_report_rejects_what_is_not_a_report() {
        let body = RFC5438_DELIVERY.as_bytes();
        assert!(parse_report(Some("message/cpim"), body).is_some());
        assert!(parse_report(None, body).is_none());
        assert!(parse_report(Some("text/plain"), body).is_none());
        assert!(parse_report(Some("message/imdn+xml"), body).is_none());
        let text_msg = RFC5438_DELIVERY.replace("message/imdn+xml", "text/plain");
        assert!(parse_report(Some("message/cpim"), text_msg.as_bytes()).is_none());
        let no_status = RFC5438_DELIVERY.replace("<delivered/>", "");
        assert!(parse_report(Some("message/cpim"), no_status.as_bytes()).is_none());
        assert!(parse_report(Some("message/cpim"), b"not cpim").is_none());
        // Content-Disposition is not required.
        let no_disp = RFC5438_DELIVERY.replace("Content-Disposition: notification\r\n", "");
        assert!(parse_report(Some("message/cpim"), no_disp.as_bytes()).is_some());
    }

    #[test]
    fn mutated_inputs_never_panic_and_roundtrip() {
        let seeds = [
            RFC5438_DELIVERY.as_bytes(),
            RFC5438_DISPLAY.as_bytes(),
            RCS_DISPLAYED.as_bytes(),
        ];
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut accepted = 0;
        for i in 0..5_000 {
            let input = rng.mutate(seeds[i % seeds.len()]);
            if let Ok(n) = Imdn::parse(&input) {
                accepted += 1;
                assert_eq!(
                    Imdn::parse(n.to_xml().as_bytes()).as_ref(),
                    Ok(&n),
                    "{:?}",
                    String::from_utf8_lossy(&input)
                );
            }
            if let Some((cpim, n)) = parse_report(Some("message/cpim"), &input) {
                accepted += 1;
                let again = report("sip:a@x", "sip:b@x", "r", "now", &n);
                assert_eq!(
                    parse_report(Some("message/cpim"), &again.to_bytes()).map(|(_, n)| n),
                    Some(n)
                );
                assert_eq!(Cpim::parse(&cpim.to_bytes()), Ok(cpim));
            }
        }
        assert!(accepted > 500, "{accepted}");
    }
}
