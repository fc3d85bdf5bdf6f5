//! gRPC end to end: a real tonic client over h2c to a replica, whose cluster
//! (`protocol: "h2c"`) leads to a real tonic server. All four kinds of call,
//! `grpc-status` / `grpc-message` intact (in trailers, and in a
//! trailers-only answer), deadlines (the client's, and a `response_timeout`
//! shorter than it), streams sharing a bounded number of member connections,
//! and a member's `SETTINGS_MAX_CONCURRENT_STREAMS` respected.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};
use switchyard_integration_tests::Fleet;
use switchyard_integration_tests::conn::h2_connect;
use switchyard_integration_tests::eventually::eventually;
use switchyard_integration_tests::grpc_backend::pb::echo_client::EchoClient;
use switchyard_integration_tests::grpc_backend::pb::{EchoReply, EchoRequest};
use switchyard_integration_tests::grpc_backend::{GrpcBackend, spawn_grpc_backend};
use tonic::transport::Channel;
use tonic::{Code, Request};

/// The longest any one call of these tests may take.
const CALL_LIMIT: Duration = Duration::from_secs(10);

/// One replica (one worker, so member connections are counted per worker)
/// with route `/` to an `h2c` cluster of `member`, with `extra` cluster fields.
async fn fleet_for(label: &str, member: &GrpcBackend, extra: Value) -> Fleet {
    let mut cluster = json!({ "protocol": "h2c", "members": [{ "url": member.url() }] });
    if let (Some(cluster), Some(extra)) = (cluster.as_object_mut(), extra.as_object()) {
        cluster.extend(extra.clone());
    }
    Fleet::serving_with(label, &cluster, |options| {
        options.env("SWITCHYARD_WORKERS", "1")
    })
    .await
}

async fn client(fleet: &Fleet) -> EchoClient<Channel> {
    let url = format!("http://{}", fleet.replicas[0].proxy_addr());
    let channel = tokio::time::timeout(
        CALL_LIMIT,
        Channel::from_shared(url).expect("a URL").connect(),
    )
    .await
    .expect("the replica accepts within the limit")
    .expect("a gRPC channel to the replica (h2c)");
    EchoClient::new(channel)
}

fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
        ..EchoRequest::default()
    }
}

async fn within<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(CALL_LIMIT, call)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {CALL_LIMIT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_calls_of_every_kind_pass_through() {
    let member = spawn_grpc_backend(None).await;
    let fleet = fleet_for("grpc-kinds", &member, json!({})).await;
    let mut client = client(&fleet).await;

    let reply = within("unary", client.unary(echo("hello")))
        .await
        .expect("a unary answer");
    assert_eq!(reply.get_ref().message, "unary: hello");
    assert_eq!(member.calls(), 1, "one call at the member per client call");

    let mut request = echo("tick");
    request.count = 5;
    let mut stream = within("server streaming", client.server_stream(request))
        .await
        .expect("a server stream")
        .into_inner();
    let mut indexes = Vec::new();
    while let Some(reply) = within("the next reply", stream.message())
        .await
        .expect("a reply")
    {
        assert_eq!(reply.message, "tick");
        indexes.push(reply.index);
    }
    assert_eq!(indexes, vec![0, 1, 2, 3, 4], "every reply, in order");

    let uploads = futures_util::stream::iter(["a", "b", "c"].map(echo));
    let reply = within("client streaming", client.client_stream(uploads))
        .await
        .expect("a client-streaming answer");
    assert_eq!(reply.get_ref().message, "a,b,c");
    assert_eq!(reply.get_ref().index, 3);

    // Bidirectional, in lock step: each reply comes before the next message goes.
    let (send, receive) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    let outgoing = tokio_stream::wrappers::ReceiverStream::new(receive);
    send.send(echo("one"))
        .await
        .expect("the first message is taken");
    let mut replies = within("bidi", client.bidi(outgoing))
        .await
        .expect("a bidi stream")
        .into_inner();
    let mut seen: Vec<EchoReply> = Vec::new();
    for next in ["two", "three"] {
        let reply = within("a bidi reply", replies.message())
            .await
            .expect("a reply");
        seen.push(reply.expect("a reply before the end"));
        send.send(echo(next))
            .await
            .expect("the next message is taken");
    }
    seen.push(
        within("the last bidi reply", replies.message())
            .await
            .expect("a reply")
            .expect("a reply before the end"),
    );
    drop(send);
    let end = within("the end of the bidi stream", replies.message()).await;
    assert!(matches!(end, Ok(None)), "the stream ends with OK: {end:?}");
    let messages: Vec<&str> = seen.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(messages, ["bidi: one", "bidi: two", "bidi: three"]);
    assert_eq!(member.calls(), 4, "four calls, each once at the member");
    assert_eq!(member.cancelled(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_status_and_message_reach_the_client() {
    let member = spawn_grpc_backend(None).await;
    let fleet = fleet_for("grpc-status", &member, json!({})).await;
    let mut client = client(&fleet).await;

    // A trailers-only answer: the status in the head that ends the stream.
    let mut request = echo("no such greeting");
    request.fail_code = Code::NotFound as u32;
    let status = within("a failing unary call", client.unary(request))
        .await
        .expect_err("the member's status");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "no such greeting");

    // Replies, then the status in real trailers after the data.
    let mut request = echo("partial");
    request.count = 2;
    request.fail_code = Code::FailedPrecondition as u32;
    let mut stream = within("a failing stream", client.server_stream(request))
        .await
        .expect("the stream starts")
        .into_inner();
    for index in 0..2 {
        let reply = within("a reply", stream.message()).await.expect("a reply");
        assert_eq!(reply.map(|r| r.index), Some(index));
    }
    let status = within("the trailers", stream.message())
        .await
        .expect_err("the status from the trailers");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), "partial");
    assert_eq!(member.calls(), 2);
}

/// A deadline the member enforces: a gRPC call made by hand over h2c (so no
/// client-side timer races the member's), `grpc-timeout: 300m`, to a member
/// that would answer after 30 s: the member's deadline answer comes back
/// intact (tonic's server says CANCELLED, "Timeout expired"), and its call
/// was ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_the_member_enforces_comes_back_with_its_status() {
    let member = spawn_grpc_backend(None).await;
    let fleet = fleet_for("grpc-deadline", &member, json!({})).await;
    let replica = fleet.replicas[0].proxy_addr();
    let mut sender = h2_connect::<Full<Bytes>>(replica)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut call = echo("slow");
    call.delay_ms = 30_000;
    let message = prost::Message::encode_to_vec(&call);
    let mut framed = vec![0u8];
    framed.extend_from_slice(
        &u32::try_from(message.len())
            .expect("a small message")
            .to_be_bytes(),
    );
    framed.extend_from_slice(&message);
    let request = http::Request::post(format!("http://{replica}/switchyard.test.v1.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(Full::new(Bytes::from(framed)))
        .expect("a valid request");
    let answered = within("a call past its deadline", async {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let collected = body.collect().await?;
        anyhow::Ok((parts, collected.trailers().cloned()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let (parts, trailers) = answered;
    assert_eq!(parts.status, http::StatusCode::OK);
    // Trailers-only: the status is in the head (or, from some servers, in trailers).
    let field = |name: &str| {
        parts
            .headers
            .get(name)
            .or_else(|| trailers.as_ref().and_then(|t| t.get(name)))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        field("grpc-status").as_deref(),
        Some("1"),
        "{parts:?} {trailers:?}"
    );
    assert_eq!(field("grpc-message").as_deref(), Some("Timeout%20expired"));
    assert_eq!(
        member.last_timeout().as_deref(),
        Some("300m"),
        "grpc-timeout passed through"
    );
    eventually(
        "the member's call is ended",
        CALL_LIMIT,
        async || match member.cancelled() {
            1 => Ok(()),
            n => Err(format!("{n} cancelled")),
        },
    )
    .await;
    assert_eq!(member.calls(), 1);
}

/// A tonic client's own deadline: it resets its stream at the deadline; the
/// replica resets the member's (whose delay is far longer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_at_its_deadline_resets_the_members_stream() {
    let member = spawn_grpc_backend(None).await;
    let fleet = fleet_for("grpc-client-deadline", &member, json!({})).await;
    let mut client = client(&fleet).await;
    let mut request = echo("slow");
    request.delay_ms = 30_000;
    let mut request = Request::new(request);
    request.set_timeout(Duration::from_millis(300));
    let status = within("a call past its deadline", client.unary(request))
        .await
        .expect_err("the deadline passes first");
    // tonic reports its own deadline as CANCELLED ("Timeout expired"); the
    // member's DEADLINE_EXCEEDED, if it came first.
    assert!(
        matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{status:?}"
    );
    eventually(
        "the member's call is ended",
        CALL_LIMIT,
        async || match member.cancelled() {
            1 => Ok(()),
            n => Err(format!("{n} cancelled")),
        },
    )
    .await;
    assert_eq!(member.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_timeout_shorter_than_grpc_timeout_applies_and_resets_the_members_stream() {
    let member = spawn_grpc_backend(None).await;
    let fleet = fleet_for(
        "grpc-response-timeout",
        &member,
        json!({ "response_timeout": "300ms" }),
    )
    .await;
    let mut client = client(&fleet).await;

    let mut request = echo("slow");
    request.delay_ms = 30_000;
    let mut request = Request::new(request);
    // Far longer than the test waits: only the proxy's clock can end the call.
    request.set_timeout(Duration::from_secs(60));
    let status = within("a call past the response timeout", client.unary(request))
        .await
        .expect_err("the replica's response timeout ends it");
    // The replica's own answer, in gRPC's terms: DEADLINE_EXCEEDED.
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("did not answer within"),
        "{status:?}"
    );
    eventually(
        "the member sees its stream reset",
        CALL_LIMIT,
        async || match member.cancelled() {
            1 => Ok(()),
            n => Err(format!("{n} cancelled")),
        },
    )
    .await;
    assert_eq!(
        member.calls(),
        1,
        "a POST that reached the member is not sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_share_one_member_connection() {
    let member = spawn_grpc_backend(None).await;
    let fleet = fleet_for("grpc-shared", &member, json!({})).await;
    let calls = 48;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(client(&fleet).await);
    }
    let mut running = tokio::task::JoinSet::new();
    for n in 0..calls {
        let mut client = clients[n % clients.len()].clone();
        running.spawn(async move {
            let mut request = echo(&format!("call {n}"));
            request.delay_ms = 200;
            within("a concurrent call", client.unary(request)).await
        });
    }
    let mut answered = 0;
    while let Some(done) = running.join_next().await {
        let reply = done.expect("the call task ends").expect("an answer");
        assert!(reply.get_ref().message.starts_with("unary: call "));
        answered += 1;
    }
    assert_eq!(answered, calls);
    assert_eq!(member.calls(), calls, "each call once at the member");
    assert!(member.max_in_flight() > 1, "the calls ran at the same time");
    // Four client connections, one worker: its streams share one connection.
    assert_eq!(member.connections(), 1, "member connections");
}

/// 3×N concurrent calls to a member that allows N streams per connection:
/// all are served, each once at the member, on more connections (at most
/// four per worker). `warm`: after a first call, so the member's SETTINGS
/// are known; cold, the burst meets them on the first connection (streams
/// past the limit are refused, unprocessed, and go again).
async fn three_times_n_concurrent_calls(label: &str, warm: bool) {
    const N: u32 = 2;
    let member = spawn_grpc_backend(Some(N)).await;
    let fleet = fleet_for(label, &member, json!({})).await;
    let mut client = client(&fleet).await;
    if warm {
        within("a first call", client.unary(echo("first")))
            .await
            .expect("an answer");
    }
    let calls = 3 * N as usize;
    let mut running = tokio::task::JoinSet::new();
    for n in 0..calls {
        let mut client = client.clone();
        running.spawn(async move {
            let mut request = echo(&format!("call {n}"));
            request.delay_ms = 300;
            within("a concurrent call", client.unary(request)).await
        });
    }
    while let Some(done) = running.join_next().await {
        done.expect("the call task ends").expect("an answer");
    }
    assert_eq!(
        member.calls(),
        calls + usize::from(warm),
        "each call once at the member"
    );
    let connections = member.connections();
    assert!(
        (2..=4).contains(&connections),
        "more connections once one is full, at most 4 per worker: {connections}"
    );
    assert!(
        member.max_in_flight() > N as usize,
        "more than one connection's worth ran at once: {}",
        member.max_in_flight()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_allowing_n_streams_serves_three_times_n_concurrent_calls() {
    three_times_n_concurrent_calls("grpc-max-streams", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_burst_past_the_members_stream_limit_is_served_once_each() {
    three_times_n_concurrent_calls("grpc-max-streams-cold", false).await;
}
