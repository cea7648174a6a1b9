//! Erasure that reaches the disk, for the embedded store: each visitor's
//! identifying data is sealed with a key of their own, kept in a file that
//! is overwritten in place, so destroying the key (and syncing) makes every
//! copy of that data unreadable, including the copies redb leaves in pages
//! it freed but did not overwrite.
//!
//! What is sealed: the visitor id and every kept raw event (item ids, event
//! ids, attributes). Table rows are found by a pseudonym, a keyed hash of the
//! visitor id under a store-wide secret, so no table key spells an id either.
//! Scoring records (counts, times, hashes) are left in the clear: scans read
//! millions of them and need no key to do it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes of one key, and of one slot in the key file.
pub const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// The file of per-visitor keys inside the data directory.
pub const KEYS_FILE_NAME: &str = "rung.keys";

/// A visitor's key and where it lives in the key file.
#[derive(Clone, Copy)]
pub struct VisitorKey {
    pub slot: u64,
    bytes: [u8; KEY_LEN],
}

/// What a sealed value is, bound into its seal so one cannot stand in for
/// another (an event moved to another visitor's row fails to open).
#[derive(Clone, Copy)]
pub enum Purpose {
    Id = 1,
    Event = 2,
}

impl VisitorKey {
    fn aead(&self) -> LessSafeKey {
        // The length is fixed by the type: this cannot fail.
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.bytes).expect("32-byte key"))
    }

    /// `nonce ‖ ciphertext ‖ tag`. Nonces are random: a write that failed
    /// and is retried seals again under a fresh one.
    pub fn seal(
        &self,
        rng: &SystemRandom,
        row: &str,
        purpose: Purpose,
        plain: &[u8],
    ) -> io::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce)
            .map_err(|_| io::Error::other("the system random source failed"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .aead()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                aad(row, purpose),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| io::Error::other("sealing failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// The plain bytes, or `None` if the seal does not open with this key.
    pub fn open(&self, row: &str, purpose: Purpose, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).ok()?;
        let mut buf = sealed[NONCE_LEN..].to_vec();
        let n = self
            .aead()
            .open_in_place(nonce, aad(row, purpose), &mut buf)
            .ok()?
            .len();
        buf.truncate(n);
        Some(buf)
    }
}

fn aad(row: &str, purpose: Purpose) -> Aad<Vec<u8>> {
    let mut a = Vec::with_capacity(row.len() + 1);
    a.push(purpose as u8);
    a.extend_from_slice(row.as_bytes());
    Aad::from(a)
}

/// Turns visitor ids into row keys: 32 hex digits of HMAC-SHA256 under the
/// store's secret. Hex keeps them printable, which the scan splitter
/// ([`super::ScanRange::split`]) expects.
pub struct Pseudonyms {
    key: hmac::Key,
}

impl Pseudonyms {
    pub fn new(secret: &[u8]) -> Pseudonyms {
        Pseudonyms {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    pub fn row(&self, visitor: &str) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let tag = hmac::sign(&self.key, visitor.as_bytes());
        // By table: this runs on every read of a visitor, and the
        // formatting machinery cost more than the digits.
        let mut out = String::with_capacity(32);
        for &b in &tag.as_ref()[..16] {
            out.push(DIGITS[usize::from(b >> 4)] as char);
            out.push(DIGITS[usize::from(b & 0xf)] as char);
        }
        out
    }
}

/// Random bytes for a new secret.
pub fn random_secret(rng: &SystemRandom) -> io::Result<[u8; KEY_LEN]> {
    let mut s = [0u8; KEY_LEN];
    rng.fill(&mut s)
        .map_err(|_| io::Error::other("the system random source failed"))?;
    Ok(s)
}

/// The key file: slot `n` is bytes `32n..32n+32`; all zeros is no key.
/// Only the store's writer changes it; readers read slots concurrently.
pub struct KeyFile {
    file: File,
    slots: Mutex<Slots>,
    rng: SystemRandom,
}

#[derive(Default)]
struct Slots {
    /// Slots past the end of the file are free too.
    end: u64,
    /// Free slots below `end`: zeroed (not necessarily synced: a stale key
    /// left by a crash is zeroed by [`KeyFile::reconcile`] before serving).
    free: Vec<u64>,
}

impl KeyFile {
    pub fn open(dir: &Path) -> io::Result<KeyFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(KEYS_FILE_NAME))?;
        Ok(KeyFile {
            file,
            slots: Mutex::new(Slots::default()),
            rng: SystemRandom::new(),
        })
    }

    pub fn rng(&self) -> &SystemRandom {
        &self.rng
    }

    /// Makes the file agree with the slots the store references: every other
    /// slot is zeroed (a key left by a crash between an erasure's commit and
    /// its key's destruction, or by a write that never committed) and free.
    /// Returns how many stale keys it destroyed.
    pub fn reconcile(&self, in_use: &std::collections::HashSet<u64>) -> io::Result<usize> {
        let len = self.file.metadata()?.len();
        let end = len / KEY_LEN as u64;
        if let Some(&needed) = in_use.iter().max().filter(|&&m| m >= end) {
            // A key file that is missing or from another copy of the store:
            // handing out slots the store already names would mix visitors.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{KEYS_FILE_NAME} holds {end} key slots but the store names slot {needed};                      it must be the key file written with this rung.redb"
                ),
            ));
        }
        let mut free = Vec::new();
        let mut destroyed = 0;
        let mut buf = vec![0u8; 64 * KEY_LEN];
        let mut slot = 0u64;
        while slot < end {
            let n = ((end - slot) as usize).min(64);
            let chunk = &mut buf[..n * KEY_LEN];
            self.file.read_exact_at(chunk, slot * KEY_LEN as u64)?;
            for i in 0..n as u64 {
                let s = slot + i;
                if in_use.contains(&s) {
                    continue;
                }
                let at = i as usize * KEY_LEN;
                if chunk[at..at + KEY_LEN].iter().any(|&b| b != 0) {
                    self.file
                        .write_all_at(&[0u8; KEY_LEN], s * KEY_LEN as u64)?;
                    destroyed += 1;
                }
                free.push(s);
            }
            slot += n as u64;
        }
        if destroyed > 0 {
            self.file.sync_data()?;
        }
        // Lowest first out of `pop`: the file grows only when it is full.
        free.reverse();
        *self.lock() = Slots { end, free };
        Ok(destroyed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new random key in a free slot, written but not yet synced
    /// ([`KeyFile::sync`] before committing anything sealed with it).
    pub fn create(&self) -> io::Result<VisitorKey> {
        let mut bytes = [0u8; KEY_LEN];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| io::Error::other("the system random source failed"))?;
        let slot = {
            let mut s = self.lock();
            match s.free.pop() {
                Some(slot) => slot,
                None => {
                    s.end += 1;
                    s.end - 1
                }
            }
        };
        if let Err(e) = self.file.write_all_at(&bytes, slot * KEY_LEN as u64) {
            // Back to the free list: nothing was written, or a partial key
            // nobody references (reconciled at the next open).
            self.lock().free.push(slot);
            return Err(e);
        }
        Ok(VisitorKey { slot, bytes })
    }

    /// The key in `slot`; `None` once destroyed.
    pub fn read(&self, slot: u64) -> io::Result<Option<VisitorKey>> {
        let mut bytes = [0u8; KEY_LEN];
        match self.file.read_exact_at(&mut bytes, slot * KEY_LEN as u64) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        Ok(bytes
            .iter()
            .any(|&b| b != 0)
            .then_some(VisitorKey { slot, bytes }))
    }

    /// Makes created keys durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Overwrites the keys in `slots` with zeros and syncs: once this
    /// returns, what was sealed with them cannot be read. The slots become
    /// free only then.
    pub fn destroy(&self, slots: &[u64]) -> io::Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        for &s in slots {
            self.file
                .write_all_at(&[0u8; KEY_LEN], s * KEY_LEN as u64)?;
        }
        self.file.sync_data()?;
        self.lock().free.extend_from_slice(slots);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_row_and_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyFile::open(dir.path()).unwrap();
        keys.reconcile(&Default::default()).unwrap();
        let (a, b) = (keys.create().unwrap(), keys.create().unwrap());
        let sealed = a
            .seal(keys.rng(), "row", Purpose::Event, b"item-42")
            .unwrap();

        assert_eq!(
            a.open("row", Purpose::Event, &sealed).as_deref(),
            Some(&b"item-42"[..])
        );
        assert!(b.open("row", Purpose::Event, &sealed).is_none());
        assert!(a.open("other", Purpose::Event, &sealed).is_none());
        assert!(a.open("row", Purpose::Id, &sealed).is_none());
        assert!(!sealed.windows(7).any(|w| w == b"item-42"));
    }

    #[test]
    fn a_destroyed_key_is_gone_from_the_file_and_its_slot_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyFile::open(dir.path()).unwrap();
        keys.reconcile(&Default::default()).unwrap();
        let k = keys.create().unwrap();
        keys.sync().unwrap();
        assert!(keys.read(k.slot).unwrap().is_some());

        keys.destroy(&[k.slot]).unwrap();

        assert!(keys.read(k.slot).unwrap().is_none());
        let file = std::fs::read(dir.path().join(KEYS_FILE_NAME)).unwrap();
        assert!(!file.windows(KEY_LEN).any(|w| w == k.bytes));
        assert_eq!(keys.create().unwrap().slot, k.slot);
    }

    #[test]
    fn reconciling_destroys_keys_nobody_references() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyFile::open(dir.path()).unwrap();
        keys.reconcile(&Default::default()).unwrap();
        let kept = keys.create().unwrap();
        let stale = keys.create().unwrap();
        keys.sync().unwrap();
        drop(keys);

        let keys = KeyFile::open(dir.path()).unwrap();
        let destroyed = keys.reconcile(&[kept.slot].into_iter().collect()).unwrap();

        assert_eq!(destroyed, 1);
        assert!(keys.read(kept.slot).unwrap().is_some());
        assert!(keys.read(stale.slot).unwrap().is_none());
    }

    #[test]
    fn a_key_file_shorter_than_the_store_needs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyFile::open(dir.path()).unwrap();

        let err = keys.reconcile(&[3].into_iter().collect()).unwrap_err();

        assert!(err.to_string().contains("slot 3"), "{err}");
    }

    #[test]
    fn pseudonyms_are_stable_per_secret_and_printable() {
        let a = Pseudonyms::new(b"one secret");
        let b = Pseudonyms::new(b"another secret");
        assert_eq!(a.row("visitor-1"), a.row("visitor-1"));
        assert_ne!(a.row("visitor-1"), a.row("visitor-2"));
        assert_ne!(a.row("visitor-1"), b.row("visitor-1"));
        assert_eq!(a.row("v").len(), 32);
        assert!(a.row("v").bytes().all(|c| c.is_ascii_hexdigit()));
        // Rows already on disk must still be found: the first 16 bytes of
        // HMAC-SHA256, in lowercase hex (Python's hmac module's answer).
        assert_eq!(a.row("visitor-1"), "02036d41cdb7b8ac8a02994f88caf84d");
    }
}
