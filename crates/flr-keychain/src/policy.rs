//! Policy decisions over vault URLs, key/secret ids and algorithms.

use flr_config::PolicyConfig;

/// `*` matches any run of characters (including `/`); everything else
/// matches itself, case-insensitively (URLs' hosts are case-insensitive and
/// Key Vault names are too).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn any(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, text))
}

/// The decisions the key chain takes from the `[policy]` section.
pub trait Policy {
    /// Whether the vault may be used.
    fn allows_vault(&self, vault: &str) -> bool;
    /// Whether the key id (versioned) may be used.
    fn allows_key(&self, kid: &str) -> bool;
    /// Whether the secret id (versioned) may be used.
    fn allows_secret(&self, id: &str) -> bool;
    /// Whether the unwrap algorithm may be used.
    fn allows_algorithm(&self, alg: &str) -> bool;
}

impl Policy for PolicyConfig {
    fn allows_vault(&self, vault: &str) -> bool {
        any(&self.vaults, vault)
    }

    fn allows_key(&self, kid: &str) -> bool {
        any(&self.keys, kid)
    }

    fn allows_secret(&self, id: &str) -> bool {
        any(&self.secrets, id)
    }

    fn allows_algorithm(&self, alg: &str) -> bool {
        self.algorithms.iter().any(|a| a.eq_ignore_ascii_case(alg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match(
            "https://*.vault.azure.net",
            "https://KV1.vault.azure.net"
        ));
        assert!(!glob_match(
            "https://*.vault.azure.net",
            "https://kv1.vault.azure.net.evil"
        ));
        assert!(glob_match(
            "https://kv/keys/kek/*",
            "https://kv/keys/kek/0a"
        ));
        assert!(!glob_match(
            "https://kv/keys/kek/*",
            "https://kv/keys/kek2/0a"
        ));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }
}
