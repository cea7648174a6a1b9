//! A replica on a shared Redis when Redis misbehaves: it refuses to start
//! without a usable Redis and says why; while serving it answers
//! UNAVAILABLE and NOT_SERVING when Redis goes away, and heals by itself
//! when Redis is back.

mod common;

use std::time::Duration;

use common::redis::{unique_prefix, RedisServer};
use common::*;
use rung::grpc::proto::{GetVisitorRequest, TrackRequest};
use rung::startup::Application;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn track(visitor: &str, n: usize) -> TrackRequest {
    let now = now_secs();
    TrackRequest {
        visitor_id: visitor.into(),
        events: (0..n)
            .map(|k| rung::grpc::proto::Event {
                r#type: "view_item".into(),
                time: Some(ts(now - 60 + k as i64)),
                event_id: format!("{visitor}-{k}"),
                ..Default::default()
            })
            .collect(),
    }
}

async fn health(app: &TestApp) -> ServingStatus {
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

/// Watches the health service until it reports `want`: the server sends
/// each change as it happens (a deadline, not a timing assertion).
async fn wait_for_health(app: &TestApp, want: ServingStatus) {
    let mut changes = HealthClient::new(app.channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let reached = async {
        while let Some(r) = changes.message().await.unwrap() {
            if r.status() == want {
                return;
            }
        }
        panic!("the health watch ended before {want:?}");
    };
    tokio::time::timeout(Duration::from_secs(30), reached)
        .await
        .unwrap_or_else(|_| panic!("health never became {want:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_unavailable_while_redis_is_down_and_heal_when_it_is_back() {
    // Arrange: a replica on a durable Redis of its own, one visitor stored.
    let mut redis = RedisServer::start();
    let mut app = spawn_app_with(redis_settings(&redis.url(), &unique_prefix())).await;
    app.client.track(track("before", 3)).await.unwrap();
    assert_eq!(health(&app).await, ServingStatus::Serving);

    // Act: Redis goes away.
    tokio::task::block_in_place(|| redis.stop());

    // Assert: calls fail UNAVAILABLE (nothing half-applied, no panic) and
    // health says NOT_SERVING.
    let during = app.client.track(track("during", 3)).await.unwrap_err();
    assert_eq!(during.code(), tonic::Code::Unavailable, "{during:?}");
    let read = app
        .client
        .get_visitor(GetVisitorRequest {
            visitor_id: "before".into(),
            max_events: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(read.code(), tonic::Code::Unavailable, "{read:?}");
    wait_for_health(&app, ServingStatus::NotServing).await;

    // Act: Redis is back (it replays its append-only file).
    tokio::task::block_in_place(|| redis.restart());

    // Assert: the same replica serves again, without a restart, and what it
    // acknowledged before the outage is there.
    wait_for_health(&app, ServingStatus::Serving).await;
    let profile = app
        .client
        .get_visitor(GetVisitorRequest {
            visitor_id: "before".into(),
            max_events: 0,
        })
        .await
        .expect("served again once health says so")
        .into_inner();
    assert_eq!(profile.events, 3);
    let again = app
        .client
        .track(track("after", 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.accepted, 2);
    // "during" was refused as a whole: nothing of it was stored.
    let during = app
        .client
        .get_visitor(GetVisitorRequest {
            visitor_id: "during".into(),
            max_events: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(during.code(), tonic::Code::NotFound);
    app.stop().await;
}

async fn refused(settings: rung::config::Settings) -> String {
    match Application::build(&settings).await {
        Ok(_) => panic!("should refuse to start"),
        Err(e) => {
            eprintln!("refused: {e}");
            e.to_string()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_redis_at_the_url_refuses_the_start_naming_the_url() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let e = refused(redis_settings(&url, "p:")).await;
    assert!(e.contains(&url), "{e}");
    assert!(e.to_lowercase().contains("refused"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_refusal_that_hides_the_password() {
    let redis = RedisServer::start_with_args(&["--requirepass", "right-one"]);
    let url = format!("redis://:wrong-one@127.0.0.1:{}/", redis.port());
    let e = refused(redis_settings(&url, "p:")).await;
    assert!(e.contains("credentials were refused"), "{e}");
    assert!(!e.contains("wrong-one"), "the password leaked: {e}");
    // The right one works.
    let ok = format!("redis://:right-one@127.0.0.1:{}/", redis.port());
    let app = spawn_app_with(redis_settings(&ok, "p:")).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_is_not_redis_is_a_clear_refusal() {
    // rung's own gRPC port: it speaks HTTP/2, not Redis.
    let other = spawn_app().await;
    let url = format!("redis://{}/", other.addr);
    let e = refused(redis_settings(&url, "p:")).await;
    assert!(e.contains(&url), "{e}");
    assert!(e.contains("Redis"), "{e}");
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_holding_another_taxonomys_visitors_is_refused() {
    use rung::domain::Taxonomy;
    use rung::store::{RedisSettings, RedisStore, StoreError, StoreLimits};
    let settings = RedisSettings {
        url: common::redis::shared_server().url(),
        key_prefix: unique_prefix(),
        timeout: Duration::from_secs(5),
    };
    let limits = StoreLimits {
        recent_events: 10,
        dedup_window: 10,
        max_group: 10,
    };
    drop(
        RedisStore::open(&settings, Taxonomy::builtin().into(), limits)
            .await
            .unwrap(),
    );
    let Err(e) = RedisStore::open(&settings, other_taxonomy().into(), limits).await else {
        panic!("should be refused");
    };

    assert!(matches!(e, StoreError::Incompatible(_)), "{e}");
    assert!(e.to_string().contains("taxonomy"), "{e}");
    assert!(e.to_string().contains(&settings.key_prefix), "{e}");
    // Another prefix on the same Redis is free for it.
    let elsewhere = RedisSettings {
        key_prefix: unique_prefix(),
        ..settings
    };
    RedisStore::open(&elsewhere, other_taxonomy().into(), limits)
        .await
        .unwrap();
}

fn other_taxonomy() -> rung::domain::Taxonomy {
    rung::domain::Taxonomy::from_toml(&rung::domain::taxonomy::DEFAULT_TAXONOMY_TOML.replacen(
        "half_life_days = 3.0",
        "half_life_days = 4.0",
        1,
    ))
    .unwrap()
}
