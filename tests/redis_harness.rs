//! The Redis test harness itself: real servers start, keep their data across
//! a kill and restart, form a cluster, and fail with an install hint when
//! redis-server is missing.

mod common;

use std::process::Command;

use common::redis::{
    resolve_binary, shared_cluster, shared_server, unique_prefix, RedisCluster, RedisServer,
    SERVER_VAR,
};

fn get(conn: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(conn).expect("GET")
}

#[test]
fn a_key_set_before_a_kill_is_replayed_from_the_aof_after_restart() {
    let mut server = RedisServer::start();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_connection().expect("the server answers");
    redis::cmd("SET").arg("k").arg("v").exec(&mut conn).unwrap();

    server.stop();
    assert!(
        client.get_connection().is_err(),
        "the server is down after stop"
    );
    server.restart();

    let mut conn = client.get_connection().expect("the server answers again");
    // `--save ""` leaves no RDB snapshot: only the AOF can bring the key back.
    assert_eq!(get(&mut conn, "k").as_deref(), Some("v"));
}

#[test]
fn a_password_protected_server_starts_and_restarts() {
    let mut server = RedisServer::start_with_args(&["--requirepass", "s3cret"]);
    let with_password = format!("redis://:s3cret@127.0.0.1:{}/", server.port());
    let mut conn = redis::Client::open(with_password.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("SET").arg("k").arg("v").exec(&mut conn).unwrap();

    server.restart();

    let without = redis::Client::open(server.url()).unwrap().get_connection();
    let refused =
        without.and_then(|mut c| redis::cmd("GET").arg("k").query::<Option<String>>(&mut c));
    assert!(refused.is_err(), "no password, no data: {refused:?}");
    let mut conn = redis::Client::open(with_password.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(get(&mut conn, "k").as_deref(), Some("v"));
}

#[tokio::test]
async fn three_masters_form_a_cluster_that_serves_keys_in_every_shard() {
    let cluster = RedisCluster::start(3);
    let urls: Vec<String> = cluster.url().split(',').map(str::to_owned).collect();
    assert_eq!(urls.len(), 3);

    let client = redis::cluster::ClusterClient::new(urls).unwrap();
    let mut conn = client
        .get_async_connection()
        .await
        .expect("the cluster client connects");
    // The hash tags a, b and c fall in slots 15495, 3300 and 7365: one per
    // master when the 16384 slots are split in three.
    for key in ["{a}x", "{b}x", "{c}x"] {
        redis::cmd("SET")
            .arg(key)
            .arg(key)
            .exec_async(&mut conn)
            .await
            .unwrap();
        let value: String = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(value, key);
    }
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(info.contains("cluster_state:ok"), "{info}");
    assert!(info.contains("cluster_known_nodes:3"), "{info}");

    for port in cluster.ports() {
        let node = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut node = node.get_connection().unwrap();
        let keys: usize = redis::cmd("DBSIZE").query(&mut node).unwrap();
        assert_eq!(keys, 1, "node {port} holds one of the three keys");
    }
}

#[test]
fn shared_instances_are_started_once_and_prefixes_never_repeat() {
    assert!(std::ptr::eq(shared_server(), shared_server()));
    assert!(std::ptr::eq(shared_cluster(), shared_cluster()));
    assert_eq!(shared_cluster().ports().len(), 3);
    let mut conn = redis::Client::open(shared_server().url())
        .unwrap()
        .get_connection()
        .unwrap();
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");

    let (a, b) = (unique_prefix(), unique_prefix());
    assert_ne!(a, b);
    assert!(a.ends_with(':') && !a.contains(['{', '}']), "{a}");
}

#[test]
fn a_missing_redis_server_is_reported_with_the_command_that_installs_it() {
    let missing = resolve_binary("redis-server", Some("/nonexistent/redis-server".as_ref()));
    let message = missing.expect_err("no such binary");
    assert!(
        message.contains("sudo apt-get install -y redis-server"),
        "{message}"
    );
}

const CHILD_MARKER: &str = "RUNG_HARNESS_SELF_TEST_CHILD";
const MISSING_BINARY_TEST: &str =
    "start_panics_with_the_install_command_when_the_override_names_no_binary";

#[test]
fn start_panics_with_the_install_command_when_the_override_names_no_binary() {
    if std::env::var_os(CHILD_MARKER).is_some() {
        RedisServer::start();
        return;
    }
    // Setting the variable here would race the other tests' starts, so a copy
    // of this test binary runs just this test with it set.
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", MISSING_BINARY_TEST, "--test-threads=1"])
        .env(CHILD_MARKER, "1")
        .env(SERVER_VAR, "/nonexistent/redis-server")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&child.stdout) + String::from_utf8_lossy(&child.stderr);
    assert!(
        !child.status.success(),
        "start() succeeded without redis-server:\n{said}"
    );
    assert!(said.contains("apt-get install"), "{said}");
}
