//! The Prometheus kit: `promtool check config` and `check rules` pass on deploy/, `promtool
//! check metrics` passes on a real scrape of a running server, and every metric the Grafana
//! dashboard and the alert rules query is one the server exports.

mod common;
mod deploy;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};

use common::server::{Server, scrape};
use deploy::{have, next_text, repo};

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(repo().join("deploy"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `wsredis_*` names in PromQL expressions (histogram suffixes folded to the family name).
fn queried_metrics(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("wsredis_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .map_or(name.clone(), str::to_owned);
        out.insert(name);
    }
    out
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    if !have("promtool", "the Prometheus config cannot be checked") {
        return;
    }
    let (ok, out) = promtool(&["check", "config", "prometheus.yml"], None);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["check", "rules", "wsredis-rules.yml"], None);
    assert!(ok, "{out}");
}

#[tokio::test]
async fn a_real_scrape_passes_promtool_and_feeds_the_dashboard() {
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let server = Server::start(&["--workers", "2", "--metrics-bind", &metrics]);
    // Traffic, so that counters, histograms and labelled series are populated.
    let mut ws = deploy::connect(
        &server.base(),
        "/ws/foo?subscribe-broadcast&publish-broadcast&echo",
    )
    .await;
    let redis = server.redis.as_ref().unwrap();
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || {
            deploy::numsub(&["-p", &redis.port.to_string()], "broadcast:foo") == 1
        })
        .await
    );
    deploy::send(&mut ws, "hello").await;
    assert_eq!(next_text(&mut ws).await, "hello");
    common::server::request(&server.base(), "GET", "/healthz")
        .await
        .unwrap();
    let text = scrape(&metrics).await;

    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let dashboard = std::fs::read_to_string(repo().join("deploy/grafana-dashboard.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let exprs: Vec<String> = parsed["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    let rules = std::fs::read_to_string(repo().join("deploy/wsredis-rules.yml")).unwrap();
    for name in queried_metrics(&exprs.join("\n")).union(&queried_metrics(&rules)) {
        assert!(
            exported.contains(name),
            "{name} is queried but not exported"
        );
    }

    if !have("promtool", "the scrape cannot be linted") {
        return;
    }
    let (ok, out) = promtool(&["check", "metrics"], Some(&text));
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}"
    );
}
