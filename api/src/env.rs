//! Where configuration values come from, for every binary: the process
//! environment in the binaries, a map in tests (never
//! `std::env::set_var`, which races with other threads).

use std::collections::HashMap;

/// A source of configuration values by variable name.
pub trait Env {
    /// The value of `name`, if set (an empty value counts as unset, as
    /// linkerd2-proxy reads its `LINKERD2_PROXY_*` variables).
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEnv;

impl Env for OsEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).filter(|v| !v.is_empty()).cloned()
    }
}

impl Env for HashMap<&str, &str> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name)
            .filter(|v| !v.is_empty())
            .map(|v| v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_value_counts_as_unset() {
        let owned: HashMap<String, String> = [("A".to_string(), String::new())].into();
        let borrowed: HashMap<&str, &str> = [("A", ""), ("B", "1")].into();
        assert_eq!(Env::get(&owned, "A"), None);
        assert_eq!(Env::get(&borrowed, "A"), None);
        assert_eq!(Env::get(&borrowed, "B").as_deref(), Some("1"));
        assert_eq!(Env::get(&borrowed, "C"), None);
    }
}
