//! DNSSEC keys in the state machine: [`Command::PutDnssec`] carries keys the proposing node
//! made (so every node applies the same), [`Command::DeleteDnssec`] stops signing.
//!
//! [`Command::PutDnssec`]: crate::cluster::command::Command::PutDnssec
//! [`Command::DeleteDnssec`]: crate::cluster::command::Command::DeleteDnssec

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{canonical_zone, Delta, State};
use crate::cluster::command::{Rejection, Response};
use crate::zone::dnssec::ZoneKeys;

/// A zone's DNSSEC keys and the log index of their last change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DnssecEntry {
    pub keys: Arc<ZoneKeys>,
    pub version: u64,
}

impl State {
    /// A zone's DNSSEC keys (canonical origin), when it is signed.
    pub fn dnssec(&self, origin: &str) -> Option<&DnssecEntry> {
        self.dnssec.get(origin)
    }

    /// Every signed zone.
    pub fn all_dnssec(&self) -> impl Iterator<Item = (&String, &DnssecEntry)> {
        self.dnssec.iter()
    }

    pub fn load_dnssec(&mut self, origin: String, entry: DnssecEntry) {
        self.dnssec.insert(origin, entry);
    }

    /// Sign a zone with `keys`. The same algorithm again changes nothing; another one is a
    /// conflict (delete first).
    pub(super) fn put_dnssec(
        &mut self,
        origin: &str,
        keys: &ZoneKeys,
        index: u64,
        delta: &mut Delta,
    ) -> Result<Response, Rejection> {
        let key = canonical_zone(origin)?;
        if !self.zones.contains_key(&key) {
            return Err(Rejection::NotFound(format!("no zone {key}")));
        }
        if let Some(old) = self.dnssec.get(&key) {
            if old.keys.algorithm == keys.algorithm {
                return Ok(Response::Noop);
            }
            return Err(Rejection::Conflict(format!(
                "zone {key} is signed with {}; DELETE its dnssec first",
                old.keys.algorithm.name()
            )));
        }
        if keys.keys.is_empty() {
            return Err(Rejection::Invalid(format!("zone {key}: no keys")));
        }
        self.dnssec.insert(
            key.clone(),
            DnssecEntry {
                keys: Arc::new(keys.clone()),
                version: index,
            },
        );
        delta.dnssec.insert(key);
        Ok(Response::Created)
    }

    /// Stop signing a zone.
    pub(super) fn delete_dnssec(
        &mut self,
        origin: &str,
        delta: &mut Delta,
    ) -> Result<Response, Rejection> {
        let key = canonical_zone(origin)?;
        if self.dnssec.remove(&key).is_none() {
            return Err(Rejection::NotFound(format!("zone {key} is not signed")));
        }
        delta.dnssec.insert(key);
        Ok(Response::Deleted)
    }
}
