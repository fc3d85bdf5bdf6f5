use http::Request;

use super::*;

fn parts(request: http::request::Builder) -> Parts {
    request.body(()).unwrap().into_parts().0
}

#[test]
fn dot_segments_are_resolved() {
    let cases = [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/app/../admin", "/admin"),
        ("/app/%2e%2e/admin", "/admin"),
        ("/app/.%2E/admin", "/admin"),
        ("/app/%2E./admin", "/admin"),
        ("/app/..%2fadmin", "/admin"),
        ("/app%2F..%2Fadmin", "/admin"),
        ("/app/..;jsessionid=x/admin", "/admin"),
        ("/a/./b", "/a/b"),
        ("/a/%2e/b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/a/..", "/"),
        ("/.", "/"),
        ("/a//../b", "/a/b"),
        ("//double//slashes/", "//double//slashes/"),
        ("/a/...", "/a/..."),
        ("/a/..b/.c", "/a/..b/.c"),
        ("/file%2etxt", "/file%2etxt"),
        ("/c%2Fd/e", "/c%2Fd/e"),
        ("*", "*"),
    ];
    for (path, expected) in cases {
        assert_eq!(normalize_path(path).unwrap(), expected, "{path}");
    }
}

#[test]
fn nothing_to_resolve_is_not_copied() {
    for path in ["/", "/a/b?c", "/a%20b/c%2Fd", "//x//"] {
        assert!(
            matches!(normalize_path(path), Ok(Cow::Borrowed(_))),
            "{path}"
        );
    }
}

#[test]
fn above_the_root_is_refused() {
    for path in ["/..", "/a/../..", "/%2e%2e/etc/passwd", "/a/..%2F..%2Fb"] {
        assert_eq!(normalize_path(path), Err(RequestError::AboveRoot), "{path}");
    }
}

#[test]
fn encoded_slashes_are_slashes_for_matching_only() {
    assert_eq!(match_path("/api%2Fusers"), "/api/users");
    assert_eq!(match_path("/a%2fb%2Fc"), "/a/b/c");
    assert!(matches!(match_path("/a%20b"), Cow::Borrowed(_)));
    assert_eq!(original_len("/api%2Fusers", "/api".len()), 4);
    assert_eq!(original_len("/app%2Fx", "/app/".len()), 7);
    assert_eq!(original_len("/a", 10), 2);
}

#[test]
fn the_query_is_kept_as_it_came() {
    let request = parts(
        Request::get("/app/%2e%2e/x?a=/../b&c=%2e%2e")
            .version(Version::HTTP_11)
            .header("host", "a.example"),
    );
    let target = target(&request, 8192).unwrap();
    assert_eq!(target.path_and_query, "/x?a=/../b&c=%2e%2e");
}

#[test]
fn absolute_form_goes_by_its_authority() {
    let request = parts(
        Request::get("http://a.example/x")
            .version(Version::HTTP_11)
            .header("host", "b.example"),
    );
    let target = target(&request, 8192).unwrap();
    assert_eq!(target.host.unwrap(), "a.example");
    assert_eq!(target.path_and_query, "/x");
}

#[test]
fn host_rules() {
    let ok = |host: &str| {
        let request = parts(Request::get("/").header("host", host));
        super::host(&request)
    };
    for host in [
        "a.example",
        "a.example:8080",
        "127.0.0.1",
        "[::1]:80",
        "[::1]",
        "xn--bcher-kva.example",
    ] {
        assert_eq!(ok(host).unwrap().unwrap(), host);
    }
    for host in [
        "a b",
        "",
        "a@b",
        "a.example:x",
        "[::1",
        "[zz]",
        "a:1:2",
        "a/b",
    ] {
        assert_eq!(ok(host), Err(RequestError::InvalidHost), "{host:?}");
    }
    let two = parts(
        Request::get("/")
            .header("host", "a.example")
            .header("host", "a.example"),
    );
    assert_eq!(super::host(&two), Err(RequestError::TwoHosts));
    let none = parts(Request::get("/").version(Version::HTTP_11));
    assert_eq!(super::host(&none), Err(RequestError::NoHost));
    let old = parts(Request::get("/").version(Version::HTTP_10));
    assert_eq!(super::host(&old), Ok(None));
    let h2 = parts(Request::get("http://a.example/").version(Version::HTTP_2));
    assert_eq!(super::host(&h2).unwrap().unwrap(), "a.example");
    let userinfo = parts(Request::get("http://u@a.example/").header("host", "a.example"));
    assert_eq!(super::host(&userinfo), Err(RequestError::InvalidHost));
}

#[test]
fn long_targets_are_refused() {
    let long = format!("/{}", "a".repeat(100));
    let request = parts(Request::get(long.as_str()).header("host", "a"));
    assert_eq!(
        target(&request, 50).unwrap_err().status(),
        StatusCode::URI_TOO_LONG
    );
    assert!(target(&request, 200).is_ok());
}

#[test]
fn many_segments_are_resolved_in_one_pass() {
    let path = format!("{}/..", "/a".repeat(4000));
    let normalized = normalize_path(&path).unwrap();
    assert_eq!(normalized.len(), path.len() - 4);
}
