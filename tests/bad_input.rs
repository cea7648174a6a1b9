//! Every bad input is INVALID_ARGUMENT naming the field (and, for events,
//! the index), and the server keeps serving afterwards.

mod common;

use common::*;
use rung::grpc::proto::{Event, ScoreBatchRequest, ScoreRequest};
use tonic::Code;

async fn refused(app: &mut TestApp, req: ScoreRequest) -> String {
    let status = app.client.score(req).await.expect_err("should be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status.message().to_string()
}

fn valid() -> Vec<Event> {
    vec![ev("view_item", 60, "a"), ev("add_to_cart", 30, "a")]
}

#[tokio::test]
async fn empty_visitor_id_is_refused() {
    let mut app = spawn_app().await;
    let msg = refused(&mut app, request("", valid())).await;
    assert!(msg.starts_with("visitor_id:"), "{msg}");
    app.stop().await;
}

#[tokio::test]
async fn over_long_visitor_id_is_refused() {
    let mut app = spawn_app().await;
    let msg = refused(&mut app, request(&"x".repeat(257), valid())).await;
    assert!(
        msg.starts_with("visitor_id:") && msg.contains("257"),
        "{msg}"
    );
    app.stop().await;
}

#[tokio::test]
async fn unknown_event_type_is_refused_with_its_index() {
    let mut app = spawn_app().await;
    let mut events = valid();
    events.push(ev("hovered_logo", 10, ""));
    let msg = refused(&mut app, request("v", events)).await;
    assert!(
        msg.starts_with("events[2].type:") && msg.contains("hovered_logo"),
        "{msg}"
    );
    app.stop().await;
}

#[tokio::test]
async fn missing_time_is_refused() {
    let mut app = spawn_app().await;
    let mut events = valid();
    events[1].time = None;
    let msg = refused(&mut app, request("v", events)).await;
    assert!(msg.starts_with("events[1].time:"), "{msg}");
    app.stop().await;
}

#[tokio::test]
async fn time_beyond_the_allowed_clock_skew_is_refused() {
    let mut app = spawn_app().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut events = valid();
    // The default skew is 300 s; an hour ahead is too far.
    events[0].time = Some(ts(now + HOUR));
    let msg = refused(&mut app, request("v", events)).await;
    assert!(
        msg.starts_with("events[0].time:") && msg.contains("ahead"),
        "{msg}"
    );
    app.stop().await;
}

#[tokio::test]
async fn time_with_invalid_nanos_is_refused() {
    let mut app = spawn_app().await;
    let mut events = valid();
    events[0].time = Some(prost_types::Timestamp {
        seconds: AS_OF_SECS,
        nanos: -5,
    });
    let msg = refused(&mut app, request("v", events)).await;
    assert!(msg.starts_with("events[0].time:"), "{msg}");
    app.stop().await;
}

#[tokio::test]
async fn nan_and_infinite_values_are_refused() {
    let mut app = spawn_app().await;
    for (i, bad) in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY]
        .into_iter()
        .enumerate()
    {
        let mut events = valid();
        events[1].value = bad;
        let msg = refused(&mut app, request("v", events)).await;
        assert!(msg.starts_with("events[1].value:"), "case {i}: {msg}");
    }
    app.stop().await;
}

#[tokio::test]
async fn too_many_events_are_refused() {
    let mut settings = test_settings();
    settings.limits.max_events_per_request = 3;
    let mut app = spawn_app_with(settings).await;
    let events = (0..4).map(|i| ev("page_view", 100 + i, "")).collect();
    let msg = refused(&mut app, request("v", events)).await;
    assert!(
        msg.starts_with("events:") && msg.contains('4') && msg.contains('3'),
        "{msg}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_default_event_limit_is_ten_thousand() {
    let mut app = spawn_app().await;
    let at_limit: Vec<Event> = (0..10_000).map(|i| ev("page_view", 100 + i, "")).collect();
    let mut over = at_limit.clone();
    over.push(ev("page_view", 50, ""));

    let ok = app.client.score(request("v", at_limit)).await;
    let msg = refused(&mut app, request("v", over)).await;

    assert!(ok.is_ok(), "{ok:?}");
    assert!(msg.starts_with("events:") && msg.contains("10001"), "{msg}");
    app.stop().await;
}

#[tokio::test]
async fn too_many_visitors_in_a_batch_are_refused() {
    let mut settings = test_settings();
    settings.limits.max_visitors_per_batch = 2;
    let mut app = spawn_app_with(settings).await;
    let visitors = (0..3).map(|i| request(&format!("v{i}"), valid())).collect();

    let status = app
        .client
        .score_batch(ScoreBatchRequest { visitors })
        .await
        .expect_err("refused");

    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("visitors:"),
        "{}",
        status.message()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_bad_event_in_a_batch_names_the_visitor_and_the_event() {
    let mut app = spawn_app().await;
    let mut bad = valid();
    bad[1].value = f64::NAN;
    let visitors = vec![request("ok", valid()), request("bad", bad)];

    let status = app
        .client
        .score_batch(ScoreBatchRequest { visitors })
        .await
        .expect_err("refused");

    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("visitors[1].events[1].value:"),
        "{}",
        status.message()
    );
    app.stop().await;
}

#[tokio::test]
async fn invalid_as_of_and_reason_counts_are_refused() {
    let mut app = spawn_app().await;
    let mut req = request("v", valid());
    req.as_of = Some(prost_types::Timestamp {
        seconds: i64::MAX,
        nanos: 0,
    });
    let msg = refused(&mut app, req).await;
    assert!(msg.starts_with("as_of:"), "{msg}");

    let mut req = request("v", valid());
    req.max_reasons = 11;
    let msg = refused(&mut app, req).await;
    assert!(msg.starts_with("max_reasons:"), "{msg}");
    app.stop().await;
}

#[tokio::test]
async fn oversized_ids_and_attributes_are_refused() {
    let mut app = spawn_app().await;
    let mut events = valid();
    events[0].item_id = "i".repeat(300);
    let msg = refused(&mut app, request("v", events)).await;
    assert!(msg.starts_with("events[0].item_id:"), "{msg}");

    let mut events = valid();
    events[1].event_id = "e".repeat(200);
    let msg = refused(&mut app, request("v", events)).await;
    assert!(msg.starts_with("events[1].event_id:"), "{msg}");

    let mut events = valid();
    events[0].attributes = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
    let msg = refused(&mut app, request("v", events)).await;
    assert!(msg.starts_with("events[0].attributes:"), "{msg}");

    let mut events = valid();
    events[0].r#type = String::new();
    let msg = refused(&mut app, request("v", events)).await;
    assert!(msg.starts_with("events[0].type:"), "{msg}");
    app.stop().await;
}

#[tokio::test]
async fn the_server_keeps_serving_after_refusals() {
    let mut app = spawn_app().await;
    let _ = refused(&mut app, request("", valid())).await;
    let ok = app.client.score(request("v", valid())).await;
    assert!(ok.is_ok(), "{ok:?}");
    app.stop().await;
}

mod catalogue {
    //! One table of bad inputs across the three services: each is refused
    //! with its code and a message naming the field at fault, and the
    //! server keeps serving.

    use super::common::*;
    use rung::grpc::proto::audience_service_client::AudienceServiceClient;
    use rung::grpc::proto::model_service_client::ModelServiceClient;
    use rung::grpc::proto::*;
    use tonic::Code;

    enum Bad {
        Score(ScoreRequest),
        Batch(ScoreBatchRequest),
        Track(TrackRequest),
        Stream(Vec<TrackRequest>),
        Visitor(GetVisitorRequest),
        Forget(ForgetVisitorRequest),
        Put(PutSegmentRequest),
        Get(GetSegmentRequest),
        Delete(DeleteSegmentRequest),
        Count(CountSegmentRequest),
        Export(ExportSegmentRequest),
        Funnel(FunnelRequest),
        Reload(ReloadModelRequest),
    }

    fn now() -> i64 {
        now_secs()
    }

    fn at(secs: i64, nanos: i32) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: secs,
            nanos,
        })
    }

    fn good_event() -> Event {
        Event {
            r#type: "view_item".into(),
            time: at(now() - 60, 0),
            item_id: "sku-1".into(),
            ..Event::default()
        }
    }

    fn with(f: impl FnOnce(&mut Event)) -> Vec<Event> {
        let mut e = good_event();
        f(&mut e);
        vec![e]
    }

    fn score(events: Vec<Event>) -> Bad {
        Bad::Score(ScoreRequest {
            visitor_id: "v".into(),
            events,
            ..ScoreRequest::default()
        })
    }

    fn track(visitor: &str, events: Vec<Event>) -> Bad {
        Bad::Track(TrackRequest {
            visitor_id: visitor.into(),
            events,
        })
    }

    fn count(name: &str, definition: &str) -> Bad {
        Bad::Count(CountSegmentRequest {
            name: name.into(),
            definition: definition.into(),
            as_of: None,
        })
    }

    fn put(name: &str, definition: &str) -> Bad {
        Bad::Put(PutSegmentRequest {
            name: name.into(),
            definition: definition.into(),
            overwrite: true,
            ..Default::default()
        })
    }

    /// (what, request, code, words the message must contain — the field first).
    fn cases() -> Vec<(&'static str, Bad, Code, &'static str)> {
        use Code::{InvalidArgument as Invalid, PermissionDenied};
        let long = |n| "x".repeat(n);
        vec![
            (
                "empty visitor id",
                score(vec![]).with_visitor(""),
                Invalid,
                "visitor_id",
            ),
            (
                "257-byte visitor id",
                score(vec![]).with_visitor(&long(257)),
                Invalid,
                "visitor_id",
            ),
            (
                "unknown event type",
                score(with(|e| e.r#type = "hover".into())),
                Invalid,
                "events[0].type",
            ),
            (
                "empty event type",
                score(with(|e| e.r#type.clear())),
                Invalid,
                "events[0].type",
            ),
            (
                "129-byte event type",
                score(with(|e| e.r#type = long(129))),
                Invalid,
                "events[0].type",
            ),
            (
                "missing time",
                score(with(|e| e.time = None)),
                Invalid,
                "events[0].time",
            ),
            (
                "nanos out of range",
                score(with(|e| e.time = at(now(), 1_000_000_000))),
                Invalid,
                "events[0].time",
            ),
            (
                "negative nanos",
                score(with(|e| e.time = at(now(), -1))),
                Invalid,
                "events[0].time",
            ),
            (
                "a time a day ahead",
                score(with(|e| e.time = at(now() + 86_400, 0))),
                Invalid,
                "events[0].time",
            ),
            (
                "a time before year 0",
                score(with(|e| e.time = at(-70_000_000_000, 0))),
                Invalid,
                "events[0].time",
            ),
            (
                "NaN value",
                score(with(|e| e.value = f64::NAN)),
                Invalid,
                "events[0].value",
            ),
            (
                "infinite value",
                score(with(|e| e.value = f64::INFINITY)),
                Invalid,
                "events[0].value",
            ),
            (
                "257-byte item id",
                score(with(|e| e.item_id = long(257))),
                Invalid,
                "events[0].item_id",
            ),
            (
                "129-byte event id",
                score(with(|e| e.event_id = long(129))),
                Invalid,
                "events[0].event_id",
            ),
            (
                "65 attributes",
                score(with(|e| {
                    e.attributes = (0..65).map(|i| (format!("k{i}"), "v".into())).collect()
                })),
                Invalid,
                "events[0].attributes",
            ),
            (
                "an attribute of 1025 bytes",
                score(with(|e| {
                    e.attributes = [("k".to_string(), long(1024))].into()
                })),
                Invalid,
                "events[0].attributes",
            ),
            (
                "the second event bad",
                score([good_event(), with(|e| e.time = None).remove(0)].to_vec()),
                Invalid,
                "events[1].time",
            ),
            (
                "10,001 events",
                score((0..10_001).map(|_| good_event()).collect()),
                Invalid,
                "events",
            ),
            (
                "max_reasons 11",
                Bad::Score(ScoreRequest {
                    visitor_id: "v".into(),
                    max_reasons: 11,
                    ..Default::default()
                }),
                Invalid,
                "max_reasons",
            ),
            (
                "as_of with bad nanos",
                Bad::Score(ScoreRequest {
                    visitor_id: "v".into(),
                    as_of: at(now(), 2_000_000_000),
                    ..Default::default()
                }),
                Invalid,
                "as_of",
            ),
            (
                "1,001 visitors in a batch",
                Bad::Batch(ScoreBatchRequest {
                    visitors: (0..1001)
                        .map(|i| ScoreRequest {
                            visitor_id: format!("v{i}"),
                            ..Default::default()
                        })
                        .collect(),
                }),
                Invalid,
                "visitors",
            ),
            (
                "a batch's third visitor with a bad event",
                Bad::Batch(ScoreBatchRequest {
                    visitors: (0..3)
                        .map(|i| ScoreRequest {
                            visitor_id: format!("v{i}"),
                            events: if i == 2 {
                                with(|e| e.r#type = "hover".into())
                            } else {
                                vec![]
                            },
                            ..Default::default()
                        })
                        .collect(),
                }),
                Invalid,
                "visitors[2].events[0].type",
            ),
            (
                "a batch's second visitor without an id",
                Bad::Batch(ScoreBatchRequest {
                    visitors: vec![
                        ScoreRequest {
                            visitor_id: "v".into(),
                            ..Default::default()
                        },
                        ScoreRequest::default(),
                    ],
                }),
                Invalid,
                "visitors[1].visitor_id",
            ),
            (
                "a Track with no events",
                track("v", vec![]),
                Invalid,
                "events",
            ),
            (
                "a Track without a visitor",
                track("", vec![good_event()]),
                Invalid,
                "visitor_id",
            ),
            (
                "a Track of an unknown type",
                track("v", with(|e| e.r#type = "hover".into())),
                Invalid,
                "events[0].type",
            ),
            (
                "a Track older than retention",
                track("v", with(|e| e.time = at(now() - 200 * 86_400, 0))),
                Invalid,
                "events[0].time",
            ),
            (
                "a Track with a NaN value",
                track("v", with(|e| e.value = f64::NAN)),
                Invalid,
                "events[0].value",
            ),
            (
                "a TrackStream message with no events",
                Bad::Stream(vec![
                    TrackRequest {
                        visitor_id: "ok".into(),
                        events: vec![good_event()],
                    },
                    TrackRequest {
                        visitor_id: "empty".into(),
                        events: vec![],
                    },
                ]),
                Code::Ok,
                "events",
            ),
            (
                "GetVisitor without an id",
                Bad::Visitor(GetVisitorRequest::default()),
                Invalid,
                "visitor_id",
            ),
            (
                "GetVisitor with a 257-byte id",
                Bad::Visitor(GetVisitorRequest {
                    visitor_id: long(257),
                    ..Default::default()
                }),
                Invalid,
                "visitor_id",
            ),
            (
                "ForgetVisitor without an id",
                Bad::Forget(ForgetVisitorRequest::default()),
                Invalid,
                "visitor_id",
            ),
            (
                "a segment without a name",
                put("", "sessions > 1"),
                Invalid,
                "name",
            ),
            (
                "a segment name with a space",
                put("big spenders", "sessions > 1"),
                Invalid,
                "name",
            ),
            (
                "a 65-character segment name",
                put(&long(65), "sessions > 1"),
                Invalid,
                "name",
            ),
            (
                "a built-in segment's name",
                put("cart_abandoners", "sessions > 1"),
                Invalid,
                "name",
            ),
            ("an empty definition", put("s", ""), Invalid, "definition"),
            (
                "a definition that does not parse",
                put("s", "count(view_item"),
                Invalid,
                "definition",
            ),
            (
                "a definition with an unknown type",
                put("s", "count(hover) >= 1"),
                Invalid,
                "definition",
            ),
            (
                "GetSegment with a bad name",
                Bad::Get(GetSegmentRequest {
                    name: "no spaces allowed".into(),
                }),
                Invalid,
                "name",
            ),
            (
                "deleting a built-in segment",
                Bad::Delete(DeleteSegmentRequest {
                    name: "cart_abandoners".into(),
                }),
                Invalid,
                "name",
            ),
            (
                "a count with neither name nor definition",
                count("", ""),
                Invalid,
                "name",
            ),
            (
                "a count with both",
                count("cart_abandoners", "sessions > 1"),
                Invalid,
                "definition",
            ),
            (
                "a count of a bad definition",
                count("", "sessions >"),
                Invalid,
                "definition",
            ),
            (
                "a count as of a bad instant",
                Bad::Count(CountSegmentRequest {
                    name: "cart_abandoners".into(),
                    as_of: at(0, -5),
                    ..Default::default()
                }),
                Invalid,
                "as_of",
            ),
            (
                "an export resumed from a forged token",
                Bad::Export(ExportSegmentRequest {
                    name: "cart_abandoners".into(),
                    resume_token: "forged".into(),
                    ..Default::default()
                }),
                Invalid,
                "resume_token",
            ),
            (
                "an export of a bad definition",
                Bad::Export(ExportSegmentRequest {
                    definition: "stage in (nowhere)".into(),
                    ..Default::default()
                }),
                Invalid,
                "definition",
            ),
            (
                "a funnel without from",
                Bad::Funnel(FunnelRequest {
                    from: None,
                    to: at(now(), 0),
                }),
                Invalid,
                "from",
            ),
            (
                "a funnel without to",
                Bad::Funnel(FunnelRequest {
                    from: at(now() - 86_400, 0),
                    to: None,
                }),
                Invalid,
                "to",
            ),
            (
                "a funnel ending before it starts",
                Bad::Funnel(FunnelRequest {
                    from: at(now(), 0),
                    to: at(now() - 86_400, 0),
                }),
                Invalid,
                "to",
            ),
            (
                "a model path with a NUL byte",
                Bad::Reload(ReloadModelRequest {
                    path: "models/\0.json".into(),
                }),
                Invalid,
                "path",
            ),
            (
                "a model path outside model_dir",
                Bad::Reload(ReloadModelRequest {
                    path: "/etc/passwd".into(),
                }),
                PermissionDenied,
                "model_dir",
            ),
            (
                "a model path climbing out",
                Bad::Reload(ReloadModelRequest {
                    path: "models/../Cargo.toml".into(),
                }),
                PermissionDenied,
                "model_dir",
            ),
        ]
    }

    impl Bad {
        fn with_visitor(self, id: &str) -> Bad {
            match self {
                Bad::Score(mut r) => {
                    r.visitor_id = id.into();
                    Bad::Score(r)
                }
                other => other,
            }
        }
    }

    /// The code and message a bad request ends with (a TrackStream's first
    /// rejection reason, its call being OK).
    async fn send(app: &TestApp, bad: Bad) -> (Code, String) {
        let ch = app.channel.clone();
        let mut intent = app.client.clone();
        let mut audience = AudienceServiceClient::new(ch.clone());
        let mut model = ModelServiceClient::new(ch);
        let err = |s: tonic::Status| (s.code(), s.message().to_string());
        let result: Result<(), tonic::Status> = match bad {
            Bad::Score(r) => intent.score(r).await.map(drop),
            Bad::Batch(r) => intent.score_batch(r).await.map(drop),
            Bad::Track(r) => intent.track(r).await.map(drop),
            Bad::Stream(msgs) => {
                return match intent.track_stream(tokio_stream::iter(msgs)).await {
                    Ok(s) => {
                        let s = s.into_inner();
                        (
                            Code::Ok,
                            s.rejections
                                .first()
                                .map(|r| r.reason.clone())
                                .unwrap_or_default(),
                        )
                    }
                    Err(s) => err(s),
                }
            }
            Bad::Visitor(r) => intent.get_visitor(r).await.map(drop),
            Bad::Forget(r) => intent.forget_visitor(r).await.map(drop),
            Bad::Put(r) => audience.put_segment(r).await.map(drop),
            Bad::Get(r) => audience.get_segment(r).await.map(drop),
            Bad::Delete(r) => audience.delete_segment(r).await.map(drop),
            Bad::Count(r) => audience.count_segment(r).await.map(drop),
            Bad::Export(r) => match audience.export_segment(r).await {
                Err(s) => Err(s),
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(_)) => continue,
                            Ok(None) => break Ok(()),
                            Err(s) => break Err(s),
                        }
                    }
                }
            },
            Bad::Funnel(r) => audience.funnel(r).await.map(drop),
            Bad::Reload(r) => model.reload_model(r).await.map(drop),
        };
        match result {
            Ok(()) => (Code::Ok, String::new()),
            Err(s) => err(s),
        }
    }

    #[tokio::test]
    async fn every_bad_input_in_the_catalogue_gets_its_code_and_names_its_field() {
        let app = spawn_app().await;
        let cases = cases();
        assert!(cases.len() >= 50, "{} cases", cases.len());

        let mut wrong = Vec::new();
        for (what, bad, code, field) in cases {
            let (got, message) = send(&app, bad).await;
            if got != code || !message.contains(field) {
                wrong.push(format!(
                    "{what}: {got:?} {message:?}, expected {code:?} naming {field}"
                ));
            }
        }

        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        // Still serving, and nothing was stored by the refused Tracks.
        let mut client = app.client.clone();
        let gone = client
            .get_visitor(GetVisitorRequest {
                visitor_id: "v".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
        app.stop().await;
    }
}
