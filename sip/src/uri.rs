//! SIP/SIPS/TEL URIs. rsip types sip: and sips: URIs; tel: and the other
//! schemes CPM may carry (mailto:, wv: ...) are kept as opaque text so the
//! router can reject or interwork them (004 §5.3.1.2.3).

use std::fmt;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UriError {
    #[error("URI has no scheme: {0}")]
    NoScheme(String),
    #[error("malformed SIP URI: {0}")]
    Malformed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// Lower-case scheme: `sip`, `sips`, `tel`, or anything else.
    pub scheme: String,
    pub user: Option<String>,
    /// Lower-case host (IPv6 in brackets); empty for non-SIP schemes.
    pub host: String,
    pub port: Option<u16>,
    /// URI parameters as written (`transport`, `gr`, `lr` ...).
    pub params: Vec<(String, Option<String>)>,
    /// Whatever follows the scheme, for schemes we do not type.
    pub opaque: Option<String>,
}

impl SipUri {
    pub fn parse(text: &str) -> Result<SipUri, UriError> {
        let text = text.trim();
        let (scheme, rest) = text
            .split_once(':')
            .ok_or_else(|| UriError::NoScheme(text.to_string()))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
            return Err(UriError::NoScheme(text.to_string()));
        }
        match scheme.as_str() {
            "sip" | "sips" => Self::parse_sip(scheme, text),
            "tel" => {
                let (number, params) = split_uri_params(rest);
                if number.is_empty() {
                    return Err(UriError::Malformed(text.to_string()));
                }
                Ok(SipUri {
                    scheme,
                    user: Some(number.to_string()),
                    host: String::new(),
                    port: None,
                    params,
                    opaque: None,
                })
            }
            _ => Ok(SipUri {
                scheme,
                user: None,
                host: String::new(),
                port: None,
                params: Vec::new(),
                opaque: Some(rest.to_string()),
            }),
        }
    }

    /// rsip types `sip:user@host:port`; parameters and headers we split
    /// ourselves because rsip cuts values such as `gr=urn:uuid:...` at ':'.
    fn parse_sip(scheme: String, text: &str) -> Result<SipUri, UriError> {
        let malformed = || UriError::Malformed(text.to_string());
        let text = text.split_once('?').map_or(text, |(t, _)| t);
        let host_start = text.rfind('@').map_or(scheme.len() + 1, |i| i + 1);
        let (base, params) = match text[host_start..].find(';') {
            Some(i) => (&text[..host_start + i], split_uri_params(&text[host_start + i..]).1),
            None => (text, Vec::new()),
        };
        let uri = rsip::Uri::try_from(base).map_err(|_| malformed())?;
        if !uri.params.is_empty() {
            return Err(malformed());
        }
        let host = match &uri.host_with_port.host {
            rsip::Host::Domain(d) => d.to_string().to_ascii_lowercase(),
            rsip::Host::IpAddr(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            rsip::Host::IpAddr(ip) => ip.to_string(),
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '<' || c == '>') {
            return Err(malformed());
        }
        let port = uri.host_with_port.port.as_ref().map(|p| *p.value());
        Ok(SipUri {
            scheme,
            user: uri.user().map(str::to_string),
            host,
            port,
            params,
            opaque: None,
        })
    }

    /// A URI the SIP core can route (sip:, sips:, tel:).
    pub fn is_sip_routable(&self) -> bool {
        matches!(self.scheme.as_str(), "sip" | "sips" | "tel")
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// `transport` parameter, lower-cased.
    pub fn transport(&self) -> Option<String> {
        self.param("transport").flatten().map(str::to_ascii_lowercase)
    }

    /// `host:port` with the scheme's default port.
    pub fn host_port(&self) -> String {
        let default = if self.scheme == "sips" { 5061 } else { 5060 };
        format!("{}:{}", self.host, self.port.unwrap_or(default))
    }
}

fn split_uri_params(rest: &str) -> (&str, Vec<(String, Option<String>)>) {
    let mut parts = rest.split(';');
    let head = parts.next().unwrap_or_default();
    let params = parts
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (p.to_string(), None),
        })
        .collect();
    (head, params)
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        if let Some(opaque) = &self.opaque {
            return f.write_str(opaque);
        }
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if !self.host.is_empty() {
                f.write_str("@")?;
            }
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        for (n, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_fields() {
        let u = SipUri::parse("sip:Bob@Example.COM:5070;transport=TCP;gr=urn:uuid:1").unwrap();
        assert_eq!(u.scheme, "sip");
        assert_eq!(u.user.as_deref(), Some("Bob"));
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport().as_deref(), Some("tcp"));
        assert_eq!(u.param("gr"), Some(Some("urn:uuid:1")));
        assert_eq!(SipUri::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn tel_and_opaque_schemes() {
        let t = SipUri::parse("tel:+15551234;phone-context=x").unwrap();
        assert_eq!(t.user.as_deref(), Some("+15551234"));
        assert!(t.is_sip_routable());
        let w = SipUri::parse("wv:bob@wireless.example").unwrap();
        assert!(!w.is_sip_routable());
        assert_eq!(w.to_string(), "wv:bob@wireless.example");
    }

    #[test]
    fn bad_uris_are_errors() {
        assert!(SipUri::parse("nocolon").is_err());
        assert!(SipUri::parse("sip:").is_err());
        assert!(SipUri::parse(":x").is_err());
    }
}
