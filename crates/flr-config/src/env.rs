//! A snapshot of the process environment, taken once by the command line
//! (`flr-ops`): the clients below it (tokens, Resource Manager, Key Vault,
//! Storage) read their variables from here, never from the process, so a
//! library caller decides what they see and a test can hand them its own.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

/// Variables by name; values are wiped when dropped (some are secrets:
/// `AZURE_CLIENT_SECRET`, token variables).
#[derive(Default)]
pub struct Environment {
    vars: BTreeMap<String, Zeroizing<String>>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values may be secrets.
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

impl Environment {
    /// An environment with no variables.
    pub fn empty() -> Environment {
        Environment::default()
    }

    /// An environment holding these (name, value) pairs; later pairs win.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Environment {
        Environment {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k, Zeroizing::new(v)))
                .collect(),
        }
    }

    /// The value of `name`, when it is set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// `get`, parsed as a number.
    pub fn number(&self, name: &str) -> Option<u64> {
        self.get(name).and_then(|v| v.trim().parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_are_unset() {
        let e = Environment::from_vars([
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), String::new()),
        ]);
        assert_eq!(e.get("A"), Some("1"));
        assert_eq!(e.number("A"), Some(1));
        assert_eq!(e.get("B"), None);
        assert_eq!(e.get("C"), None);
        assert!(!format!("{e:?}").contains('1'));
    }
}
