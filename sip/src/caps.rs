//! Device capabilities from Contact feature tags and caller-preference
//! matching (RFC 3840 / RFC 3841, simplified).
//!
//! Simplifications, on purpose:
//! * Only `+`-prefixed feature tags are considered. Base tags without `+`
//!   (`audio`, `methods="..."`, `isfocus`...) are neither recorded nor used
//!   when matching Accept-Contact / Reject-Contact.
//! * Boolean tags match by presence; their values are ignored.
//!   `+g.3gpp.icsi-ref` / `+g.3gpp.iari-ref` match when any URN listed in the
//!   request is among the device's. No negation (`!`), ranges or strings.
//! * `+sip.instance` and `+sip.ice` are not capabilities (an instance id and a
//!   media mechanism): they are not recorded, and they are ignored in
//!   Accept-Contact / Reject-Contact entries.
//! * Accept-Contact with `require` is strict whether or not `explicit` is
//!   present: the device must have registered every feature tag of the entry
//!   (RFC 3841 would let a device that says nothing about a tag match it
//!   implicitly when `explicit` is absent). Entries without `require`
//!   (including `explicit` alone) only rank, so never exclude.

use serde::{Deserialize, Serialize};

use crate::params::{NameAddr, Param};

pub const ICSI_CPM_MSG: &str = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg";
pub const ICSI_CPM_LARGEMSG: &str = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.largemsg";
pub const ICSI_CPM_SESSION: &str = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session";
pub const ICSI_CPM_FILETRANSFER: &str = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.filetransfer";

/// OMA SIMPLE IM / CPM feature tag.
pub const TAG_SIP_IM: &str = "+g.oma.sip-im";
/// 3GPP IMS Communication Service Identifier list (TS 24.229).
pub const TAG_ICSI_REF: &str = "+g.3gpp.icsi-ref";
/// 3GPP IMS Application Reference Identifier list (TS 24.229).
pub const TAG_IARI_REF: &str = "+g.3gpp.iari-ref";

/// Feature tags that do not describe a capability (lower case).
const NON_CAPABILITY_TAGS: [&str; 2] = ["+sip.instance", "+sip.ice"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `+g.oma.sip-im` present.
    pub sip_im: bool,
    /// Decoded `+g.3gpp.icsi-ref` URNs, in order, without duplicates.
    pub icsi: Vec<String>,
    /// Decoded `+g.3gpp.iari-ref` URNs, in order, without duplicates.
    pub iari: Vec<String>,
    /// Other `+` feature tag names, lower-cased, without duplicates
    /// (`+sip.instance` and `+sip.ice` excluded).
    pub other: Vec<String>,
}

impl Capabilities {
    /// Capabilities registered in a Contact's header parameters.
    pub fn from_params(params: &[Param]) -> Capabilities {
        let mut caps = Capabilities::default();
        for p in params {
            let Some(tag) = feature_tag(p) else { continue };
            match tag.as_str() {
                TAG_SIP_IM => caps.sip_im = true,
                TAG_ICSI_REF => push_unique(&mut caps.icsi, ref_list(p.value.as_deref())),
                TAG_IARI_REF => push_unique(&mut caps.iari, ref_list(p.value.as_deref())),
                _ => push_unique(&mut caps.other, [tag]),
            }
        }
        caps
    }

    /// Shorthand for `from_params(&contact.params)`.
    pub fn from_name_addr(contact: &NameAddr) -> Capabilities {
        Capabilities::from_params(&contact.params)
    }

    /// Registered no feature tags at all (a plain SIP UA).
    pub fn is_empty(&self) -> bool {
        !self.sip_im && self.icsi.is_empty() && self.iari.is_empty() && self.other.is_empty()
    }

    /// Has this ICSI (ASCII case-insensitive).
    pub fn has_icsi(&self, urn: &str) -> bool {
        contains_ci(&self.icsi, urn)
    }

    /// Has this IARI (ASCII case-insensitive).
    pub fn has_iari(&self, urn: &str) -> bool {
        contains_ci(&self.iari, urn)
    }

    /// May this device receive a pager-mode CPM Message? A device that
    /// registered no feature tags is a plain SIP UA: eligible. One that
    /// registered feature tags is eligible only with `+g.oma.sip-im` or the
    /// CPM msg ICSI (not largemsg, session or filetransfer alone).
    pub fn accepts_cpm_message(&self) -> bool {
        self.is_empty() || self.sip_im || self.has_icsi(ICSI_CPM_MSG)
    }

    /// Apply a request's Accept-Contact entries: an entry with `require`
    /// whose feature tags the device does not all have excludes the device;
    /// entries without `require` never exclude (they only rank, RFC 3841
    /// §7.2). See the module doc for the matching rules.
    pub fn satisfies(&self, accept_contact: &[NameAddr]) -> bool {
        accept_contact
            .iter()
            .filter(|e| e.has_param("require"))
            .all(|e| entry_tags(e).all(|(tag, p)| self.has_feature(&tag, p)))
    }

    /// Reject-Contact (RFC 3841): a device that has every feature tag of any
    /// entry is excluded. An entry without (recognised) feature tags rejects
    /// nothing.
    pub fn rejected_by(&self, reject_contact: &[NameAddr]) -> bool {
        reject_contact.iter().any(|e| {
            let mut tags = entry_tags(e).peekable();
            tags.peek().is_some() && tags.all(|(tag, p)| self.has_feature(&tag, p))
        })
    }

    /// Does the device have the feature expressed by a request parameter
    /// (`tag` is its lower-cased name)?
    fn has_feature(&self, tag: &str, p: &Param) -> bool {
        match tag {
            TAG_SIP_IM => self.sip_im,
            TAG_ICSI_REF => any_listed(&self.icsi, p),
            TAG_IARI_REF => any_listed(&self.iari, p),
            _ => self.other.iter().any(|t| t == tag),
        }
    }
}

/// Lower-cased feature tag name of a parameter, if it is a capability tag.
fn feature_tag(p: &Param) -> Option<String> {
    if !p.name.starts_with('+') {
        return None;
    }
    let tag = p.name.to_ascii_lowercase();
    (!NON_CAPABILITY_TAGS.contains(&tag.as_str())).then_some(tag)
}

/// The capability feature tags of an Accept-/Reject-Contact entry.
fn entry_tags(e: &NameAddr) -> impl Iterator<Item = (String, &Param)> {
    e.params.iter().filter_map(|p| feature_tag(p).map(|tag| (tag, p)))
}

/// Request lists URNs: the device has one of them. Request lists none
/// (`;+g.3gpp.icsi-ref` alone): the device has any.
fn any_listed(have: &[String], p: &Param) -> bool {
    let wanted = ref_list(p.value.as_deref());
    if wanted.is_empty() {
        !have.is_empty()
    } else {
        wanted.iter().any(|w| contains_ci(have, w))
    }
}

fn contains_ci(list: &[String], item: &str) -> bool {
    list.iter().any(|x| x.eq_ignore_ascii_case(item))
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for item in items {
        if !contains_ci(list, &item) {
            list.push(item);
        }
    }
}

/// Split an icsi-ref / iari-ref value (`urn%3Aa,urn%3Ab`) into decoded URNs.
/// Commas split before decoding, so `%2C` stays inside one URN.
fn ref_list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim_matches([' ', '\t']))
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect()
}

/// Decode `%XX` sequences; invalid ones are kept literally. Bytes that do not
/// form UTF-8 become U+FFFD.
pub fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{parse_list, parse_name_addr};

    const RCS_CONTACT: &str = r#"<sip:bob@10.0.0.1:5070;transport=tcp>;+g.oma.sip-im;+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg,urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session";+sip.instance="<urn:uuid:0001>";expires=3600"#;

    fn caps(contact: &str) -> Capabilities {
        Capabilities::from_name_addr(&parse_name_addr(contact).unwrap())
    }

    fn ac(s: &str) -> Vec<NameAddr> {
        parse_list(s).unwrap()
    }

    #[test]
    fn rcs_contact_capabilities() {
        let c = caps(RCS_CONTACT);
        assert!(c.sip_im);
        assert_eq!(c.icsi, vec![ICSI_CPM_MSG, ICSI_CPM_SESSION]);
        assert!(c.iari.is_empty());
        assert!(c.other.is_empty(), "{:?}", c.other);
        assert!(!c.is_empty());
        assert!(c.has_icsi(ICSI_CPM_SESSION));
        assert!(c.has_icsi(&ICSI_CPM_MSG.to_ascii_uppercase()));
        assert!(!c.has_icsi(ICSI_CPM_FILETRANSFER));
        assert!(c.accepts_cpm_message());
    }

    #[test]
    fn iari_other_and_case() {
        let c = caps(
            r#"<sip:a@b>;+G.3GPP.IARI-REF="urn%3Aurn-7%3A3gpp-application.ims.iari.rcs.fthttp, urn%3Aurn-7%3A3gpp-application.ims.iari.rcs.fthttp";+org.Linphone.specs="groupchat";+org.linphone.specs;+sip.ice;audio;expires=60"#,
        );
        assert!(!c.sip_im);
        assert!(c.icsi.is_empty());
        assert_eq!(c.iari, vec!["urn:urn-7:3gpp-application.ims.iari.rcs.fthttp"]);
        assert!(c.has_iari("URN:urn-7:3gpp-application.ims.iari.rcs.fthttp"));
        assert_eq!(c.other, vec!["+org.linphone.specs"]);
    }

    #[test]
    fn plain_ua_is_empty() {
        let c = caps(r#"<sip:alice@192.0.2.4:5060>;+sip.instance="<urn:uuid:1>";reg-id=1;expires=3600;q=0.7;+sip.ice"#);
        assert!(c.is_empty());
        assert_eq!(c, Capabilities::default());
        assert!(c.accepts_cpm_message());
    }

    #[test]
    fn cpm_message_eligibility() {
        let yes = [
            "<sip:a@b>",
            "<sip:a@b>;+g.oma.sip-im",
            "<sip:a@b>;+g.oma.sip-im;+g.3gpp.iari-ref=\"urn%3Ax\"",
            &format!("<sip:a@b>;+g.3gpp.icsi-ref=\"{}\"", ICSI_CPM_MSG.replace(':', "%3A")),
            // Unencoded is fine too.
            &format!("<sip:a@b>;+g.3gpp.icsi-ref=\"{ICSI_CPM_SESSION},{ICSI_CPM_MSG}\""),
        ];
        for c in yes {
            assert!(caps(c).accepts_cpm_message(), "{c}");
        }
        let no = [
            &format!(
                "<sip:a@b>;+g.3gpp.icsi-ref=\"{}\"",
                ICSI_CPM_LARGEMSG.replace(':', "%3A")
            ),
            &format!("<sip:a@b>;+g.3gpp.icsi-ref=\"{ICSI_CPM_SESSION},{ICSI_CPM_FILETRANSFER}\""),
            "<sip:a@b>;+g.3gpp.iari-ref=\"urn%3Aurn-7%3A3gpp-application.ims.iari.rcs.fthttp\"",
            "<sip:a@b>;+org.linphone.specs=\"groupchat\"",
        ];
        for c in no {
            assert!(!caps(c).accepts_cpm_message(), "{c}");
        }
    }

    #[test]
    fn accept_contact_require_explicit() {
        let rcs = caps(RCS_CONTACT);
        let plain = caps("<sip:a@b>;expires=60");
        let session_only = caps(&format!("<sip:a@b>;+g.3gpp.icsi-ref=\"{ICSI_CPM_SESSION}\""));

        let req = ac("*;+g.oma.sip-im;require;explicit");
        assert!(rcs.satisfies(&req));
        assert!(!plain.satisfies(&req));
        assert!(!session_only.satisfies(&req));

        // `require` alone is strict too (documented simplification).
        assert!(!plain.satisfies(&ac("*;+g.oma.sip-im;require")));
        // Without `require` an entry never excludes, `explicit` alone neither.
        assert!(plain.satisfies(&ac("*;+g.oma.sip-im")));
        assert!(plain.satisfies(&ac("*;+g.oma.sip-im;explicit")));
        // No Accept-Contact at all, or entries without feature tags.
        assert!(plain.satisfies(&[]));
        assert!(plain.satisfies(&ac("*;require;explicit;methods=\"MESSAGE\"")));
        // Case-insensitive tag and parameter names.
        assert!(rcs.satisfies(&ac("*;+G.OMA.SIP-IM;REQUIRE;EXPLICIT")));
        assert!(!plain.satisfies(&ac("*;+G.OMA.SIP-IM;Require")));
        // +sip.instance / +sip.ice in a request are ignored.
        assert!(plain.satisfies(&ac("*;+sip.ice;require;explicit")));
    }

    #[test]
    fn accept_contact_icsi_and_multiple_entries() {
        let rcs = caps(RCS_CONTACT);
        let msg = ICSI_CPM_MSG.replace(':', "%3A");
        let ft = ICSI_CPM_FILETRANSFER.replace(':', "%3A");

        assert!(rcs.satisfies(&ac(&format!("*;+g.3gpp.icsi-ref=\"{msg}\";require;explicit"))));
        assert!(!rcs.satisfies(&ac(&format!("*;+g.3gpp.icsi-ref=\"{ft}\";require;explicit"))));
        // Any listed URN is enough.
        assert!(rcs.satisfies(&ac(&format!("*;+g.3gpp.icsi-ref=\"{ft},{msg}\";require;explicit"))));
        // Tag without value: any ICSI.
        assert!(rcs.satisfies(&ac("*;+g.3gpp.icsi-ref;require")));
        assert!(!rcs.satisfies(&ac("*;+g.3gpp.iari-ref;require")));
        // All tags of an entry are needed.
        assert!(!rcs.satisfies(&ac(&format!(
            "*;+g.oma.sip-im;+g.3gpp.icsi-ref=\"{ft}\";require;explicit"
        ))));
        // Every required entry must hold; unrequired ones don't matter.
        assert!(rcs.satisfies(&ac(&format!(
            "*;+g.oma.sip-im;require;explicit, *;+g.3gpp.icsi-ref=\"{ft}\""
        ))));
        assert!(!rcs.satisfies(&ac(&format!(
            "*;+g.oma.sip-im;require;explicit, *;+g.3gpp.icsi-ref=\"{ft}\";require"
        ))));
        // Other tags by presence.
        let lin = caps("<sip:a@b>;+org.linphone.specs=\"groupchat\"");
        assert!(lin.satisfies(&ac("*;+ORG.linphone.specs;require;explicit")));
        assert!(!rcs.satisfies(&ac("*;+org.linphone.specs;require;explicit")));
    }

    #[test]
    fn reject_contact() {
        let rcs = caps(RCS_CONTACT);
        let plain = caps("<sip:a@b>");
        let ft = ICSI_CPM_FILETRANSFER.replace(':', "%3A");

        let rc = ac("*;+g.oma.sip-im");
        assert!(rcs.rejected_by(&rc));
        assert!(!plain.rejected_by(&rc));
        // All tags of the entry must match.
        assert!(!rcs.rejected_by(&ac(&format!("*;+g.oma.sip-im;+g.3gpp.icsi-ref=\"{ft}\""))));
        // Any entry is enough.
        assert!(rcs.rejected_by(&ac(&format!("*;+g.3gpp.icsi-ref=\"{ft}\", *;+G.oma.SIP-IM"))));
        // Entries with no recognised feature tag reject nothing.
        assert!(!rcs.rejected_by(&ac("*")));
        assert!(!rcs.rejected_by(&ac("*;+sip.instance=\"<urn:uuid:0001>\";audio")));
        assert!(!rcs.rejected_by(&[]));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("urn%3Aurn-7%3aa"), "urn:urn-7:a");
        assert_eq!(percent_decode("%41%zz%4"), "A%zz%4");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("x%41"), "xA");
        assert_eq!(percent_decode("%C3%A9t%C3%A9"), "été");
        assert_eq!(percent_decode("a%FFb"), "a\u{FFFD}b");
        assert_eq!(percent_decode("é%2C"), "é,");
        // Encoded commas do not split a ref list.
        assert_eq!(ref_list(Some("urn%3Aa%2Cb, urn%3Ac,,")), vec!["urn:a,b", "urn:c"]);
    }
}
