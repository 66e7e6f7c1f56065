//! At most [`FAMILY_LIMIT`] active exports per incremental-snapshot family,
//! whatever the engine's parallelism.
//!
//! Azure allows five SAS exports of the snapshots of one incremental family
//! (the snapshots of one disk) to be active at once. A task takes a
//! **slot lease** before it asks for its export (`beginGetAccess`) and
//! gives it back only after the export was revoked (`endGetAccess`):
//! `leases/FAMILY/slot-K.json` in the results location, K in `0..5`, made
//! with an atomic create-if-absent. There are only five names per family,
//! and each exists at most once, so at most five tasks of a family hold an
//! export at any moment, however many run.
//!
//! A task starts at the slot the plan gave it (the plan spreads a family
//! over 0–4), tries the others, and waits while all five are held. A lease
//! names its item and when it expires: the lifetime of the export it
//! covers plus the longest grant operation and a margin, so a lease left
//! by a task that was killed (its export is still active) is honoured
//! until that export has expired by itself, then removed with a
//! delete-if-unchanged. A retry of the same item takes its own old lease
//! over at once: it exports the same snapshot, which Azure counts once.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::store::Store;
use crate::FleetError;

/// Active SAS exports Azure allows per incremental-snapshot family.
pub const FAMILY_LIMIT: usize = 5;

/// The lease document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaseRecord {
    /// The family (source disk resource id).
    pub family: String,
    /// The slot.
    pub slot: u8,
    /// The item holding it.
    pub item: String,
    /// A value unique to this holding (so a holder recognises its own).
    pub holder: String,
    /// The machine and engine task.
    #[serde(default)]
    pub task: Option<String>,
    /// When it was taken.
    pub acquired: String,
    /// When it lapses by itself (Unix seconds), and as RFC 3339.
    pub expires_unix: u64,
    /// [`expires_unix`](Self::expires_unix) for people.
    pub expires: String,
}

/// How leases are taken.
#[derive(Debug, Clone)]
pub struct SlotPolicy {
    /// How long a lease is honoured if never released: the export's
    /// lifetime (`[azure] access_seconds`) plus the longest grant
    /// operation plus a margin for clock differences.
    pub hold: Duration,
    /// How long to wait for a free slot before giving up (the task then
    /// exits 6 and the engine retries it).
    pub max_wait: Duration,
    /// Time between two looks while every slot is held.
    pub poll: Duration,
}

impl SlotPolicy {
    /// For exports of `access_seconds`: held that long plus 6 minutes (the
    /// 5-minute limit on following a grant, and a minute of clock skew).
    pub fn for_access_seconds(access_seconds: u64, max_wait: Duration) -> SlotPolicy {
        SlotPolicy {
            hold: Duration::from_secs(access_seconds.saturating_add(360)),
            max_wait,
            poll: Duration::from_millis(500),
        }
    }
}

/// The family's folder name: 16 hex digits of the sha256 of its id
/// (lower-cased, as Azure ids are case-insensitive).
pub fn family_key(family: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(family.trim().to_ascii_lowercase().as_bytes());
    hex::encode(&h[..8])
}

/// A slot lease held; give it back with [`Lease::release`].
pub struct Lease {
    store: Arc<dyn Store>,
    name: String,
    tag: String,
    /// The slot held.
    pub slot: u8,
    /// How long it took to get.
    pub waited: Duration,
    released: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

fn lease_name(family: &str, slot: u8) -> String {
    format!("leases/{}/slot-{slot}.json", family_key(family))
}

/// A cheap varying number for jitter and holder ids (no randomness needed
/// for correctness: the store's create decides).
fn noise() -> u64 {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (t as u64) ^ u64::from(std::process::id()).rotate_left(29)
}

impl Lease {
    /// Takes a slot of `family` for `item`, starting at `start_slot`;
    /// `waiting` is told (once a minute at most) while every slot is held.
    /// `Ok(None)`: no slot came free within `policy.max_wait`.
    pub fn acquire(
        store: Arc<dyn Store>,
        family: &str,
        start_slot: u8,
        item: &str,
        task: Option<String>,
        policy: &SlotPolicy,
        waiting: &mut dyn FnMut(&str),
    ) -> Result<Option<Lease>, FleetError> {
        let started = Instant::now();
        let mut told: Option<Instant> = None;
        let limit = u8::try_from(FAMILY_LIMIT).unwrap_or(5);
        loop {
            for k in 0..limit {
                let slot = (start_slot % limit + k) % limit;
                let name = lease_name(family, slot);
                let now = SystemTime::now();
                let expires = now + policy.hold;
                let record = LeaseRecord {
                    family: family.to_string(),
                    slot,
                    item: item.to_string(),
                    holder: format!("{:016x}", noise()),
                    task: task.clone(),
                    acquired: crate::time::format(now),
                    expires_unix: crate::time::unix(expires),
                    expires: crate::time::format(expires),
                };
                let data = serde_json::to_vec(&record).expect("a lease serialises");
                let held = |tag: String, name: String| Lease {
                    store: store.clone(),
                    name,
                    tag,
                    slot,
                    waited: started.elapsed(),
                    released: false,
                };
                if let Some(tag) = store.create(&name, &data)? {
                    return Ok(Some(held(tag, name)));
                }
                // Held: by an earlier attempt of this item, or lapsed?
                let Some(now_held) = store.read(&name)? else {
                    continue;
                };
                let old: Option<LeaseRecord> = serde_json::from_slice(&now_held.data).ok();
                let lapsed = old
                    .as_ref()
                    .is_none_or(|o| o.expires_unix <= crate::time::unix(now));
                let ours = old.as_ref().is_some_and(|o| o.item == item);
                if (lapsed || ours) && store.delete_if(&name, &now_held.tag)? {
                    if let Some(tag) = store.create(&name, &data)? {
                        return Ok(Some(held(tag, name)));
                    }
                }
            }
            if started.elapsed() >= policy.max_wait {
                return Ok(None);
            }
            if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                waiting(&format!(
                    "all {FAMILY_LIMIT} export slots of family {family} are held; waiting (up to {} s)",
                    policy.max_wait.as_secs()
                ));
                told = Some(Instant::now());
            }
            let jitter = Duration::from_millis(noise() % 250);
            std::thread::sleep(policy.poll + jitter);
        }
    }

    /// Gives the slot back (only if it is still this holding's).
    pub fn release(mut self) -> Result<bool, FleetError> {
        self.released = true;
        self.store.delete_if(&self.name, &self.tag)
    }

    /// The lease's name in the results location.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // An early return or a panic: give the slot back all the same.
        if !self.released {
            let _ = self.store.delete_if(&self.name, &self.tag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn policy(wait: u64) -> SlotPolicy {
        SlotPolicy {
            hold: Duration::from_secs(3600),
            max_wait: Duration::from_secs(wait),
            poll: Duration::from_millis(10),
        }
    }

    /// Twenty threads of one family, each holding its slot a while: never
    /// more than five at once, and all get one in the end.
    #[test]
    fn at_most_five_holders_per_family() {
        let d = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(d.path()).unwrap());
        let active = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..20u8)
            .map(|i| {
                let (store, active, peak) = (store.clone(), active.clone(), peak.clone());
                std::thread::spawn(move || {
                    let l = Lease::acquire(
                        store,
                        "/subscriptions/s/disks/D1",
                        i % 5,
                        &format!("item-{i}"),
                        None,
                        &policy(60),
                        &mut |_| {},
                    )
                    .unwrap()
                    .expect("a slot within the wait");
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(40));
                    active.fetch_sub(1, Ordering::SeqCst);
                    assert!(l.release().unwrap());
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), FAMILY_LIMIT);
        // Another family is not held up by this one, and case does not matter.
        assert_eq!(family_key("/A/b"), family_key("/a/B"));
    }

    #[test]
    fn lapsed_and_own_leases_are_taken_over_others_wait() {
        let d = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(d.path()).unwrap());
        let take = |item: &str, wait: u64| {
            Lease::acquire(
                store.clone(),
                "fam",
                0,
                item,
                None,
                &policy(wait),
                &mut |_| {},
            )
            .unwrap()
        };
        let held: Vec<Lease> = (0..5).map(|i| take(&format!("x{i}"), 0).unwrap()).collect();
        // A sixth waits, then gives up.
        let mut told = Vec::new();
        let t = Instant::now();
        let none = Lease::acquire(store.clone(), "fam", 0, "y", None, &policy(1), &mut |m| {
            told.push(m.to_string())
        })
        .unwrap();
        assert!(none.is_none() && t.elapsed() >= Duration::from_secs(1));
        assert!(told[0].contains("all 5 export slots"), "{told:?}");
        // A killed holder (its lease never released) retried: it gets its own slot back.
        let slot = held[2].slot;
        std::mem::forget(held);
        let again = take("x2", 0).expect("its own lease");
        assert_eq!(again.slot, slot);
        // A lapsed lease is removed and taken.
        let name = lease_name("fam", 4);
        let mut rec: LeaseRecord =
            serde_json::from_slice(&store.read(&name).unwrap().unwrap().data).unwrap();
        rec.expires_unix = 1;
        let v = store.read(&name).unwrap().unwrap();
        assert!(store.delete_if(&name, &v.tag).unwrap());
        store
            .create(&name, &serde_json::to_vec(&rec).unwrap())
            .unwrap()
            .unwrap();
        let z = take("z", 0).expect("the lapsed slot");
        assert_eq!(z.slot, 4);
    }
}
