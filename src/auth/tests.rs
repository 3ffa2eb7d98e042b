use std::collections::HashMap;

use super::*;

struct Dir {
    creds: HashMap<String, CredentialRecord>,
    known: Vec<String>,
    domains: LocalDomains,
}

impl Directory for Dir {
    fn credentials(&self, aor: &Aor) -> Result<Option<CredentialRecord>, StoreError> {
        Ok(self.creds.get(aor.as_str()).cloned())
    }
    fn is_known(&self, aor: &Aor) -> bool {
        self.known.iter().any(|k| k == aor.as_str())
    }
    fn domains(&self) -> &LocalDomains {
        &self.domains
    }
}

const ALICE: &str = "sip:alice@example.com";
const BOB: &str = "sip:bob@example.com";
const CAROL: &str = "sip:carol@example.com"; // provisioned, no credentials
const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn dir() -> Dir {
    let mut creds = HashMap::new();
    for (aor, pw) in [(ALICE, "alice-pw"), (BOB, "bob-pw")] {
        creds.insert(
            aor.to_string(),
            credential_record(&Aor::from_canonical(aor), "example.com", pw),
        );
    }
    Dir {
        creds,
        known: vec![ALICE.into(), BOB.into(), CAROL.into()],
        domains: LocalDomains::new(&["example.com".to_string()], &["127.0.0.1:5060".to_string()]),
    }
}

fn auth() -> Authenticator {
    Authenticator::new(AuthConfig {
        max_failures: 3,
        ..AuthConfig::default()
    })
}

/// A client's Authorization value.
#[allow(clippy::too_many_arguments)]
fn creds(alg: Algorithm, user: &str, pw: &str, nonce: &str, nc: u32, method: &str, uri: &str) -> String {
    let ha1 = digest::ha1(alg, user, "example.com", pw);
    let nc = format!("{nc:08x}");
    let resp = digest::response(alg, &ha1, nonce, &nc, "cn", method, uri);
    format!(
        "Digest username=\"{user}\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{resp}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"cn\"",
        alg.name()
    )
}

fn attempt<'a>(uri: &'a SipUri, header: &'a str, claimed: &'a Aor, peer: IpAddr) -> Attempt<'a> {
    Attempt {
        method: "MESSAGE",
        request_uri: uri,
        credentials: if header.is_empty() { vec![] } else { vec![header] },
        claimed: Some(claimed),
        peer,
    }
}

#[test]
fn challenge_then_success_with_both_algorithms() {
    let (a, d) = (auth(), dir());
    let uri = SipUri::parse(BOB).unwrap();
    let alice = Aor::from_canonical(ALICE);
    assert_eq!(
        a.verify(&attempt(&uri, "", &alice, PEER), &d, 1000),
        Outcome::Challenge {
            realm: "example.com".into(),
            stale: false
        }
    );
    for alg in Algorithm::OFFERED {
        let nonce = a.nonce(1000);
        let h = creds(alg, "alice", "alice-pw", &nonce, 1, "MESSAGE", BOB);
        assert_eq!(
            a.verify(&attempt(&uri, &h, &alice, PEER), &d, 1001),
            Outcome::Authenticated(alice.clone()),
            "{alg:?}"
        );
        // Same nonce, next count: fine; the same count again: a replay.
        let h2 = creds(alg, "alice", "alice-pw", &nonce, 2, "MESSAGE", BOB);
        assert!(matches!(
            a.verify(&attempt(&uri, &h2, &alice, PEER), &d, 1001),
            Outcome::Authenticated(_)
        ));
        assert!(matches!(
            a.verify(&attempt(&uri, &h2, &alice, PEER), &d, 1001),
            Outcome::Challenge { stale: false, .. }
        ));
    }
}

#[test]
fn wrong_password_stale_nonce_and_foreign_nonce() {
    let (a, d) = (auth(), dir());
    let uri = SipUri::parse(BOB).unwrap();
    let alice = Aor::from_canonical(ALICE);
    let nonce = a.nonce(1000);
    let wrong = creds(Algorithm::Sha256, "alice", "nope", &nonce, 1, "MESSAGE", BOB);
    assert!(matches!(
        a.verify(&attempt(&uri, &wrong, &alice, PEER), &d, 1000),
        Outcome::Challenge { stale: false, .. }
    ));
    // Expired nonce, right password: stale=true. Wrong password: not stale.
    let right = creds(Algorithm::Md5, "alice", "alice-pw", &nonce, 1, "MESSAGE", BOB);
    assert!(matches!(
        a.verify(&attempt(&uri, &right, &alice, PEER), &d, 1000 + 301),
        Outcome::Challenge { stale: true, .. }
    ));
    let other = Authenticator::new(AuthConfig::default()).nonce(1000);
    let foreign = creds(Algorithm::Md5, "alice", "alice-pw", &other, 1, "MESSAGE", BOB);
    assert!(matches!(
        a.verify(&attempt(&uri, &foreign, &alice, PEER), &d, 1000),
        Outcome::Challenge { stale: false, .. }
    ));
    // Request-URI not the one the response was computed for.
    let elsewhere = SipUri::parse(CAROL).unwrap();
    assert!(matches!(
        a.verify(&attempt(&elsewhere, &right, &alice, PEER), &d, 1000),
        Outcome::BadRequest(_)
    ));
}

#[test]
fn authenticated_identity_comes_from_the_username_not_the_claim() {
    let (a, d) = (auth(), dir());
    let uri = SipUri::parse(BOB).unwrap();
    let bob = Aor::from_canonical(BOB);
    // alice's credentials on a request claiming bob: authenticated as alice
    // (the ingress then refuses the From with 403).
    let h = creds(Algorithm::Sha256, "alice", "alice-pw", &a.nonce(5), 1, "MESSAGE", BOB);
    assert_eq!(
        a.verify(&attempt(&uri, &h, &bob, PEER), &d, 5),
        Outcome::Authenticated(Aor::from_canonical(ALICE))
    );
}

#[test]
fn provisioned_user_without_credentials_is_refused() {
    let (a, d) = (auth(), dir());
    let uri = SipUri::parse(BOB).unwrap();
    let carol = Aor::from_canonical(CAROL);
    assert!(matches!(
        a.verify(&attempt(&uri, "", &carol, PEER), &d, 5),
        Outcome::Challenge { .. }
    ));
    let h = creds(Algorithm::Sha256, "carol", "x", &a.nonce(5), 1, "MESSAGE", BOB);
    assert_eq!(
        a.verify(&attempt(&uri, &h, &carol, PEER), &d, 5),
        Outcome::Forbidden("no credentials for this user")
    );
}

#[test]
fn failures_are_throttled_per_source_and_per_user() {
    let (a, d) = (auth(), dir());
    let uri = SipUri::parse(BOB).unwrap();
    let alice = Aor::from_canonical(ALICE);
    let other_peer: IpAddr = "10.0.0.9".parse().unwrap();
    for _ in 0..3 {
        let wrong = creds(Algorithm::Md5, "alice", "guess", &a.nonce(10), 1, "MESSAGE", BOB);
        a.verify(&attempt(&uri, &wrong, &alice, PEER), &d, 10);
    }
    // The source is refused even with the right password ...
    let right = creds(Algorithm::Md5, "alice", "alice-pw", &a.nonce(10), 1, "MESSAGE", BOB);
    assert_eq!(
        a.verify(&attempt(&uri, &right, &alice, PEER), &d, 11),
        Outcome::Throttled { retry_after: 59 }
    );
    // ... and so is the user from elsewhere, until the block lifts.
    assert!(matches!(
        a.verify(&attempt(&uri, &right, &alice, other_peer), &d, 11),
        Outcome::Throttled { .. }
    ));
    let bob = Aor::from_canonical(BOB);
    let bobs = creds(Algorithm::Md5, "bob", "bob-pw", &a.nonce(11), 1, "MESSAGE", BOB);
    assert!(matches!(
        a.verify(&attempt(&uri, &bobs, &bob, other_peer), &d, 11),
        Outcome::Authenticated(_)
    ));
    let later = creds(Algorithm::Md5, "alice", "alice-pw", &a.nonce(80), 1, "MESSAGE", BOB);
    assert!(matches!(
        a.verify(&attempt(&uri, &later, &alice, PEER), &d, 80),
        Outcome::Authenticated(_)
    ));
}

#[test]
fn usernames_resolve_to_local_aors() {
    let d = dir();
    let alice = Aor::from_canonical(ALICE);
    let tel = Aor::from_canonical("tel:+15550100");
    let r = |u: &str, c: Option<&Aor>| user_aor(u, c, &d.domains).map(|a| a.as_str().to_string());
    assert_eq!(r("bob", Some(&alice)).as_deref(), Some(BOB));
    assert_eq!(r("bob@example.com", None).as_deref(), Some(BOB));
    assert_eq!(r("sip:bob@127.0.0.1:5060", None).as_deref(), Some(BOB));
    assert_eq!(r("+15550100", Some(&tel)).as_deref(), Some("tel:+15550100"));
    assert_eq!(r("bob", None).as_deref(), Some(BOB), "primary domain");
    assert_eq!(r("bob@elsewhere.org", None), None);
    assert_eq!(r("", Some(&alice)), None);
}

#[test]
fn malformed_credentials_are_bad_requests() {
    let (a, d) = (auth(), dir());
    let uri = SipUri::parse(BOB).unwrap();
    let alice = Aor::from_canonical(ALICE);
    let nonce = a.nonce(1);
    for bad in [
        "Digest username=\"alice\", realm=\"example.com\"".to_string(),
        format!("Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"{BOB}\", response=\"x\""),
        format!(
            "Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"{BOB}\", response=\"x\", qop=auth, nc=1, cnonce=c"
        ),
    ] {
        assert!(
            matches!(a.verify(&attempt(&uri, &bad, &alice, PEER), &d, 1), Outcome::BadRequest(_)),
            "{bad}"
        );
    }
    // Another scheme or realm: ignored, so challenged.
    for other in [
        "Basic YWxpY2U=",
        "Digest username=\"a\", realm=\"x\", nonce=\"n\", uri=\"u\", response=\"r\"",
    ] {
        assert!(matches!(
            a.verify(&attempt(&uri, other, &alice, PEER), &d, 1),
            Outcome::Challenge { .. }
        ));
    }
}

#[test]
fn only_the_configured_algorithms_are_accepted() {
    let a = Authenticator::new(AuthConfig {
        algorithms: vec![Algorithm::Md5],
        ..AuthConfig::default()
    });
    assert_eq!(a.algorithms(), [Algorithm::Md5]);
    let d = dir();
    let uri = SipUri::parse(BOB).unwrap();
    let alice = Aor::from_canonical(ALICE);
    let nonce = a.nonce(1000);
    // A right SHA-256 answer when only MD5 is offered: challenged again.
    let sha = creds(Algorithm::Sha256, "alice", "alice-pw", &nonce, 1, "MESSAGE", BOB);
    assert!(matches!(
        a.verify(&attempt(&uri, &sha, &alice, PEER), &d, 1000),
        Outcome::Challenge { stale: false, .. }
    ));
    let md5 = creds(Algorithm::Md5, "alice", "alice-pw", &nonce, 1, "MESSAGE", BOB);
    assert_eq!(
        a.verify(&attempt(&uri, &md5, &alice, PEER), &d, 1000),
        Outcome::Authenticated(alice.clone())
    );
}
