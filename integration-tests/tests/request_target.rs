//! The request target as RFC 9112 §3.2 reads it: the host is the authority of
//! an absolute-form URI, else the one `Host` header (two, none on HTTP/1.1, or
//! an invalid one: 400); the path's dot segments are resolved (`%2e` and
//! `%2f` included) before routing and before the member sees it, so a route
//! prefix is a real boundary.

use http::Method;
use serde_json::json;
use switchyard_integration_tests::raw_client::{exchange, header_of, status_of};
use switchyard_integration_tests::{EchoBackend, Fleet, bodies, spawn_echo_backend};

/// Clusters `a`, `b`, `app` and `root`; routes: host `a.example` → `a`, host
/// `b.example` → `b`, `/app/` → `app` (rewritten to `/public/`), `/` → `root`.
async fn fleet(label: &str, backends: &[&EchoBackend]) -> Fleet {
    let fleet = Fleet::start(label, 1).await;
    let cp = &fleet.cp;
    for backend in backends {
        cp.write(
            Method::PUT,
            &format!("/api/v1/clusters/{}", backend.name()),
            Some(&json!({ "members": [ { "url": backend.url(), "weight": 1 } ] })),
        )
        .await;
    }
    for host in ["a", "b"] {
        let mut route = bodies::route("/", host);
        route["host"] = json!(format!("{host}.example"));
        cp.write(Method::PUT, &format!("/api/v1/routes/{host}"), Some(&route))
            .await;
    }
    let mut app = bodies::route("/app/", "app");
    app["rewrite_prefix"] = json!("/public/");
    cp.write(Method::PUT, "/api/v1/routes/app", Some(&app))
        .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/root?wait=5s",
        Some(&bodies::route("/", "root")),
    )
    .await;
    fleet
}

#[tokio::test]
async fn the_host_is_the_absolute_forms_authority_else_the_one_valid_host_header() {
    let (a, b, app, root) = (
        spawn_echo_backend("a").await,
        spawn_echo_backend("b").await,
        spawn_echo_backend("app").await,
        spawn_echo_backend("root").await,
    );
    let fleet = fleet("host-rules", &[&a, &b, &app, &root]).await;
    let proxy = fleet.replicas[0].proxy_addr();

    let absolute = exchange(
        proxy,
        b"GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&absolute), 200, "{absolute}");
    assert_eq!(header_of(&absolute, "x-backend"), Some("a"), "{absolute}");
    assert_eq!(header_of(&absolute, "x-seen-path"), Some("/x"));
    // The route preserves the client's host: the member gets the URI's (RFC 9112 §3.2.2).
    assert_eq!(header_of(&absolute, "x-seen-host"), Some("a.example"));
    assert_eq!(a.request_count(), 1);
    assert_eq!(b.request_count(), 0);

    let refused: [(&str, &[u8]); 5] = [
        (
            "two Host headers",
            b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        ),
        (
            "two Host headers with an absolute form",
            b"GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
        ),
        ("no Host on HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n"),
        ("an invalid Host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
        ("an empty Host", b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
    ];
    for (what, request) in refused {
        let answer = exchange(proxy, request).await;
        assert_eq!(status_of(&answer), 400, "{what}: {answer}");
        assert_eq!(header_of(&answer, "connection"), Some("close"), "{what}");
        assert!(answer.len() < 400, "{what}: a short answer, got {answer}");
    }
    // HTTP/1.0 needs no Host: the any-host route serves it.
    let old = exchange(proxy, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&old), 200, "{old}");
    assert_eq!(header_of(&old, "x-backend"), Some("root"));
    let seen: usize = [&a, &b, &app, &root]
        .iter()
        .map(|m| m.request_count())
        .sum();
    assert_eq!(seen, 2, "the refused requests reached no member");
}

#[tokio::test]
async fn dot_segments_are_resolved_before_routing_and_for_the_member() {
    let (a, b, app, root) = (
        spawn_echo_backend("a").await,
        spawn_echo_backend("b").await,
        spawn_echo_backend("app").await,
        spawn_echo_backend("root").await,
    );
    let fleet = fleet("dot-segments", &[&a, &b, &app, &root]).await;
    let proxy = fleet.replicas[0].proxy_addr();
    let cases = [
        // (client path, member that answers, path the member sees)
        ("/app/../admin", "root", "/admin"),
        ("/app/%2e%2e/admin", "root", "/admin"),
        ("/app/.%2E/admin", "root", "/admin"),
        ("/app/..%2Fadmin", "root", "/admin"),
        ("/app%2F..%2Fadmin", "root", "/admin"),
        ("/app/..;x=1/admin", "root", "/admin"),
        ("/app/x/../y?q=/../z", "app", "/public/y?q=/../z"),
        ("/app/./x", "app", "/public/x"),
        ("/other/../app/x", "app", "/public/x"),
        ("/app%2Fx", "app", "/public/x"),
    ];
    let mut wrong = Vec::new();
    for (path, member, member_path) in cases {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: paths.test\r\nConnection: close\r\n\r\n");
        let answer = exchange(proxy, request.as_bytes()).await;
        let seen = (
            status_of(&answer),
            header_of(&answer, "x-backend").unwrap_or("-").to_owned(),
            header_of(&answer, "x-seen-path").unwrap_or("-").to_owned(),
        );
        let expected = (200, member.to_owned(), member_path.to_owned());
        if seen != expected {
            wrong.push(format!("GET {path}: expected {expected:?}, got {seen:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(app.request_count() + root.request_count(), cases.len());

    for path in ["/..", "/app/../../etc/passwd", "/%2e%2e/x"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: paths.test\r\n\r\n");
        let answer = exchange(proxy, request.as_bytes()).await;
        assert_eq!(status_of(&answer), 400, "GET {path}: {answer}");
    }
    assert_eq!(
        app.request_count() + root.request_count(),
        cases.len(),
        "a path above the root reached no member"
    );
}
