use super::*;
use crate::config::table::compile;
use crate::upstream::Registry;
use switchyard_shared::{Cluster, Config, Member, Route, Snapshot};

fn table(route: Route) -> Table {
    let mut cluster = Cluster::new("c");
    cluster.members.push(Member::new("http://127.0.0.1:8080"));
    let mut snapshot = Snapshot::new(
        1,
        "s",
        Config {
            clusters: vec![cluster],
            routes: vec![route],
        },
    );
    compile(&mut snapshot, &Registry::default()).unwrap().0
}

fn app_route() -> Route {
    let mut route = Route::new("app", "/app/", "c");
    route.rewrite_prefix = Some("/".into());
    route
}

#[test]
fn prefix_is_rewritten_and_query_kept() {
    let app = table(app_route());
    let path = PathAndQuery::from_static("/app/x/y?q=1");
    assert_eq!(rewrite_path(&app.routes[0], &path, 5), "/x/y?q=1");
    let path = PathAndQuery::from_static("/app/");
    assert_eq!(rewrite_path(&app.routes[0], &path, 5), "/");
    let path = PathAndQuery::from_static("/app%2Fx");
    assert_eq!(rewrite_path(&app.routes[0], &path, 7), "/x");
    let plain = table(Route::new("root", "/", "c"));
    let path = PathAndQuery::from_static("/a?b");
    assert_eq!(rewrite_path(&plain.routes[0], &path, 1), "/a?b");
}

#[test]
fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, X-Secret"),
    );
    headers.insert("x-secret", HeaderValue::from_static("1"));
    headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
    headers.insert("x-kept", HeaderValue::from_static("1"));
    remove_hop_by_hop(&mut headers);
    assert_eq!(headers.len(), 1, "{headers:?}");
    assert!(headers.contains_key("x-kept"));
}

#[test]
fn forwarded_headers_are_appended_and_set() {
    let mut headers = HeaderMap::new();
    headers.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
    headers.insert(&X_FORWARDED_HOST, HeaderValue::from_static("spoofed"));
    let mut client = ClientInfo {
        ip: HeaderValue::from_static("127.0.0.1"),
        https: false,
    };
    let host = HeaderValue::from_static("example.test");
    add_forwarded(
        &mut headers,
        Some(&host),
        &client,
        &HeaderValue::from_static("dp-1"),
    );
    assert_eq!(headers[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
    assert_eq!(headers[&X_FORWARDED_HOST], "example.test");
    assert_eq!(headers[&X_FORWARDED_PROTO], "http");
    assert_eq!(headers[&X_FORWARDED_SERVER], "dp-1");

    client.https = true;
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("spoofed"));
    add_forwarded(
        &mut headers,
        Some(&host),
        &client,
        &HeaderValue::from_static("dp-1"),
    );
    assert_eq!(headers[&X_FORWARDED_PROTO], "https");
}

#[test]
fn https_redirects_keep_the_host_path_and_query_and_the_method() {
    let redirect = |method: http::Method, host: &'static str, port: u16| {
        let host = HeaderValue::from_static(host);
        let path = PathAndQuery::from_static("/a/b?x=1");
        let response = redirect_to_https(&method, Some(&host), &path, port).expect("a redirect");
        let location = response.headers()[header::LOCATION]
            .to_str()
            .expect("ASCII")
            .to_owned();
        (response.status(), location)
    };
    assert_eq!(
        redirect(http::Method::GET, "example.test:8000", 8443),
        (
            StatusCode::MOVED_PERMANENTLY,
            "https://example.test:8443/a/b?x=1".to_owned()
        )
    );
    assert_eq!(
        redirect(http::Method::HEAD, "example.test", 443),
        (
            StatusCode::MOVED_PERMANENTLY,
            "https://example.test/a/b?x=1".to_owned()
        )
    );
    assert_eq!(
        redirect(http::Method::POST, "[::1]:80", 443),
        (
            StatusCode::PERMANENT_REDIRECT,
            "https://[::1]/a/b?x=1".to_owned()
        )
    );
    let path = PathAndQuery::from_static("/");
    assert!(matches!(
        redirect_to_https(&http::Method::GET, None, &path, 443),
        Err(ProxyError::Request(RequestError::NoHost))
    ));
}

#[test]
fn redirects_of_the_member_become_client_urls() {
    let app = table(app_route());
    let (route, member) = (&app.routes[0], &app.clusters[0].members[0]);
    let rewrite = |v| rewrite_location(v, route, member, "example.test:8000", "http");
    assert_eq!(
        rewrite("http://127.0.0.1:8080/login").as_deref(),
        Some("http://example.test:8000/app/login")
    );
    assert_eq!(
        rewrite("HTTP://127.0.0.1:8080").as_deref(),
        Some("http://example.test:8000")
    );
    assert_eq!(rewrite("/login").as_deref(), Some("/app/login"));
    assert_eq!(rewrite("http://elsewhere/login"), None);
    assert_eq!(rewrite("http://127.0.0.1:80800/x"), None);
    assert_eq!(rewrite("//cdn/x"), None);

    let root = table(Route::new("root", "/", "c"));
    let (route, member) = (&root.routes[0], &root.clusters[0].members[0]);
    assert_eq!(
        rewrite_location("http://127.0.0.1:8080/a", route, member, "h", "http").as_deref(),
        Some("http://h/a")
    );
    assert_eq!(
        rewrite_location("http://127.0.0.1:8080/a", route, member, "h", "https").as_deref(),
        Some("https://h/a")
    );
    assert_eq!(rewrite_location("/a", route, member, "h", "http"), None);
}

#[test]
fn errors_map_to_statuses() {
    assert_eq!(ProxyError::NoRoute.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        ProxyError::NoMember("c".into()).status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let refused = ProxyError::AllUnreachable {
        cluster: "c".into(),
        last: "x".into(),
    };
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let broken = ProxyError::Upstream {
        member: "m".into(),
        error: "reset".into(),
    };
    assert_eq!(broken.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        ProxyError::Timeout {
            member: "m".into(),
            limit: Duration::from_secs(1)
        }
        .status(),
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(
        ProxyError::ClientBody(crate::upstream::body::ClientBodyError::Invalid).status(),
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn te_trailers_is_found_among_the_clients_te_values() {
    let mut headers = HeaderMap::new();
    assert!(!asks_for_trailers(&headers));
    headers.insert(header::TE, HeaderValue::from_static("gzip;q=0.5"));
    assert!(!asks_for_trailers(&headers));
    headers.append(header::TE, HeaderValue::from_static("deflate, Trailers"));
    assert!(asks_for_trailers(&headers));
    headers.insert(header::TE, HeaderValue::from_static("trailers;q=1"));
    assert!(asks_for_trailers(&headers));
}

#[test]
fn grpc_errors_are_trailers_only_answers_with_a_grpc_status() {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc+proto"),
    );
    assert!(is_grpc(&headers));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    assert!(!is_grpc(&headers));

    let timeout = ProxyError::Timeout {
        member: "m".into(),
        limit: Duration::from_millis(300),
    };
    assert_eq!(timeout.grpc_status(), 4);
    assert_eq!(ProxyError::NoRoute.grpc_status(), 12);
    assert_eq!(ProxyError::NoMember("c".into()).grpc_status(), 14);
    let response = timeout.into_grpc_response();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "4");
    assert_eq!(response.headers()["content-type"], "application/grpc");
    assert!(
        http_body::Body::is_end_stream(response.body()),
        "no body: trailers-only"
    );
    assert_eq!(grpc_message("50% done\n"), "50%25 done");
    assert_eq!(grpc_message("caf\u{e9}"), "caf%C3%A9");
}
