//! What a client sees through the proxy: bodies, the headers a member gets,
//! routing, the balancing sequence, member states and members that refuse
//! connections.

use http::{Method, StatusCode};
use serde_json::json;
use switchyard_integration_tests::{Backend, DataPlane, Fleet, bodies, spawn_backend};

/// The bodies of `n` sequential `GET path` through `replica`; panics on a non-200.
async fn bodies_of(replica: &DataPlane, path: &str, n: usize) -> Vec<String> {
    let mut bodies = Vec::with_capacity(n);
    for _ in 0..n {
        let response = replica.get(path).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "GET {path} through {}: {:?}",
            replica.node_id(),
            response.body
        );
        bodies.push(response.body);
    }
    bodies
}

/// Seed example 1: one member behind `/`; the member sees the client's `Host`
/// with `preserve_host` and its own without, and the forwarding headers.
#[tokio::test]
async fn hello_world_with_preserved_host_and_forwarding_headers() {
    let fleet = Fleet::start("hello-world", 1).await;
    let (cp, replica) = (&fleet.cp, &fleet.replicas[0]);
    let backend = spawn_backend("Hello world!").await;
    cp.write(
        Method::PUT,
        "/api/v1/clusters/mycluster",
        Some(&bodies::cluster(&[(&backend, 1)])),
    )
    .await;
    let version = cp
        .write(
            Method::PUT,
            "/api/v1/routes/web?wait=5s",
            Some(&bodies::route("/", "mycluster")),
        )
        .await;
    assert_eq!(
        replica.running_version().await,
        version,
        "?wait answered before the replica ran it"
    );

    let response = replica.get_with("/", &[("host", "example.test")]).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.body, "Hello world!");
    assert_eq!(response.header("x-backend"), Some("Hello world!"));
    let seen = backend.last_request().expect("the member got the request");
    assert_eq!(seen.path, "/");
    assert_eq!(seen.header("host").as_deref(), Some("example.test"));
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("example.test")
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    // What the member answered reaches the client unchanged.
    assert_eq!(response.header("x-seen-host"), Some("example.test"));

    // A client's own X-Forwarded-For is kept, with the client's address appended.
    replica
        .get_with(
            "/",
            &[("host", "example.test"), ("x-forwarded-for", "203.0.113.7")],
        )
        .await;
    let seen = backend.last_request().expect("the member got the request");
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );

    let mut route = bodies::route("/", "mycluster");
    route["preserve_host"] = json!(false);
    let version = cp
        .write(Method::PUT, "/api/v1/routes/web?wait=5s", Some(&route))
        .await;
    assert_eq!(replica.running_version().await, version);
    let response = replica.get_with("/", &[("host", "example.test")]).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.body, "Hello world!");
    let seen = backend.last_request().expect("the member got the request");
    assert_eq!(
        seen.header("host"),
        Some(backend.authority()),
        "without preserve_host"
    );
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("example.test")
    );
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
}

/// Hop-by-hop headers (and those `Connection` names) never reach the member.
#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let fleet = Fleet::start("hop-by-hop", 1).await;
    let (cp, replica) = (&fleet.cp, &fleet.replicas[0]);
    let backend = spawn_backend("Hello world!").await;
    cp.write(
        Method::PUT,
        "/api/v1/clusters/mycluster",
        Some(&bodies::cluster(&[(&backend, 1)])),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/web?wait=5s",
        Some(&bodies::route("/", "mycluster")),
    )
    .await;

    let response = replica
        .get_with(
            "/",
            &[
                ("connection", "x-secret"),
                ("x-secret", "for the proxy only"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("te", "trailers"),
                ("x-regular", "yes"),
            ],
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    let seen = backend.last_request().expect("the member got the request");
    for name in ["x-secret", "keep-alive", "proxy-connection", "te"] {
        assert_eq!(
            seen.header(name),
            None,
            "{name} reached the member: {:?}",
            seen.headers
        );
    }
    if let Some(connection) = seen.header("connection") {
        assert!(
            !connection.to_ascii_lowercase().contains("x-secret"),
            "the client's Connection header reached the member: {connection}"
        );
    }
    assert_eq!(
        seen.header("x-regular").as_deref(),
        Some("yes"),
        "end-to-end headers are kept"
    );
}

/// Routing: no route → 404; host routes before host-less ones; the longest
/// prefix wins; the prefix is rewritten.
#[tokio::test]
async fn routes_match_by_host_then_longest_prefix_and_rewrite_it() {
    let fleet = Fleet::start("routing", 1).await;
    let (cp, replica) = (&fleet.cp, &fleet.replicas[0]);
    let (root, api, host) = (
        spawn_backend("root").await,
        spawn_backend("api").await,
        spawn_backend("api-host").await,
    );
    for (name, backend) in [("root", &root), ("api", &api), ("apihost", &host)] {
        cp.write(
            Method::PUT,
            &format!("/api/v1/clusters/{name}"),
            Some(&bodies::cluster(&[(backend, 1)])),
        )
        .await;
    }
    let mut api_route = bodies::route("/api/", "api");
    api_route["rewrite_prefix"] = json!("/v2/");
    cp.write(Method::PUT, "/api/v1/routes/api?wait=5s", Some(&api_route))
        .await;

    let response = replica.get("/elsewhere").await;
    assert_eq!(
        response.status,
        StatusCode::NOT_FOUND,
        "no route matches: {response:?}"
    );
    assert_eq!(root.request_count() + api.request_count(), 0);

    cp.write(
        Method::PUT,
        "/api/v1/routes/root",
        Some(&bodies::route("/", "root")),
    )
    .await;
    let mut host_route = bodies::route("/", "apihost");
    host_route["host"] = json!("api.example.test");
    cp.write(
        Method::PUT,
        "/api/v1/routes/apihost?wait=5s",
        Some(&host_route),
    )
    .await;

    let cases = [
        ("www.example.test", "/elsewhere", "root", "/elsewhere"),
        ("www.example.test", "/apix", "root", "/apix"),
        (
            "www.example.test",
            "/api/users?page=2",
            "api",
            "/v2/users?page=2",
        ),
        ("api.example.test", "/api/users", "api-host", "/api/users"),
        ("api.example.test:8080", "/", "api-host", "/"),
    ];
    for (host_header, path, body, member_path) in cases {
        let response = replica.get_with(path, &[("host", host_header)]).await;
        assert_eq!(
            (
                response.status,
                response.body.as_str(),
                response.header("x-seen-path")
            ),
            (StatusCode::OK, body, Some(member_path)),
            "GET {path} with Host {host_header}"
        );
    }
}

/// `rewrite_redirects` (ProxyPassReverse): a `Location` pointing at the member
/// is turned into the client-facing address under the route's prefix.
#[tokio::test]
async fn redirects_from_a_member_are_rewritten_to_the_client_facing_address() {
    let fleet = Fleet::start("redirects", 1).await;
    let (cp, replica) = (&fleet.cp, &fleet.replicas[0]);
    let backend = spawn_backend("app").await;
    cp.write(
        Method::PUT,
        "/api/v1/clusters/app",
        Some(&bodies::cluster(&[(&backend, 1)])),
    )
    .await;
    let mut route = bodies::route("/app/", "app");
    route["rewrite_prefix"] = json!("/");
    cp.write(Method::PUT, "/api/v1/routes/app?wait=5s", Some(&route))
        .await;

    let response = replica
        .get_with("/app/redirect", &[("host", "example.test")])
        .await;
    assert_eq!(response.status, StatusCode::FOUND, "{response:?}");
    assert_eq!(response.header("x-seen-path"), Some("/redirect"));
    assert_eq!(
        response.header("location"),
        Some("http://example.test/app/landed"),
        "the member said {}/landed",
        backend.url()
    );

    route["rewrite_redirects"] = json!(false);
    cp.write(Method::PUT, "/api/v1/routes/app?wait=5s", Some(&route))
        .await;
    let response = replica
        .get_with("/app/redirect", &[("host", "example.test")])
        .await;
    let untouched = format!("{}/landed", backend.url());
    assert_eq!(response.header("location"), Some(untouched.as_str()));
}

/// Seed example 2: two members alternate strictly through each replica; weights
/// 5:1:1 give the smooth sequence a a b a c a a on a fresh cluster.
#[tokio::test]
async fn round_robin_alternates_and_weights_are_smooth_on_every_replica() {
    let fleet = Fleet::start("round-robin", 2).await;
    let cp = &fleet.cp;
    let hello = spawn_backend("Hello world!").await;
    let howdy = spawn_backend("Howdy world!").await;
    cp.write(
        Method::PUT,
        "/api/v1/clusters/mycluster",
        Some(&bodies::cluster(&[(&hello, 1), (&howdy, 1)])),
    )
    .await;
    let version = cp
        .write(
            Method::PUT,
            "/api/v1/routes/web?wait=5s",
            Some(&bodies::route("/", "mycluster")),
        )
        .await;
    fleet.wait_synced(version).await;
    for replica in &fleet.replicas {
        let seen = bodies_of(replica, "/", 10).await;
        let alternates = seen.windows(2).all(|w| w[0] != w[1]);
        let only_members = seen.iter().all(|b| b == hello.body() || b == howdy.body());
        assert!(
            alternates && only_members,
            "{}: {seen:?}",
            replica.node_id()
        );
    }

    let (a, b, c) = (
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    );
    cp.write(
        Method::PUT,
        "/api/v1/clusters/weighted",
        Some(&bodies::cluster(&[(&a, 5), (&b, 1), (&c, 1)])),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/weighted?wait=5s",
        Some(&bodies::route("/weighted/", "weighted")),
    )
    .await;
    let expected = smooth_sequence_5_1_1(&fleet, &[&a, &b, &c]).await;
    for replica in &fleet.replicas {
        let seen = bodies_of(replica, "/weighted/", 14).await.concat();
        assert_eq!(seen, expected.repeat(2), "{}", replica.node_id());
    }
}

/// `aabacaa` with b and c in the order the control plane keeps the members
/// (ties go to the first in order).
async fn smooth_sequence_5_1_1(fleet: &Fleet, members: &[&Backend; 3]) -> String {
    let cluster = fleet.cp.get("/api/v1/clusters/weighted").await.json();
    let ids: Vec<&str> = cluster["members"]
        .as_array()
        .expect("a cluster has members")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    let position = |backend: &Backend| ids.iter().position(|id| *id == backend.authority());
    let (b, c) = (members[1], members[2]);
    let (first, second) = if position(b) < position(c) {
        (b, c)
    } else {
        (c, b)
    };
    format!("aa{}a{}aa", first.body(), second.body())
}

/// A member that refuses connections is skipped (the client still gets 200);
/// with every member down the client gets 503.
#[tokio::test]
async fn a_member_refusing_connections_is_skipped_and_none_left_is_503() {
    let fleet = Fleet::start("member-down", 1).await;
    let (cp, replica) = (&fleet.cp, &fleet.replicas[0]);
    let mut up = spawn_backend("up").await;
    let mut down = spawn_backend("down").await;
    let mut cluster = bodies::cluster(&[(&up, 1), (&down, 1)]);
    cluster["retry_window"] = json!("30s");
    cp.write(Method::PUT, "/api/v1/clusters/mycluster", Some(&cluster))
        .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/web?wait=5s",
        Some(&bodies::route("/", "mycluster")),
    )
    .await;
    let before = bodies_of(replica, "/", 4).await;
    assert!(
        before.contains(&"down".to_owned()),
        "both members answer at first: {before:?}"
    );

    down.stop().await;
    let after = bodies_of(replica, "/", 10).await;
    assert!(after.iter().all(|b| b == "up"), "{after:?}");

    up.stop().await;
    for _ in 0..5 {
        let response = replica.get("/").await;
        assert_eq!(
            response.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{response:?}"
        );
    }
}

/// Standby members take traffic only when no active one is usable; disabled
/// and draining members take no new requests.
#[tokio::test]
async fn member_states_decide_who_takes_new_requests() {
    let fleet = Fleet::start("member-states", 1).await;
    let (cp, replica) = (&fleet.cp, &fleet.replicas[0]);
    let active = spawn_backend("active").await;
    let standby = spawn_backend("standby").await;
    let disabled = spawn_backend("disabled").await;
    let cluster = json!({ "members": [
        { "url": active.url(), "weight": 1, "state": "active" },
        { "url": standby.url(), "weight": 1, "state": "standby" },
        { "url": disabled.url(), "weight": 1, "state": "disabled" },
    ]});
    cp.write(Method::PUT, "/api/v1/clusters/mycluster", Some(&cluster))
        .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/web?wait=5s",
        Some(&bodies::route("/", "mycluster")),
    )
    .await;
    let seen = bodies_of(replica, "/", 6).await;
    assert!(seen.iter().all(|b| b == "active"), "{seen:?}");

    let member = |b: &Backend| {
        format!(
            "/api/v1/clusters/mycluster/members/{}?wait=5s",
            b.authority()
        )
    };
    cp.write(
        Method::PATCH,
        &member(&active),
        Some(&json!({ "state": "disabled" })),
    )
    .await;
    let seen = bodies_of(replica, "/", 6).await;
    assert!(
        seen.iter().all(|b| b == "standby"),
        "no active member left: {seen:?}"
    );

    cp.write(
        Method::PATCH,
        &member(&standby),
        Some(&json!({ "state": "draining" })),
    )
    .await;
    let response = replica.get("/").await;
    assert_eq!(
        response.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{response:?}"
    );
    assert_eq!(
        disabled.request_count(),
        0,
        "a disabled member got requests"
    );
}
