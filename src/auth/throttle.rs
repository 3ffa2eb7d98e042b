//! Throttling of failed authentication, per key (source IP, user): after
//! `max` failures within `window` seconds the key is refused for `window`
//! seconds. The table is bounded; see [`MAX_KEYS`].

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Keys tracked at most. When full, entries whose window and block are over
/// are dropped; if none are, the new key is not tracked (its failures are
/// not counted) rather than let memory grow.
pub const MAX_KEYS: usize = 50_000;

#[derive(Clone, Copy)]
struct Entry {
    window_start: u64,
    failures: u32,
    blocked_until: u64,
}

pub struct Throttle<K> {
    max: u32,
    window: u64,
    map: Mutex<HashMap<K, Entry>>,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    pub fn new(max: u32, window: u64) -> Throttle<K> {
        Throttle {
            max: max.max(1),
            window,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds left while `key` is refused.
    pub fn blocked(&self, key: &K, now: u64) -> Option<u64> {
        let map = crate::lock(&self.map);
        let e = map.get(key)?;
        (e.blocked_until > now).then(|| e.blocked_until - now)
    }

    /// Counts one failure; true when it made `key` blocked.
    pub fn fail(&self, key: &K, now: u64) -> bool {
        let mut map = crate::lock(&self.map);
        if !map.contains_key(key) && map.len() >= MAX_KEYS {
            let window = self.window;
            map.retain(|_, e| e.blocked_until > now || now.saturating_sub(e.window_start) < window);
            if map.len() >= MAX_KEYS {
                return false;
            }
        }
        let e = map.entry(key.clone()).or_insert(Entry {
            window_start: now,
            failures: 0,
            blocked_until: 0,
        });
        if now.saturating_sub(e.window_start) >= self.window {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures += 1;
        if e.failures >= self.max {
            e.blocked_until = now + self.window;
            e.window_start = now;
            e.failures = 0;
            return true;
        }
        false
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_in_window_then_lifts() {
        let t = Throttle::new(3, 60);
        assert!(!t.fail(&"a", 100));
        assert!(!t.fail(&"a", 110));
        assert_eq!(t.blocked(&"a", 110), None);
        assert!(t.fail(&"a", 120));
        assert_eq!(t.blocked(&"a", 120), Some(60));
        assert_eq!(t.blocked(&"a", 179), Some(1));
        assert_eq!(t.blocked(&"a", 180), None);
        assert_eq!(t.blocked(&"b", 120), None, "per key");
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t = Throttle::new(3, 60);
        t.fail(&"a", 0);
        t.fail(&"a", 30);
        t.fail(&"a", 100); // window restarted at 100
        t.fail(&"a", 110);
        assert_eq!(t.blocked(&"a", 110), None);
    }

    #[test]
    fn table_is_bounded() {
        let t = Throttle::new(3, 60);
        for i in 0..MAX_KEYS as u32 {
            t.fail(&i, 0);
        }
        t.fail(&u32::MAX, 10);
        assert_eq!(t.len(), MAX_KEYS, "full and nothing stale: not tracked");
        t.fail(&u32::MAX, 61);
        assert_eq!(t.len(), 1, "stale entries dropped to make room");
    }
}
