//! Deploying a model without downtime: reading an artifact (a file, or the
//! one built into the binary) into a [`Deployed`] model, the [`ModelSlot`]
//! scoring takes the serving model from, and the [`ModelWatch`] that notices
//! when the file changes.
//!
//! A swap replaces one `Arc` under a lock held for that assignment only. A
//! scoring call clones the `Arc` once at its start and scores with that model
//! to the end, so a call never mixes two models and none is dropped: the old
//! model lives until the last call holding it finishes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use crate::domain::{Millis, Taxonomy};
use crate::scoring::model::{Metrics, ModelArtifact};
use crate::scoring::{Model, ModelError};

/// The bootstrap model, built into the binary as the taxonomy is, so that an
/// installed `rung` serves with its defaults from any directory.
pub const BUILT_IN_ARTIFACT: &str = include_str!("../models/default.json");

/// How a path names the built-in model: in the `model` setting, in
/// ReloadModel, in GetModel's answer and in the notes replicas exchange.
pub const BUILT_IN: &str = "built-in";

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// [`BUILT_IN_ARTIFACT`].
    BuiltIn,
    /// An artifact file (relative paths are from the working directory).
    File(PathBuf),
}

impl ModelSource {
    /// The source a path names: the literal `built-in` is the built-in
    /// model (a file of that name is `./built-in`), anything else a file.
    pub fn named(path: &Path) -> ModelSource {
        if path.as_os_str() == BUILT_IN {
            ModelSource::BuiltIn
        } else {
            ModelSource::File(path.to_path_buf())
        }
    }

    /// The file, if any.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ModelSource::BuiltIn => None,
            ModelSource::File(p) => Some(p),
        }
    }

    /// As a path: `built-in`, or the file's. [`ModelSource::named`] reads
    /// it back.
    pub fn as_path(&self) -> &Path {
        self.file().unwrap_or(Path::new(BUILT_IN))
    }
}

/// For messages: "model file X" or "the built-in model".
impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::BuiltIn => f.write_str("the built-in model"),
            ModelSource::File(p) => write!(f, "model file {}", p.display()),
        }
    }
}

/// The largest artifact read. The shipped one is about 10 KB; the bound
/// keeps a wrong path (a log file, `/dev/zero`) from exhausting memory.
pub const MAX_ARTIFACT_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("cannot read model file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("model file {path} is {len} bytes; the limit is {max}")]
    TooLarge { path: PathBuf, len: u64, max: u64 },
    /// What is wrong with the artifact, named without repeating a value
    /// read from it (`source` has the whole story, for the log).
    #[error("{model} refused: {}{}", source.summary(), built_in_hint(model, source))]
    Refused {
        model: ModelSource,
        source: ModelError,
    },
    /// A path outside the models folder; nothing was looked at.
    #[error("{path} is outside the models folder {dir} (setting model_dir); models are loaded only from there")]
    Outside { path: PathBuf, dir: PathBuf },
}

/// The built-in model fits only the built-in taxonomy: say what to do.
fn built_in_hint(model: &ModelSource, e: &ModelError) -> &'static str {
    match (model, e) {
        (ModelSource::BuiltIn, ModelError::Mismatch { .. }) => {
            " (it was trained for the built-in taxonomy; with another taxonomy, set `model` to an artifact trained for it)"
        }
        _ => "",
    }
}

/// The one folder models are read from. Paths are judged by their text
/// alone — no file is looked at, so a refused path says nothing about
/// what exists — and `..` is refused outright.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// Absolute and without `.` or `..`.
    root: PathBuf,
}

impl ModelDir {
    /// `dir`, made absolute from the working directory.
    pub fn new(dir: &Path) -> std::io::Result<ModelDir> {
        Ok(ModelDir {
            root: lexical(&std::path::absolute(dir)?),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `requested` (relative paths are from the working directory, as the
    /// `model` setting's are) if it lies under the folder.
    pub fn admit(&self, requested: &Path) -> Result<PathBuf, DeployError> {
        let outside = || DeployError::Outside {
            path: requested.to_path_buf(),
            dir: self.root.clone(),
        };
        if requested
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(outside());
        }
        let absolute = std::path::absolute(requested).map_err(|_| outside())?;
        let absolute = lexical(&absolute);
        if absolute.starts_with(&self.root) && absolute != self.root {
            Ok(absolute)
        } else {
            Err(outside())
        }
    }
}

/// `path` without `.` components, and with each `..` taking away the
/// component before it.
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// One version of a file on disk, told apart without reading it: an atomic
/// replace (write a temporary file, rename it over) gives a new inode, an
/// in-place write a new modification time, and usually a new length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: (u64, u64),
}

impl FileStamp {
    pub fn of(path: &Path) -> std::io::Result<FileStamp> {
        Ok(FileStamp::from_metadata(&std::fs::metadata(path)?))
    }

    fn from_metadata(m: &std::fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            // Some filesystems keep no modification time; length and inode
            // still tell versions apart.
            modified: m.modified().ok(),
            len: m.len(),
            #[cfg(unix)]
            inode: (m.dev(), m.ino()),
        }
    }
}

/// What an artifact says about itself besides its weights: what GetModel
/// reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCard {
    /// The artifact's `created_at`, as written.
    pub created_at: String,
    /// `created_at` read as an instant; `None` when it is not RFC 3339 UTC.
    pub trained_at: Option<Millis>,
    pub description: String,
    pub taxonomy_fingerprint: String,
    pub horizon_days: f64,
    pub metrics: Metrics,
    /// On standardized features, in the model's feature order.
    pub coefficients: Vec<f64>,
}

/// A checked model, what its artifact says about it, and where and when it
/// was loaded.
#[derive(Debug)]
pub struct Deployed {
    pub model: Model,
    pub card: ModelCard,
    pub source: ModelSource,
    pub loaded_at: Millis,
    /// The stamp of the file as opened, taken *before* its content was read:
    /// had the file changed during the read, the watcher sees another stamp
    /// and loads it again, rather than missing the change. `None` for the
    /// built-in model.
    stamp: Option<FileStamp>,
}

impl Deployed {
    pub fn version(&self) -> &str {
        self.model.version()
    }

    /// When the artifact was written: its file's modification time, as
    /// opened (or when it was loaded, where the filesystem keeps no time);
    /// for the built-in model, when it was trained, so that a replica
    /// started on it still follows a model another replica loaded earlier.
    pub fn written_at(&self) -> Millis {
        match (&self.source, self.stamp.and_then(|s| s.modified)) {
            (ModelSource::BuiltIn, _) => {
                self.card.trained_at.unwrap_or(Millis::from_unix_millis(0))
            }
            (ModelSource::File(_), Some(modified)) => Millis::from_system_time(modified),
            (ModelSource::File(_), None) => self.loaded_at,
        }
    }
}

/// Reads and checks a model against the running taxonomy.
pub fn load(source: &ModelSource, taxonomy: &Taxonomy) -> Result<Deployed, DeployError> {
    match source {
        ModelSource::BuiltIn => deploy(
            BUILT_IN_ARTIFACT.as_bytes(),
            ModelSource::BuiltIn,
            None,
            taxonomy,
        ),
        ModelSource::File(path) => {
            let (bytes, stamp) = read_file(path)?;
            deploy(&bytes, source.clone(), Some(stamp), taxonomy)
        }
    }
}

/// The artifact file at `path`, bounded, and its stamp as opened.
fn read_file(path: &Path) -> Result<(Vec<u8>, FileStamp), DeployError> {
    let read_error = |source| DeployError::Read {
        path: path.to_path_buf(),
        source,
    };
    let not_a_file = || DeployError::NotAFile {
        path: path.to_path_buf(),
    };
    // Looked at before opening: opening a FIFO would wait for a writer.
    if !std::fs::metadata(path).map_err(read_error)?.is_file() {
        return Err(not_a_file());
    }
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    // The stamp of the very file read, taken before reading it.
    let metadata = file.metadata().map_err(read_error)?;
    if !metadata.is_file() {
        return Err(not_a_file());
    }
    let stamp = FileStamp::from_metadata(&metadata);
    let mut bytes = Vec::with_capacity(metadata.len().min(MAX_ARTIFACT_BYTES) as usize);
    // Bounded again while reading: the file may grow after the stat.
    file.by_ref()
        .take(MAX_ARTIFACT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_ARTIFACT_BYTES {
        return Err(DeployError::TooLarge {
            path: path.to_path_buf(),
            len: metadata.len().max(bytes.len() as u64),
            max: MAX_ARTIFACT_BYTES,
        });
    }
    Ok((bytes, stamp))
}

/// An artifact's bytes, checked and made ready to serve.
fn deploy(
    bytes: &[u8],
    source: ModelSource,
    stamp: Option<FileStamp>,
    taxonomy: &Taxonomy,
) -> Result<Deployed, DeployError> {
    let refused = |e| DeployError::Refused {
        model: source.clone(),
        source: e,
    };
    // From bytes, not text: junk that is not UTF-8 is a parse error with a
    // position, like any other junk.
    let artifact: ModelArtifact =
        serde_json::from_slice(bytes).map_err(|e| refused(ModelError::Parse(e)))?;
    let model = Model::from_artifact(&artifact, taxonomy).map_err(refused)?;
    let trained_at = Millis::parse_rfc3339(&artifact.created_at);
    if trained_at.is_none() {
        tracing::warn!(
            model = %source,
            created_at = %artifact.created_at,
            "model artifact's created_at is not RFC 3339 UTC; GetModel leaves trained_at out"
        );
    }
    let card = ModelCard {
        trained_at,
        created_at: artifact.created_at,
        description: artifact.description,
        taxonomy_fingerprint: artifact.taxonomy_fingerprint,
        horizon_days: artifact.horizon_days,
        metrics: artifact.metrics,
        coefficients: artifact.coefficients,
    };
    Ok(Deployed {
        model,
        card,
        source,
        loaded_at: Millis::now(),
        stamp,
    })
}

/// A model replaced by another.
#[derive(Debug, Clone)]
pub struct Swap {
    pub previous: Arc<Deployed>,
    pub current: Arc<Deployed>,
}

impl Swap {
    /// Whether the version differs. Reloading the same version still swaps:
    /// the file is the truth, even if someone edited it by hand.
    pub fn changed(&self) -> bool {
        self.previous.version() != self.current.version()
    }
}

/// An artifact that was refused while the serving model stayed: what
/// GetModel reports, so an operator can see why a new file is not live.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub model: ModelSource,
    pub at: Millis,
    /// The whole error, naming the problem.
    pub reason: String,
}

/// The serving model and the latest refusal since it was loaded.
#[derive(Debug, Clone)]
pub struct ModelState {
    pub serving: Arc<Deployed>,
    /// Cleared by the next successful swap.
    pub last_refusal: Option<Arc<Refusal>>,
}

/// Where scoring takes the serving model from.
pub struct ModelSlot {
    taxonomy: Arc<Taxonomy>,
    // A read clones an Arc (two atomic operations); the write lock is held
    // for one assignment. `arc-swap` would make reads lock-free, but this
    // costs tens of nanoseconds against a microsecond score.
    state: RwLock<ModelState>,
    /// Held for a whole reload (read, check, swap) so that two reloads, say
    /// the watcher's and an RPC's, cannot interleave and misreport which
    /// model each replaced. Scoring never takes it.
    reloading: Mutex<()>,
    /// Where a reload may read from.
    dir: ModelDir,
}

impl ModelSlot {
    pub fn new(taxonomy: Arc<Taxonomy>, first: Deployed, dir: ModelDir) -> ModelSlot {
        ModelSlot {
            taxonomy,
            dir,
            state: RwLock::new(ModelState {
                serving: Arc::new(first),
                last_refusal: None,
            }),
            reloading: Mutex::new(()),
        }
    }

    /// The serving model. Take it once per call and score with it throughout.
    pub fn current(&self) -> Arc<Deployed> {
        self.read().serving.clone()
    }

    /// The serving model and the latest refusal, read together.
    pub fn state(&self) -> ModelState {
        self.read().clone()
    }

    // A poisoned lock still holds a whole state: every write is one
    // assignment, so no panic can leave it half done.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, ModelState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ModelState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loads the model `path` names (default: the serving model's own
    /// source; `built-in` names the built-in model) and swaps it in. On
    /// error the serving model stays, and the refusal is remembered. A path
    /// outside the models folder is refused before anything is read, and
    /// not remembered (it says nothing about a model file).
    pub fn reload(&self, path: Option<&Path>) -> Result<Swap, DeployError> {
        let admitted = match path.map(ModelSource::named) {
            Some(ModelSource::File(p)) => Some(ModelSource::File(self.dir.admit(&p)?)),
            other => other,
        };
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let source = admitted.unwrap_or_else(|| self.current().source.clone());
        match load(&source, &self.taxonomy) {
            Ok(next) => {
                let next = Arc::new(next);
                let previous = std::mem::replace(
                    &mut *self.write(),
                    ModelState {
                        serving: next.clone(),
                        last_refusal: None,
                    },
                )
                .serving;
                Ok(Swap {
                    previous,
                    current: next,
                })
            }
            Err(e) => {
                self.write().last_refusal = Some(Arc::new(Refusal {
                    model: source,
                    at: Millis::now(),
                    reason: e.to_string(),
                }));
                Err(e)
            }
        }
    }
}

/// What one look at the model file found.
#[derive(Debug)]
pub enum Polled {
    /// The file is as it was last seen.
    Unchanged,
    /// The file changed and its model now serves.
    Swapped(Swap),
    /// The file changed but was refused (or cannot be read); the serving
    /// model stays. Reported once per change, not at every poll.
    Refused(DeployError),
}

/// The watcher's memory of the serving model's file.
#[derive(Debug)]
pub struct ModelWatch {
    /// The file's stamp at the last poll; `None` when it could not be read.
    last_seen: Option<FileStamp>,
}

impl ModelWatch {
    /// Starts from the file the serving model was loaded from, if any.
    pub fn new(slot: &ModelSlot) -> ModelWatch {
        ModelWatch {
            last_seen: slot.current().stamp,
        }
    }

    /// Looks at the serving model's file (which follows a ReloadModel to
    /// another path) and reloads it if it changed since the last look. The
    /// built-in model has no file: nothing to look at until a ReloadModel
    /// names one.
    pub fn poll(&mut self, slot: &ModelSlot) -> Polled {
        let serving = slot.current();
        let Some(path) = serving.source.file() else {
            self.last_seen = None;
            return Polled::Unchanged;
        };
        let seen = FileStamp::of(path).ok();
        // Also unchanged when the serving model came from exactly this
        // version of the file: a ReloadModel already loaded it.
        if seen == self.last_seen || seen == serving.stamp {
            self.last_seen = seen;
            return Polled::Unchanged;
        }
        self.last_seen = seen;
        match slot.reload(Some(path)) {
            Ok(swap) => Polled::Swapped(swap),
            Err(e) => Polled::Refused(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped_json() -> serde_json::Value {
        serde_json::from_str(BUILT_IN_ARTIFACT).unwrap()
    }

    fn write(path: &Path, value: &serde_json::Value) {
        std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    }

    #[test]
    fn the_card_carries_what_the_artifact_says_about_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        let mut json = shipped_json();
        json["created_at"] = "2026-11-23T20:50:57.658Z".into();
        json["description"] = "a test artifact".into();
        write(&path, &json);

        let d = load(&ModelSource::File(path.clone()), &Taxonomy::builtin()).unwrap();

        assert_eq!(d.version(), json["version"].as_str().unwrap());
        assert_eq!(d.card.description, "a test artifact");
        // 2026-11-23 is 20,780 days after 1970-01-01 (Python's datetime).
        let expected = (20_780 * 86_400 + 20 * 3600 + 50 * 60 + 57) * 1000 + 658;
        assert_eq!(d.card.trained_at, Some(Millis::from_unix_millis(expected)));
        assert_eq!(
            d.card.metrics.validation.pr_auc,
            json["metrics"]["validation"]["pr_auc"].as_f64()
        );
        assert_eq!(d.source, ModelSource::File(path));
    }

    #[test]
    fn a_refused_reload_leaves_the_serving_model_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        write(&path, &shipped_json());
        let taxonomy = Arc::new(Taxonomy::builtin());
        let slot = ModelSlot::new(
            taxonomy.clone(),
            load(&ModelSource::File(path.clone()), &taxonomy).unwrap(),
            ModelDir::new(dir.path()).unwrap(),
        );
        let before = slot.current();
        std::fs::write(&path, b"\xff\xfe junk").unwrap();

        let e = slot.reload(None).unwrap_err();

        assert!(matches!(e, DeployError::Refused { .. }), "{e}");
        let state = slot.state();
        assert!(Arc::ptr_eq(&before, &state.serving));
        let refusal = state.last_refusal.expect("the refusal is remembered");
        assert_eq!(refusal.model, ModelSource::File(path.clone()));
        assert!(
            refusal.reason.contains("not a valid artifact"),
            "{}",
            refusal.reason
        );

        write(&path, &shipped_json());
        slot.reload(None).unwrap();
        assert!(slot.state().last_refusal.is_none());
    }

    #[test]
    fn the_watch_reports_a_refused_file_once_then_picks_up_a_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        let mut json = shipped_json();
        write(&path, &json);
        let taxonomy = Arc::new(Taxonomy::builtin());
        let slot = ModelSlot::new(
            taxonomy.clone(),
            load(&ModelSource::File(path.clone()), &taxonomy).unwrap(),
            ModelDir::new(dir.path()).unwrap(),
        );
        let mut watch = ModelWatch::new(&slot);
        assert!(matches!(watch.poll(&slot), Polled::Unchanged));

        std::fs::write(&path, b"{\"format\":").unwrap();
        assert!(matches!(watch.poll(&slot), Polled::Refused(_)));
        assert!(matches!(watch.poll(&slot), Polled::Unchanged));

        json["version"] = "next".into();
        write(&path, &json);
        let Polled::Swapped(swap) = watch.poll(&slot) else {
            panic!("expected a swap");
        };
        assert!(swap.changed());
        assert_eq!(slot.current().version(), "next");
        assert!(matches!(watch.poll(&slot), Polled::Unchanged));
    }

    #[test]
    fn a_file_that_is_not_regular_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(
            &ModelSource::File(dir.path().to_path_buf()),
            &Taxonomy::builtin(),
        )
        .unwrap_err();
        assert!(matches!(e, DeployError::NotAFile { .. }), "{e}");
    }

    #[test]
    fn the_built_in_model_is_the_shipped_artifact_and_has_no_file() {
        let d = load(&ModelSource::BuiltIn, &Taxonomy::builtin()).unwrap();
        assert_eq!(d.version(), shipped_json()["version"].as_str().unwrap());
        assert_eq!(d.source.as_path(), Path::new("built-in"));
        assert_eq!(d.source.file(), None);
        // Written when it was trained, not when this process loaded it.
        assert_eq!(Some(d.written_at()), d.card.trained_at);
    }

    #[test]
    fn built_in_names_the_built_in_model_and_any_other_path_a_file() {
        assert_eq!(
            ModelSource::named(Path::new("built-in")),
            ModelSource::BuiltIn
        );
        for file in ["./built-in", "models/built-in", "built-in.json"] {
            assert_eq!(
                ModelSource::named(Path::new(file)),
                ModelSource::File(PathBuf::from(file))
            );
        }
        let file = ModelSource::File(PathBuf::from("m/x.json"));
        assert_eq!(ModelSource::named(file.as_path()), file);
        assert_eq!(
            ModelSource::named(ModelSource::BuiltIn.as_path()),
            ModelSource::BuiltIn
        );
    }

    #[test]
    fn the_built_in_model_refused_by_another_taxonomy_says_what_to_set() {
        let other = Taxonomy::from_toml(
            &crate::domain::taxonomy::DEFAULT_TAXONOMY_TOML.replace("wishlist", "wish_list"),
        )
        .unwrap();
        let e = load(&ModelSource::BuiltIn, &other).unwrap_err().to_string();
        assert!(e.starts_with("the built-in model refused"), "{e}");
        assert!(
            e.contains("set `model` to an artifact trained for it"),
            "{e}"
        );
    }

    #[test]
    fn a_slot_moves_between_the_built_in_model_and_files_and_the_watch_follows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        let mut json = shipped_json();
        json["version"] = "from-a-file".into();
        write(&path, &json);
        let taxonomy = Arc::new(Taxonomy::builtin());
        let slot = ModelSlot::new(
            taxonomy.clone(),
            load(&ModelSource::BuiltIn, &taxonomy).unwrap(),
            ModelDir::new(dir.path()).unwrap(),
        );
        let built_in = slot.current().version().to_string();
        let mut watch = ModelWatch::new(&slot);
        // Nothing to watch, and a reload without a path reloads the same.
        assert!(matches!(watch.poll(&slot), Polled::Unchanged));
        let again = slot.reload(None).unwrap();
        assert!(!again.changed());
        assert_eq!(again.current.source, ModelSource::BuiltIn);

        let to_file = slot.reload(Some(&path)).unwrap();
        assert_eq!(to_file.current.version(), "from-a-file");
        assert!(matches!(watch.poll(&slot), Polled::Unchanged));
        json["version"] = "edited".into();
        write(&path, &json);
        assert!(matches!(watch.poll(&slot), Polled::Swapped(_)));
        assert_eq!(slot.current().version(), "edited");

        let back = slot.reload(Some(Path::new("built-in"))).unwrap();
        assert_eq!(back.current.source, ModelSource::BuiltIn);
        assert_eq!(back.current.version(), built_in);
        json["version"] = "edited-again".into();
        write(&path, &json);
        assert!(matches!(watch.poll(&slot), Polled::Unchanged));
        assert_eq!(slot.current().version(), built_in);
    }
}
