//! The guestinfo namespace (`guestinfo.*` keys) shared by guest and host.
//!
//! Invariants: keys are stored without the `guestinfo.` prefix; the guest
//! can grow the store only up to `max_keys` keys and `max_bytes` bytes of
//! keys and values (the embedder's initial values are always accepted).

use std::collections::BTreeMap;

/// Why an `info-set` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuestInfoError {
    /// The store already holds the maximum number of keys.
    #[error("too many guestinfo keys")]
    TooManyKeys,
    /// The store would exceed its byte budget.
    #[error("guestinfo store is full")]
    TooLarge,
}

/// The guestinfo key/value store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestInfo {
    values: BTreeMap<String, String>,
    max_keys: usize,
    max_bytes: usize,
}

impl GuestInfo {
    /// A store with the embedder's initial values (keys with or without the
    /// `guestinfo.` prefix) and the guest's growth limits.
    pub fn new<I, K, V>(initial: I, max_keys: usize, max_bytes: usize) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let values = initial
            .into_iter()
            .map(|(key, value)| (strip_prefix(key.as_ref()).to_owned(), value.into()))
            .collect();
        GuestInfo {
            values,
            max_keys,
            max_bytes,
        }
    }

    /// The value of `key` (with or without the `guestinfo.` prefix).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(strip_prefix(key)).map(String::as_str)
    }

    /// Sets `key` on behalf of the guest, within the limits.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), GuestInfoError> {
        let key = strip_prefix(key);
        let old = self.values.get(key).map(|v| key.len() + v.len());
        if old.is_none() && self.values.len() >= self.max_keys {
            return Err(GuestInfoError::TooManyKeys);
        }
        let after = self.bytes() - old.unwrap_or(0) + key.len() + value.len();
        if after > self.max_bytes {
            return Err(GuestInfoError::TooLarge);
        }
        self.values.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.values.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Every entry, keyed with the full `guestinfo.` name, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (String, &str)> {
        self.values
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.as_str()))
    }

    /// The whole namespace as a JSON object `{"guestinfo.key": "value"}`.
    pub fn to_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .entries()
            .map(|(k, v)| (k, serde_json::Value::String(v.to_owned())))
            .collect();
        serde_json::Value::Object(map).to_string()
    }
}

/// The namespace prefix of guestinfo keys.
pub const PREFIX: &str = "guestinfo.";

fn strip_prefix(key: &str) -> &str {
    key.strip_prefix(PREFIX).unwrap_or(key)
}

/// True when `key` names the guestinfo namespace and has a non-empty name.
pub fn is_guestinfo_key(key: &str) -> bool {
    key.strip_prefix(PREFIX)
        .is_some_and(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_values_are_readable_with_or_without_prefix() {
        let store = GuestInfo::new([("guestinfo.a", "1"), ("b", "2")], 8, 64);
        assert_eq!(store.get("guestinfo.a"), Some("1"));
        assert_eq!(store.get("b"), Some("2"));
        assert_eq!(store.get("guestinfo.c"), None);
    }

    #[test]
    fn set_refuses_a_new_key_past_the_key_limit() {
        let mut store = GuestInfo::new(Vec::<(&str, &str)>::new(), 1, 64);
        store.set("guestinfo.a", "1").unwrap();
        assert_eq!(
            store.set("guestinfo.b", "2"),
            Err(GuestInfoError::TooManyKeys)
        );
        store.set("guestinfo.a", "3").unwrap();
        assert_eq!(store.get("a"), Some("3"));
    }

    #[test]
    fn set_refuses_growth_past_the_byte_budget() {
        let mut store = GuestInfo::new(Vec::<(&str, &str)>::new(), 8, 4);
        store.set("a", "123").unwrap();
        assert_eq!(store.set("a", "1234"), Err(GuestInfoError::TooLarge));
        assert_eq!(store.get("a"), Some("123"));
        assert_eq!(store.bytes(), 4);
    }

    #[test]
    fn json_export_uses_full_key_names_and_escapes_values() {
        let store = GuestInfo::new([("k", "say \"hi\"")], 8, 64);
        let json: serde_json::Value = serde_json::from_str(&store.to_json()).unwrap();
        assert_eq!(json["guestinfo.k"], "say \"hi\"");
    }

    #[test]
    fn guestinfo_keys_need_the_prefix_and_a_name() {
        assert!(is_guestinfo_key("guestinfo.x"));
        assert!(!is_guestinfo_key("guestinfo."));
        assert!(!is_guestinfo_key("machine.id"));
    }
}
