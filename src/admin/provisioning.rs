//! Run-time provisioning that survives a restart: every change the admin
//! API makes to users, their preferences, groups and the provider policy is
//! written to the store (and flushed) before it is applied and
//! acknowledged, and at start the stored changes are applied over the
//! config file.
//!
//! One record per user or group, in the store's `provisioning` tree, as
//! JSON. A user's record says only what the API changed (provisioned or
//! not, own preferences set or cleared), so a preferences change on a user
//! of the config file does not pin that user's provisioning. Deleting keeps
//! a record (a tombstone) so that a deleted config-file entry stays deleted.
//! An entry changed through the API keeps its API state across restarts
//! even when the config file later says otherwise. A policy set through the
//! API replaces the config file's whole until the API resets it.

use cpm_actors::cf::{GroupDef, GroupError, Groups};
use cpm_actors::{Policy, Preferences, SharedPolicy, SharedUsers, Users};
use cpm_store::{ProvisionKind, Store, StoreError};
use serde::{Deserialize, Serialize};

/// What the API changed about one user; `None` fields are unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferences: Option<PreferencesChange>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreferencesChange {
    Set(Preferences),
    /// Back to the defaults.
    Cleared,
}

impl UserChange {
    /// Provisioned, with these preferences if given.
    pub fn created(preferences: Option<Preferences>) -> UserChange {
        UserChange {
            provisioned: Some(true),
            preferences: preferences.map(PreferencesChange::Set),
        }
    }

    /// No longer provisioned, own preferences dropped.
    pub fn deleted() -> UserChange {
        UserChange {
            provisioned: Some(false),
            preferences: Some(PreferencesChange::Cleared),
        }
    }

    pub fn preferences(p: Preferences) -> UserChange {
        UserChange {
            provisioned: None,
            preferences: Some(PreferencesChange::Set(p)),
        }
    }

    /// This change followed by `later`.
    fn then(self, later: UserChange) -> UserChange {
        UserChange {
            provisioned: later.provisioned.or(self.provisioned),
            preferences: later.preferences.or(self.preferences),
        }
    }

    fn apply(&self, aor: &str, users: &mut Users) {
        match self.provisioned {
            Some(true) => {
                users.provisioned.insert(aor.to_string());
            }
            Some(false) => {
                users.provisioned.remove(aor);
            }
            None => {}
        }
        match &self.preferences {
            Some(PreferencesChange::Set(p)) => {
                users.preferences.insert(aor.to_string(), p.clone());
            }
            Some(PreferencesChange::Cleared) => {
                users.preferences.remove(aor);
            }
            None => {}
        }
    }
}

/// A group as the API left it: its definition, or deleted (`null`).
type GroupRecord = Option<GroupDef>;

/// The name of the one policy record.
const PROVIDER_POLICY: &str = "provider";

/// The body of PUT /api/policy, and its record: the config file's policy
/// sections, as JSON.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    #[serde(default)]
    registrar: crate::config::RegistrarConfig,
    #[serde(default)]
    messaging: crate::config::MessagingConfig,
    #[serde(default)]
    deferred: crate::config::DeferredConfig,
    #[serde(default)]
    actors: crate::config::ActorsConfig,
    #[serde(default)]
    group_policy: crate::config::GroupPolicyConfig,
}

impl PolicyUpdate {
    /// The policy it sets, validated as the config file is; refused for
    /// what cannot change at run time.
    pub fn policy(&self) -> anyhow::Result<Policy> {
        anyhow::ensure!(self.actors.workers == 0, "actors.workers cannot change at run time");
        anyhow::ensure!(
            self.group_policy.domain.is_none(),
            "group_policy.domain cannot change at run time"
        );
        let config = crate::config::Config {
            registrar: self.registrar.clone(),
            messaging: self.messaging.clone(),
            deferred: self.deferred.clone(),
            actors: self.actors.clone(),
            group_policy: self.group_policy.clone(),
            ..Default::default()
        };
        config.validate()?;
        Ok(config.policy())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("cannot store the change: {0}")]
    Store(#[from] StoreError),
    #[error("cannot encode the change: {0}")]
    Encode(serde_json::Error),
    #[error("stored record of {0} is unreadable: {1}")]
    Record(String, serde_json::Error),
    #[error("stored record of {0} defines group {1}")]
    Misnamed(String, String),
    #[error("{0}")]
    Group(#[from] GroupError),
}

/// Writes the API's changes one at a time, so that what is stored and what
/// is in force change in the same order.
pub struct Provisioning {
    store: Store,
    serial: tokio::sync::Mutex<()>,
}

/// Held while a handler checks the current state and changes it.
pub struct Change<'a> {
    store: &'a Store,
    _serial: tokio::sync::MutexGuard<'a, ()>,
}

impl Provisioning {
    pub fn new(store: Store) -> Provisioning {
        Provisioning {
            store,
            serial: tokio::sync::Mutex::new(()),
        }
    }

    /// Wait for earlier changes to finish; checks made while the returned
    /// guard lives still hold when its change is applied.
    pub async fn begin(&self) -> Change<'_> {
        Change {
            store: &self.store,
            _serial: self.serial.lock().await,
        }
    }
}

impl Change<'_> {
    /// Store `change` (merged with what the API changed before), flush,
    /// then put it in force. Nothing is in force if it could not be stored.
    pub async fn user(&self, aor: &str, change: UserChange, users: &SharedUsers) -> Result<(), ProvisionError> {
        // An unreadable record was skipped at start (not in force): the new
        // change replaces it rather than failing every change to the user.
        let stored = match self.store.provisioning_entry(ProvisionKind::User, aor)? {
            Some(bytes) => decode::<UserChange>(aor, &bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "unreadable run-time provisioning replaced");
                UserChange::default()
            }),
            None => UserChange::default(),
        };
        let record = stored.then(change.clone());
        self.store
            .put_provisioning(ProvisionKind::User, aor, &encode(&record)?)?;
        self.store.flush().await?;
        users.update(|u| change.apply(aor, u));
        Ok(())
    }

    /// Create or replace a group (checked, stored, flushed, then in force:
    /// nothing is stored that could not be put in force).
    pub async fn set_group(&self, def: GroupDef, groups: &Groups) -> Result<(), ProvisionError> {
        def.check()?;
        let record: GroupRecord = Some(def.clone());
        self.store
            .put_provisioning(ProvisionKind::Group, &def.uri, &encode(&record)?)?;
        self.store.flush().await?;
        groups.set(def)?;
        Ok(())
    }

    /// Delete a group (stored, flushed, then in force); `NotFound`, with
    /// nothing stored, when there is no such group.
    pub async fn delete_group(&self, uri: &str, groups: &Groups) -> Result<(), ProvisionError> {
        if groups.get(uri).is_none() {
            return Err(GroupError::NotFound(uri.to_string()).into());
        }
        let record: GroupRecord = None;
        self.store
            .put_provisioning(ProvisionKind::Group, uri, &encode(&record)?)?;
        self.store.flush().await?;
        groups.remove(uri)?;
        Ok(())
    }

    /// Replace the provider policy (stored, flushed, then in force).
    pub async fn set_policy(
        &self,
        update: &PolicyUpdate,
        policy: Policy,
        shared: &SharedPolicy,
    ) -> Result<(), ProvisionError> {
        self.store
            .put_provisioning(ProvisionKind::Policy, PROVIDER_POLICY, &encode(update)?)?;
        self.store.flush().await?;
        shared.set(policy);
        Ok(())
    }

    /// Back to the config file's policy; false if the API had not replaced it.
    pub async fn clear_policy(&self, file_policy: Policy, shared: &SharedPolicy) -> Result<bool, ProvisionError> {
        if !self.store.remove_provisioning(ProvisionKind::Policy, PROVIDER_POLICY)? {
            return Ok(false);
        }
        self.store.flush().await?;
        shared.set(file_policy);
        Ok(true)
    }

    /// The store, for writes that share this change's flush (credentials).
    pub fn store(&self) -> &Store {
        self.store
    }
}

fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, ProvisionError> {
    serde_json::to_vec(record).map_err(ProvisionError::Encode)
}

fn decode<T: for<'de> Deserialize<'de>>(name: &str, bytes: &[u8]) -> Result<T, ProvisionError> {
    serde_json::from_slice(bytes).map_err(|e| ProvisionError::Record(name.to_string(), e))
}

/// The policy the API stored, if any and if it is still valid (one that is
/// not is logged, and the config file's applies).
pub fn stored_policy(store: &Store) -> Result<Option<Policy>, StoreError> {
    let Some(bytes) = store.provisioning_entry(ProvisionKind::Policy, PROVIDER_POLICY)? else {
        return Ok(None);
    };
    let policy = decode::<PolicyUpdate>(PROVIDER_POLICY, &bytes)
        .map_err(anyhow::Error::from)
        .and_then(|u| u.policy());
    match policy {
        Ok(p) => Ok(Some(p)),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "the provider policy set through the admin API is not valid; the config file's applies");
            Ok(None)
        }
    }
}

/// How many stored changes [`load`] applied, and how many it skipped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub users: usize,
    pub groups: usize,
    pub unreadable: usize,
}

/// Apply the stored changes over the users and groups of the config file.
/// An unreadable record is logged and skipped: one damaged entry must not
/// keep the server from starting.
pub fn load(store: &Store, users: &mut Users, groups: &Groups) -> Result<Loaded, StoreError> {
    let mut loaded = Loaded::default();
    for (aor, bytes) in store.provisioning_entries(ProvisionKind::User)? {
        match decode::<UserChange>(&aor, &bytes) {
            Ok(change) => {
                change.apply(&aor, users);
                loaded.users += 1;
            }
            Err(e) => {
                tracing::error!(error = %e, "run-time provisioning of a user not applied");
                loaded.unreadable += 1;
            }
        }
    }
    for (uri, bytes) in store.provisioning_entries(ProvisionKind::Group)? {
        let applied = match decode::<GroupRecord>(&uri, &bytes) {
            Ok(Some(def)) if def.uri == uri => groups.set(def).map_err(ProvisionError::from),
            Ok(Some(def)) => Err(ProvisionError::Misnamed(uri.clone(), def.uri)),
            // Deleted: whether or not the config file still defines it.
            Ok(None) => {
                let _ = groups.remove(&uri);
                Ok(())
            }
            Err(e) => Err(e),
        };
        match applied {
            Ok(()) => loaded.groups += 1,
            Err(e) => {
                tracing::error!(group = %uri, error = %e, "run-time provisioning of a group not applied");
                loaded.unreadable += 1;
            }
        }
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpm_actors::cf::{Membership, SendPolicy};
    use cpm_actors::Unavailable;

    fn users(provisioned: &[&str]) -> Users {
        Users {
            open: false,
            provisioned: provisioned.iter().map(|s| s.to_string()).collect(),
            preferences: Default::default(),
            default_preferences: Preferences::default(),
        }
    }

    fn group(uri: &str, members: &[&str]) -> GroupDef {
        GroupDef {
            uri: uri.into(),
            owner: "sip:alice@x".into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            send_policy: SendPolicy::Members,
            membership: Membership::Closed,
            max_size: 10,
        }
    }

    fn reject() -> Preferences {
        Preferences {
            when_unavailable: Unavailable::Reject,
            ..Preferences::default()
        }
    }

    /// Changes made through a `Provisioning` are in force at once and, read
    /// back by `load` over a fresh config, give the same users and groups.
    #[actix_rt::test]
    async fn stored_changes_are_applied_over_the_config_at_start() {
        let store = Store::temporary().unwrap();
        let shared = SharedUsers::new(users(&["sip:alice@x", "sip:bob@x"]));
        let groups = Groups::new(None);
        groups.set(group("sip:g1@x", &["sip:alice@x"])).unwrap();
        let p = Provisioning::new(store.clone());
        {
            let c = p.begin().await;
            c.user("sip:carol@x", UserChange::created(None), &shared).await.unwrap();
            c.user("sip:carol@x", UserChange::preferences(reject()), &shared)
                .await
                .unwrap();
            c.user("sip:bob@x", UserChange::deleted(), &shared).await.unwrap();
            // A config-file user's preferences: its provisioning is not pinned.
            c.user("sip:alice@x", UserChange::preferences(reject()), &shared)
                .await
                .unwrap();
            c.set_group(group("sip:g2@x", &["sip:carol@x"]), &groups).await.unwrap();
            c.delete_group("sip:g1@x", &groups).await.unwrap();
            assert!(c.delete_group("sip:nope@x", &groups).await.is_err());
            // Refused changes leave no record behind.
            let mut big = group("sip:big@x", &["sip:a@x", "sip:b@x"]);
            big.max_size = 1;
            assert!(matches!(
                c.set_group(big, &groups).await,
                Err(ProvisionError::Group(GroupError::TooLarge(..)))
            ));
            for uri in ["sip:nope@x", "sip:big@x"] {
                assert_eq!(store.provisioning_entry(ProvisionKind::Group, uri).unwrap(), None);
            }
        }
        let now = shared.snapshot();
        assert!(now.provisioned.contains("sip:carol@x") && !now.provisioned.contains("sip:bob@x"));
        assert_eq!(now.preferences.get("sip:carol@x"), Some(&reject()));

        // A restart: the config file again, then the stored changes.
        let mut fresh = users(&["sip:alice@x", "sip:bob@x"]);
        let fresh_groups = Groups::new(None);
        fresh_groups.set(group("sip:g1@x", &["sip:alice@x"])).unwrap();
        let loaded = load(&store, &mut fresh, &fresh_groups).unwrap();
        // Groups: g2 set, g1 deleted (the refused delete of sip:nope@x and
        // set of sip:big@x stored nothing).
        assert_eq!(
            loaded,
            Loaded {
                users: 3,
                groups: 2,
                unreadable: 0
            }
        );
        let mut want: Vec<_> = now.provisioned.iter().cloned().collect();
        let mut got: Vec<_> = fresh.provisioned.iter().cloned().collect();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(fresh.preferences, now.preferences);
        assert!(fresh_groups.get("sip:g1@x").is_none(), "deleted stays deleted");
        assert_eq!(fresh_groups.get("sip:g2@x").unwrap().members, ["sip:carol@x"]);

        // alice left the config file: her preferences change did not keep her.
        let mut without_alice = users(&["sip:bob@x"]);
        load(&store, &mut without_alice, &Groups::new(None)).unwrap();
        assert!(!without_alice.provisioned.contains("sip:alice@x"));
    }

    #[actix_rt::test]
    async fn a_stored_policy_applies_at_start_unless_it_is_no_longer_valid() {
        let store = Store::temporary().unwrap();
        assert!(stored_policy(&store).unwrap().is_none());
        let update: PolicyUpdate = serde_json::from_str("{\"deferred\": {\"retry_after_s\": 77}}").unwrap();
        let shared = SharedPolicy::new(Policy::default());
        let p = Provisioning::new(store.clone());
        let policy = update.policy().unwrap();
        p.begin().await.set_policy(&update, policy, &shared).await.unwrap();
        assert_eq!(shared.get().deferred.retry_after, 77);
        assert_eq!(stored_policy(&store).unwrap().map(|p| p.deferred.retry_after), Some(77));

        // Written by a build that allowed it, refused by this one: not applied.
        store
            .put_provisioning(
                ProvisionKind::Policy,
                PROVIDER_POLICY,
                b"{\"actors\": {\"workers\": 8}}",
            )
            .unwrap();
        assert!(stored_policy(&store).unwrap().is_none());
        store
            .put_provisioning(ProvisionKind::Policy, PROVIDER_POLICY, b"garbage")
            .unwrap();
        assert!(stored_policy(&store).unwrap().is_none());

        let c = p.begin().await;
        assert!(c.clear_policy(Policy::default(), &shared).await.unwrap());
        assert!(!c.clear_policy(Policy::default(), &shared).await.unwrap());
        assert_eq!(
            shared.get().deferred.retry_after,
            Policy::default().deferred.retry_after
        );
    }

    /// A damaged record was not applied at start; the next change to the
    /// user replaces it instead of failing.
    #[actix_rt::test]
    async fn an_unreadable_user_record_does_not_block_changes() {
        let store = Store::temporary().unwrap();
        store
            .put_provisioning(ProvisionKind::User, "sip:a@x", b"garbage")
            .unwrap();
        let shared = SharedUsers::new(users(&[]));
        let p = Provisioning::new(store.clone());
        p.begin()
            .await
            .user("sip:a@x", UserChange::created(None), &shared)
            .await
            .unwrap();
        assert!(shared.snapshot().provisioned.contains("sip:a@x"));
        let mut fresh = users(&[]);
        assert_eq!(load(&store, &mut fresh, &Groups::new(None)).unwrap().unreadable, 0);
        assert!(fresh.provisioned.contains("sip:a@x"));
    }

    #[test]
    fn later_changes_win_field_by_field() {
        let c = UserChange::created(Some(reject()))
            .then(UserChange::deleted())
            .then(UserChange::created(None));
        assert_eq!(c.provisioned, Some(true));
        assert_eq!(c.preferences, Some(PreferencesChange::Cleared));
    }

    #[test]
    fn unreadable_records_are_skipped_not_fatal() {
        let store = Store::temporary().unwrap();
        store
            .put_provisioning(ProvisionKind::User, "sip:a@x", b"{\"provisioned\": true}")
            .unwrap();
        store
            .put_provisioning(ProvisionKind::User, "sip:b@x", b"garbage")
            .unwrap();
        store
            .put_provisioning(
                ProvisionKind::Group,
                "sip:g@x",
                &encode(&Some(group("sip:other@x", &[]))).unwrap(),
            )
            .unwrap();
        let mut u = users(&[]);
        let groups = Groups::new(None);
        let loaded = load(&store, &mut u, &groups).unwrap();
        assert_eq!((loaded.users, loaded.groups, loaded.unreadable), (1, 0, 2));
        assert!(u.provisioned.contains("sip:a@x"));
        assert!(groups.list().is_empty());
    }
}
