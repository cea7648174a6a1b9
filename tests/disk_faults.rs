//! The embedded store on a disk that fills up: calls fail UNAVAILABLE
//! while it is full (never CANCELLED or INTERNAL), erasure either works or
//! says UNAVAILABLE, and once space is back the same server writes again,
//! with every write it acknowledged before still there.
//!
//! The disk is a small tmpfs the test mounts itself; without root (or
//! where mounting fails) the test says why and skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use futures_util::future::join_all;
use rung::grpc::proto::{Event, ForgetVisitorRequest, GetVisitorRequest, TrackRequest};
use tonic::Code;

/// A tmpfs mounted for one test, unmounted when dropped (also on a panic,
/// when the server may still hold files open: then lazily).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// `Err`: why this machine cannot run the test.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: cannot mount a tmpfs".into());
        }
        let dir = fresh_data_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let plain = Command::new("umount").arg(&self.dir).status();
        if !plain.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `n` events with long item and event ids, so a few hundred visitors fill
/// megabytes.
fn track(visitor: &str, n: usize) -> TrackRequest {
    let now = now_secs();
    TrackRequest {
        visitor_id: visitor.into(),
        events: (0..n)
            .map(|k| Event {
                r#type: "view_item".into(),
                time: Some(ts(now - 600 + k as i64)),
                item_id: format!("{visitor}-item-{k}-{}", "i".repeat(180)),
                event_id: format!("{visitor}-event-{k}-{}", "e".repeat(90)),
                ..Default::default()
            })
            .collect(),
    }
}

/// Writes zeros into `path` until the disk is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    // The last partial block may not fit either: the disk is full.
    let _ = f.flush();
}

const EVENTS: usize = 20;

async fn events_of(app: &TestApp, visitor: &str) -> Result<u64, tonic::Status> {
    let mut client = app.client.clone();
    client
        .get_visitor(GetVisitorRequest {
            visitor_id: visitor.into(),
            max_events: 0,
        })
        .await
        .map(|r| r.into_inner().events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_calls_unavailable_and_the_store_heals_when_space_is_back() {
    let disk = match Tmpfs::mount("8m") {
        Ok(d) => d,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    // Arrange: a server on the small disk, some visitors stored, then the
    // rest of the disk taken by a filler file.
    let mut settings = test_settings();
    settings.data_dir = disk.dir.join("data");
    let app = spawn_app_with(settings).await;
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        let v = format!("before-{i}");
        app.client.clone().track(track(&v, EVENTS)).await.unwrap();
        acknowledged.push(v);
    }
    let filler = disk.dir.join("filler");
    tokio::task::block_in_place(|| fill(&filler));

    // Act: keep writing, eight callers at a time, until writes fail (the
    // store file may still have free pages of its own for a while).
    let mut failures = Vec::new();
    let mut round = 0;
    while failures.len() < 40 && round < 200 {
        let calls = (0..8).map(|k| {
            let v = format!("during-{round}-{k}");
            let mut client = app.client.clone();
            async move { (client.track(track(&v, EVENTS)).await, v) }
        });
        // Reads alongside: they answer or fail UNAVAILABLE too.
        let reads = acknowledged[..4].iter().map(|v| events_of(&app, v));
        let (writes, reads) = tokio::join!(join_all(calls), join_all(reads));
        for (result, v) in writes {
            match result {
                Ok(_) => acknowledged.push(v),
                Err(s) => failures.push(s),
            }
        }
        for r in reads {
            if let Err(s) = r {
                assert_eq!(s.code(), Code::Unavailable, "{s:?}");
            }
        }
        round += 1;
    }

    // Assert: the disk did fill, and every failed call said UNAVAILABLE.
    assert!(!failures.is_empty(), "the disk never filled");
    eprintln!(
        "{} writes acknowledged, {} refused while the disk was full",
        acknowledged.len(),
        failures.len()
    );
    for s in &failures {
        assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    }
    // Erasure on a full disk works or says UNAVAILABLE; never half.
    let victim = acknowledged.remove(0);
    let forgot = app
        .client
        .clone()
        .forget_visitor(ForgetVisitorRequest {
            visitor_id: victim.clone(),
        })
        .await;
    let forgotten_while_full = match &forgot {
        Ok(r) => {
            assert!(r.get_ref().existed);
            true
        }
        Err(s) => {
            assert_eq!(s.code(), Code::Unavailable, "{s:?}");
            false
        }
    };
    eprintln!("ForgetVisitor on the full disk: {forgot:?}");
    // Reads during the fault answer or say UNAVAILABLE.
    for v in acknowledged.iter().take(5) {
        if let Err(s) = events_of(&app, v).await {
            assert_eq!(s.code(), Code::Unavailable, "{s:?}");
        }
    }

    // Act: space is back.
    std::fs::remove_file(&filler).unwrap();

    // Assert: the same server writes again at once, without a restart or a
    // retry: the store reopens what the failed commit left behind on the
    // next write.
    let healed = app
        .client
        .clone()
        .track(track("after", EVENTS))
        .await
        .expect("the first write after space is back succeeds");
    assert_eq!(healed.into_inner().accepted, EVENTS as u32);
    // Every acknowledged write is there, whole.
    for v in &acknowledged {
        let events = events_of(&app, v)
            .await
            .unwrap_or_else(|s| panic!("{v}: {s:?}"));
        assert_eq!(events, EVENTS as u64, "{v}");
    }
    // An erasure that was acknowledged held; one that was refused can be
    // asked again, and works now.
    if !forgotten_while_full {
        let again = app
            .client
            .clone()
            .forget_visitor(ForgetVisitorRequest {
                visitor_id: victim.clone(),
            })
            .await
            .unwrap();
        assert!(again.into_inner().existed);
    }
    let gone = events_of(&app, &victim).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    let other = app
        .client
        .clone()
        .forget_visitor(ForgetVisitorRequest {
            visitor_id: acknowledged[0].clone(),
        })
        .await
        .unwrap();
    assert!(other.into_inner().existed);
    assert_eq!(
        events_of(&app, &acknowledged[0]).await.unwrap_err().code(),
        Code::NotFound
    );

    app.stop().await;
    drop(disk);
}
