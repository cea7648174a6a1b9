//! Who may call what: API keys with roles. Transport-neutral, so the gRPC
//! edge and any later front end (HTTP) authenticate the same way: take the
//! `authorization` header's value, get a [`Principal`], ask it for a
//! [`Role`].
//!
//! Only a SHA-256 of each key is kept (in the settings and in memory); a
//! presented key is hashed and compared with every configured digest in
//! constant time, so neither the comparison nor which entry matched shows
//! in the timing.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a key may do. `Admin` implies every other role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Score, ScoreBatch.
    Score,
    /// Track, TrackStream.
    Ingest,
    /// GetVisitor.
    Profiles,
    /// Segments (list, get, count, export), funnels, GetModel.
    Audiences,
    /// Everything, including erasure, segment changes and model reloads.
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Score,
        Role::Ingest,
        Role::Profiles,
        Role::Audiences,
        Role::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Score => "score",
            Role::Ingest => "ingest",
            Role::Profiles => "profiles",
            Role::Audiences => "audiences",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == text.trim())
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of roles, as one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles(u8);

impl Roles {
    pub fn all() -> Roles {
        Roles(Role::Admin.bit())
    }

    pub fn allows(self, role: Role) -> bool {
        self.0 & (role.bit() | Role::Admin.bit()) != 0
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Roles {
        Roles(iter.into_iter().fold(0, |acc, r| acc | r.bit()))
    }
}

/// One `[[auth.keys]]` entry in the settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Who holds the key; logged with every call it makes.
    pub name: String,
    /// The key's SHA-256, 64 hexadecimal digits.
    pub sha256: String,
    pub roles: Vec<Role>,
}

/// Who is calling: a configured key's name and roles, or the anonymous
/// caller a server without keys admits on loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    name: Arc<str>,
    roles: Roles,
}

impl Principal {
    /// The caller of a server without keys (loopback, or
    /// `auth.allow_anonymous`): every role.
    pub fn anonymous() -> Principal {
        Principal {
            name: Arc::from("anonymous"),
            roles: Roles::all(),
        }
    }

    /// The key's name, as logged; never the key.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same name, shared (an `Arc` clone, no copy).
    pub fn shared_name(&self) -> Arc<str> {
        self.name.clone()
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.allows(role)
    }

    /// Ok when the caller holds `role` (or admin).
    pub fn require(&self, role: Role) -> Result<(), AuthError> {
        if self.has(role) {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                name: self.name.clone(),
                needed: role,
            })
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no API key: send `authorization: Bearer <key>`")]
    Missing,
    #[error("the authorization header is not `Bearer <key>`")]
    Malformed,
    #[error("unknown API key")]
    Unknown,
    #[error("the key {name:?} lacks the role {needed:?} this call needs")]
    Forbidden { name: Arc<str>, needed: Role },
}

/// A configured key entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth.keys[{index}].{field}: {reason}")]
pub struct KeyEntryError {
    pub index: usize,
    pub field: &'static str,
    pub reason: String,
}

struct Known {
    digest: [u8; 32],
    principal: Principal,
}

/// The configured keys, ready to check a presented one.
pub struct Keyring {
    keys: Vec<Known>,
}

impl Keyring {
    /// Checks every entry: names present and distinct, digests 64 hex digits
    /// and distinct, at least one role each.
    pub fn new(entries: &[KeyEntry]) -> Result<Keyring, KeyEntryError> {
        let mut keys: Vec<Known> = Vec::with_capacity(entries.len());
        for (index, e) in entries.iter().enumerate() {
            let err = |field, reason: String| KeyEntryError {
                index,
                field,
                reason,
            };
            let name = e.name.trim();
            if name.is_empty() || name.len() > 128 {
                return Err(err("name", "must be 1 to 128 characters".into()));
            }
            if keys.iter().any(|k| &*k.principal.name == name) {
                return Err(err("name", format!("{name:?} is used by another key")));
            }
            let digest = parse_digest(&e.sha256).ok_or_else(|| {
                err(
                    "sha256",
                    "must be 64 hexadecimal digits (`rung keys new` prints it)".into(),
                )
            })?;
            if keys.iter().any(|k| k.digest == digest) {
                return Err(err("sha256", "the same key is configured twice".into()));
            }
            if e.roles.is_empty() {
                return Err(err(
                    "roles",
                    "give at least one of score, ingest, profiles, audiences, admin".into(),
                ));
            }
            keys.push(Known {
                digest,
                principal: Principal {
                    name: Arc::from(name),
                    roles: e.roles.iter().copied().collect(),
                },
            });
        }
        Ok(Keyring { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The caller behind an `authorization` header value (`None`: no header).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let key = bearer(value).ok_or(AuthError::Malformed)?;
        self.identify(key)
    }

    /// The caller holding `key`.
    pub fn identify(&self, key: &[u8]) -> Result<Principal, AuthError> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        // Every digest is compared, whichever matches: the time taken does
        // not depend on which entry (if any) the key belongs to.
        let mut found: Option<&Known> = None;
        for k in &self.keys {
            if bool::from(k.digest.ct_eq(&digest)) {
                found = Some(k);
            }
        }
        found.map(|k| k.principal.clone()).ok_or(AuthError::Unknown)
    }
}

/// The key in `Bearer <key>` (the scheme's case does not matter).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let key = rest.trim_ascii();
    (!key.is_empty()).then_some(key)
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// A fresh key (`rung_` and 64 hex digits from the operating system's
/// random source) and its settings entry.
pub fn new_key(name: &str, roles: &[Role]) -> (String, KeyEntry) {
    use rand::RngCore;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let key = format!("rung_{}", hex(&secret));
    let entry = KeyEntry {
        name: name.to_string(),
        sha256: sha256_hex(key.as_bytes()),
        roles: roles.to_vec(),
    };
    (key, entry)
}

/// The SHA-256 of `bytes` as 64 lowercase hex digits: what `sha256` holds.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, key: &str, roles: &[Role]) -> KeyEntry {
        KeyEntry {
            name: name.into(),
            sha256: sha256_hex(key.as_bytes()),
            roles: roles.to_vec(),
        }
    }

    #[test]
    fn the_digest_is_sha256_as_published() {
        // FIPS 180-2's example: SHA-256("abc").
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_key_is_known_by_its_digest_and_carries_its_roles() {
        let ring = Keyring::new(&[
            entry("recs", "k1", &[Role::Score]),
            entry("ops", "k2", &[Role::Admin]),
        ])
        .unwrap();

        let recs = ring.authenticate(Some(b"Bearer k1")).unwrap();
        assert_eq!(recs.name(), "recs");
        assert!(recs.has(Role::Score));
        assert!(!recs.has(Role::Ingest));
        assert_eq!(
            recs.require(Role::Admin).unwrap_err().to_string(),
            "the key \"recs\" lacks the role Admin this call needs"
        );
        let ops = ring.authenticate(Some(b"bearer  k2 ")).unwrap();
        assert!(Role::ALL.iter().all(|&r| ops.has(r)));
    }

    #[test]
    fn missing_malformed_and_unknown_keys_are_told_apart() {
        let ring = Keyring::new(&[entry("recs", "k1", &[Role::Score])]).unwrap();
        assert_eq!(ring.authenticate(None), Err(AuthError::Missing));
        assert_eq!(ring.authenticate(Some(b"k1")), Err(AuthError::Malformed));
        assert_eq!(
            ring.authenticate(Some(b"Basic k1")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            ring.authenticate(Some(b"Bearer ")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            ring.authenticate(Some(b"Bearer k2")),
            Err(AuthError::Unknown)
        );
    }

    #[test]
    fn bad_entries_are_refused_naming_the_field() {
        let mut bad = entry("a", "k", &[Role::Score]);
        bad.sha256 = "abc".into();
        assert_eq!(Keyring::new(&[bad]).err().unwrap().field, "sha256",);
        let e = Keyring::new(&[
            entry("a", "k", &[Role::Score]),
            entry("a", "j", &[Role::Score]),
        ])
        .err()
        .unwrap();
        assert_eq!((e.index, e.field), (1, "name"));
        let e = Keyring::new(&[entry("a", "k", &[])]).err().unwrap();
        assert_eq!(e.field, "roles");
        let e = Keyring::new(&[
            entry("a", "k", &[Role::Score]),
            entry("b", "k", &[Role::Score]),
        ])
        .err()
        .unwrap();
        assert_eq!((e.index, e.field), (1, "sha256"));
    }

    #[test]
    fn a_new_key_matches_its_entry_and_no_two_are_alike() {
        let (key, e) = new_key("recs", &[Role::Score, Role::Ingest]);
        let (other, _) = new_key("recs", &[Role::Score]);
        assert_ne!(key, other);
        assert!(key.starts_with("rung_") && key.len() == 5 + 64);
        let ring = Keyring::new(&[e]).unwrap();
        let p = ring.identify(key.as_bytes()).unwrap();
        assert!(p.has(Role::Ingest) && !p.has(Role::Profiles));
    }
}
