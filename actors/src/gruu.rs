//! GRUUs (RFC 5627): URIs that reach one device of a user.
//!
//! - **Public** (`pub-gruu`): the AOR with `;gr=<instance>`; it names the
//!   user and the device, and is valid while the device is registered.
//! - **Temporary** (`temp-gruu`): `sip:tgruu.<token>@<domain>;gr`, where the
//!   token is the AOR, the instance and the registration's Call-ID epoch,
//!   sealed (ChaCha20-Poly1305) with a server secret kept in the store, so it
//!   reveals nothing of the user and cannot be forged. Every registration
//!   refresh mints a new one (a random nonce); all of them stay valid as
//!   long as the device stays registered with the same Call-ID (§3.2), and
//!   become invalid when it registers with another one (a reboot), or when
//!   the server secret is lost with the store. No state is kept per token:
//!   the binding's Call-ID is the state.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use cpm_sip::SipUri;

use crate::Aor;

/// The store's name for the sealing key ([`cpm_store::Store::secret`]).
pub const SECRET_NAME: &str = "temp-gruu";

/// User part prefix of a temporary GRUU.
const USER_PREFIX: &str = "tgruu.";

/// Bound into every seal: a token of another purpose or version never opens.
const AAD: &[u8] = b"cpm temp-gruu 1";

/// Longest token accepted for opening (an AOR and an instance id of a few
/// hundred bytes); anything longer is not ours and is not decoded.
const MAX_TOKEN: usize = 1024;

/// RFC 5627 §3.1 public GRUU: the AOR with a `gr` parameter naming the instance.
pub fn public_gruu(aor: &Aor, instance: &str) -> String {
    format!("{aor};gr={}", strip_angles(instance))
}

/// The one device a request's GRUU Request-URI names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GruuTarget {
    /// The `+sip.instance` value, without angle brackets.
    pub instance: String,
    /// For a temporary GRUU, the registration it was minted for
    /// ([`epoch_of`] its Call-ID): a binding registered since with another
    /// Call-ID is not the one it names.
    pub epoch: Option<u64>,
}

impl GruuTarget {
    /// The device named by a public GRUU's `gr` value.
    pub fn public(instance: &str) -> GruuTarget {
        GruuTarget {
            instance: strip_angles(instance).to_string(),
            epoch: None,
        }
    }

    /// Whether a binding registered as `instance` (angles or not) is the
    /// device this names.
    pub fn is_instance(&self, instance: Option<&str>) -> bool {
        instance.map(strip_angles) == Some(self.instance.as_str())
    }

    /// Whether a registration made with `call_id` is the one this names
    /// (any, for a public GRUU).
    pub fn is_registration(&self, call_id: &str) -> bool {
        self.epoch.is_none_or(|e| e == epoch_of(call_id))
    }

    /// Whether the binding of `instance` registered with `call_id` is the
    /// device, and the registration, this names.
    pub fn names(&self, instance: Option<&str>, call_id: &str) -> bool {
        self.is_instance(instance) && self.is_registration(call_id)
    }
}

/// What a Request-URI says of GRUUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriGruu {
    /// Not a GRUU.
    None,
    /// A public GRUU (`;gr=<instance>`).
    Public(GruuTarget),
    /// A temporary GRUU whose token opened.
    Temp(TempGruu),
    /// Written as a temporary GRUU (`tgruu.` user, `gr` flag), but its
    /// token does not open: forged, damaged, or sealed with a lost secret.
    BadTemp,
}

impl UriGruu {
    /// The one place that reads a Request-URI as a GRUU.
    pub fn of(uri: &SipUri, temp: &TempGruus) -> UriGruu {
        let Some(gr) = uri.param("gr") else {
            return UriGruu::None;
        };
        match (uri.user.as_deref().filter(|u| TempGruus::is_temp_user(u)), gr) {
            (Some(user), _) => temp.open(user).map_or(UriGruu::BadTemp, UriGruu::Temp),
            (None, Some(instance)) => UriGruu::Public(GruuTarget::public(instance)),
            (None, None) => UriGruu::None,
        }
    }

    /// The device it names, if any.
    pub fn target(self) -> Option<GruuTarget> {
        match self {
            UriGruu::Public(g) => Some(g),
            UriGruu::Temp(t) => Some(t.into()),
            UriGruu::None | UriGruu::BadTemp => None,
        }
    }
}

/// The device the GRUU of Request-URI `uri` names, if it is a GRUU: a
/// temporary one that opens, or a public one's `gr` value. (The ingress
/// refuses a temporary one that does not open before any PF sees it.)
pub fn target_of(uri: &SipUri, temp: &TempGruus) -> Option<GruuTarget> {
    UriGruu::of(uri, temp).target()
}

impl From<TempGruu> for GruuTarget {
    fn from(t: TempGruu) -> GruuTarget {
        GruuTarget {
            instance: t.instance,
            epoch: Some(t.epoch),
        }
    }
}

/// What a valid temporary GRUU names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempGruu {
    pub aor: Aor,
    /// The `+sip.instance` value, without angle brackets.
    pub instance: String,
    /// [`epoch_of`] the Call-ID of the registration it was minted for.
    pub epoch: u64,
}

/// The registration a temporary GRUU belongs to, from its Call-ID: a device
/// that registers again with another Call-ID invalidates the older ones.
pub fn epoch_of(call_id: &str) -> u64 {
    let d = digest(&SHA256, call_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// Mints and opens temporary GRUUs with one server secret.
pub struct TempGruus {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for TempGruus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TempGruus")
    }
}

impl TempGruus {
    pub fn new(secret: &[u8; 32]) -> TempGruus {
        // A 32-byte key is what ChaCha20-Poly1305 takes: this cannot fail.
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, secret).expect("32-byte ChaCha20-Poly1305 key");
        TempGruus {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    /// A fresh random secret for [`cpm_store::Store::secret`]; `None` if
    /// the system's random source fails (the server then does not start).
    pub fn fresh_secret() -> Option<[u8; 32]> {
        let mut s = [0u8; 32];
        SystemRandom::new().fill(&mut s).ok()?;
        Some(s)
    }

    /// A new temporary GRUU for `instance` of `aor`, registered with
    /// `call_id`, in `domain`; `None` if the random source fails, or if the
    /// instance id and AOR are too long for a token [`TempGruus::open`]
    /// takes (hundreds of bytes: no real device sends such).
    pub fn mint(&self, aor: &Aor, instance: &str, call_id: &str, domain: &str) -> Option<String> {
        let instance = strip_angles(instance);
        let mut sealed = Vec::with_capacity(8 + instance.len() + 1 + aor.as_str().len() + 16);
        sealed.extend_from_slice(&epoch_of(call_id).to_be_bytes());
        sealed.extend_from_slice(instance.as_bytes());
        sealed.push(0);
        sealed.extend_from_slice(aor.as_str().as_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut sealed)
            .ok()?;
        let mut token = nonce.to_vec();
        token.extend_from_slice(&sealed);
        let token = URL_SAFE_NO_PAD.encode(token);
        if token.len() > MAX_TOKEN {
            tracing::debug!(%aor, instance, "instance id too long for a temporary GRUU; none issued");
            return None;
        }
        Some(format!("sip:{USER_PREFIX}{token}@{domain};gr"))
    }

    /// Whether the user part of a Request-URI is a temporary GRUU's (then
    /// it is one of ours or invalid, never a user name).
    pub fn is_temp_user(user: &str) -> bool {
        user.starts_with(USER_PREFIX)
    }

    /// What the temporary GRUU with user part `user` names; `None` for a
    /// token we did not seal with this secret (forged, damaged, or minted
    /// before the store and its secret were lost).
    pub fn open(&self, user: &str) -> Option<TempGruu> {
        let token = user.strip_prefix(USER_PREFIX)?;
        if token.len() > MAX_TOKEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(AAD), &mut sealed).ok()?;
        let (epoch, rest) = plain.split_first_chunk::<8>()?;
        // The AOR (never holding a NUL: the store refuses such) follows the
        // last one.
        let nul = rest.iter().rposition(|&b| b == 0)?;
        let instance = std::str::from_utf8(&rest[..nul]).ok()?;
        let aor = std::str::from_utf8(&rest[nul + 1..]).ok()?;
        Some(TempGruu {
            aor: Aor::from_canonical(aor),
            instance: instance.to_string(),
            epoch: u64::from_be_bytes(*epoch),
        })
    }
}

fn strip_angles(s: &str) -> &str {
    s.trim().trim_start_matches('<').trim_end_matches('>')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob() -> Aor {
        Aor::from_canonical("sip:bob@example.com")
    }

    fn user_of(uri: &str) -> &str {
        uri.strip_prefix("sip:").unwrap().split('@').next().unwrap()
    }

    #[test]
    fn minted_opens_to_what_it_names() {
        let g = TempGruus::new(&[7; 32]);
        let uri = g.mint(&bob(), "<urn:uuid:1>", "call-a", "example.com").unwrap();
        assert!(uri.ends_with("@example.com;gr"), "{uri}");
        assert!(!uri.contains("bob") && !uri.contains("uuid"), "reveals nothing: {uri}");
        let user = user_of(&uri);
        assert!(TempGruus::is_temp_user(user));
        assert!(
            user.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "unreserved characters only: {user}"
        );
        let opened = g.open(user).unwrap();
        assert_eq!(
            opened,
            TempGruu {
                aor: bob(),
                instance: "urn:uuid:1".into(),
                epoch: epoch_of("call-a"),
            }
        );
        assert_ne!(epoch_of("call-a"), epoch_of("call-b"));
    }

    #[test]
    fn an_instance_with_a_nul_still_opens_to_its_user() {
        let g = TempGruus::new(&[7; 32]);
        let uri = g
            .mint(&bob(), "urn:x\0sip:eve@example.com", "c", "example.com")
            .unwrap();
        let opened = g.open(user_of(&uri)).unwrap();
        assert_eq!(opened.aor, bob());
        assert_eq!(opened.instance, "urn:x\0sip:eve@example.com");
    }

    #[test]
    fn no_temp_gruu_is_minted_that_would_not_open() {
        let g = TempGruus::new(&[7; 32]);
        let long = format!("urn:x:{}", "a".repeat(MAX_TOKEN));
        assert_eq!(g.mint(&bob(), &long, "c", "example.com"), None);
        // The longest that is minted still opens.
        let fits = (0..MAX_TOKEN)
            .rev()
            .find_map(|n| g.mint(&bob(), &format!("urn:x:{}", "a".repeat(n)), "c", "example.com"))
            .unwrap();
        assert!(g.open(user_of(&fits)).is_some());
    }

    #[test]
    fn each_mint_differs_and_all_stay_valid() {
        let g = TempGruus::new(&[7; 32]);
        let a = g.mint(&bob(), "urn:uuid:1", "c", "example.com").unwrap();
        let b = g.mint(&bob(), "urn:uuid:1", "c", "example.com").unwrap();
        assert_ne!(a, b);
        assert_eq!(g.open(user_of(&a)), g.open(user_of(&b)));
    }

    #[test]
    fn forged_damaged_or_foreign_tokens_do_not_open() {
        let g = TempGruus::new(&[7; 32]);
        let uri = g.mint(&bob(), "urn:uuid:1", "c", "example.com").unwrap();
        let user = user_of(&uri).to_string();
        assert!(TempGruus::new(&[8; 32]).open(&user).is_none(), "another secret");
        let mut flipped = user.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(g.open(std::str::from_utf8(&flipped).unwrap()).is_none());
        for bad in [
            "tgruu.",
            "tgruu.AAAA",
            "tgruu.!!!!",
            "bob",
            &format!("tgruu.{}", "A".repeat(5000)),
        ] {
            assert!(g.open(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_target_names_its_device_and_a_temp_one_its_registration() {
        let public = GruuTarget::public("<urn:uuid:1>");
        assert!(public.names(Some("<urn:uuid:1>"), "any"));
        assert!(!public.names(Some("<urn:uuid:2>"), "any"));
        assert!(!public.names(None, "any"));
        let g = TempGruus::new(&[7; 32]);
        let uri = g.mint(&bob(), "<urn:uuid:1>", "call-a", "example.com").unwrap();
        let temp = GruuTarget::from(g.open(user_of(&uri)).unwrap());
        assert!(temp.names(Some("<urn:uuid:1>"), "call-a"));
        assert!(
            !temp.names(Some("<urn:uuid:1>"), "call-b"),
            "registered again since (a reboot)"
        );
        assert!(!temp.names(Some("<urn:uuid:2>"), "call-a"));
    }

    #[test]
    fn a_request_uri_names_its_device() {
        let g = TempGruus::new(&[7; 32]);
        let temp = g.mint(&bob(), "urn:uuid:1", "c", "example.com").unwrap();
        let of = |s: &str| target_of(&SipUri::parse(s).unwrap(), &g);
        assert_eq!(of(&temp), Some(GruuTarget::from(g.open(user_of(&temp)).unwrap())));
        assert_eq!(
            of("sip:bob@example.com;gr=urn:uuid:2"),
            Some(GruuTarget::public("urn:uuid:2"))
        );
        assert_eq!(of("sip:bob@example.com"), None);
        assert_eq!(
            of("sip:bob@example.com;gr"),
            None,
            "a flag without a temporary GRUU's user"
        );
        assert_eq!(of(&temp.replace(";gr", "")), None, "a tgruu. user without gr");
        let uri = |s: &str| SipUri::parse(s).unwrap();
        assert_eq!(UriGruu::of(&uri("sip:tgruu.AAAA@example.com;gr"), &g), UriGruu::BadTemp);
        assert_eq!(UriGruu::of(&uri("sip:tgruu.AAAA@example.com"), &g), UriGruu::None);
    }

    #[test]
    fn public_gruu_names_the_instance() {
        assert_eq!(public_gruu(&bob(), "<urn:uuid:1>"), "sip:bob@example.com;gr=urn:uuid:1");
    }
}
