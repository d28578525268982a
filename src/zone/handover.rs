//! A process-local hand-over of parsed zones, so that a zone text parsed once as a check
//! (the bootstrap directory on a new cluster's first start) is not parsed again when the
//! command that carries the same text is applied. Keyed by a keyed 128-bit hash of the
//! origin and the text: what is taken is exactly what parsing the text would give.
//! Empty, it costs one lock and a length test per parse; entries live until taken or
//! [`clear`]ed. A bootstrap directory may hold thousands of zones: offered zones are kept
//! by their hash, so offering and taking each costs one look-up.

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::{Mutex, OnceLock};

use hickory_proto::rr::Name;
use siphasher::sip128::{Hasher128, SipHasher13};

use super::ZoneFile;

/// Zones offered and not yet taken (one per bootstrap zone), by [`key`]. `None` until the
/// first offer.
static OFFERED: Mutex<Option<HashMap<u128, ZoneFile>>> = Mutex::new(None);

/// The hash keys, random per process (a text cannot be made to collide with another).
fn keys() -> (u64, u64) {
    static KEYS: OnceLock<(u64, u64)> = OnceLock::new();
    *KEYS.get_or_init(|| (rand::random(), rand::random()))
}

fn key(origin: &Name, text: &str) -> u128 {
    let (k0, k1) = keys();
    let mut h = SipHasher13::new_with_keys(k0, k1);
    h.write(origin.to_lowercase().to_ascii().as_bytes());
    h.write_u8(0);
    h.write(text.as_bytes());
    h.finish128().as_u128()
}

/// Offer `file`, parsed from `text` for `origin`, to the next [`take`] of the same text.
pub fn offer(origin: &Name, text: &str, file: ZoneFile) {
    let k = key(origin, text);
    if let Ok(mut offered) = OFFERED.lock() {
        offered.get_or_insert_with(HashMap::new).insert(k, file);
    }
}

/// The zone parsed from `text` for `origin`, if one was offered (it is then forgotten).
pub fn take(origin: &Name, text: &str) -> Option<ZoneFile> {
    let mut offered = OFFERED.lock().ok()?;
    let offered = offered.as_mut().filter(|o| !o.is_empty())?;
    offered.remove(&key(origin, text))
}

/// Forget every zone offered and not taken (once the import they were for is done).
pub fn clear() {
    let stale = OFFERED.lock().map(|mut o| o.take());
    // A zone of a million records takes a while to free: not on the caller's path.
    if let Ok(Some(stale)) = stale {
        if !stale.is_empty() {
            std::thread::spawn(move || drop(stale));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zone_offered_is_taken_once_for_the_same_text_only() {
        let origin = Name::from_ascii("handover.test.").expect("name");
        let text = "$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n";
        let file = super::super::parse_zone(text, "t", &origin).expect("zone");
        offer(&origin, text, file.clone());
        let other = Name::from_ascii("other.test.").expect("name");
        assert!(take(&other, text).is_none(), "another origin");
        assert!(
            take(&origin, &text.replace("60", "61")).is_none(),
            "another text"
        );
        let got = take(&origin, text).expect("taken");
        assert_eq!(got, file);
        assert!(take(&origin, text).is_none(), "taken once");
    }
}
