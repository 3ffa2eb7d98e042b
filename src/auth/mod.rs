//! Digest authentication of REGISTER and MESSAGE (RFC 3261 §22.4, RFC 2617
//! qop=auth, RFC 8760 SHA-256 and MD5). See docs/auth.md.
//!
//! Without `--open` every REGISTER and MESSAGE that reaches the ingress must
//! carry a valid digest response for a provisioned user with stored
//! credentials (`cpm user add`). REGISTER is challenged with 401 and
//! `WWW-Authenticate`, everything else with 407 and `Proxy-Authenticate`;
//! the algorithms of `[auth] algorithms` are offered, by default SHA-256 then
//! MD5. The authenticated AOR is what the ingress then authorizes (the
//! sender of a MESSAGE, the AOR a REGISTER may change).

pub mod cli;
pub mod digest;
pub mod nonce;
mod throttle;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use cpm_actors::{unix_now, Aor, LocalDomains};
use cpm_sip::{Message, Method, SipUri};
use cpm_store::{CredentialRecord, StoreError};
use serde::Deserialize;

use crate::ingress::Reply;
use digest::Algorithm;
use nonce::{NonceCheck, Nonces};
use throttle::Throttle;

/// `[auth]` in the config file (docs/configuration.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Realm of challenges for identities without stored credentials; by
    /// default the identity's domain. An identity with credentials is
    /// always challenged with the realm they were stored with.
    pub realm: Option<String>,
    /// Lifetime of a nonce; a correct response on an older one gets
    /// `stale=true`.
    pub nonce_ttl_s: u64,
    /// Failed attempts per source IP, and per user, within `throttle_s`
    /// before that source or user is refused for `throttle_s`.
    pub max_failures: u32,
    pub throttle_s: u64,
    /// Digest algorithms challenged with, most preferred first; a response
    /// with another one is challenged again. `["MD5"]` for clients that give
    /// up on a challenge they cannot compute instead of skipping it
    /// (docs/interop.md).
    pub algorithms: Vec<Algorithm>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            realm: None,
            nonce_ttl_s: 300,
            max_failures: 10,
            throttle_s: 60,
            algorithms: Algorithm::OFFERED.to_vec(),
        }
    }
}

impl AuthConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.nonce_ttl_s > 0, "auth.nonce_ttl_s must be above 0");
        anyhow::ensure!(self.max_failures > 0, "auth.max_failures must be above 0");
        anyhow::ensure!(self.throttle_s > 0, "auth.throttle_s must be above 0");
        anyhow::ensure!(!self.algorithms.is_empty(), "auth.algorithms must name at least one");
        for (i, a) in self.algorithms.iter().enumerate() {
            anyhow::ensure!(
                !self.algorithms[..i].contains(a),
                "auth.algorithms names {} twice",
                a.name()
            );
        }
        if let Some(r) = &self.realm {
            anyhow::ensure!(!r.is_empty() && !r.contains(['"', '\\']), "invalid auth.realm {r:?}");
        }
        Ok(())
    }
}

/// What one authentication attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Authenticated(Aor),
    /// Challenge (again) in `realm`.
    Challenge {
        realm: String,
        stale: bool,
    },
    Forbidden(&'static str),
    /// Too many failures from this source or for this user.
    Throttled {
        retry_after: u64,
    },
    BadRequest(&'static str),
    /// The credential store could not be read.
    Unavailable,
}

/// The parts of a request authentication looks at.
pub struct Attempt<'a> {
    pub method: &'a str,
    pub request_uri: &'a SipUri,
    /// Values of `Authorization` (REGISTER) or `Proxy-Authorization`.
    pub credentials: Vec<&'a str>,
    /// The identity the request claims (To of a REGISTER, From or
    /// P-Preferred-Identity of a MESSAGE), canonical; picks the realm and
    /// the domain of a bare username.
    pub claimed: Option<&'a Aor>,
    pub peer: IpAddr,
}

/// Where the authenticator finds users.
pub trait Directory {
    fn credentials(&self, aor: &Aor) -> Result<Option<CredentialRecord>, StoreError>;
    fn is_known(&self, aor: &Aor) -> bool;
    fn domains(&self) -> &LocalDomains;
}

pub struct Authenticator {
    cfg: AuthConfig,
    nonces: Nonces,
    by_ip: Throttle<IpAddr>,
    by_user: Throttle<String>,
    last_sweep: AtomicU64,
}

impl Authenticator {
    pub fn new(cfg: AuthConfig) -> Authenticator {
        Authenticator {
            nonces: Nonces::new(cfg.nonce_ttl_s),
            by_ip: Throttle::new(cfg.max_failures, cfg.throttle_s),
            by_user: Throttle::new(cfg.max_failures, cfg.throttle_s),
            last_sweep: AtomicU64::new(0),
            cfg,
        }
    }

    pub fn nonce(&self, now: u64) -> String {
        self.nonces.issue(now)
    }

    /// The algorithms to challenge with, in order.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.cfg.algorithms
    }

    fn realm_for(&self, claimed: Option<&Aor>, dir: &dyn Directory) -> Result<String, StoreError> {
        if let Some(rec) = claimed.map(|c| dir.credentials(c)).transpose()?.flatten() {
            return Ok(rec.realm);
        }
        if let Some(r) = &self.cfg.realm {
            return Ok(r.clone());
        }
        Ok(claimed
            .and_then(aor_domain)
            .unwrap_or_else(|| dir.domains().primary().to_string()))
    }

    fn fail(&self, peer: IpAddr, user: Option<&Aor>, now: u64) {
        if self.by_ip.fail(&peer, now) {
            tracing::warn!(%peer, "too many failed authentications from this source: refused for a while");
        }
        if let Some(u) = user {
            if self.by_user.fail(&u.as_str().to_string(), now) {
                tracing::warn!(user = %u, "too many failed authentications for this user: refused for a while");
            }
        }
    }

    /// Checks the credentials of one request at time `now` (unix seconds).
    pub fn verify(&self, a: &Attempt, dir: &dyn Directory, now: u64) -> Outcome {
        if self.last_sweep.swap(now, Ordering::Relaxed) + 60 <= now {
            self.nonces.sweep(now);
        }
        if let Some(retry_after) = self.by_ip.blocked(&a.peer, now) {
            return Outcome::Throttled { retry_after };
        }
        let realm = match self.realm_for(a.claimed, dir) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "credential store unreadable");
                return Outcome::Unavailable;
            }
        };
        let challenge = |stale| Outcome::Challenge {
            realm: realm.clone(),
            stale,
        };
        // Credentials for another realm are someone else's (RFC 3261 §22.3).
        let mut ours = None;
        for v in &a.credentials {
            let Some(c) = digest::parse_credentials(v) else {
                if v.trim_start()
                    .get(..6)
                    .is_some_and(|s| s.eq_ignore_ascii_case("digest"))
                {
                    return Outcome::BadRequest("malformed digest credentials");
                }
                continue;
            };
            if c.realm == realm {
                ours = Some(c);
                break;
            }
        }
        let Some(c) = ours else { return challenge(false) };
        let Some(alg) = Algorithm::from_param(c.algorithm.as_deref()).filter(|a| self.cfg.algorithms.contains(a))
        else {
            return challenge(false);
        };
        let (Some(qop), Some(nc), Some(cnonce)) = (&c.qop, &c.nc, &c.cnonce) else {
            return Outcome::BadRequest("digest credentials need qop=auth, nc and cnonce");
        };
        if !qop.eq_ignore_ascii_case("auth") {
            return Outcome::BadRequest("only qop=auth is offered");
        }
        let Some(count) = (nc.len() == 8).then(|| u32::from_str_radix(nc, 16).ok()).flatten() else {
            return Outcome::BadRequest("malformed nonce-count");
        };
        if SipUri::parse(&c.uri).ok().as_ref() != Some(a.request_uri) {
            return Outcome::BadRequest("digest uri does not match the Request-URI");
        }
        let issued = match self.nonces.check(&c.nonce, now) {
            NonceCheck::Invalid => return challenge(false),
            NonceCheck::Stale => None,
            NonceCheck::Fresh { issued } => Some(issued),
        };
        let Some(user) = user_aor(&c.username, a.claimed, dir.domains()) else {
            self.fail(a.peer, None, now);
            return Outcome::Forbidden("unknown user");
        };
        if let Some(retry_after) = self.by_user.blocked(&user.as_str().to_string(), now) {
            return Outcome::Throttled { retry_after };
        }
        let rec = match dir.credentials(&user) {
            Ok(Some(rec)) if dir.is_known(&user) => rec,
            Ok(_) => {
                self.fail(a.peer, Some(&user), now);
                return Outcome::Forbidden("no credentials for this user");
            }
            Err(e) => {
                tracing::error!(%user, error = %e, "credential store unreadable");
                return Outcome::Unavailable;
            }
        };
        let ha1 = match alg {
            Algorithm::Md5 => &rec.ha1_md5,
            Algorithm::Sha256 => &rec.ha1_sha256,
        };
        let expected = digest::response(alg, ha1, &c.nonce, nc, cnonce, a.method, &c.uri);
        let given = c.response.to_ascii_lowercase();
        if c.realm != rec.realm || !digest::ct_eq(expected.as_bytes(), given.as_bytes()) {
            tracing::info!(%user, peer = %a.peer, "digest response does not match");
            self.fail(a.peer, Some(&user), now);
            return challenge(false);
        }
        let Some(issued) = issued else {
            return challenge(true);
        };
        if !self.nonces.use_count(&c.nonce, issued, count, now) {
            tracing::info!(%user, peer = %a.peer, nc = count, "nonce-count replayed");
            self.fail(a.peer, Some(&user), now);
            return challenge(false);
        }
        Outcome::Authenticated(user)
    }
}

/// The domain of a `sip:user@domain` AOR.
fn aor_domain(aor: &Aor) -> Option<String> {
    aor.as_str().rsplit_once('@').map(|(_, d)| d.to_string())
}

/// The AOR a digest username names: a full URI, `user@domain`, or a bare
/// user part in the domain of the claimed identity (a number for a tel: one).
pub fn user_aor(username: &str, claimed: Option<&Aor>, domains: &LocalDomains) -> Option<Aor> {
    let username = username.trim();
    if username.is_empty() {
        return None;
    }
    let text = if username.contains(':') {
        username.to_string()
    } else if username.contains('@') {
        format!("sip:{username}")
    } else if claimed.is_some_and(|c| c.as_str().starts_with("tel:")) {
        format!("tel:{username}")
    } else {
        let domain = claimed
            .and_then(aor_domain)
            .unwrap_or_else(|| domains.primary().to_string());
        format!("sip:{username}@{domain}")
    };
    domains.local_aor(&SipUri::parse(&text).ok()?)
}

/// The username `cpm user add` stores for an AOR: its user part.
pub fn username_of(aor: &Aor) -> &str {
    aor.user()
}

/// The record `cpm user add` stores: digest hashes, never the password.
pub fn credential_record(aor: &Aor, realm: &str, password: &str) -> CredentialRecord {
    let username = username_of(aor);
    CredentialRecord {
        username: username.to_string(),
        realm: realm.to_string(),
        ha1_md5: digest::ha1(Algorithm::Md5, username, realm, password),
        ha1_sha256: digest::ha1(Algorithm::Sha256, username, realm, password),
    }
}

// ---- wiring into the ingress ----

struct EnvDirectory<'a>(&'a cpm_actors::Env);

impl Directory for EnvDirectory<'_> {
    fn credentials(&self, aor: &Aor) -> Result<Option<CredentialRecord>, StoreError> {
        self.0.store.credentials(aor.as_str())
    }
    fn is_known(&self, aor: &Aor) -> bool {
        self.0.users.is_known(aor)
    }
    fn domains(&self) -> &LocalDomains {
        &self.0.domains
    }
}

/// The identity a request claims: To for REGISTER; From for others, or
/// the P-Preferred-Identity of an anonymous From.
fn claimed_identity(req: &Message, domains: &LocalDomains) -> Option<Aor> {
    let uri = if req.method() == Some(&Method::Register) {
        SipUri::parse(&req.to().ok()?.uri).ok()?
    } else {
        let from = SipUri::parse(&req.from().ok()?.uri).ok()?;
        if from.host == "anonymous.invalid" {
            let ppi = cpm_sip::params::parse_list(req.header("P-Preferred-Identity")?).ok()?;
            SipUri::parse(&ppi.into_iter().next()?.uri).ok()?
        } else {
            from
        }
    };
    domains.local_aor(&uri)
}

/// Authenticates the request of `r`. `Ok(None)`: the server is `--open`,
/// nobody is authenticated. `Err`: the response to send (a challenge,
/// 403, 503...).
pub fn authenticate(r: &Reply) -> Result<Option<Aor>, Box<Message>> {
    let env = &r.core.env;
    if env.users.snapshot().open {
        return Ok(None);
    }
    let req = &r.req;
    let register = req.method() == Some(&Method::Register);
    let (code, ask, answer) = if register {
        (401, "WWW-Authenticate", "Authorization")
    } else {
        (407, "Proxy-Authenticate", "Proxy-Authorization")
    };
    let Some(request_uri) = req.request_uri() else {
        return Err(Box::new(r.builder(400).build()));
    };
    let claimed = claimed_identity(req, &env.domains);
    let method = req.method().map(|m| m.to_string()).unwrap_or_default();
    let attempt = Attempt {
        method: &method,
        request_uri,
        credentials: req.headers.all(answer).collect(),
        claimed: claimed.as_ref(),
        peer: r.source.peer.ip(),
    };
    let auth = &r.core.auth;
    let now = unix_now();
    let outcome = auth.verify(&attempt, &EnvDirectory(env), now);
    let call_id = req.call_id().unwrap_or_default();
    let resp = match outcome {
        Outcome::Authenticated(aor) => {
            env.tracer.record(call_id, "ingress", "authenticated", &aor);
            return Ok(Some(aor));
        }
        Outcome::Challenge { realm, stale } => {
            let nonce = auth.nonce(now);
            let mut b = r.builder(code);
            for &alg in auth.algorithms() {
                b = b.header(ask, digest::challenge(alg, &realm, &nonce, stale));
            }
            b.build()
        }
        Outcome::Forbidden(why) => r.builder(403).reason(&format!("Forbidden ({why})")).build(),
        Outcome::Throttled { retry_after } => r
            .builder(503)
            .reason("Service Unavailable (too many failed authentications)")
            .header("Retry-After", retry_after.to_string())
            .build(),
        Outcome::BadRequest(why) => r.builder(400).reason(&format!("Bad Request ({why})")).build(),
        Outcome::Unavailable => r.builder(500).build(),
    };
    let what = format_args!(
        "{} {}",
        resp.status().unwrap_or(0),
        claimed.as_ref().map_or("-", |c| c.as_str())
    );
    env.tracer.record(call_id, "ingress", "auth", what);
    Err(Box::new(resp))
}

#[cfg(test)]
mod tests;
