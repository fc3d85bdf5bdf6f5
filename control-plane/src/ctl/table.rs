//! Aligned text tables (`kubectl get`'s look) from the API's JSON.

use serde_json::Value;

/// Columns padded to their widest cell, two spaces apart, no trailing blanks.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let width = widths.get(i).copied().unwrap_or(0);
            line.extend(std::iter::repeat_n(
                ' ',
                width.saturating_sub(cell.chars().count()),
            ));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A field as a cell: strings bare, `null`/absent as `-`, others as JSON.
pub fn cell(value: &Value, field: &str) -> String {
    match value.get(field) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn items(list: &Value) -> &[Value] {
    list.as_array().map_or(&[], Vec::as_slice)
}

/// `GET /api/v1/clusters` as a table.
pub fn clusters(list: &Value) -> String {
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .map(|c| {
            let members = items(c.get("members").unwrap_or(&Value::Null));
            let active = members
                .iter()
                .filter(|m| m.get("state").and_then(Value::as_str).unwrap_or("active") == "active")
                .count();
            vec![
                cell(c, "name"),
                cell(c, "policy"),
                cell(c, "protocol"),
                members.len().to_string(),
                active.to_string(),
            ]
        })
        .collect();
    render(&["NAME", "POLICY", "PROTOCOL", "MEMBERS", "ACTIVE"], &rows)
}

/// One cluster's members (`GET /api/v1/clusters/{name}`) as a table.
pub fn members(cluster: &Value) -> String {
    let rows: Vec<Vec<String>> = items(cluster.get("members").unwrap_or(&Value::Null))
        .iter()
        .map(|m| {
            vec![
                cell(m, "id"),
                cell(m, "url"),
                cell(m, "weight"),
                cell(m, "state"),
                cell(m, "route"),
            ]
        })
        .collect();
    render(&["ID", "URL", "WEIGHT", "STATE", "ROUTE"], &rows)
}

/// `GET /api/v1/routes` as a table.
pub fn routes(list: &Value) -> String {
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .map(|r| {
            vec![
                cell(r, "name"),
                cell(r, "host"),
                cell(r, "path_prefix"),
                cell(r, "cluster"),
                cell(r, "rewrite_prefix"),
            ]
        })
        .collect();
    render(&["NAME", "HOST", "PATH", "CLUSTER", "REWRITE"], &rows)
}

/// `GET /api/v1/dataplanes` as a table.
pub fn dataplanes(list: &Value) -> String {
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .map(|d| {
            let members = items(d.get("members").unwrap_or(&Value::Null));
            let healthy = members
                .iter()
                .filter(|m| m.get("healthy").and_then(Value::as_bool) == Some(true))
                .count();
            vec![
                cell(d, "node_id"),
                cell(d, "state"),
                cell(d, "version"),
                cell(d, "peer"),
                format!("{healthy}/{}", members.len()),
            ]
        })
        .collect();
    render(&["NODE", "STATE", "VERSION", "PEER", "HEALTHY"], &rows)
}

/// `switchyard status`: each replica against the control plane's version,
/// when it was last heard from (its stream's last message, or its end), and
/// why it refused (nacked) a version.
pub fn status(config: &Value, list: &Value) -> String {
    let version = cell(config, "version");
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .map(|d| {
            let state = cell(d, "state");
            let reason = if state == "nacked" {
                match (d.get("nacked_version"), d.get("last_error")) {
                    (Some(Value::Number(v)), Some(Value::String(e))) => format!("v{v}: {e}"),
                    _ => cell(d, "last_error"),
                }
            } else {
                "-".to_owned()
            };
            vec![
                cell(d, "node_id"),
                state,
                cell(d, "version"),
                version.clone(),
                cell(d, "last_seen"),
                reason,
            ]
        })
        .collect();
    let mut out = format!(
        "control plane at version {version} (store {})\n",
        cell(config, "store_id")
    );
    if rows.is_empty() {
        out.push_str("no replica has connected\n");
    } else {
        out.push_str(&render(
            &["NODE", "STATE", "RUNS", "CURRENT", "LAST SEEN", "REASON"],
            &rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_are_aligned_without_trailing_blanks() {
        let out = render(
            &["NAME", "X"],
            &[
                vec!["a".into(), "long-cell".into()],
                vec!["longer-name".into(), "b".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME         X\na            long-cell\nlonger-name  b\n"
        );
    }

    #[test]
    fn clusters_count_members_and_active_ones() {
        let list = json!([{"name": "web", "policy": "round_robin", "members": [
            {"id": "a", "url": "http://a:1", "state": "active"},
            {"id": "b", "url": "http://b:1", "state": "draining"}
        ]}]);
        let out = clusters(&list);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["web", "round_robin", "-", "2", "1"]
        );
    }

    #[test]
    fn status_shows_the_nack_reason() {
        let config = json!({"version": 7, "store_id": "s1"});
        let list = json!([
            {"node_id": "dp-1", "state": "synced", "version": 7, "last_seen": "2026-12-06T23:10:24.123Z"},
            {"node_id": "dp-2", "state": "nacked", "version": 6, "nacked_version": 7, "last_error": "bad route"},
        ]);
        let out = status(&config, &list);
        assert!(out.starts_with("control plane at version 7 (store s1)\n"));
        assert!(out.contains("v7: bad route"), "{out}");
        let lines: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[1],
            ["NODE", "STATE", "RUNS", "CURRENT", "LAST", "SEEN", "REASON"]
        );
        assert_eq!(
            lines[2],
            ["dp-1", "synced", "7", "7", "2026-12-06T23:10:24.123Z", "-"]
        );
        // Without a last_seen (an older control plane): a dash, the reason last.
        assert_eq!(lines[3][..5], ["dp-2", "nacked", "6", "7", "-"]);
        assert!(status(&config, &json!([])).contains("no replica has connected"));
    }
}
