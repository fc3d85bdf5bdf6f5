//! The balancing policies over real sockets: least_request, weighted random,
//! consistent hashing (the same key on the same member, across requests and
//! connections, and few keys moved when a member comes), and sticky sessions
//! (cookie and URL parameter naming a member's route, the cookie Switchyard
//! sets, the fallback when the sticky member is disabled or killed). Every
//! test checks that each backend received exactly the requests the client
//! saw it answer.

use std::collections::HashMap;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_integration_tests::{
    Backend, Client, Fleet, Response, spawn_backend, spawn_echo_backend,
};
use tokio::task::JoinSet;

/// `PUT /api/v1/clusters/c` with `members` (each `{"url": …}` plus `extra`
/// fields) and the policy fields in `fields`.
fn cluster(members: &[(&Backend, Value)], fields: Value) -> Value {
    let members: Vec<Value> = members
        .iter()
        .map(|(backend, extra)| {
            let mut member = json!({ "url": backend.url() });
            if let (Some(member), Some(extra)) = (member.as_object_mut(), extra.as_object()) {
                member.extend(extra.clone());
            }
            member
        })
        .collect();
    let mut body = fields;
    body["members"] = json!(members);
    body
}

/// Which backend answered, by its body; panics on anything but a 200.
fn served_by(response: &Response) -> String {
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    response.body.clone()
}

/// Each backend received as many requests as the client saw it answer.
fn assert_received(backends: &[&Backend], answered: &HashMap<String, usize>) {
    for backend in backends {
        assert_eq!(
            backend.request_count(),
            answered.get(backend.body()).copied().unwrap_or(0),
            "backend {} received a different number of requests than it answered",
            backend.body()
        );
    }
}

fn tally(answered: &mut HashMap<String, usize>, by: String) {
    *answered.entry(by).or_default() += 1;
}

/// With one member slow (300 ms) and one fast, concurrent clients: the slow
/// one has requests in flight whenever a pick is made, so it gets few; round
/// robin would give it half.
#[tokio::test]
async fn least_request_sends_fewer_requests_to_a_slow_member() {
    let fast = spawn_backend("fast").await;
    let slow = spawn_echo_backend("slow").await;
    let body = json!({
        "policy": "least_request",
        "members": [ { "url": fast.url() }, { "url": slow.url() } ],
    });
    let fleet = Fleet::serving("least-request", &body).await;
    let url = fleet.replicas[0].url("/sleep?ms=300");
    let (clients, each) = (6, 15);
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let (client, url) = (Client::new(), url.clone());
        tasks.spawn(async move {
            let mut bodies = Vec::with_capacity(each);
            for _ in 0..each {
                bodies.push(served_by(&client.get(&url).await));
            }
            bodies
        });
    }
    let mut answered = HashMap::new();
    while let Some(bodies) = tasks.join_next().await {
        for body in bodies.expect("a client task ends") {
            tally(&mut answered, body);
        }
    }
    let (by_fast, by_slow) = (answered["fast"], answered.get("slow").copied().unwrap_or(0));
    assert_eq!(by_fast + by_slow, clients * each, "{answered:?}");
    assert_eq!(fast.request_count(), by_fast);
    assert_eq!(slow.request_count(), by_slow);
    assert!(
        by_slow * 4 < clients * each,
        "the slow member got {by_slow} of {} requests",
        clients * each
    );
}

/// Weights 1 and 3 over 400 requests: the heavy member's share is 300 ± 52
/// (six standard deviations), and every request reached exactly one member.
#[tokio::test]
async fn random_follows_the_weights() {
    let light = spawn_backend("light").await;
    let heavy = spawn_backend("heavy").await;
    let body = cluster(
        &[
            (&light, json!({ "weight": 1 })),
            (&heavy, json!({ "weight": 3 })),
        ],
        json!({ "policy": "random" }),
    );
    let fleet = Fleet::serving("random", &body).await;
    let client = Client::new();
    let mut answered = HashMap::new();
    for _ in 0..400 {
        tally(
            &mut answered,
            served_by(&client.get(&fleet.replicas[0].url("/")).await),
        );
    }
    let by_heavy = answered.get("heavy").copied().unwrap_or(0);
    assert!((248..=352).contains(&by_heavy), "{answered:?}");
    assert!(
        answered.get("light").copied().unwrap_or(0) > 0,
        "{answered:?}"
    );
    assert_received(&[&light, &heavy], &answered);
}

/// Who answers `GET /` for `key` in header `x-user`, once over a kept-alive
/// connection and once over a new one: the same member both times.
async fn owner_of(fleet: &Fleet, pooled: &Client, key: &str) -> String {
    let url = fleet.replicas[0].url("/");
    let first = served_by(&pooled.get_with(&url, &[("x-user", key)]).await);
    let fresh = Client::without_pool();
    let second = served_by(&fresh.get_with(&url, &[("x-user", key)]).await);
    assert_eq!(first, second, "key {key} went to two members");
    first
}

/// Each key always reaches the same member, across requests and
/// connections; when a fourth member comes, a key either stays or moves to
/// it, and about a quarter of them move.
#[tokio::test]
async fn consistent_hash_keeps_keys_on_their_member_and_moves_few() {
    let backends = [
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    ];
    let members: Vec<_> = backends.iter().map(|b| (b, json!({}))).collect();
    let body = cluster(
        &members,
        json!({ "policy": "consistent_hash", "hash_on": { "header": "x-user" } }),
    );
    let fleet = Fleet::serving("consistent-hash", &body).await;
    let client = Client::new();
    let keys: Vec<String> = (0..60).map(|k| format!("user-{k}")).collect();
    let mut before = HashMap::new();
    for key in &keys {
        before.insert(key.clone(), owner_of(&fleet, &client, key).await);
    }
    let mut answered = HashMap::new();
    for owner in before.values() {
        *answered.entry(owner.clone()).or_default() += 2;
    }
    assert!(
        answered.len() >= 2,
        "60 keys all on one member: {answered:?}"
    );
    // A request without the key is still served (by weighted random).
    tally(
        &mut answered,
        served_by(&client.get(&fleet.replicas[0].url("/")).await),
    );
    let refs: Vec<&Backend> = backends.iter().collect();
    assert_received(&refs, &answered);

    let d = spawn_backend("d").await;
    fleet
        .cp
        .write(
            Method::POST,
            "/api/v1/clusters/c/members?wait=5s",
            Some(&json!({ "url": d.url() })),
        )
        .await;
    let mut moved = 0;
    for key in &keys {
        let now = owner_of(&fleet, &client, key).await;
        tally(&mut answered, now.clone());
        tally(&mut answered, now.clone());
        if now != before[key] {
            assert_eq!(now, "d", "key {key} moved between members that stayed");
            moved += 1;
        }
    }
    // Expected 15 of 60 (σ ≈ 3.4).
    assert!((1..=36).contains(&moved), "{moved} of 60 keys moved");
    assert_received(&[&backends[0], &backends[1], &backends[2], &d], &answered);
}

/// Hashing on a cookie and on the client's address: the same value, the same member.
#[tokio::test]
async fn consistent_hash_on_a_cookie_or_the_client_address() {
    let backends = [spawn_backend("a").await, spawn_backend("b").await];
    let members: Vec<_> = backends.iter().map(|b| (b, json!({}))).collect();
    let body = cluster(
        &members,
        json!({ "policy": "consistent_hash", "hash_on": { "cookie": "user" } }),
    );
    let fleet = Fleet::serving("hash-cookie", &body).await;
    let url = fleet.replicas[0].url("/");
    let mut answered = HashMap::new();
    for user in ["alice", "bob", "carol", "dave"] {
        let cookie = format!("theme=dark; user={user}");
        let mut owners = Vec::new();
        for _ in 0..5 {
            let by = served_by(
                &Client::without_pool()
                    .get_with(&url, &[("cookie", &cookie)])
                    .await,
            );
            tally(&mut answered, by.clone());
            owners.push(by);
        }
        owners.dedup();
        assert_eq!(owners.len(), 1, "cookie user={user} went to {owners:?}");
    }
    assert_received(&[&backends[0], &backends[1]], &answered);

    let by_ip = cluster(
        &members,
        json!({ "policy": "consistent_hash", "hash_on": "client_ip" }),
    );
    fleet
        .cp
        .write(Method::PUT, "/api/v1/clusters/c?wait=5s", Some(&by_ip))
        .await;
    let mut owners = Vec::new();
    for _ in 0..10 {
        let by = served_by(&Client::without_pool().get(&url).await);
        tally(&mut answered, by.clone());
        owners.push(by);
    }
    owners.dedup();
    assert_eq!(owners.len(), 1, "one client address went to {owners:?}");
    assert_received(&[&backends[0], &backends[1]], &answered);
}

/// Apache's stickysession: the cookie's route part (after its first '.')
/// or the URL parameter (path `;jsessionid=` or query), URL first, names the
/// member by its route, or by its id when it has none. Without `set_cookie`
/// Switchyard sets no cookie.
#[tokio::test]
async fn sticky_cookie_and_url_parameter_name_the_member_by_route() {
    let backends = [
        spawn_backend("one").await,
        spawn_backend("two").await,
        spawn_backend("three").await,
    ];
    let body = cluster(
        &[
            (&backends[0], json!({ "route": "node1" })),
            (&backends[1], json!({ "route": "node2" })),
            (&backends[2], json!({})),
        ],
        json!({ "sticky": { "cookie": "JSESSIONID", "url_parameter": "jsessionid" } }),
    );
    let fleet = Fleet::serving("sticky", &body).await;
    let client = Client::new();
    let url = |path: &str| fleet.replicas[0].url(path);
    let third = backends[2].authority();
    let mut answered = HashMap::new();
    let mut expect = async |path: &str, cookie: Option<&str>, member: &str| {
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", *c)).collect();
        let response = client.get_with(&url(path), &headers).await;
        assert_eq!(served_by(&response), member, "{path} with {cookie:?}");
        assert_eq!(
            response.header("set-cookie"),
            None,
            "no set_cookie, no cookie"
        );
        tally(&mut answered, member.to_owned());
    };
    for _ in 0..5 {
        expect("/", Some("JSESSIONID=abc123.node2"), "two").await;
        expect("/", Some("a=1; JSESSIONID=node1"), "one").await;
        expect("/", Some(&format!("JSESSIONID=xyz.{third}")), "three").await;
        expect("/app;jsessionid=q.node1/page", None, "one").await;
        expect(
            "/app?x=1&jsessionid=q.node2",
            Some("JSESSIONID=z.node1"),
            "two",
        )
        .await;
    }
    // An unknown route: the policy picks; every member still answers some.
    for _ in 0..6 {
        let response = client
            .get_with(&url("/"), &[("cookie", "JSESSIONID=abc.gone")])
            .await;
        tally(&mut answered, served_by(&response));
    }
    assert_received(&[&backends[0], &backends[1], &backends[2]], &answered);
}

/// With `set_cookie`, a response whose request was not sticky to the member
/// that served it carries `Set-Cookie: SID=.ROUTE; Path=/; HttpOnly`; the
/// client sending it back is sticky, and gets no new cookie.
#[tokio::test]
async fn set_cookie_names_the_member_that_served() {
    let backends = [spawn_backend("one").await, spawn_backend("two").await];
    let body = cluster(
        &[
            (&backends[0], json!({ "route": "r1" })),
            (&backends[1], json!({ "route": "r2" })),
        ],
        json!({ "policy": "least_request", "sticky": { "cookie": "SID", "set_cookie": true } }),
    );
    let fleet = Fleet::serving("set-cookie", &body).await;
    let client = Client::new();
    let url = fleet.replicas[0].url("/");
    let route_of = |member: &str| if member == "one" { "r1" } else { "r2" };
    let mut answered = HashMap::new();
    for _ in 0..6 {
        let first = client.get(&url).await;
        let by = served_by(&first);
        tally(&mut answered, by.clone());
        let set = first
            .header("set-cookie")
            .expect("a new client gets a cookie");
        assert_eq!(set, format!("SID=.{}; Path=/; HttpOnly", route_of(&by)));
        let cookie = set.split(';').next().unwrap_or_default().to_owned();
        for _ in 0..3 {
            let again = client.get_with(&url, &[("cookie", &cookie)]).await;
            assert_eq!(served_by(&again), by, "{cookie} is sticky");
            assert_eq!(
                again.header("set-cookie"),
                None,
                "already sticky: no new cookie"
            );
            tally(&mut answered, by.clone());
        }
    }
    let stale = client.get_with(&url, &[("cookie", "SID=abc.r9")]).await;
    let by = served_by(&stale);
    assert_eq!(
        stale.header("set-cookie"),
        Some(format!("SID=.{}; Path=/; HttpOnly", route_of(&by)).as_str())
    );
    tally(&mut answered, by);
    assert_received(&[&backends[0], &backends[1]], &answered);
}

/// The sticky member disabled: another member serves and the cookie moves
/// to it; enabled again, it is sticky again. The sticky member killed: the
/// request still succeeds on another member, which the new cookie names.
#[tokio::test]
async fn sticky_falls_back_when_its_member_is_disabled_or_killed() {
    let mut backends = [
        spawn_backend("one").await,
        spawn_backend("two").await,
        spawn_backend("three").await,
    ];
    let body = cluster(
        &[
            (&backends[0], json!({ "route": "r1" })),
            (&backends[1], json!({ "route": "r2" })),
            (&backends[2], json!({ "route": "r3" })),
        ],
        json!({ "sticky": { "cookie": "SID", "set_cookie": true } }),
    );
    let fleet = Fleet::serving("sticky-fallback", &body).await;
    let url = fleet.replicas[0].url("/");
    let route_of = |member: &str| match member {
        "one" => "r1",
        "two" => "r2",
        _ => "r3",
    };
    let mut answered = HashMap::new();
    let send = async |cookie: &str| {
        let response = Client::without_pool()
            .get_with(&url, &[("cookie", cookie)])
            .await;
        let by = served_by(&response);
        (by, response.header("set-cookie").map(str::to_owned))
    };
    let (by, set) = send("SID=s.r1").await;
    assert_eq!((by.as_str(), set), ("one", None));
    tally(&mut answered, by);

    let patch = |state: &str| json!({ "state": state });
    let one = format!(
        "/api/v1/clusters/c/members/{}?wait=5s",
        backends[0].authority()
    );
    fleet
        .cp
        .write(Method::PATCH, &one, Some(&patch("disabled")))
        .await;
    for _ in 0..4 {
        let (by, set) = send("SID=s.r1").await;
        assert_ne!(by, "one", "a disabled member takes nothing");
        assert_eq!(
            set,
            Some(format!("SID=.{}; Path=/; HttpOnly", route_of(&by)))
        );
        tally(&mut answered, by);
    }
    assert_received(&[&backends[0], &backends[1], &backends[2]], &answered);
    fleet
        .cp
        .write(Method::PATCH, &one, Some(&patch("active")))
        .await;
    let (by, set) = send("SID=s.r1").await;
    assert_eq!(
        (by.as_str(), set),
        ("one", None),
        "sticky again once enabled"
    );
    tally(&mut answered, by);

    backends[1].stop().await;
    let before = backends[1].request_count();
    for _ in 0..4 {
        let (by, set) = send("SID=s.r2").await;
        assert_ne!(by, "two");
        assert_eq!(
            set,
            Some(format!("SID=.{}; Path=/; HttpOnly", route_of(&by)))
        );
        tally(&mut answered, by);
    }
    assert_eq!(
        backends[1].request_count(),
        before,
        "a killed member receives nothing"
    );
    assert_received(&[&backends[0], &backends[1], &backends[2]], &answered);
}
