//! The Redis nodes behind a shared store, as a benchmark sees them: their
//! CPU time (`INFO cpu`), their memory (`INFO memory`, `MEMORY USAGE`), and
//! removing a benchmark's keys (`SCAN` + `UNLINK`), node by node.
//!
//! One connection per URL of `store.url`: one for a single server, one per
//! listed node for a Redis Cluster. A cluster node is asked about the keys
//! it holds, so figures and clean-up cover the nodes the URL lists (list
//! every master for a complete picture).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};

use crate::store::redis_store::{self, redacted};

/// Keys asked for per `SCAN` call, and so per pipelined batch of commands.
const SCAN_COUNT: usize = 1000;

/// A Redis command that failed on one node.
#[derive(Debug, thiserror::Error)]
#[error("Redis at {url}: {source}")]
pub struct NodeError {
    /// The node's URL, password hidden.
    pub url: String,
    #[source]
    pub source: RedisError,
}

/// The nodes of one Redis deployment (one server, or a cluster's listed
/// nodes), each with a connection of its own.
pub struct RedisNodes {
    nodes: Vec<Node>,
}

struct Node {
    url: String,
    conn: MultiplexedConnection,
}

impl std::fmt::Debug for RedisNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.nodes.iter().map(|n| &n.url))
            .finish()
    }
}

impl Node {
    fn fail(&self, source: RedisError) -> NodeError {
        NodeError {
            url: self.url.clone(),
            source,
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, NodeError> {
        cmd.query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.fail(e))
    }

    /// One page of `SCAN cursor MATCH pattern`: the next cursor (0 at the
    /// end) and the keys.
    async fn scan_page(
        &self,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<Vec<u8>>), NodeError> {
        self.query(
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT),
        )
        .await
    }

    /// Runs `pipe` on this node.
    async fn pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, NodeError> {
        pipe.query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.fail(e))
    }

    /// `INFO section` as `field:value` lines.
    async fn info(&self, section: &str) -> Result<String, NodeError> {
        self.query(redis::cmd("INFO").arg(section)).await
    }
}

/// The value of `field` in an `INFO` answer.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(field)?.strip_prefix(':'))
}

/// CPU time Redis reports it has used (user + system, all its threads;
/// not forked children such as a background save).
fn info_cpu(info: &str) -> Option<Duration> {
    let secs = |f| info_field(info, f)?.parse::<f64>().ok();
    Some(Duration::from_secs_f64(
        secs("used_cpu_sys")? + secs("used_cpu_user")?,
    ))
}

/// `text` as a Redis glob pattern that matches only itself.
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisNodes {
    /// Connects to every URL in `url` (comma-separated, as `store.url`).
    pub async fn connect(url: &str) -> Result<RedisNodes, NodeError> {
        // Redis may be busy serving the benchmark: give answers time.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(30)));
        let mut nodes = Vec::new();
        for one in url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let shown = redacted(one);
            let fail = |source| NodeError {
                url: shown.clone(),
                source,
            };
            let client = redis::Client::open(one).map_err(fail)?;
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(fail)?;
            nodes.push(Node { url: shown, conn });
        }
        Ok(RedisNodes { nodes })
    }

    /// How many nodes the URL listed.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// CPU time used so far by all the nodes together (user + system, from
    /// `INFO cpu`, in microseconds, so no minimum sample is needed as for
    /// /proc's 10 ms ticks).
    pub async fn cpu(&self) -> Result<Duration, NodeError> {
        let mut total = Duration::ZERO;
        for node in &self.nodes {
            let info = node.info("cpu").await?;
            total += info_cpu(&info).ok_or_else(|| {
                node.fail(RedisError::from((
                    redis::ErrorKind::Parse,
                    "INFO cpu without used_cpu_sys and used_cpu_user",
                )))
            })?;
        }
        Ok(total)
    }

    /// Bytes allocated by all the nodes together (`INFO memory`'s
    /// `used_memory`).
    pub async fn used_memory(&self) -> Result<u64, NodeError> {
        let mut total = 0;
        for node in &self.nodes {
            let info = node.info("memory").await?;
            total += info_field(&info, "used_memory")
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    node.fail(RedisError::from((
                        redis::ErrorKind::Parse,
                        "INFO memory without used_memory",
                    )))
                })?;
        }
        Ok(total)
    }

    /// `MEMORY USAGE key SAMPLES 0` (every element counted) on the node that
    /// holds the key; 0 when no node has it.
    pub async fn memory_usage(&self, key: &str) -> Result<u64, NodeError> {
        let mut last_error = None;
        for node in &self.nodes {
            let answer: Result<Option<u64>, NodeError> = node
                .query(
                    redis::cmd("MEMORY")
                        .arg("USAGE")
                        .arg(key)
                        .arg("SAMPLES")
                        .arg(0),
                )
                .await;
            match answer {
                Ok(Some(bytes)) => return Ok(bytes),
                Ok(None) => {}
                // A cluster node answers MOVED for a key it does not hold.
                Err(e) if e.source.code() == Some("MOVED") => {}
                Err(e) => last_error = Some(e),
            }
        }
        last_error.map_or(Ok(0), Err)
    }

    /// How many keys match the glob `pattern` and their `MEMORY USAGE`
    /// summed, over all nodes.
    pub async fn memory_usage_matching(&self, pattern: &str) -> Result<(u64, u64), NodeError> {
        let (mut keys, mut bytes) = (0u64, 0u64);
        for node in &self.nodes {
            let mut cursor = 0;
            loop {
                let (next, page) = node.scan_page(cursor, pattern).await?;
                if !page.is_empty() {
                    let mut pipe = redis::pipe();
                    for key in &page {
                        pipe.cmd("MEMORY")
                            .arg("USAGE")
                            .arg(key)
                            .arg("SAMPLES")
                            .arg(0);
                    }
                    let sizes: Vec<Option<u64>> = node.pipeline(&pipe).await?;
                    keys += page.len() as u64;
                    bytes += sizes.into_iter().flatten().sum::<u64>();
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok((keys, bytes))
    }

    /// Removes every key that starts with `prefix`, on every node (`SCAN
    /// MATCH` then `UNLINK`, one key per command so that a cluster node never
    /// sees keys of two slots in one command); how many were removed.
    /// Nothing else is touched: never `FLUSHALL`.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, NodeError> {
        if prefix.is_empty() {
            // An empty prefix would match every key in the database.
            return Ok(0);
        }
        let pattern = format!("{}*", glob_escape(prefix));
        let mut removed = 0u64;
        for node in &self.nodes {
            let mut cursor = 0;
            loop {
                // Keys removed behind the cursor do not disturb SCAN: every
                // key present from start to end is returned at least once.
                let (next, page) = node.scan_page(cursor, &pattern).await?;
                if !page.is_empty() {
                    let mut pipe = redis::pipe();
                    for key in &page {
                        pipe.cmd("UNLINK").arg(key);
                    }
                    let gone: Vec<u64> = node.pipeline(&pipe).await?;
                    removed += gone.iter().sum::<u64>();
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }
}

/// The glob matching every per-slot index set (`P{t}:seen`) under `prefix`.
pub fn index_pattern(prefix: &str) -> String {
    format!("{}{{*}}{}", glob_escape(prefix), redis_store::INDEX_SUFFIX)
}

/// Redis memory per stored visitor by `MEMORY USAGE`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VisitorMemory {
    /// Visitors sampled that had a record.
    pub sampled: usize,
    /// Mean bytes of a record hash, and of a ring hash.
    pub record: f64,
    pub ring: f64,
    /// Index sets under the prefix and their bytes, all together.
    pub index_sets: u64,
    pub index_bytes: u64,
    /// The visitors the index bytes are shared by.
    pub visitors: usize,
}

impl VisitorMemory {
    /// Bytes of index per visitor.
    pub fn index_share(&self) -> f64 {
        self.index_bytes as f64 / self.visitors.max(1) as f64
    }

    /// Record + ring + index share.
    pub fn per_visitor(&self) -> f64 {
        self.record + self.ring + self.index_share()
    }
}

impl RedisNodes {
    /// Memory per visitor under `prefix`: the record and ring of each
    /// visitor in `sample` (those without a record are skipped), and all
    /// the index sets shared by `visitors` stored visitors.
    pub async fn visitor_memory(
        &self,
        prefix: &str,
        sample: impl IntoIterator<Item = String>,
        visitors: usize,
    ) -> Result<VisitorMemory, NodeError> {
        let (mut sampled, mut record, mut ring) = (0usize, 0u64, 0u64);
        for id in sample {
            let [r, e, _] = redis_store::visitor_keys(prefix, &id);
            let r = self.memory_usage(&r).await?;
            if r == 0 {
                continue;
            }
            sampled += 1;
            record += r;
            ring += self.memory_usage(&e).await?;
        }
        let (index_sets, index_bytes) = self.memory_usage_matching(&index_pattern(prefix)).await?;
        let mean = |total: u64| total as f64 / sampled.max(1) as f64;
        Ok(VisitorMemory {
            sampled,
            record: mean(record),
            ring: mean(ring),
            index_sets,
            index_bytes,
            visitors,
        })
    }
}

/// Removes the keys under a prefix from a Redis when dropped, so a
/// benchmark that stops half-way (a panic, an error) still leaves Redis as
/// it found it; [`PrefixCleanup::remove_now`] does it at a chosen moment
/// and says how many keys went.
pub struct PrefixCleanup {
    url: String,
    prefix: Option<String>,
}

impl PrefixCleanup {
    pub fn new(url: &str, prefix: &str) -> PrefixCleanup {
        PrefixCleanup {
            url: url.to_string(),
            prefix: Some(prefix.to_string()),
        }
    }

    /// Removes the keys now; how many there were.
    pub fn remove_now(mut self) -> Result<u64, NodeError> {
        match self.prefix.take() {
            Some(prefix) => remove_prefix(&self.url, &prefix),
            None => Ok(0),
        }
    }
}

impl Drop for PrefixCleanup {
    fn drop(&mut self) {
        if let Some(prefix) = self.prefix.take() {
            if let Err(e) = remove_prefix(&self.url, &prefix) {
                eprintln!("could not remove the keys under {prefix:?}: {e}");
            }
        }
    }
}

/// [`RedisNodes::delete_prefix`] from synchronous code, on a thread and
/// runtime of its own (so it works inside or outside a runtime).
fn remove_prefix(url: &str, prefix: &str) -> Result<u64, NodeError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            rt.block_on(async { RedisNodes::connect(url).await?.delete_prefix(prefix).await })
        })
        .join()
        .expect("the clean-up thread does not panic")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_cpu_is_system_plus_user_time() {
        let info = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:0.250000\r\n\
                    used_cpu_sys_children:9.000000\r\nused_cpu_user_children:9.000000\r\n";
        assert_eq!(info_cpu(info), Some(Duration::from_millis(1750)));
        assert_eq!(info_cpu("# CPU\r\n"), None);
    }

    #[test]
    fn only_the_exact_field_is_read() {
        let info = "used_memory_rss:900\r\nused_memory:123\r\nused_memory_peak:999\r\n";
        assert_eq!(info_field(info, "used_memory"), Some("123"));
    }

    #[test]
    fn the_index_pattern_matches_the_store_layout() {
        let [_, _, seen] = redis_store::visitor_keys("a*:", "v1");
        assert!(
            seen.starts_with("a*:{") && seen.ends_with("}:seen"),
            "{seen}"
        );
        assert_eq!(index_pattern("a*:"), r"a\*:{*}:seen");
    }

    #[test]
    fn glob_characters_in_a_prefix_match_only_themselves() {
        assert_eq!(glob_escape("rung-bench-1:"), "rung-bench-1:");
        assert_eq!(glob_escape(r"a*b?[c]\"), r"a\*b\?\[c\]\\");
    }
}
