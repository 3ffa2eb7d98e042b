//! Ad-hoc recipient lists (RFC 5365 MESSAGE URI-list service, RFC 5366
//! resource lists with copyControl): parse the multipart body, and build
//! what each recipient gets.

use bytes::{BufMut, Bytes, BytesMut};
use quick_xml::events::Event;
use quick_xml::Reader;

/// Option tag of RFC 5365.
pub const OPTION_TAG: &str = "recipient-list-message";
pub const RESOURCE_LISTS: &str = "application/resource-lists+xml";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyControl {
    To,
    Cc,
    Bcc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub uri: String,
    pub copy: CopyControl,
}

/// One MIME part: its headers (name, value) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Part {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn media_type(&self) -> String {
        self.header("Content-Type")
            .unwrap_or("text/plain")
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListError {
    #[error("body is not multipart/mixed with a boundary")]
    NotMultipart,
    #[error("malformed multipart body")]
    Malformed,
    #[error("no recipient-list part")]
    NoList,
    #[error("no message part besides the recipient list")]
    NoContent,
    #[error("malformed resource list: {0}")]
    Xml(String),
    #[error("more than {0} recipients")]
    TooMany(usize),
}

/// The `boundary` parameter of a multipart Content-Type.
pub fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Split a multipart body (RFC 2046 §5.1) into parts; at most 16 parts.
pub fn parse_multipart(body: &[u8], boundary: &str) -> Result<Vec<Part>, ListError> {
    let delim = format!("--{boundary}");
    let text = body;
    let mut parts = Vec::new();
    let mut pos = find(text, delim.as_bytes(), 0).ok_or(ListError::Malformed)?;
    loop {
        let after = pos + delim.len();
        if text[after..].starts_with(b"--") {
            break;
        }
        let start = skip_line(text, after).ok_or(ListError::Malformed)?;
        let next = find(text, format!("\r\n{delim}").as_bytes(), start).ok_or(ListError::Malformed)?;
        parts.push(parse_part(&text[start..next])?);
        if parts.len() > 16 {
            return Err(ListError::Malformed);
        }
        pos = next + 2;
    }
    Ok(parts)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn skip_line(text: &[u8], from: usize) -> Option<usize> {
    find(text, b"\r\n", from).map(|p| p + 2)
}

fn parse_part(raw: &[u8]) -> Result<Part, ListError> {
    let (head, body) = match find(raw, b"\r\n\r\n", 0) {
        Some(p) => (&raw[..p], &raw[p + 4..]),
        None if raw.starts_with(b"\r\n") => (&raw[..0], &raw[2..]),
        None => return Err(ListError::Malformed),
    };
    let head = std::str::from_utf8(head).map_err(|_| ListError::Malformed)?;
    let headers = head
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .ok_or(ListError::Malformed)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Part {
        headers,
        body: Bytes::copy_from_slice(body),
    })
}

/// The recipient list and the message part of a URI-list MESSAGE body.
pub fn split_request(content_type: &str, body: &[u8], max: usize) -> Result<(Vec<Recipient>, Part), ListError> {
    if !content_type.trim().to_ascii_lowercase().starts_with("multipart/mixed") {
        return Err(ListError::NotMultipart);
    }
    let b = boundary(content_type).ok_or(ListError::NotMultipart)?;
    let parts = parse_multipart(body, &b)?;
    let is_list = |p: &Part| {
        p.media_type() == RESOURCE_LISTS
            && p.header("Content-Disposition")
                .is_some_and(|d| d.to_ascii_lowercase().starts_with("recipient-list"))
    };
    let list = parts.iter().find(|p| is_list(p)).ok_or(ListError::NoList)?;
    let content = parts.iter().find(|p| !is_list(p)).ok_or(ListError::NoContent)?.clone();
    let recipients = parse_resource_list(&list.body, max)?;
    Ok((recipients, content))
}

/// `<resource-lists><list><entry uri="..." cp:copyControl="to|cc|bcc"/></list></resource-lists>`.
pub fn parse_resource_list(xml: &[u8], max: usize) -> Result<Vec<Recipient>, ListError> {
    let mut reader = Reader::from_reader(xml);
    let mut out: Vec<Recipient> = Vec::new();
    let mut buf = Vec::new();
    loop {
        match reader
            .read_event_into(&mut buf)
            .map_err(|e| ListError::Xml(e.to_string()))?
        {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == b"entry" => {
                let mut uri = None;
                let mut copy = CopyControl::To;
                for a in e.attributes() {
                    let a = a.map_err(|e| ListError::Xml(e.to_string()))?;
                    let v = a
                        .unescape_value()
                        .map_err(|e| ListError::Xml(e.to_string()))?
                        .into_owned();
                    match a.key.local_name().as_ref() {
                        b"uri" => uri = Some(v),
                        b"copyControl" => {
                            copy = match v.to_ascii_lowercase().as_str() {
                                "cc" => CopyControl::Cc,
                                "bcc" => CopyControl::Bcc,
                                _ => CopyControl::To,
                            }
                        }
                        _ => {}
                    }
                }
                let uri = uri.ok_or_else(|| ListError::Xml("entry without uri".into()))?;
                if out.len() >= max {
                    return Err(ListError::TooMany(max));
                }
                if !out.iter().any(|r| r.uri == uri) {
                    out.push(Recipient { uri, copy });
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

/// The body one recipient gets: the message part alone, or with the
/// visible (to/cc) recipients as a `recipient-list-history` (RFC 5365 §4.2).
pub fn recipient_body(content: &Part, list: &[Recipient]) -> (String, Bytes) {
    let visible: Vec<&Recipient> = list.iter().filter(|r| r.copy != CopyControl::Bcc).collect();
    let content_type = content.header("Content-Type").unwrap_or("text/plain").to_string();
    if visible.is_empty() || list.iter().all(|r| r.copy == CopyControl::Bcc) {
        return (content_type, content.body.clone());
    }
    let boundary = format!("cpm-{}", crate::originating::unique_id());
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\" \
         xmlns:cp=\"urn:ietf:params:xml:ns:copycontrol\"><list>",
    );
    for r in visible {
        let cc = if r.copy == CopyControl::Cc { "cc" } else { "to" };
        xml.push_str(&format!(
            "<entry uri=\"{}\" cp:copyControl=\"{cc}\"/>",
            quick_xml::escape::escape(&r.uri)
        ));
    }
    xml.push_str("</list></resource-lists>\r\n");
    let mut out = BytesMut::new();
    out.put_slice(format!("--{boundary}\r\n").as_bytes());
    for (n, v) in &content.headers {
        out.put_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.put_slice(b"\r\n");
    out.put_slice(&content.body);
    out.put_slice(format!("\r\n--{boundary}\r\nContent-Type: {RESOURCE_LISTS}\r\nContent-Disposition: recipient-list-history; handling=optional\r\n\r\n{xml}\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/mixed;boundary={boundary}"), out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "--xyz\r\nContent-Type: application/resource-lists+xml\r\nContent-Disposition: recipient-list\r\n\r\n\
<?xml version=\"1.0\"?><resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\" xmlns:cp=\"urn:ietf:params:xml:ns:copycontrol\">\
<list><entry uri=\"sip:bob@x\" cp:copyControl=\"to\"/><entry uri=\"sip:carol@x\" cp:copyControl=\"cc\"/><entry uri=\"sip:dave@x\" cp:copyControl=\"bcc\"/></list></resource-lists>\r\n\
--xyz\r\nContent-Type: text/plain\r\n\r\nhello all\r\n--xyz--\r\n";

    #[test]
    fn splits_list_and_content() {
        let (list, content) = split_request("multipart/mixed;boundary=\"xyz\"", BODY.as_bytes(), 10).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(
            list[1],
            Recipient {
                uri: "sip:carol@x".into(),
                copy: CopyControl::Cc
            }
        );
        assert_eq!(&content.body[..], b"hello all");
        let (ct, body) = recipient_body(&content, &list);
        assert!(ct.starts_with("multipart/mixed;boundary="));
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("sip:carol@x") && !text.contains("sip:dave@x"),
            "bcc stays hidden: {text}"
        );
        assert!(text.contains("recipient-list-history"));
    }

    #[test]
    fn limits_and_errors() {
        assert_eq!(
            split_request("multipart/mixed;boundary=xyz", BODY.as_bytes(), 2).unwrap_err(),
            ListError::TooMany(2)
        );
        assert_eq!(
            split_request("text/plain", BODY.as_bytes(), 10).unwrap_err(),
            ListError::NotMultipart
        );
        assert!(split_request("multipart/mixed;boundary=nope", BODY.as_bytes(), 10).is_err());
        assert!(split_request("multipart/mixed;boundary=xyz", b"--xyz\r\ngarbage", 10).is_err());
    }
}
