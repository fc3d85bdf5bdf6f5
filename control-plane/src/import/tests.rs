//! One test (or more) per directive the importer reads.

use std::path::PathBuf;

use switchyard_shared::{CookieRewrite, Dur, MemberState, Policy, Route, Sticky};

use super::*;

fn ok(text: &str) -> Imported {
    match import_str(text, "t.conf") {
        Ok(imported) => imported,
        Err(e) => panic!("refused: {e}"),
    }
}

fn refused(text: &str) -> String {
    match import_str(text, "t.conf") {
        Ok(imported) => panic!("accepted: {:?}", imported.config),
        Err(e) => e.to_string(),
    }
}

fn warned(imported: &Imported, line: usize, needle: &str) -> bool {
    imported
        .warnings
        .iter()
        .any(|w| w.at.line == line && w.message.contains(needle))
}

fn route<'a>(imported: &'a Imported, host: Option<&str>, prefix: &str) -> &'a Route {
    imported
        .config
        .routes
        .iter()
        .find(|r| r.host.as_deref() == host && r.path_prefix == prefix)
        .unwrap_or_else(|| panic!("no route {host:?} {prefix}: {:?}", imported.config.routes))
}

const TUTORIAL_1: &str = "<VirtualHost *:80>
    ProxyPreserveHost On

    ProxyPass / http://127.0.0.1:8080/
    ProxyPassReverse / http://127.0.0.1:8080/
</VirtualHost>
";

const TUTORIAL_2: &str = "<VirtualHost *:80>
<Proxy balancer://mycluster>
    BalancerMember http://127.0.0.1:8080
    BalancerMember http://127.0.0.1:8081
</Proxy>

    ProxyPreserveHost On

    ProxyPass / balancer://mycluster/
    ProxyPassReverse / balancer://mycluster/
</VirtualHost>
";

#[test]
fn tutorial_single_backend() {
    let imported = ok(TUTORIAL_1);
    assert!(imported.warnings.is_empty(), "{:?}", imported.warnings);
    let config = &imported.config;
    assert_eq!(config.clusters.len(), 1);
    assert_eq!(config.clusters[0].members[0].url, "http://127.0.0.1:8080");
    let r = route(&imported, None, "/");
    assert_eq!(r.cluster, config.clusters[0].name);
    assert!(r.preserve_host);
    assert!(r.rewrite_redirects);
    assert_eq!(r.rewrite_prefix, None);
}

#[test]
fn tutorial_balancer() {
    let imported = ok(TUTORIAL_2);
    assert!(imported.warnings.is_empty(), "{:?}", imported.warnings);
    let cluster = imported.config.cluster("mycluster").unwrap();
    let urls: Vec<_> = cluster.members.iter().map(|m| m.url.as_str()).collect();
    assert_eq!(urls, ["http://127.0.0.1:8080", "http://127.0.0.1:8081"]);
    let r = route(&imported, None, "/");
    assert_eq!(r.cluster, "mycluster");
    assert!(r.preserve_host && r.rewrite_redirects);
}

#[test]
fn server_name_and_aliases_make_one_route_each() {
    let imported = ok("<VirtualHost *:80>
ServerName Example.com:80
ServerAlias www.example.com *.example.com
ProxyPass /api/ http://10.0.0.1:9000/v1/
</VirtualHost>");
    assert_eq!(imported.config.routes.len(), 2);
    let main = route(&imported, Some("example.com"), "/api/");
    assert_eq!(main.rewrite_prefix.as_deref(), Some("/v1/"));
    assert_eq!(main.name, "example_com-api");
    route(&imported, Some("www.example.com"), "/api/");
    assert!(warned(&imported, 3, "exact host names only"));
}

#[test]
fn the_last_server_name_wins() {
    let imported = ok(
        "<VirtualHost *:80>\nServerAlias www.b.test\nServerName a.test\nServerName b.test\nProxyPass / http://h:1/\n</VirtualHost>\n",
    );
    let hosts: Vec<_> = imported
        .config
        .routes
        .iter()
        .map(|r| r.host.clone().unwrap_or_default())
        .collect();
    assert_eq!(hosts, ["b.test", "www.b.test"]);
    assert!(warned(
        &imported,
        4,
        "a second ServerName replaces \"a.test\""
    ));
}

#[test]
fn directive_names_are_case_insensitive_and_arguments_quoted() {
    let imported = ok(
        "<virtualhost *:80>\nproxypass \"/a/\" 'http://h:1/'\nPROXYPRESERVEHOST on\n</VIRTUALHOST>",
    );
    let r = route(&imported, None, "/a/");
    assert!(r.preserve_host);
    // A path Apache takes but a route cannot carry: warned, not refused.
    let spaced = ok("ProxyPass \"/a b/\" http://h:1/\n");
    assert!(spaced.config.routes.is_empty());
    assert!(warned(
        &spaced,
        1,
        "route not translated: route \"default-a_b\": path_prefix"
    ));
}

#[test]
fn continuation_lines_keep_the_first_line_number() {
    let imported = ok("\nProxyPass /x \\\n  http://h:1/x \\\n  keepalive=On\n");
    assert_eq!(imported.config.routes.len(), 1);
    assert!(warned(&imported, 2, "keepalive=On not translated"));
}

#[test]
fn proxy_pass_with_no_url_is_refused() {
    let err = refused("<VirtualHost *:80>\n  ProxyPass /\n</VirtualHost>\n");
    assert_eq!(err, "t.conf:2: ProxyPass \"/\" has no URL");
    assert!(refused("ProxyPass\n").contains("needs a path and a URL"));
}

#[test]
fn proxy_pass_exclusions_are_warned() {
    let imported = ok("ProxyPass /static !\nProxyPass / http://h:1/\n");
    assert!(warned(&imported, 1, "cannot be excluded"));
    assert_eq!(imported.config.routes.len(), 1);
}

#[test]
fn proxy_pass_parameters_are_worker_parameters() {
    let imported =
        ok("ProxyPass / http://h:1/ timeout=7 connectiontimeout=250ms retry=0 keepalive=On\n");
    let c = &imported.config.clusters[0];
    assert_eq!(c.response_timeout, Dur::from_millis(7000));
    assert_eq!(c.connect_timeout, Dur::from_millis(250));
    assert_eq!(c.retry_window, Dur::from_millis(0));
    assert!(warned(&imported, 1, "keepalive=On not translated"));
    let err = refused("ProxyPass / http://h:1/ bogus=1\n");
    assert_eq!(
        err,
        "t.conf:1: ProxyPass: unknown Worker parameter \"bogus\""
    );
    assert!(refused("ProxyPass / http://h:1/ timeout=x\n").contains("timeout must be"));
}

#[test]
fn other_schemes_are_warned() {
    let imported = ok("ProxyPass /a ajp://h:8009/a\nProxyPass /ws/ ws://h:1/ws/\n");
    assert!(warned(&imported, 1, "not ajp"));
    assert!(warned(&imported, 2, "imported as http"));
    assert_eq!(imported.config.clusters[0].members[0].url, "http://h:1");
}

#[test]
fn trailing_slash_mismatch_is_warned() {
    let imported = ok("ProxyPass /app http://h:1/\n");
    assert!(warned(&imported, 1, "do not both end in '/'"));
}

#[test]
fn location_blocks() {
    let imported = ok("<VirtualHost *:80>
<Location /app/>
  ProxyPass http://h:1/
  ProxyPassReverse http://h:1/
  ProxyPreserveHost On
  ProxyPassReverseCookiePath / /app/
  Require all granted
</Location>
ProxyPass /other/ http://h:1/other/
</VirtualHost>");
    let app = route(&imported, None, "/app/");
    assert_eq!(app.rewrite_prefix.as_deref(), Some("/"));
    assert!(app.rewrite_redirects && app.preserve_host);
    assert_eq!(
        app.rewrite_cookie_path,
        Some(CookieRewrite::new("/", "/app/"))
    );
    let other = route(&imported, None, "/other/");
    assert!(!other.preserve_host && !other.rewrite_redirects);
    assert_eq!(other.rewrite_cookie_path, None);
    assert!(warned(&imported, 7, "Require not translated"));
    assert_eq!(imported.config.clusters.len(), 1);
}

#[test]
fn proxy_pass_reverse_needs_its_proxy_pass() {
    let imported = ok("ProxyPassReverse / http://h:1/\nProxyPass /x/ http://h:1/\n");
    assert!(warned(&imported, 1, "only a URL that a ProxyPass"));
    assert!(!route(&imported, None, "/x/").rewrite_redirects);
}

#[test]
fn proxy_preserve_host_must_be_on_or_off() {
    assert!(refused("ProxyPreserveHost yes\n").contains("must be On or Off"));
}

#[test]
fn preserve_host_of_the_main_server_is_inherited() {
    let imported =
        ok("ProxyPreserveHost On\n<VirtualHost *:80>\nProxyPass / http://h:1/\n</VirtualHost>\n");
    assert!(route(&imported, None, "/").preserve_host);
}

#[test]
fn balancer_members_and_their_parameters() {
    let imported = ok("<Proxy \"balancer://web\">
BalancerMember http://a:1 loadfactor=3 retry=30 timeout=5 connectiontimeout=2
BalancerMember http://b:1 status=+H
BalancerMember http://c:1 status=+D
BalancerMember http://d:1 status=+E
BalancerMember http://e:1 status=+N timeout=9
</Proxy>
ProxyPass / balancer://web/
");
    let c = imported.config.cluster("web").unwrap();
    let states: Vec<_> = c.members.iter().map(|m| (m.weight, m.state)).collect();
    assert_eq!(
        states,
        [
            (3, MemberState::Active),
            (1, MemberState::Standby),
            (1, MemberState::Disabled),
            (1, MemberState::Disabled),
            (1, MemberState::Draining),
        ]
    );
    assert_eq!(c.retry_window, Dur::from_millis(30_000));
    assert_eq!(c.response_timeout, Dur::from_millis(5_000));
    assert_eq!(c.connect_timeout, Dur::from_millis(2_000));
    assert!(warned(&imported, 5, "imported as disabled"));
    assert!(warned(&imported, 6, "already has timeout=5"));
}

#[test]
fn bad_loadfactor_and_status_are_refused() {
    for (text, needle) in [
        ("loadfactor=0", "loadfactor must be a number from 1 to 100"),
        ("loadfactor=101", "loadfactor must be"),
        ("loadfactor=x", "loadfactor must be"),
        ("status=+Z", "unknown status parameter option"),
        ("hcmethod=PUT", "unknown hcmethod"),
        ("hcpasses=0", "hcpasses must be"),
    ] {
        let err = refused(&format!(
            "<Proxy balancer://c>\nBalancerMember http://a:1 {text}\n</Proxy>\n"
        ));
        assert!(err.starts_with("t.conf:2: "), "{err}");
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn balancer_member_outside_a_balancer() {
    let err = refused("BalancerMember http://a:1\n");
    assert!(err.starts_with("t.conf:1: BalancerMember outside"), "{err}");
    let imported =
        ok("BalancerMember balancer://c http://a:1 loadfactor=2\nProxyPass / balancer://c/\n");
    assert_eq!(imported.config.cluster("c").unwrap().members[0].weight, 2);
    assert!(refused("<Proxy balancer://c>\nBalancerMember\n</Proxy>\n").contains("has no URL"));
}

#[test]
fn balancer_names_are_case_insensitive() {
    let imported = ok(
        "<Proxy balancer://MyCluster>\nBalancerMember http://a:1\n</Proxy>\nProxyPass / balancer://mycluster/\n",
    );
    assert_eq!(imported.config.clusters.len(), 1);
    assert_eq!(route(&imported, None, "/").cluster, "MyCluster");
}

#[test]
fn unknown_balancer_is_refused() {
    let err = refused("ProxyPass / balancer://nowhere/\n");
    assert_eq!(
        err,
        "t.conf:1: balancer://nowhere is used but never defined (no <Proxy balancer://nowhere> or BalancerMember)"
    );
}

#[test]
fn member_paths_become_part_of_the_rewrite() {
    let imported = ok(
        "<Proxy balancer://c>\nBalancerMember http://a:1/app\nBalancerMember http://b:1/app/\n</Proxy>\nProxyPass /x/ balancer://c/\n",
    );
    assert_eq!(
        route(&imported, None, "/x/").rewrite_prefix.as_deref(),
        Some("/app/")
    );
}

#[test]
fn duplicate_members_are_warned() {
    let imported = ok(
        "<Proxy balancer://c>\nBalancerMember http://a:1\nBalancerMember http://A:1/\n</Proxy>\nProxyPass / balancer://c/\n",
    );
    assert_eq!(imported.config.cluster("c").unwrap().members.len(), 1);
    assert!(warned(&imported, 3, "already has this member"));
}

#[test]
fn proxy_set_balancer_parameters() {
    let imported = ok("<Proxy balancer://c>
BalancerMember http://a:1
ProxySet lbmethod=byrequests timeout=15 maxattempts=3
</Proxy>
ProxySet balancer://c nofailover=On
ProxyPass / balancer://c/
");
    let c = imported.config.cluster("c").unwrap();
    assert_eq!(c.response_timeout, Dur::from_millis(15_000));
    assert_eq!(c.retry.max_retries, 3);
    assert!(warned(&imported, 5, "nofailover=On not translated"));
    assert!(
        refused("<Proxy balancer://c>\nProxySet lbmethod=fastest\n</Proxy>\n")
            .contains("unknown lbmethod")
    );
    assert!(
        refused("<Proxy balancer://c>\nProxySet loadfactor=1\n</Proxy>\n")
            .contains("unknown Balancer parameter")
    );
    assert!(refused("ProxySet\n").contains("needs key=value"));
}

#[test]
fn proxy_set_on_a_worker() {
    let imported =
        ok("ProxyPass / http://h:1/\n<Proxy http://h:1>\nProxySet timeout=3\n</Proxy>\n");
    assert_eq!(
        imported.config.clusters[0].response_timeout,
        Dur::from_millis(3000)
    );
}

#[test]
fn proxy_timeout_is_the_default_timeout() {
    let imported = ok("ProxyTimeout 12
<VirtualHost *:80>
ServerName a
ProxyTimeout 4
ProxyPass / http://a:1/
</VirtualHost>
ProxyPass /b/ http://b:1/b/
ProxyPass /c/ http://c:1/c/ timeout=2
");
    let timeout = |name: &str| imported.config.cluster(name).unwrap().response_timeout;
    assert_eq!(timeout("a_1"), Dur::from_millis(4_000));
    assert_eq!(timeout("b_1"), Dur::from_millis(12_000));
    assert_eq!(timeout("c_1"), Dur::from_millis(2_000));
    assert!(refused("ProxyTimeout soon\n").contains("ProxyTimeout must be"));
}

#[test]
fn health_check_parameters() {
    let imported = ok("<Proxy balancer://c>
BalancerMember http://a:1 hcmethod=GET hcuri=/health hcinterval=5 hcpasses=2 hcfails=3
BalancerMember http://b:1 hcmethod=GET hcuri=/health hcinterval=5
</Proxy>
ProxyPass / balancer://c/
");
    let check = imported
        .config
        .cluster("c")
        .unwrap()
        .health_check
        .clone()
        .unwrap();
    assert_eq!(check.path, "/health");
    assert_eq!(check.interval, Dur::from_millis(5_000));
    assert_eq!((check.healthy_threshold, check.unhealthy_threshold), (2, 3));
    let head = ok(
        "<Proxy balancer://c>\nBalancerMember http://a:1 hcmethod=HEAD\n</Proxy>\nProxyPass / balancer://c/\n",
    );
    assert!(head.config.clusters[0].health_check.is_some());
    assert!(warned(&head, 2, "imported as GET"));
    let tcp = ok(
        "<Proxy balancer://c>\nBalancerMember http://a:1 hcmethod=TCP\n</Proxy>\nProxyPass / balancer://c/\n",
    );
    assert!(tcp.config.clusters[0].health_check.is_none());
    assert!(warned(&tcp, 2, "hcmethod=TCP not translated"));
    let none = ok(
        "<Proxy balancer://c>\nBalancerMember http://a:1 hcuri=/h\n</Proxy>\nProxyPass / balancer://c/\n",
    );
    assert!(none.config.clusters[0].health_check.is_none());
    assert!(warned(&none, 1, "without hcmethod"));
}

#[test]
fn cookie_rewrites() {
    let imported = ok("<VirtualHost *:80>
ProxyPassReverseCookiePath /app/ /
ProxyPassReverseCookieDomain backend.internal example.com
ProxyPassReverseCookieDomain other example.com
ProxyPass / http://h:1/app/
</VirtualHost>");
    let r = route(&imported, None, "/");
    assert_eq!(
        r.rewrite_cookie_path,
        Some(CookieRewrite::new("/app/", "/"))
    );
    assert_eq!(
        r.rewrite_cookie_domain,
        Some(CookieRewrite::new("backend.internal", "example.com"))
    );
    assert!(warned(
        &imported,
        4,
        "a second ProxyPassReverseCookieDomain"
    ));
    assert!(
        refused("ProxyPassReverseCookiePath /a\n").contains("takes an internal and a public value")
    );
}

#[test]
fn proxy_pass_match_as_a_prefix() {
    let imported = ok(
        "ProxyPassMatch \"^/api/(.*)$\" \"http://h:1/v2/$1\"\nProxyPassMatch ^/(.*\\.gif)$ http://h:1/$1\nProxyPassMatch ^/static !\n",
    );
    let r = route(&imported, None, "/api/");
    assert_eq!(r.rewrite_prefix.as_deref(), Some("/v2/"));
    assert!(warned(
        &imported,
        2,
        "ProxyPassMatch \"^/(.*\\\\.gif)$\" not translated"
    ));
    assert!(warned(&imported, 3, "cannot be excluded"));
}

#[test]
fn rewrite_rule_proxy_as_a_prefix() {
    let imported = ok("RewriteEngine On
RewriteRule ^/shop/(.*)$ http://h:1/$1 [P,L]
RewriteRule ^/old$ /new [R=301]
RewriteCond %{HTTP_HOST} ^x$
RewriteRule ^/cond/(.*)$ http://h:1/$1 [P]
");
    let r = route(&imported, None, "/shop/");
    assert_eq!(r.rewrite_prefix.as_deref(), Some("/"));
    assert!(warned(&imported, 3, "only rules with the [P] flag"));
    assert!(warned(&imported, 4, "RewriteCond not translated"));
    assert!(warned(&imported, 5, "guarded by a RewriteCond"));
    let off = ok("RewriteRule ^/shop/(.*)$ http://h:1/$1 [P]\n");
    assert!(off.config.routes.is_empty());
    assert!(warned(&off, 1, "RewriteEngine is not On"));
}

#[test]
fn if_module_and_if_define_are_read() {
    let imported = ok(
        "<IfModule mod_proxy.c>\n<IfDefine PROXY>\nProxyPass / http://h:1/\n</IfDefine>\n</IfModule>\n<IfModule !mod_proxy.c>\nProxyPass /x/ http://h:1/x/\n</IfModule>\n",
    );
    assert_eq!(imported.config.routes.len(), 1);
    assert!(warned(&imported, 6, "<IfModule !mod_proxy.c> skipped"));
}

#[test]
fn untranslated_directives_and_sections_are_warned_with_their_line() {
    let imported = ok(
        "Listen 80\nLoadModule proxy_module x.so\n<Directory /var/www>\nOptions None\nRequire all granted\n</Directory>\nProxyPass / http://h:1/\nProxyRequests Off\n",
    );
    assert!(warned(
        &imported,
        1,
        "Listen not translated: the replica's --listen flag"
    ));
    assert!(warned(&imported, 2, "LoadModule not translated"));
    assert!(warned(
        &imported,
        3,
        "<Directory> section (and the 2 directives inside) not translated"
    ));
    assert_eq!(imported.warnings.len(), 3, "{:?}", imported.warnings);
    assert_eq!(
        imported.warnings[0].to_string(),
        "t.conf:1: warning: Listen not translated: the replica's --listen flag sets the address"
    );
}

#[test]
fn unclosed_sections_are_refused() {
    assert_eq!(
        refused("<VirtualHost *:80>\nProxyPass / http://h:1/\n"),
        "t.conf:1: <VirtualHost> is never closed (no </VirtualHost>)"
    );
    assert!(refused("<VirtualHost>\n</VirtualHost>\n").contains("needs at least one address"));
    assert!(
        refused("<VirtualHost *:80>\n<VirtualHost *:81>\n</VirtualHost>\n</VirtualHost>\n")
            .contains("cannot occur within")
    );
}

#[test]
fn the_same_host_and_path_twice_is_warned_not_refused() {
    let imported = ok(
        "<VirtualHost *:80>\nServerName a\nProxyPass / http://h:1/\n</VirtualHost>\n<VirtualHost *:443>\nServerName a\nProxyPass / http://h:2/\n</VirtualHost>\n",
    );
    assert_eq!(imported.config.routes.len(), 1);
    assert_eq!(imported.config.routes[0].cluster, "h_1");
    assert!(warned(&imported, 7, "t.conf:3 already routes it"));
}

#[test]
fn sticky_route_cookie_header_is_recognised() {
    let imported = ok("Header add Set-Cookie \"ROUTEID=.%{BALANCER_WORKER_ROUTE}e; path=/\" env=BALANCER_ROUTE_CHANGED
Header set X-Frame-Options DENY
<Proxy balancer://c>
BalancerMember http://a:1 route=1
ProxySet stickysession=ROUTEID
</Proxy>
ProxyPass / balancer://c/
");
    assert!(!warned(&imported, 1, "Header"));
    assert!(warned(&imported, 2, "header rules are not translated"));
    let c = imported.config.cluster("c").unwrap();
    assert_eq!(
        c.sticky,
        Some(Sticky {
            cookie: "ROUTEID".into(),
            url_parameter: None,
            set_cookie: true
        })
    );
    assert_eq!(c.members[0].route.as_deref(), Some("1"));
    // Apache's own JSESSIONID|jsessionid: a cookie and a URL parameter; the
    // member sets the cookie itself.
    let java = ok(
        "<Proxy balancer://j>\nBalancerMember http://a:1 route=n1\nProxySet stickysession=JSESSIONID|jsessionid\n</Proxy>\nProxyPass / balancer://j/\n",
    );
    assert_eq!(
        java.config.cluster("j").unwrap().sticky,
        Some(Sticky {
            cookie: "JSESSIONID".into(),
            url_parameter: Some("jsessionid".into()),
            set_cookie: false
        })
    );
}

#[test]
fn a_route_cookie_header_without_its_balancer_is_warned() {
    let imported = ok(
        "Header add Set-Cookie \"R=.%{BALANCER_WORKER_ROUTE}e; path=/\" env=BALANCER_ROUTE_CHANGED\nProxyPass / http://a:1/\n",
    );
    assert!(warned(&imported, 1, "no balancer's stickysession names R"));
}

#[test]
fn a_proxy_pass_apache_never_reaches_is_warned() {
    let imported = ok(
        "ProxyPass / http://a:1/\nProxyPass /api/ http://b:1/\n<VirtualHost *:80>\nServerName v\nProxyPass /x/ http://b:1/x/\nProxyPass / http://a:1/\n</VirtualHost>\n",
    );
    assert!(warned(
        &imported,
        2,
        "\"/api/\" comes after \"/\" (t.conf:1), so Apache never uses it"
    ));
    assert_eq!(imported.warnings.len(), 1, "{:?}", imported.warnings);
}

#[test]
fn lbmethods_become_policies() {
    for (method, policy, warns) in [
        ("byrequests", Policy::RoundRobin, false),
        ("bybusyness", Policy::LeastRequest, false),
        ("bytraffic", Policy::LeastRequest, true),
        ("heartbeat", Policy::LeastRequest, true),
    ] {
        let imported = ok(&format!(
            "<Proxy balancer://c>\nBalancerMember http://a:1\n</Proxy>\nProxyPass / balancer://c/ lbmethod={method}\n"
        ));
        assert_eq!(imported.config.clusters[0].policy, policy, "{method}");
        assert_eq!(
            warned(&imported, 4, "the nearest policy"),
            warns,
            "{method}"
        );
    }
}

#[test]
fn apache_durations() {
    let d = |t: &str| parse_apache_duration_ms(t);
    assert_eq!(d("5"), Some(5_000));
    assert_eq!(d("250ms"), Some(250));
    assert_eq!(d("2mi"), Some(120_000));
    assert_eq!(d("1h"), Some(3_600_000));
    assert_eq!(d("3s"), Some(3_000));
    assert_eq!(d("x"), None);
    assert_eq!(d("-1"), None);
    assert_eq!(d("99999999999999999999"), None);
}

fn parse_apache_duration_ms(text: &str) -> Option<u128> {
    translate::parse_apache_duration(text).map(|d| d.as_millis())
}

#[test]
fn output_passes_validation_and_has_the_put_shape() {
    let imported = ok(TUTORIAL_2);
    let json = serde_json::to_value(&imported.config).unwrap();
    assert!(json.get("clusters").is_some() && json.get("routes").is_some());
    let back: switchyard_shared::ConfigDocument = serde_json::from_value(json).unwrap();
    assert_eq!(back.into_config(), imported.config);
}

#[test]
fn dry_run_diff_names_what_changes() {
    let old = ok(TUTORIAL_1).config;
    let new = ok(TUTORIAL_2).config;
    let lines = output::diff(&old, &new);
    assert!(
        lines.contains(&"+ cluster mycluster".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"- cluster 127_0_0_1_8080".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"~ route default-root: cluster".to_owned()),
        "{lines:?}"
    );
    assert!(output::diff(&new, &new).is_empty());
}

/// A scratch folder of files, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("sy-import-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(path.join("sites")).unwrap();
        Dir(path)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn includes_globs_and_server_root() {
    let dir = Dir::new("globs");
    dir.write(
        "sites/b.conf",
        "<VirtualHost *:80>\nServerName b\nProxyPass / http://h:2/\n</VirtualHost>\n",
    );
    dir.write(
        "sites/a.conf",
        "<VirtualHost *:80>\nServerName a\nProxyPass / http://h:1/\n</VirtualHost>\n",
    );
    let main = dir.write(
        "main.conf",
        &format!(
            "ServerRoot \"{}\"\nIncludeOptional sites/*.conf\nIncludeOptional nothing/*.conf\n",
            dir.0.display()
        ),
    );
    let imported = import(&[main], None).unwrap();
    let hosts: Vec<_> = imported
        .config
        .routes
        .iter()
        .map(|r| r.host.clone().unwrap())
        .collect();
    assert_eq!(hosts, ["a", "b"]);
    let warning = imported
        .warnings
        .iter()
        .find(|w| w.at.file.ends_with("a.conf"));
    assert!(warning.is_none(), "{:?}", imported.warnings);
    // Relative to the including file's folder without a ServerRoot.
    let relative = dir.write("rel.conf", "Include sites/a.conf\n");
    assert_eq!(import(&[relative], None).unwrap().config.routes.len(), 1);
}

#[test]
fn missing_includes_and_cycles_are_refused() {
    let dir = Dir::new("cycles");
    let missing = dir.write("missing.conf", "Include nowhere.conf\n");
    let err = import(&[missing], None).unwrap_err().to_string();
    assert!(
        err.contains("missing.conf:1: included file") && err.contains("does not exist"),
        "{err}"
    );
    let glob = dir.write("glob.conf", "Include none/*.conf\n");
    let err = import(&[glob], None).unwrap_err().to_string();
    assert!(err.contains("no file matches the wildcard"), "{err}");
    dir.write("a.conf", "Include b.conf\n");
    dir.write("b.conf", "\nInclude a.conf\n");
    let err = import(&[dir.0.join("a.conf")], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("b.conf:2: include cycle:"), "{err}");
    let err = import(&[dir.0.join("absent.conf")], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn what_a_cluster_cannot_hold_is_refused_where_the_balancer_is() {
    let err = refused(
        "\n<Proxy balancer://c>\nBalancerMember http://a:1 route=a/b\n</Proxy>\nProxyPass / balancer://c/\n",
    );
    assert!(
        err.starts_with("t.conf:2: cannot be translated: cluster \"c\""),
        "{err}"
    );
}

/// A cheap stand-in for the fuzz target in every test run: every prefix of a
/// rich config, and seeded random edits of it, are refused or translated,
/// never a panic.
#[test]
fn no_input_panics() {
    let rich = format!(
        "{TUTORIAL_2}\n<VirtualHost *:80>\nServerName a.test\nServerAlias b.test\n<Location /l/>\nProxyPass http://h:1/x/ timeout=3\nProxyPassReverse http://h:1/x/\n</Location>\nRewriteEngine On\nRewriteRule ^/r/(.*)$ http://h:2/$1 [P]\nProxyPassMatch ^/m/(.*)$ http://h:3/$1\nProxyPassReverseCookiePath /x/ /l/\nHeader add Set-Cookie \"S=.%{{BALANCER_WORKER_ROUTE}}e; path=/\" env=BALANCER_ROUTE_CHANGED\n<Proxy balancer://s>\nBalancerMember http://h:4 route=r1 loadfactor=2 status=+H hcmethod=GET hcuri=/h\nProxySet lbmethod=bybusyness stickysession=S\n</Proxy>\nProxyPass /s/ balancer://s/\n</VirtualHost>\n"
    );
    let whole = ok(&rich);
    assert_eq!(whole.config.routes.len(), 9, "{:?}", whole.config.routes);
    let boundaries: Vec<usize> = (0..=rich.len())
        .filter(|&i| rich.is_char_boundary(i))
        .collect();
    for end in boundaries {
        let _ = import_str(&rich[..end], "t.conf");
    }
    let alphabet: Vec<char> = "<>/\\\"' \n\t=|$^()*.!+-#:0123456789aHDEN"
        .chars()
        .collect();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..3000 {
        let mut text: Vec<char> = rich.chars().collect();
        for _ in 0..rng.usize(1..6) {
            let at = rng.usize(0..=text.len());
            match rng.u8(0..3) {
                0 if at < text.len() => {
                    text.remove(at);
                }
                _ => text.insert(at, alphabet[rng.usize(0..alphabet.len())]),
            }
        }
        let text: String = text.into_iter().collect();
        if let Ok(imported) = import_str(&text, "t.conf") {
            let mut again = imported.config.clone();
            assert!(
                switchyard_shared::validate::validate_config(&mut again).is_ok(),
                "{text}"
            );
        }
    }
}
