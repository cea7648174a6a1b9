//! Artifact files: their version ids, and writing them so a reader never
//! sees half of one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// `<UTC time>-<12 hex of the content's SHA-256>`: sortable by creation,
/// and different whenever the content differs. `created_at` is RFC 3339
/// (its first 14 digits make the time); `content` is what the model
/// computes with, not its description.
pub fn version_id(created_at: &str, content: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(content.to_string().as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let stamp: String = created_at
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(14)
        .collect();
    format!("{stamp}-{hex}")
}

/// Writes `text` and a final newline to `path` through
/// [`write_atomically_with`].
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    write_atomically_with(path, |w| {
        w.write_all(text.as_bytes())?;
        w.write_all(b"\n")
    })
}

/// Creates `path`'s folder if needed, lets `write` stream the content into a
/// temporary file beside `path`, syncs it and renames it over `path`: a
/// reader sees the old file or the new one, never part of one. The folder
/// is synced too where the platform allows, so the rename is durable; on a
/// failure the temporary file is removed.
pub fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // The process id keeps two writers of the same file from sharing one.
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut w = BufWriter::new(File::create(&tmp)?);
        write(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_the_time_and_a_hash_of_the_content() {
        let a = version_id("2026-12-02T07:05:09.123Z", &serde_json::json!({"w": [1.0]}));
        let b = version_id("2026-12-02T07:05:09.123Z", &serde_json::json!({"w": [2.0]}));
        assert!(a.starts_with("20261202070509-"), "{a}");
        assert_eq!(a.len(), 14 + 1 + 12);
        assert_ne!(a, b);
    }

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/m.json");
        write_atomically(&path, "one").unwrap();
        write_atomically(&path, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("m.json")]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        write_atomically(&path, "old").unwrap();
        let e = write_atomically_with(&path, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk gone"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk gone");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
