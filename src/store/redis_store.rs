//! The shared store: visitors in Redis — one server, or a Redis Cluster —
//! so any number of stateless `rung serve` replicas give the answers one
//! process gives. Redis does the sharing; rung keeps no state of its own.
//!
//! Keys (P is `store.key_prefix`, `{…}` a Redis hash tag):
//! - `P{id}:r`: the visitor's record, a string: a random 16-character
//!   version token that changes with every write, then the record encoded
//!   as every backend encodes it ([`crate::store::record::encode`]). A string, not a
//!   hash, so a scan reads a slot's records with one MGET;
//! - `P{id}:e`: a hash of the raw-event ring, ring slot → encoded event;
//! - `P{t}:seen`: for each of the 16,384 hash slots, a sorted set of the
//!   visitors in that slot scored by last-seen time, `t` being a tag that
//!   hashes to that very slot. It lets scans skip inactive visitors without
//!   reading them, and, sharing the slot, it is updated in the same atomic
//!   script as the record;
//! - `Psegments` (saved segments by name), `Pmeta` (format and taxonomy),
//!   `Ppurge-lease`, the pub/sub channel `Pmodel` and `Pmodel-latest`, the
//!   last model announced on it.
//!
//! `id` is the visitor id with `%`, `{` and `}` percent-encoded, so the tag
//! is always the whole id and all of one visitor's keys share its slot.
//!
//! Writes: a visitor's new record is computed here by the same pure code as
//! in redb ([`VisitorRecord::track`]) and written back by a script only if
//! `ver` is still what was read (optimistic concurrency); on a conflict the
//! script returns the current record and the write is computed again. Writes
//! go through lanes, one task each, chosen by visitor: a lane takes all the
//! writes queued while its last batch ran, folds each visitor's writes into
//! one read and one conditional write (group commit per visitor), and runs
//! the visitors of a batch concurrently. So writes to one visitor through
//! one replica apply in the order they were made, and two replicas writing
//! the same visitor never lose an update.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Script, Value};
use tokio::sync::mpsc;

use crate::domain::{Millis, NewEvent, Taxonomy, VisitorId};

use super::record::{
    decode_event, decode_layout, decode_segment, decode_standing, encode as encode_record,
    encode_event, encode_segment, last_seen, upgrade_v2, Layout,
};
use super::{
    ModelNote, Purged, Reply, SavedSegment, ScanChunk, ScanRange, SegmentWrite, Snapshot, Standing,
    Store, StoreError, StoreLimits, Ticket, Tracked, VisitorRecord,
};

/// What `Pmeta` says the keys hold.
const FORMAT: &str = "rung.redis.v1";
/// Redis Cluster's hash slots.
const SLOTS: u16 = 16_384;
/// Index sets asked for at once by scans and purges, at most.
const SLOT_BATCH: u16 = 1024;
/// ... and at least, by scans.
const MIN_SLOT_BATCH: u16 = 16;
/// Write lanes per replica.
const LANES: usize = 32;
/// Conditional writes tried before a write gives up as unavailable.
const MAX_ATTEMPTS: u32 = 64;
/// How long one replica holds the purge lease.
const PURGE_LEASE_MS: u64 = 10 * 60 * 1000;

/// How to reach Redis and how to name keys there.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db` or `rediss://…`; several,
    /// comma-separated, mean a Redis Cluster.
    pub url: String,
    /// Put before every key, so deployments can share one Redis.
    pub key_prefix: String,
    /// Longest wait for a connection or an answer before a call fails.
    pub timeout: Duration,
}

/// The URL with any password hidden: safe for logs and error messages.
pub fn redacted(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let one = one.trim();
            let Some(scheme_end) = one.find("://") else {
                return one.to_string();
            };
            let rest = &one[scheme_end + 3..];
            match rest.find('@') {
                Some(at) => {
                    let user = rest[..at].split(':').next().unwrap_or("");
                    let hidden = if rest[..at].contains(':') {
                        format!("{user}:***")
                    } else {
                        "***".to_string()
                    };
                    format!("{}{hidden}{}", &one[..scheme_end + 3], &rest[at..])
                }
                None => one.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The hash tag of a visitor's keys: the id with `%`, `{`, `}` encoded.
fn tag(visitor: &str) -> std::borrow::Cow<'_, str> {
    if !visitor.contains(['%', '{', '}']) {
        return visitor.into();
    }
    let mut out = String::with_capacity(visitor.len() + 8);
    for c in visitor.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out.into()
}

/// Redis Cluster's hash slot of a key whose tag is `tag`.
fn slot_of_tag(tag: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) % SLOTS
}

/// For each hash slot, a short tag that hashes to it (the first decimal
/// number that does): every replica computes the same table.
fn slot_tags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags: Vec<Option<String>> = vec![None; SLOTS as usize];
        let mut missing = SLOTS as usize;
        let mut n = 0u64;
        while missing > 0 {
            let t = n.to_string();
            let s = slot_of_tag(&t) as usize;
            if tags[s].is_none() {
                tags[s] = Some(t);
                missing -= 1;
            }
            n += 1;
        }
        tags.into_iter().map(|t| t.unwrap_or_default()).collect()
    })
}

/// The keys that hold one visitor, `[record, raw-event ring, index set]`:
/// for tools that measure or inspect a store (the benches).
pub fn visitor_keys(prefix: &str, visitor: &str) -> [String; 3] {
    let keys = Keys {
        prefix: prefix.to_string(),
    };
    [
        keys.record(visitor),
        keys.ring(visitor),
        keys.seen_of(visitor),
    ]
}

/// The suffix of every per-slot index set's key.
pub const INDEX_SUFFIX: &str = ":seen";

/// Key names under one prefix.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn record(&self, visitor: &str) -> String {
        format!("{}{{{}}}:r", self.prefix, tag(visitor))
    }

    fn ring(&self, visitor: &str) -> String {
        format!("{}{{{}}}:e", self.prefix, tag(visitor))
    }

    /// The index set of a hash slot.
    fn seen(&self, slot: u16) -> String {
        format!(
            "{}{{{}}}{INDEX_SUFFIX}",
            self.prefix,
            slot_tags()[slot as usize]
        )
    }

    /// The index set holding this visitor.
    fn seen_of(&self, visitor: &str) -> String {
        self.seen(slot_of(visitor))
    }

    fn segments(&self) -> String {
        format!("{}segments", self.prefix)
    }

    fn meta(&self) -> String {
        format!("{}meta", self.prefix)
    }

    fn purge_lease(&self) -> String {
        format!("{}purge-lease", self.prefix)
    }

    fn model_channel(&self) -> String {
        format!("{}model", self.prefix)
    }

    /// The latest model note, kept for replicas that were not listening.
    fn model_note(&self) -> String {
        format!("{}model-latest", self.prefix)
    }
}

/// The hash slot of a visitor's keys: the order scans walk in.
fn slot_of(visitor: &str) -> u16 {
    slot_of_tag(&tag(visitor))
}

/// A visitor's place in the scan order: its slot, zero-padded so keys sort
/// by slot, then its id. A bare slot ("04096") sorts before its visitors.
fn scan_key(slot: u16, visitor: &str) -> String {
    format!("{slot:05}:{visitor}")
}

/// The slot a scan key (or a bare slot) is in; 0 for one that is not ours.
fn key_slot(key: &str) -> u16 {
    key.get(..5)
        .and_then(|s| s.parse::<u16>().ok())
        .map_or(0, |s| s.min(SLOTS - 1))
}

/// One connection to one server, or to a cluster; both multiplex many
/// concurrent calls over few sockets and reconnect by themselves.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Characters of the version token at the head of a stored record.
const VERSION_LEN: usize = 16;

/// A stored value split at its version, or the reason it cannot be.
fn split<'a>(visitor: &str, stored: &'a [u8]) -> Result<Stored<'a>, StoreError> {
    split_stored(stored).ok_or_else(|| StoreError::Corrupt {
        visitor: visitor.to_string(),
        reason: "stored record shorter than its version".into(),
    })
}

/// Writes the record (and the ring) only if its version is still what the
/// writer read. KEYS: record, ring, index. ARGV: expected version ('' for
/// none), '1' to erase first (a Forget), the new stored record (version
/// then record; '' for none), its last-seen score, the visitor id, then
/// ring slot/event pairs. Returns {1} on success, {0, stored} on a conflict.
const WRITE: &str = r"
local ver = redis.call('GETRANGE', KEYS[1], 0, 15)
if ver ~= ARGV[1] then
  return {0, redis.call('GET', KEYS[1]) or ''}
end
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('ZREM', KEYS[3], ARGV[5])
end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
  for i = 6, #ARGV, 2 do
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
return {1}
";

/// The stored record and the ring, read together. KEYS: record, ring.
const SNAPSHOT: &str = r"
return {redis.call('GET', KEYS[1]) or '', redis.call('HGETALL', KEYS[2])}
";

/// A stored value split: the version token and the record bytes.
#[derive(Clone, Copy)]
struct Stored<'a> {
    version: &'a [u8],
    bytes: &'a [u8],
}

impl Stored<'_> {
    /// Tokens written with record layout v3 begin with `v`, never a hex
    /// digit as before: a record last written by an older rung is read in
    /// layout v2 until its next write rewrites it.
    fn layout(&self) -> Layout {
        if self.version.first() == Some(&b'v') {
            Layout::V3
        } else {
            Layout::V2
        }
    }
}

/// A stored value's version token and record; `None` for a value too short
/// to hold a version.
fn split_stored(stored: &[u8]) -> Option<Stored<'_>> {
    (stored.len() >= VERSION_LEN).then(|| {
        let (version, bytes) = stored.split_at(VERSION_LEN);
        Stored { version, bytes }
    })
}

/// A fresh version token, marking the record after it as layout v3.
fn new_version() -> String {
    format!("v{:015x}", rand::random::<u64>() >> 4)
}

/// Erases a visitor if it is still inactive. KEYS: record, ring, index.
/// ARGV: visitor id, cutoff. Returns 1 when erased.
const PURGE: &str = r"
local seen = redis.call('ZSCORE', KEYS[3], ARGV[1])
if seen and tonumber(seen) < tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 1
end
return 0
";

struct Scripts {
    write: Script,
    snapshot: Script,
    purge: Script,
}

/// What the lanes and the reads share.
struct Inner {
    conn: Conn,
    keys: Keys,
    taxonomy: Arc<Taxonomy>,
    limits: StoreLimits,
    scripts: Scripts,
    /// This replica's random id: its purge lease, its model notes.
    replica: String,
    /// The URL with the password hidden.
    url: String,
    /// Conditional writes that found another replica had written first.
    conflicts: AtomicU64,
}

pub struct RedisStore {
    inner: Arc<Inner>,
    lanes: Vec<mpsc::UnboundedSender<Job>>,
    /// Model notes from other replicas, until someone takes them.
    notes: Mutex<Option<mpsc::Receiver<ModelNote>>>,
    subscriber: tokio::task::JoinHandle<()>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

/// A write queued on a lane.
struct Job {
    visitor: VisitorId,
    kind: JobKind,
}

/// A write and, once planned, what it did.
enum JobKind {
    Track {
        events: Vec<NewEvent>,
        want_record: bool,
        reply: Reply<Tracked>,
        done: Option<Result<Tracked, StoreError>>,
    },
    Forget {
        reply: Reply<bool>,
        existed: bool,
    },
}

impl JobKind {
    fn fail(self, e: StoreError) {
        // A caller that went away no longer wants the answer.
        let _ = match self {
            JobKind::Track { reply, .. } => reply.send(Err(e)).is_ok(),
            JobKind::Forget { reply, .. } => reply.send(Err(e)).is_ok(),
        };
    }

    /// Answers with what the last plan found (the plan was written).
    fn finish(self) {
        let _ = match self {
            JobKind::Track { reply, done, .. } => reply
                .send(done.unwrap_or_else(|| {
                    Err(StoreError::Unavailable("the write was not planned".into()))
                }))
                .is_ok(),
            JobKind::Forget { reply, existed } => reply.send(Ok(existed)).is_ok(),
        };
    }
}

/// A Redis failure as the engine sees it. Every one is "unavailable": the
/// call may be retried once Redis answers again.
fn unavailable(url: &str, e: &RedisError) -> StoreError {
    StoreError::Unavailable(format!("Redis at {url}: {}", describe(e)))
}

/// A short account of a Redis error that says what to check.
fn describe(e: &RedisError) -> String {
    let auth = matches!(e.code(), Some("NOAUTH" | "WRONGPASS"));
    match e.kind() {
        _ if auth || e.kind() == ErrorKind::AuthenticationFailed => {
            format!("the credentials were refused ({e}); check the user and password in store.url")
        }
        ErrorKind::Parse => format!(
            "the server did not answer as Redis does ({e}); is the host and port that of a Redis server?"
        ),
        _ if e.is_timeout() => format!(
            "no answer in time ({e}); is the host and port that of a Redis server, and is it up?"
        ),
        _ => e.to_string(),
    }
}

impl RedisStore {
    /// Connects, checks that the keys under the prefix hold visitors of this
    /// taxonomy (or none yet), and starts the write lanes and the model
    /// subscriber. Must be called inside a tokio runtime.
    pub async fn open(
        settings: &RedisSettings,
        taxonomy: Arc<Taxonomy>,
        limits: StoreLimits,
    ) -> Result<RedisStore, StoreError> {
        let url = redacted(&settings.url);
        if settings.key_prefix.contains(['{', '}']) {
            return Err(StoreError::Unavailable(format!(
                "store.key_prefix {:?} must not contain '{{' or '}}' (they would put every key in one hash slot)",
                settings.key_prefix
            )));
        }
        let urls: Vec<&str> = settings
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let refused = |e: RedisError| {
            StoreError::Unavailable(format!("cannot use Redis at {url}: {}", describe(&e)))
        };
        // Pub/sub messages reach every node of a cluster: any node will do.
        let pubsub_clients = urls
            .iter()
            .map(|u| redis::Client::open(*u))
            .collect::<Result<Vec<_>, _>>()
            .map_err(refused)?;
        let conn = if urls.len() == 1 {
            let client = redis::Client::open(urls[0]).map_err(refused)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(settings.timeout))
                .set_response_timeout(Some(settings.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1));
            let manager = tokio::time::timeout(
                settings.timeout * 3,
                ConnectionManager::new_with_config(client.clone(), config),
            )
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "cannot use Redis at {url}: no answer within {:?}",
                    settings.timeout * 3
                ))
            })?
            .map_err(refused)?;
            Conn::Single(manager)
        } else {
            let cluster = redis::cluster::ClusterClient::builder(urls.clone())
                .connection_timeout(settings.timeout)
                .response_timeout(settings.timeout)
                .retries(2)
                .build()
                .map_err(refused)?;
            let conn = tokio::time::timeout(settings.timeout * 3, cluster.get_async_connection())
                .await
                .map_err(|_| {
                    StoreError::Unavailable(format!(
                        "cannot use Redis Cluster at {url}: no answer within {:?}",
                        settings.timeout * 3
                    ))
                })?
                .map_err(refused)?;
            Conn::Cluster(conn)
        };
        let inner = Arc::new(Inner {
            conn,
            keys: Keys {
                prefix: settings.key_prefix.clone(),
            },
            taxonomy,
            limits,
            scripts: Scripts {
                write: Script::new(WRITE),
                snapshot: Script::new(SNAPSHOT),
                purge: Script::new(PURGE),
            },
            replica: format!("{:016x}", rand::random::<u64>()),
            url: url.clone(),
            conflicts: AtomicU64::new(0),
        });
        inner.check_meta().await?;
        // Forces the slot table now, not on the first call.
        let _ = slot_tags();
        let lanes = (0..LANES)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(lane(inner.clone(), rx));
                tx
            })
            .collect();
        let (notes_tx, notes_rx) = mpsc::channel(16);
        let subscriber = tokio::spawn(subscribe(inner.clone(), pubsub_clients, notes_tx));
        Ok(RedisStore {
            inner,
            lanes,
            notes: Mutex::new(Some(notes_rx)),
            subscriber,
        })
    }

    /// Writes that had to be computed again because another replica wrote
    /// the same visitor first (since this store was opened).
    pub fn conflicts(&self) -> u64 {
        self.inner.conflicts.load(Ordering::Relaxed)
    }

    fn lane(&self, visitor: &VisitorId) -> &mpsc::UnboundedSender<Job> {
        let h = crate::domain::event::stable_hash(visitor.as_str());
        &self.lanes[(h % self.lanes.len() as u64) as usize]
    }

    fn enqueue(&self, job: Job) {
        if let Err(mpsc::error::SendError(job)) = self.lane(&job.visitor).send(job) {
            job.kind.fail(StoreError::Unavailable(
                "the store's writers stopped".into(),
            ));
        }
    }
}

impl Inner {
    fn unavailable(&self, e: &RedisError) -> StoreError {
        unavailable(&self.url, e)
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Claims the keys for this taxonomy, or refuses keys of another one.
    async fn check_meta(&self) -> Result<(), StoreError> {
        let mut c = self.conn();
        let meta = self.keys.meta();
        let fingerprint = self.taxonomy.fingerprint();
        let (format, stored): (Option<String>, Option<String>) = redis::pipe()
            .cmd("HSETNX")
            .arg(&meta)
            .arg("format")
            .arg(FORMAT)
            .ignore()
            .cmd("HSETNX")
            .arg(&meta)
            .arg("taxonomy")
            .arg(fingerprint)
            .ignore()
            .cmd("HGET")
            .arg(&meta)
            .arg("format")
            .cmd("HGET")
            .arg(&meta)
            .arg("taxonomy")
            .query_async(&mut c)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot use Redis at {}: {}",
                    self.url,
                    describe(&e)
                ))
            })?;
        if format.as_deref() != Some(FORMAT) {
            return Err(StoreError::Incompatible(format!(
                "Redis at {} holds keys under prefix {:?} in format {:?}; this build reads {FORMAT:?}",
                self.url, self.keys.prefix, format
            )));
        }
        let stored = stored.unwrap_or_default();
        if stored != fingerprint {
            return Err(StoreError::Incompatible(format!(
                "Redis at {} (key prefix {:?}) holds visitors aggregated under taxonomy {stored}, but the running taxonomy is {fingerprint}; \
                 use another store.key_prefix (or the taxonomy they were written with)",
                self.url, self.keys.prefix
            )));
        }
        Ok(())
    }

    fn decode(&self, visitor: &str, stored: Stored) -> Result<VisitorRecord, StoreError> {
        decode_layout(visitor, stored.bytes, &self.taxonomy, stored.layout())
    }

    /// The latest model announced, if any (read errors are logged: the
    /// replica then just keeps its model).
    async fn latest_model_note(&self) -> Option<ModelNote> {
        let kept: Result<Option<String>, RedisError> = redis::cmd("GET")
            .arg(self.keys.model_note())
            .query_async(&mut self.conn())
            .await;
        match kept {
            Ok(Some(json)) => serde_json::from_str(&json)
                .inspect_err(|e| tracing::warn!(error = %e, "unreadable model note ignored"))
                .ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %describe(&e), "cannot read the latest model note");
                None
            }
        }
    }

    /// A visitor's stored value (version, then record), if any.
    async fn get_stored(&self, visitor: &str) -> Result<Option<Vec<u8>>, StoreError> {
        redis::cmd("GET")
            .arg(self.keys.record(visitor))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.unavailable(&e))
    }

    async fn load(&self, visitor: &str) -> Result<Option<VisitorRecord>, StoreError> {
        let stored = self.get_stored(visitor).await?;
        stored.map(|s| self.decode_stored(visitor, &s)).transpose()
    }

    /// A stored record (version, then record) decoded.
    fn decode_stored(&self, visitor: &str, stored: &[u8]) -> Result<VisitorRecord, StoreError> {
        self.decode(visitor, split(visitor, stored)?)
    }

    async fn load_standing(&self, visitor: &str) -> Result<Option<Standing>, StoreError> {
        let Some(stored) = self.get_stored(visitor).await? else {
            return Ok(None);
        };
        let stored = split(visitor, &stored)?;
        match stored.layout() {
            Layout::V3 => decode_standing(visitor, stored.bytes, &self.taxonomy).map(Some),
            Layout::V2 => self
                .decode(visitor, stored)
                .map(|r| Some(Standing::from(r))),
        }
    }

    /// Applies one visitor's queued writes, in order, with one read and one
    /// conditional write (more only on conflicts with other replicas).
    async fn apply(&self, visitor: VisitorId, mut jobs: Vec<JobKind>) {
        let v = visitor.as_str();
        let keys = [self.keys.record(v), self.keys.ring(v), self.keys.seen_of(v)];
        let mut c = self.conn();
        // The state as read: the stored record (version, then record), empty
        // for none.
        let read: Result<Option<Vec<u8>>, RedisError> =
            redis::cmd("GET").arg(&keys[0]).query_async(&mut c).await;
        let mut stored = match read {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                let e = self.unavailable(&e);
                for j in jobs {
                    j.fail(e.clone());
                }
                return;
            }
        };
        for attempt in 1..=MAX_ATTEMPTS {
            let read = split_stored(&stored);
            let version = read.map_or(&[][..], |s| s.version);
            let plan = self.plan(v, read, &mut jobs);
            if !plan.write {
                // Nothing changes (redeliveries only): nothing to write.
                jobs.into_iter().for_each(JobKind::finish);
                return;
            }
            let mut call = self.scripts.write.prepare_invoke();
            call.key(&keys[0]).key(&keys[1]).key(&keys[2]);
            call.arg(version)
                .arg(if plan.erase_first { "1" } else { "0" })
                .arg(plan.stored.as_deref().unwrap_or(&[]))
                .arg(plan.last_seen)
                .arg(v);
            for (slot, event) in &plan.ring {
                call.arg(*slot).arg(event.as_slice());
            }
            let answer: Result<Vec<Value>, RedisError> = call.invoke_async(&mut c).await;
            match answer {
                Ok(values) if matches!(values.first(), Some(Value::Int(1))) => {
                    jobs.into_iter().for_each(JobKind::finish);
                    return;
                }
                Ok(values) => {
                    // Another replica wrote in between: compute again on
                    // what it left.
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    stored = match values.into_iter().nth(1) {
                        Some(Value::BulkString(b)) => b,
                        _ => Vec::new(),
                    };
                    if attempt % 8 == 0 {
                        // Back off a little under heavy contention.
                        let jitter = rand::random::<u64>() % (200 * u64::from(attempt));
                        tokio::time::sleep(Duration::from_micros(jitter)).await;
                    }
                }
                Err(e) => {
                    // Not known to be applied: the caller may retry (event
                    // ids make a retry of an applied Track a duplicate).
                    let e = self.unavailable(&e);
                    for j in jobs {
                        j.fail(e.clone());
                    }
                    return;
                }
            }
        }
        tracing::error!(visitor_id = %visitor, attempts = MAX_ATTEMPTS, "write gave up after repeated conflicts");
        for j in jobs {
            j.fail(StoreError::Unavailable(format!(
                "too many concurrent writers on visitor {visitor:?}; retry"
            )));
        }
    }

    /// What a visitor's jobs do to the state read (`bytes`, empty for
    /// none); each job notes its own outcome.
    fn plan(&self, visitor: &str, read: Option<Stored>, jobs: &mut [JobKind]) -> Plan {
        let mut record: Result<Option<VisitorRecord>, StoreError> = match read {
            None => Ok(None),
            Some(stored) => self.decode(visitor, stored).map(Some),
        };
        let ring_size = u64::from(self.limits.recent_events.max(1));
        let mut plan = Plan {
            write: false,
            erase_first: false,
            stored: None,
            last_seen: 0,
            ring: Vec::new(),
        };
        let mut ring: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut changed = false;
        for job in jobs.iter_mut() {
            match job {
                JobKind::Track {
                    events,
                    want_record,
                    done,
                    ..
                } => match &mut record {
                    Err(e) => *done = Some(Err(e.clone())),
                    Ok(current) => {
                        // As in redb, a first Track creates the visitor even
                        // if it brings nothing new.
                        changed |= current.is_none();
                        let r = current
                            .get_or_insert_with(|| VisitorRecord::first(&self.taxonomy, events));
                        let applied =
                            r.track(&self.taxonomy, events.clone(), self.limits.dedup_window);
                        changed |= !applied.stored.is_empty();
                        for e in &applied.stored {
                            let slot = (e.seq % ring_size) as u32;
                            match encode_event(e) {
                                Ok(b) => {
                                    ring.insert(slot, b);
                                }
                                Err(err) => {
                                    tracing::error!(error = %err, "cannot encode a raw event");
                                }
                            }
                        }
                        *done = Some(Ok(Tracked {
                            accepted: applied.stored.len() as u32,
                            duplicates: applied.duplicates,
                            record: want_record.then(|| Box::new(r.clone())),
                        }));
                    }
                },
                JobKind::Forget { existed, .. } => {
                    *existed = !matches!(record, Ok(None));
                    record = Ok(None);
                    ring.clear();
                    plan.erase_first = true;
                    changed = false;
                }
            }
        }
        plan.write = changed || plan.erase_first;
        if let (true, Ok(Some(r))) = (changed, &record) {
            match encode_record(r) {
                Ok(b) => {
                    plan.last_seen = last_seen(&b);
                    let mut stored = Vec::with_capacity(VERSION_LEN + b.len());
                    stored.extend_from_slice(new_version().as_bytes());
                    stored.extend_from_slice(&b);
                    plan.stored = Some(stored);
                }
                Err(e) => {
                    // Nothing of these Tracks is written.
                    for job in jobs.iter_mut() {
                        if let JobKind::Track { done, .. } = job {
                            *done = Some(Err(e.clone()));
                        }
                    }
                    plan.write = plan.erase_first;
                    ring.clear();
                }
            }
        }
        let mut ring: Vec<(u32, Vec<u8>)> = ring.into_iter().collect();
        ring.sort_by_key(|(slot, _)| *slot);
        plan.ring = ring;
        plan
    }

    /// Reads one index set: the visitors of a slot last seen at or after
    /// `since` (all of them for `i64::MIN`), or before `before`.
    async fn index(&self, slot: u16, range: IndexRange) -> Result<Vec<String>, StoreError> {
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(self.keys.seen(slot));
        match range {
            IndexRange::Since(since) => {
                if since == i64::MIN {
                    cmd.arg("-inf");
                } else {
                    cmd.arg(since);
                }
                cmd.arg("+inf");
            }
            IndexRange::Before(cutoff, limit) => {
                cmd.arg("-inf")
                    .arg(format!("({cutoff}"))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit);
            }
        }
        cmd.query_async(&mut self.conn())
            .await
            .map_err(|e| self.unavailable(&e))
    }
}

#[derive(Clone, Copy)]
enum IndexRange {
    Since(i64),
    /// Last seen before the cutoff; at most this many.
    Before(i64, usize),
}

/// One conditional write for a visitor's queued jobs.
struct Plan {
    /// Whether anything is to be written at all.
    write: bool,
    erase_first: bool,
    /// The record to store (a fresh version, then the record); `None`
    /// leaves it (or, after an erase, none).
    stored: Option<Vec<u8>>,
    last_seen: i64,
    ring: Vec<(u32, Vec<u8>)>,
}

/// A lane: takes the writes queued while its last batch ran, groups them
/// by visitor (keeping their order) and applies the groups concurrently.
async fn lane(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let max = inner.limits.max_group.max(1);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut order: Vec<VisitorId> = Vec::new();
        let mut groups: HashMap<VisitorId, Vec<JobKind>> = HashMap::new();
        for job in batch {
            let group = groups.entry(job.visitor.clone()).or_insert_with(|| {
                order.push(job.visitor.clone());
                Vec::new()
            });
            group.push(job.kind);
        }
        let applies = order.into_iter().map(|v| {
            let jobs = groups.remove(&v).unwrap_or_default();
            inner.apply(v, jobs)
        });
        join_all(applies).await;
    }
}

/// Listens on the model channel (reconnecting as needed, trying each node
/// in turn) and passes on the notes of other replicas. After every
/// (re)subscription it also passes on the latest note kept in Redis, so a
/// replica that was not listening when a reload was announced catches up.
async fn subscribe(inner: Arc<Inner>, clients: Vec<redis::Client>, notes: mpsc::Sender<ModelNote>) {
    let channel = inner.keys.model_channel();
    let mut logged_down = false;
    for client in clients.iter().cycle() {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    if logged_down {
                        tracing::info!(url = %inner.url, "model announcements: subscribed again");
                        logged_down = false;
                    }
                    // Subscribed first, then read: no note falls in between.
                    if let Some(latest) = inner.latest_model_note().await {
                        if latest.origin != inner.replica && notes.send(latest).await.is_err() {
                            return;
                        }
                    }
                    let mut messages = pubsub.into_on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(payload) = msg.get_payload::<String>() else {
                            continue;
                        };
                        match serde_json::from_str::<ModelNote>(&payload) {
                            Ok(note) if note.origin != inner.replica => {
                                if notes.send(note).await.is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "unreadable model announcement ignored")
                            }
                        }
                    }
                }
                Err(e) => {
                    if !logged_down {
                        tracing::warn!(url = %inner.url, error = %describe(&e), "model announcements: cannot subscribe; retrying");
                        logged_down = true;
                    }
                }
            },
            Err(e) => {
                if !logged_down {
                    tracing::warn!(url = %inner.url, error = %describe(&e), "model announcements: cannot connect; retrying");
                    logged_down = true;
                }
            }
        }
        if notes.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn load(&self, visitor: &VisitorId) -> Result<Option<VisitorRecord>, StoreError> {
        self.inner.load(visitor.as_str()).await
    }

    async fn load_standing(&self, visitor: &VisitorId) -> Result<Option<Standing>, StoreError> {
        self.inner.load_standing(visitor.as_str()).await
    }

    async fn load_standings(
        &self,
        visitors: &[&VisitorId],
    ) -> Vec<Result<Option<Standing>, StoreError>> {
        // Concurrent calls share the connection's pipeline.
        join_all(
            visitors
                .iter()
                .map(|v| self.inner.load_standing(v.as_str())),
        )
        .await
    }

    async fn snapshot(&self, visitor: &VisitorId) -> Result<Option<Snapshot>, StoreError> {
        let v = visitor.as_str();
        let inner = &self.inner;
        let (stored, ring): (Vec<u8>, Vec<(u32, Vec<u8>)>) = inner
            .scripts
            .snapshot
            .key(inner.keys.record(v))
            .key(inner.keys.ring(v))
            .invoke_async(&mut inner.conn())
            .await
            .map_err(|e| inner.unavailable(&e))?;
        if stored.is_empty() {
            return Ok(None);
        }
        let record = inner.decode_stored(v, &stored)?;
        let mut recent = ring
            .iter()
            .map(|(_, bytes)| decode_event(v, bytes))
            .collect::<Result<Vec<_>, _>>()?;
        recent.sort_by_key(|e| std::cmp::Reverse(e.seq));
        Ok(Some(Snapshot { record, recent }))
    }

    fn track(
        &self,
        visitor: VisitorId,
        events: Vec<NewEvent>,
        want_record: bool,
    ) -> Ticket<Tracked> {
        let (reply, ticket) = Ticket::channel();
        self.enqueue(Job {
            visitor,
            kind: JobKind::Track {
                events,
                want_record,
                reply,
                done: None,
            },
        });
        ticket
    }

    async fn forget(&self, visitor: VisitorId) -> Result<bool, StoreError> {
        let (reply, ticket) = Ticket::channel();
        self.enqueue(Job {
            visitor,
            kind: JobKind::Forget {
                reply,
                existed: false,
            },
        });
        ticket.await
    }

    async fn purge(&self, inactive_before: Millis, limit: usize) -> Result<Purged, StoreError> {
        let inner = &self.inner;
        // One replica purges at a time; the others find the lease taken and
        // leave it (the work is idempotent, so a lapse costs only time).
        let (_, holder): (Option<String>, Option<String>) = redis::pipe()
            .cmd("SET")
            .arg(inner.keys.purge_lease())
            .arg(&inner.replica)
            .arg("NX")
            .arg("PX")
            .arg(PURGE_LEASE_MS)
            .cmd("GET")
            .arg(inner.keys.purge_lease())
            .query_async(&mut inner.conn())
            .await
            .map_err(|e| inner.unavailable(&e))?;
        if holder.is_some_and(|h| h != inner.replica) {
            tracing::debug!("retention purge: another replica holds the lease");
            return Ok(Purged {
                visitors: 0,
                more: false,
            });
        }
        let cutoff = inactive_before.as_unix_millis();
        let mut erased = 0;
        let mut slot = 0u16;
        while slot < SLOTS {
            let end = slot.saturating_add(SLOT_BATCH).min(SLOTS);
            let room = limit - erased;
            let lists =
                join_all((slot..end).map(|s| inner.index(s, IndexRange::Before(cutoff, room + 1))))
                    .await;
            let mut candidates = Vec::new();
            for list in lists {
                candidates.extend(list?);
            }
            for id in candidates {
                if erased == limit {
                    return Ok(Purged {
                        visitors: erased,
                        more: true,
                    });
                }
                let done: i64 = inner
                    .scripts
                    .purge
                    .key(inner.keys.record(&id))
                    .key(inner.keys.ring(&id))
                    .key(inner.keys.seen_of(&id))
                    .arg(&id)
                    .arg(cutoff)
                    .invoke_async(&mut inner.conn())
                    .await
                    .map_err(|e| inner.unavailable(&e))?;
                erased += done as usize;
            }
            slot = end;
        }
        Ok(Purged {
            visitors: erased,
            more: false,
        })
    }

    async fn put_segment(
        &self,
        segment: SavedSegment,
        overwrite: bool,
    ) -> Result<SegmentWrite, StoreError> {
        let inner = &self.inner;
        let bytes = encode_segment(&segment)?;
        let created: i64 = redis::cmd(if overwrite { "HSET" } else { "HSETNX" })
            .arg(inner.keys.segments())
            .arg(&segment.name)
            .arg(bytes)
            .query_async(&mut inner.conn())
            .await
            .map_err(|e| inner.unavailable(&e))?;
        Ok(match (created, overwrite) {
            (1, _) => SegmentWrite::Created,
            (_, true) => SegmentWrite::Replaced,
            (_, false) => SegmentWrite::NameTaken,
        })
    }

    async fn delete_segment(&self, name: &str) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let removed: i64 = redis::cmd("HDEL")
            .arg(inner.keys.segments())
            .arg(name)
            .query_async(&mut inner.conn())
            .await
            .map_err(|e| inner.unavailable(&e))?;
        Ok(removed > 0)
    }

    async fn segments(&self) -> Result<Vec<SavedSegment>, StoreError> {
        let inner = &self.inner;
        let all: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(inner.keys.segments())
            .query_async(&mut inner.conn())
            .await
            .map_err(|e| inner.unavailable(&e))?;
        let mut out = all
            .iter()
            .map(|(_, b)| decode_segment(b))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn segment(&self, name: &str) -> Result<Option<SavedSegment>, StoreError> {
        let inner = &self.inner;
        let bytes: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(inner.keys.segments())
            .arg(name)
            .query_async(&mut inner.conn())
            .await
            .map_err(|e| inner.unavailable(&e))?;
        bytes.map(|b| decode_segment(&b)).transpose()
    }

    fn scan_key(&self, visitor: &str) -> String {
        scan_key(slot_of(visitor), visitor)
    }

    async fn visitor_count(&self) -> Result<u64, StoreError> {
        // Every visitor is in its slot's last-seen index: one ZCARD per
        // slot, a batch of slots at a time.
        let inner = &self.inner;
        let mut total = 0u64;
        let mut slot = 0u16;
        while slot < SLOTS {
            let end = slot.saturating_add(SLOT_BATCH).min(SLOTS);
            let counts = join_all((slot..end).map(|s| async move {
                redis::cmd("ZCARD")
                    .arg(inner.keys.seen(s))
                    .query_async::<u64>(&mut inner.conn())
                    .await
            }))
            .await;
            for c in counts {
                total += c.map_err(|e| inner.unavailable(&e))?;
            }
            slot = end;
        }
        Ok(total)
    }

    async fn partitions(&self, parts: usize) -> Result<Vec<ScanRange>, StoreError> {
        // By hash slot: visitors spread evenly over slots, whatever their ids.
        let parts = parts.clamp(1, usize::from(SLOTS));
        let cut = |k: usize| Some(format!("{:05}", k * usize::from(SLOTS) / parts));
        Ok((0..parts)
            .map(|k| ScanRange {
                from: if k == 0 { None } else { cut(k) },
                to: if k + 1 == parts { None } else { cut(k + 1) },
            })
            .collect())
    }

    async fn scan(
        &self,
        range: &ScanRange,
        after: Option<&str>,
        active_since: Millis,
        max: usize,
    ) -> Result<ScanChunk, StoreError> {
        let inner = &self.inner;
        let since = active_since.as_unix_millis();
        let max = max.max(1);
        // The later of the range's start and `after`, and the range's end,
        // as slots; keys are compared within those two slots.
        let start = [range.from.as_deref(), after]
            .into_iter()
            .flatten()
            .max()
            .map_or(0, key_slot);
        let last = range.to.as_deref().map_or(SLOTS - 1, key_slot);
        let keep = |slot: u16, id: &str| {
            if slot != start && slot != last {
                return true;
            }
            let key = scan_key(slot, id);
            range.contains(&key) && after.is_none_or(|a| key.as_str() > a)
        };
        // The visitors to read, slot by slot, in scan order.
        let mut slots: Vec<Vec<String>> = Vec::new();
        let mut wanted = 0;
        let mut slot = start;
        let mut done = false;
        // Index sets asked for at once: sized by the visitors per slot seen
        // so far, so a call reads about the slots it needs, not a whole batch.
        let mut batch = MIN_SLOT_BATCH;
        let (mut seen, mut slots_read) = (0usize, 0usize);
        'walk: loop {
            if slot > last {
                done = true;
                break;
            }
            let end = slot.saturating_add(batch).min(last + 1);
            let lists =
                join_all((slot..end).map(|s| inner.index(s, IndexRange::Since(since)))).await;
            slots_read += usize::from(end - slot);
            for (s, list) in (slot..end).zip(lists) {
                let mut list = list?;
                seen += list.len();
                list.retain(|id| keep(s, id));
                if list.is_empty() {
                    continue;
                }
                list.sort_unstable();
                list.truncate(max - wanted);
                wanted += list.len();
                slots.push(list);
                if wanted >= max {
                    break 'walk;
                }
            }
            slot = end;
            let per_slot = seen as f64 / slots_read as f64;
            let need = (max - wanted) as f64;
            batch = if per_slot > 0.0 {
                (need / per_slot * 1.25).ceil().min(f64::from(SLOT_BATCH)) as u16
            } else {
                batch.saturating_mul(4)
            }
            .clamp(MIN_SLOT_BATCH, SLOT_BATCH);
        }
        // One MGET per slot: a slot's keys live on one node.
        let reads = join_all(slots.iter().map(|ids| async move {
            let mut mget = redis::cmd("MGET");
            for id in ids {
                mget.arg(inner.keys.record(id));
            }
            let stored: Vec<Option<Vec<u8>>> = mget
                .query_async(&mut inner.conn())
                .await
                .map_err(|e| inner.unavailable(&e))?;
            Ok::<_, StoreError>(stored)
        }))
        .await;
        let last_key = slots
            .last()
            .and_then(|ids| ids.last())
            .map(|id| scan_key(slot_of(id), id));
        let mut chunk = ScanChunk::with_capacity(wanted, 2048);
        for (ids, stored) in slots.into_iter().zip(reads) {
            for (id, s) in ids.into_iter().zip(stored?) {
                // Gone since the index was read (forgotten or purged): skipped.
                let Some(s) = s else { continue };
                let Some(stored) = split_stored(&s) else {
                    tracing::warn!(visitor_id = %id, "a stored record shorter than its version left out");
                    continue;
                };
                if last_seen(stored.bytes) < since {
                    continue;
                }
                match stored.layout() {
                    Layout::V3 => chunk.push(&id, stored.bytes),
                    // Scans hand on the current layout only; a record that
                    // cannot be upgraded goes on as it is, to be reported
                    // corrupt where it is decoded.
                    Layout::V2 => match upgrade_v2(&id, stored.bytes, &inner.taxonomy) {
                        Ok(b) => chunk.push(&id, &b),
                        Err(_) => chunk.push(&id, stored.bytes),
                    },
                }
            }
        }
        chunk.last_key = if done { None } else { last_key };
        chunk.done = done;
        Ok(chunk)
    }

    async fn check(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let _: String = redis::cmd("PING")
            .query_async(&mut inner.conn())
            .await
            .map_err(|e| inner.unavailable(&e))?;
        Ok(())
    }

    async fn announce_model(
        &self,
        version: &str,
        path: &std::path::Path,
        loaded_at: Millis,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let note = ModelNote {
            origin: inner.replica.clone(),
            version: version.to_string(),
            path: path.to_path_buf(),
            loaded_at,
        };
        let payload = serde_json::to_string(&note)
            .map_err(|e| StoreError::Unavailable(format!("cannot encode a model note: {e}")))?;
        // Kept for replicas not listening now, then told to those that are.
        let mut c = inner.conn();
        let _: () = redis::cmd("SET")
            .arg(inner.keys.model_note())
            .arg(&payload)
            .query_async(&mut c)
            .await
            .map_err(|e| inner.unavailable(&e))?;
        let _: i64 = redis::cmd("PUBLISH")
            .arg(inner.keys.model_channel())
            .arg(payload)
            .query_async(&mut c)
            .await
            .map_err(|e| inner.unavailable(&e))?;
        Ok(())
    }

    fn model_announcements(&self) -> Option<mpsc::Receiver<ModelNote>> {
        self.notes.lock().ok()?.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it() {
        let tags = slot_tags();
        assert_eq!(tags.len(), SLOTS as usize);
        for (slot, t) in tags.iter().enumerate() {
            assert_eq!(slot_of_tag(t) as usize, slot, "{t}");
        }
    }

    #[test]
    fn slots_agree_with_redis_cluster_published_examples() {
        // From the Redis Cluster specification: CRC16 of "123456789" is 0x31C3.
        assert_eq!(
            crc16::State::<crc16::XMODEM>::calculate(b"123456789"),
            0x31C3
        );
        assert_eq!(slot_of_tag("123456789"), 0x31C3 % SLOTS);
    }

    #[test]
    fn braces_in_a_visitor_id_cannot_break_its_hash_tag() {
        for id in ["plain", "a}b", "{x}", "}", "50%", "%7B"] {
            let t = tag(id);
            assert!(!t.contains(['{', '}']), "{id} → {t}");
        }
        // Escaping is one-to-one: distinct ids keep distinct tags.
        assert_ne!(tag("{"), tag("%7B"));
        assert_ne!(tag("%"), tag("%25"));
        let keys = Keys {
            prefix: "rung:".into(),
        };
        assert_eq!(keys.record("a}b"), "rung:{a%7Db}:r");
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redacted("redis://user:s3cret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redacted("rediss://:pw@h:1"), "rediss://:***@h:1");
        assert_eq!(redacted("redis://pw@h:1"), "redis://***@h:1");
        assert_eq!(
            redacted("redis://a:1,redis://u:p@b:2"),
            "redis://a:1,redis://u:***@b:2"
        );
        assert_eq!(
            redacted("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
    }
}
