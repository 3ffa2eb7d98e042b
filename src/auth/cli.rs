//! `cpm user add|remove`: digest credentials, written straight into the
//! sled store (the server must not be running on the same directory: sled
//! allows one process per store).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use cpm_actors::{Aor, LocalDomains};
use cpm_sip::SipUri;
use cpm_store::Store;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Store digest credentials (hashes only) for ADDRESS.
    Add {
        /// sip:user@domain or tel:+number.
        address: String,
        /// The password; only its MD5 and SHA-256 digest hashes are stored.
        #[arg(long)]
        password: String,
        /// sled data directory of the (stopped) server.
        #[arg(long, default_value = "./cpm-data")]
        data: PathBuf,
        /// Digest realm; default: the address's domain (required for tel:).
        #[arg(long)]
        realm: Option<String>,
    },
    /// Remove the credentials of ADDRESS.
    Remove {
        address: String,
        #[arg(long, default_value = "./cpm-data")]
        data: PathBuf,
    },
}

/// The canonical AOR of an address given on the command line.
pub fn canonical(address: &str) -> anyhow::Result<Aor> {
    let uri = SipUri::parse(address).with_context(|| format!("address {address:?}"))?;
    anyhow::ensure!(
        uri.is_sip_routable() && uri.user.as_deref().is_some_and(|u| !u.is_empty()),
        "address {address:?} is not a SIP or TEL URI with a user part"
    );
    let domains = LocalDomains::new(std::slice::from_ref(&uri.host), &[]);
    domains
        .local_aor(&uri)
        .with_context(|| format!("address {address:?} is not a user address"))
}

/// How long `cpm user` waits for the store's lock: a server stopped just
/// before lets go of it a moment later.
const LOCK_WAIT: Duration = Duration::from_secs(2);

fn open(data: &Path) -> anyhow::Result<Store> {
    match Store::open_when_free(data, LOCK_WAIT) {
        Ok(s) => Ok(s),
        Err(e) if e.is_locked() => {
            anyhow::bail!(
                "the store {} is locked: is a cpm server running on it? Stop it first \
                 (cpm user changes the store directly)",
                data.display()
            )
        }
        Err(e) => Err(e).with_context(|| format!("opening store {}", data.display())),
    }
}

pub fn run(cmd: &UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            address,
            password,
            data,
            realm,
        } => {
            let aor = canonical(address)?;
            anyhow::ensure!(!password.is_empty(), "empty password");
            let realm = match realm {
                Some(r) => r.clone(),
                None => aor
                    .as_str()
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_string())
                    .context("a tel: address needs --realm")?,
            };
            anyhow::ensure!(
                !realm.is_empty() && !realm.contains(['"', '\\']),
                "invalid realm {realm:?}"
            );
            let store = open(data)?;
            store.set_credentials(aor.as_str(), &super::credential_record(&aor, &realm, password))?;
            store.flush_blocking()?;
            println!(
                "credentials stored for {aor} (username {:?}, realm {realm:?})",
                super::username_of(&aor)
            );
            Ok(())
        }
        UserCommand::Remove { address, data } => {
            let aor = canonical(address)?;
            let store = open(data)?;
            let removed = store.remove_credentials(aor.as_str())?;
            store.flush_blocking()?;
            anyhow::ensure!(removed, "{aor} has no credentials");
            println!("credentials removed for {aor}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_canonicalised() {
        assert_eq!(
            canonical("sip:alice@Example.COM").unwrap().as_str(),
            "sip:alice@example.com"
        );
        assert_eq!(canonical("tel:+1-555-0100").unwrap().as_str(), "tel:+15550100");
        assert!(canonical("sip:example.com").is_err());
        assert!(canonical("mailto:a@b").is_err());
    }

    #[test]
    fn add_then_remove_stores_hashes_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("d");
        let add = UserCommand::Add {
            address: "sip:alice@example.com".into(),
            password: "s3cret".into(),
            data: data.clone(),
            realm: None,
        };
        run(&add).unwrap();
        {
            let s = Store::open_when_free(&data, Duration::from_secs(5)).unwrap();
            let rec = s.credentials("sip:alice@example.com").unwrap().unwrap();
            assert_eq!(rec.username, "alice");
            assert_eq!(rec.realm, "example.com");
            assert_eq!(rec.ha1_md5.len(), 32);
            assert_eq!(rec.ha1_sha256.len(), 64);
            assert!(!format!("{rec:?}").contains("s3cret"));
            // The store is locked while open: the command says why.
            let err = run(&add).unwrap_err().to_string();
            assert!(err.contains("locked"), "{err}");
        }
        let remove = UserCommand::Remove {
            address: "sip:alice@example.com".into(),
            data: data.clone(),
        };
        // The command itself waits for the lock sled lets go of a moment
        // after the handle above is dropped.
        run(&remove).unwrap();
        let s = Store::open_when_free(&data, Duration::from_secs(5)).unwrap();
        assert!(s.credentials("sip:alice@example.com").unwrap().is_none());
    }
}
