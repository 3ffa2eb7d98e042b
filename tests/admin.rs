//! Issue 6: the admin API against the real binary — authentication, the
//! actor graph (JSON and DOT), user views (active and passive), message
//! traces, provisioning of users and groups at run time, /metrics and
//! `cpm inspect`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::digest::{user_add, Alg, Client};
use common::*;
use cpm::admin::client::{self, Response};
use serde_json::Value;

const TOKEN: &str = "s3cret-token";
const WAIT: Duration = Duration::from_secs(10);

fn base(cpm: &Cpm) -> String {
    format!("http://127.0.0.1:{}", cpm.admin)
}

fn get(cpm: &Cpm, path: &str, token: Option<&str>) -> Response {
    client::get(&base(cpm), path, token).expect("admin request")
}

fn send(cpm: &Cpm, method: &str, path: &str, body: &str) -> Response {
    client::request(&base(cpm), method, path, None, Some(body)).expect("admin request")
}

fn json(r: &Response) -> Value {
    r.json().expect("json body")
}

/// A 4xx with a JSON `error` message.
fn assert_error(r: &Response, status: u16) -> String {
    assert_eq!(r.status, status, "body: {}", r.body);
    let msg = json(r)["error"].as_str().unwrap_or_default().to_string();
    assert!(!msg.is_empty(), "error message in {}", r.body);
    msg
}

fn config(text: &str) -> (TempDir, String) {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("cpm.toml");
    std::fs::write(&path, text).expect("write config");
    let p = path.to_string_lossy().into_owned();
    (dir, p)
}

fn inspect(cpm: &Cpm, args: &[&str], token: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cpm"));
    cmd.arg("inspect").args(args).args(["--admin", &base(cpm)]);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    let out = cmd.env_remove("CPM_ADMIN_TOKEN").output().expect("run cpm inspect");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Poll until `f` holds (bounded).
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

#[test]
fn token_is_required_everywhere_but_health() {
    let cpm = Cpm::start(&["--open", "--admin-token", TOKEN]);
    assert_eq!(get(&cpm, "/health", None).status, 200);
    for path in [
        "/api/graph",
        "/api/graph?format=dot",
        "/api/users",
        "/api/users/bob",
        "/api/policy",
        "/api/trace?call_id=x",
        "/api/groups",
        "/api/groups/friends",
        "/metrics",
    ] {
        let r = get(&cpm, path, None);
        assert_error(&r, 401);
        assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
        assert_error(&get(&cpm, path, Some("wrong")), 401);
    }
    let r = client::request(&base(&cpm), "POST", "/api/users", None, Some("{\"address\":\"x\"}")).unwrap();
    assert_error(&r, 401);
    for (method, body) in [("PUT", Some("{\"owner\":\"alice\"}")), ("DELETE", None)] {
        let r = client::request(&base(&cpm), method, "/api/groups/friends", None, body).unwrap();
        assert_error(&r, 401);
    }
    let r = client::request(
        &base(&cpm),
        "PUT",
        "/api/groups/friends",
        Some(TOKEN),
        Some("{\"owner\":\"alice\"}"),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(get(&cpm, "/api/groups/friends", Some(TOKEN)).status, 200);
    assert_eq!(get(&cpm, "/api/graph", Some(TOKEN)).status, 200);
    assert_eq!(get(&cpm, "/metrics", Some(TOKEN)).status, 200);
    // The page holds no data: served without the token, it asks for it.
    let page = get(&cpm, "/", None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<svg"));
    // cpm inspect without the token fails with the API's message.
    let (ok, _, err) = inspect(&cpm, &["graph"], None);
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, out, err) = inspect(&cpm, &["graph"], Some(TOKEN));
    assert!(ok, "{err}");
    assert!(out.starts_with("KIND"), "{out}");
}

#[test]
fn non_loopback_admin_needs_a_token() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("d");
    let data = data.to_str().expect("utf-8 path");
    let err = serve_refused(&["--sip", "udp:127.0.0.1:0", "--admin", "0.0.0.0:0", "--data", data]);
    assert!(err.contains("without a token"), "{err}");
    // A bad --admin value is refused too.
    let err = serve_refused(&["--sip", "udp:127.0.0.1:0", "--admin", "nowhere"]);
    assert!(err.contains("HOST:PORT or off"), "{err}");
}

#[test]
fn a_second_server_on_a_running_servers_store_is_refused() {
    let cpm = Cpm::start(&["--open", "--admin", "off"]);
    let data = cpm.data.to_str().expect("utf-8 path");
    let err = serve_refused(&["--open", "--admin", "off", "--sip", "udp:127.0.0.1:0", "--data", data]);
    assert!(err.contains("is locked: another cpm server"), "{err}");
}

#[test]
fn admin_off_starts_no_admin_server() {
    let cpm = Cpm::start(&["--open", "--admin", "off"]);
    assert_eq!(cpm.admin, 0);
    assert!(cpm.udp != 0);
}

#[test]
fn graph_user_and_trace_follow_a_message() {
    let cpm = Cpm::start(&["--open"]);
    let mut devices = [Device::start(Transport::Udp), Device::start(Transport::Udp)];
    register_each(&cpm, Transport::Udp, "bob", &devices);
    assert!(message(&cpm, Transport::Udp, "alice", "bob", 200));

    // The graph: ingress actors, bob's PF, both devices, PF → device edges.
    let g = json(&get(&cpm, "/api/graph", None));
    let nodes = g["nodes"].as_array().unwrap();
    let kind = |k: &str| nodes.iter().filter(|n| n["kind"] == k).count();
    assert!(kind("ingress") >= 1, "{g}");
    let pf = nodes
        .iter()
        .find(|n| n["id"] == "pf:sip:bob@127.0.0.1")
        .expect("bob's PF node");
    assert!(pf["age_ms"].as_u64().is_some() && pf["in_flight"].as_u64().is_some());
    assert_eq!(pf["detail"]["registrations"], 2);
    assert_eq!(kind("device"), 2, "{g}");
    let edges = g["edges"].as_array().unwrap();
    assert_eq!(edges.iter().filter(|e| e["from"] == "pf:sip:bob@127.0.0.1").count(), 2);
    assert!(nodes
        .iter()
        .filter(|n| n["kind"] == "device")
        .all(|n| n["detail"]["actor_running"] == true && n["detail"]["forks"] == 1));
    assert!(g["mailbox_depth"].as_str().unwrap().contains("actix"));
    // Filter by user.
    let g = json(&get(&cpm, "/api/graph?user=nobody", None));
    assert_eq!(g["counts"]["pf"], 0);

    // DOT, and a bad format.
    let dot = get(&cpm, "/api/graph?format=dot", None);
    assert_eq!(dot.status, 200);
    assert!(dot.header("content-type").unwrap_or_default().contains("graphviz"));
    assert!(dot.body.starts_with("digraph cpm {"), "{}", dot.body);
    assert!(dot
        .body
        .contains("\"pf:sip:bob@127.0.0.1\" -> \"device:sip:bob@127.0.0.1#"));
    assert!(assert_error(&get(&cpm, "/api/graph?format=png", None), 400).contains("png"));
    assert_error(&get(&cpm, "/api/graph?colour=red", None), 400);

    // The user view: active, two registrations with capabilities and expiry.
    let u = json(&get(&cpm, "/api/users/sip:bob@127.0.0.1", None));
    assert_eq!(u["state"], "active", "{u}");
    let regs = u["registrations"].as_array().unwrap();
    assert_eq!(regs.len(), 2);
    for r in regs {
        assert!(
            r["capabilities"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "+g.oma.sip-im"),
            "{r}"
        );
        let left = r["expires_in"].as_u64().unwrap();
        assert!(left > 500 && left <= 600, "{r}");
        assert_eq!(
            r["actor"]["delivered"].as_u64().unwrap_or(0) + r["actor"]["pending"].as_u64().unwrap_or(0),
            1
        );
    }
    assert_eq!(u["deferred_count"], 0);
    // Short forms of the address name the same user.
    assert_eq!(json(&get(&cpm, "/api/users/bob", None))["aor"], "sip:bob@127.0.0.1");
    assert_error(&get(&cpm, "/api/users/mailto:bob@x", None), 400);
    assert_error(&get(&cpm, "/api/users/sip:bob@elsewhere.example", None), 400);

    // The trace of the MESSAGE: every hop and decision.
    let recent = json(&get(&cpm, "/api/trace/recent?limit=1000", None));
    let call_id = recent["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "forked")
        .and_then(|e| e["call_id"].as_str())
        .expect("a forked event")
        .to_string();
    let path = format!("/api/trace?call_id={}", client::encode(&call_id));
    let t = json(&get(&cpm, &path, None));
    let events: Vec<&str> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for want in [
        "received",
        "authorized",
        "device-chosen",
        "forked",
        "delivered",
        "responded",
    ] {
        assert!(events.contains(&want), "{want} missing from {events:?}");
    }
    assert_eq!(events.iter().filter(|e| **e == "device-chosen").count(), 2);
    let responded = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "responded")
        .unwrap();
    assert!(
        responded["detail"].as_str().unwrap().starts_with("200 to MESSAGE"),
        "{responded}"
    );
    // By the CPIM Message-ID.
    let mid = t["message_ids"][0].as_str().expect("message id linked").to_string();
    let t2 = json(&get(
        &cpm,
        &format!("/api/trace?message_id={}", client::encode(&mid)),
        None,
    ));
    assert_eq!(
        t2["events"].as_array().unwrap().len(),
        t["events"].as_array().unwrap().len()
    );
    // Bad and unknown queries.
    assert_error(&get(&cpm, "/api/trace", None), 400);
    assert_error(&get(&cpm, "/api/trace?call_id=a&message_id=b", None), 400);
    assert_error(&get(&cpm, "/api/trace?call_id=", None), 400);
    assert_error(&get(&cpm, "/api/trace?call_id=never-seen", None), 404);
    assert_error(&get(&cpm, "/api/trace/recent?limit=0", None), 400);
    assert_error(&get(&cpm, "/api/trace/recent?limit=many", None), 400);
    assert_error(&get(&cpm, "/api/nothing", None), 404);

    // cpm inspect prints the same as tables.
    let (ok, out, err) = inspect(&cpm, &["graph"], None);
    assert!(ok, "{err}");
    assert!(
        out.contains("pf") && out.contains("sip:bob@127.0.0.1") && out.contains("device"),
        "{out}"
    );
    let (ok, out, err) = inspect(&cpm, &["graph", "--dot"], None);
    assert!(ok && out.starts_with("digraph"), "{err}");
    let (ok, out, err) = inspect(&cpm, &["user", "bob"], None);
    assert!(ok, "{err}");
    assert!(
        out.contains("state       active") && out.contains("+g.oma.sip-im"),
        "{out}"
    );
    let (ok, out, err) = inspect(&cpm, &["trace", &call_id], None);
    assert!(ok, "{err}");
    assert!(out.contains("device-chosen") && out.contains("delivered"), "{out}");
    let (ok, out, _) = inspect(&cpm, &["trace", &mid], None);
    assert!(ok && out.contains("forked"), "{out}");
    let (ok, _, err) = inspect(&cpm, &["trace", "never-seen"], None);
    assert!(!ok && err.contains("404"), "{err}");

    for d in devices.iter_mut() {
        d.finish();
    }
}

#[test]
fn passive_user_is_read_from_the_store_without_activation() {
    let (_dir, cfg) = config("[actors]\nidle_timeout_s = 1\n");
    let cpm = Cpm::start(&["--open", "--config", &cfg]);
    let dev = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "bob", &dev.contact(), 1, 600, 200));
    // Carol has no device: the message is deferred.
    assert!(message(&cpm, Transport::Udp, "alice", "carol", 202));
    let passive = || {
        let g = json(&get(&cpm, "/api/graph", None));
        g["counts"]["pf"] == 0
    };
    assert!(eventually(Duration::from_secs(10), passive), "PFs passivate");
    let u = json(&get(&cpm, "/api/users/bob", None));
    assert_eq!(u["state"], "passive", "{u}");
    assert_eq!(u["registrations"].as_array().unwrap().len(), 1);
    assert!(u["registrations"][0]["actor"].is_null());
    let c = json(&get(&cpm, "/api/users/carol", None));
    assert_eq!(c["deferred_count"], 1, "{c}");
    assert_eq!(c["deferred"][0]["from"], "sip:alice@127.0.0.1");
    assert!(
        c["recent"].as_array().unwrap().iter().any(|e| e["event"] == "deferred"),
        "{c}"
    );
    // Looking did not activate anyone.
    assert!(passive(), "inspection must not activate users");
    let m = get(&cpm, "/metrics", None).body;
    assert!(m.contains("cpm_deferred_queue_messages 1"), "{m}");
    assert!(m.contains("cpm_deferrals_total 1"), "{m}");
}

#[test]
fn users_and_preferences_are_provisioned_at_run_time() {
    let (_dir, cfg) = config("[[users]]\naddress = \"sip:alice@127.0.0.1\"\n");
    let cpm = Cpm::start_prepared(&["--config", &cfg], |data| {
        user_add(data, "sip:alice@127.0.0.1", "alice-pw")
    });
    // alice authenticates (digest): the server is not --open.
    let alice = Client::for_domain(&cpm, "127.0.0.1");
    let message = |_: &Cpm, _: Transport, _: &str, to: &str, code: u16| {
        let resp = alice.message_to(
            "alice",
            "alice-pw",
            "sip:alice@127.0.0.1",
            &format!("sip:{to}@127.0.0.1"),
            &[],
            Alg::Sha256,
        );
        status_of(&resp) == Some(code) || panic!("expected {code}: {resp}")
    };
    let t = Transport::Udp;
    assert!(message(&cpm, t, "alice", "carol", 404), "carol is not provisioned yet");
    assert_error(&get(&cpm, "/api/users/carol", None), 404);

    let r = send(&cpm, "POST", "/api/users", "{\"address\": \"carol\"}");
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(json(&r)["aor"], "sip:carol@127.0.0.1");
    assert_error(
        &send(&cpm, "POST", "/api/users", "{\"address\": \"sip:carol@127.0.0.1\"}"),
        409,
    );
    assert_error(&send(&cpm, "POST", "/api/users", "{\"address\": \"mailto:c@x\"}"), 400);
    assert_error(
        &send(&cpm, "POST", "/api/users", "{\"address\": \"sip:c@elsewhere.example\"}"),
        400,
    );
    assert!(assert_error(
        &send(&cpm, "POST", "/api/users", "{\"address\": \"d\", \"role\": 1}"),
        400
    )
    .contains("role"));
    assert_error(&send(&cpm, "POST", "/api/users", "not json"), 400);
    assert_error(&send(&cpm, "POST", "/api/users", "{}"), 400);
    let list = json(&get(&cpm, "/api/users", None));
    assert_eq!(
        list["provisioned"],
        serde_json::json!(["sip:alice@127.0.0.1", "sip:carol@127.0.0.1"])
    );

    // In force without a restart: carol takes messages (deferred: no device).
    assert!(message(&cpm, t, "alice", "carol", 202));
    assert_eq!(json(&get(&cpm, "/api/users/carol", None))["deferred_count"], 1);

    // Preferences: validated, then in force for the next message.
    let p = "/api/users/carol/preferences";
    assert!(assert_error(&send(&cpm, "PUT", p, "{\"when_unavailable\": \"sometimes\"}"), 400).contains("sometimes"));
    assert_error(&send(&cpm, "PUT", p, "{\"colour\": \"red\"}"), 400);
    assert!(
        assert_error(&send(&cpm, "PUT", p, "{\"reject_content_types\": [\"notatype\"]}"), 400).contains("notatype")
    );
    assert_error(&send(&cpm, "PUT", p, "{\"reject_from\": [\"not a uri\"]}"), 400);
    assert_error(&send(&cpm, "PUT", "/api/users/nobody/preferences", "{}"), 404);
    let r = send(&cpm, "PUT", p, "{\"when_unavailable\": \"reject\"}");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(message(&cpm, t, "alice", "carol", 480), "reject preference in force");
    let r = json(&get(&cpm, p, None));
    assert_eq!(r["own"], true);
    assert_eq!(r["preferences"]["when_unavailable"], "reject");
    let r = send(&cpm, "PUT", p, "{\"reject_from\": [\"sip:alice@127.0.0.1\"]}");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(message(&cpm, t, "alice", "carol", 603), "originator rule in force");

    // Provider policy, read-only.
    let pol = json(&get(&cpm, "/api/policy", None));
    assert_eq!(pol["registrar"]["min_expires"], 60);
    assert_eq!(pol["deferred"]["on_expiry"], "discard");

    // Delete: refused from now on.
    let r = send(&cpm, "DELETE", "/api/users/carol", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(message(&cpm, t, "alice", "carol", 404));
    assert_error(&send(&cpm, "DELETE", "/api/users/carol", ""), 404);
}

/// What the admin API provisions is stored before it is acknowledged: after
/// a crash (SIGKILL right after the answers) the server starts with the
/// config file's users and groups changed as the API left them.
#[test]
fn run_time_provisioning_survives_a_crash() {
    let (_dir, cfg) = config(
        "[[users]]\naddress = \"sip:alice@127.0.0.1\"\n\
         [[users]]\naddress = \"sip:bob@127.0.0.1\"\n\
         [[groups]]\nuri = \"sip:team@127.0.0.1\"\nowner = \"sip:alice@127.0.0.1\"\n\
         members = [\"sip:alice@127.0.0.1\", \"sip:bob@127.0.0.1\"]\n",
    );
    let mut cpm = Cpm::start_prepared(&["--config", &cfg], |data| {
        user_add(data, "sip:bob@127.0.0.1", "bob-pw")
    });
    let ok = |r: Response, status: u16| assert_eq!(r.status, status, "{}", r.body);
    ok(
        send(
            &cpm,
            "POST",
            "/api/users",
            "{\"address\": \"carol\", \"preferences\": {\"when_unavailable\": \"reject\"}}",
        ),
        201,
    );
    ok(
        send(
            &cpm,
            "PUT",
            "/api/users/bob/preferences",
            "{\"when_unavailable\": \"store\"}",
        ),
        200,
    );
    ok(send(&cpm, "DELETE", "/api/users/alice", ""), 200);
    ok(
        put_group(&cpm, "team2", "{\"owner\": \"bob\", \"members\": [\"bob\", \"carol\"]}"),
        201,
    );
    ok(send(&cpm, "DELETE", "/api/groups/team", ""), 200);

    cpm.restart();
    let list = json(&get(&cpm, "/api/users", None));
    assert_eq!(
        list["provisioned"],
        serde_json::json!(["sip:bob@127.0.0.1", "sip:carol@127.0.0.1"]),
        "{list}"
    );
    let carol = json(&get(&cpm, "/api/users/carol/preferences", None));
    assert_eq!(carol["own"], true);
    assert_eq!(carol["preferences"]["when_unavailable"], "reject");
    let bob = json(&get(&cpm, "/api/users/bob/preferences", None));
    assert_eq!(bob["preferences"]["when_unavailable"], "store");
    assert_error(&get(&cpm, "/api/groups/team", None), 404);
    let team2 = json(&get(&cpm, "/api/groups/team2", None));
    assert_eq!(
        team2["members"],
        serde_json::json!(["sip:bob@127.0.0.1", "sip:carol@127.0.0.1"])
    );
    assert!(
        cpm.log()
            .contains("applied run-time provisioning (admin API) over the config file"),
        "start says so in the log"
    );

    // And in force for SIP: carol's preference refuses, alice is gone.
    let bob = Client::for_domain(&cpm, "127.0.0.1");
    let to = |user: &str| {
        let resp = bob.message_to(
            "bob",
            "bob-pw",
            "sip:bob@127.0.0.1",
            &format!("sip:{user}@127.0.0.1"),
            &[],
            Alg::Sha256,
        );
        status_of(&resp)
    };
    assert_eq!(to("carol"), Some(480));
    assert_eq!(to("alice"), Some(404));
}

#[test]
fn metrics_count_requests_deliveries_and_actors() {
    let cpm = Cpm::start(&["--open"]);
    let dev = Device::start(Transport::Udp);
    assert!(register(&cpm, Transport::Udp, "bob", &dev.contact(), 1, 600, 200));
    assert!(messages(&cpm, Transport::Udp, "alice", "bob", 3, 200, &[]));
    let r = get(&cpm, "/metrics", None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap_or_default().starts_with("text/plain"));
    let m = r.body;
    for want in [
        "cpm_sip_requests_total{method=\"MESSAGE\",status=\"200\"} 3",
        "cpm_sip_requests_total{method=\"REGISTER\",status=\"200\"} 1",
        "cpm_sip_request_duration_seconds_count{method=\"MESSAGE\"} 3",
        "cpm_sip_request_duration_seconds_bucket{method=\"MESSAGE\",le=\"+Inf\"} 3",
        "cpm_deliveries_total 3",
        "cpm_deferrals_total 0",
        // bob's PF, and alice's (it notes which device sent each message, for its reports)
        "cpm_actors{kind=\"pf\"} 2",
        "cpm_actors{kind=\"device\"} 1",
        "cpm_actors{kind=\"device_actor\"} 1",
        "cpm_events_total{event=\"forked\"} 3",
        "# TYPE cpm_sip_request_duration_seconds histogram",
        // A few messages: the trace ring records every call.
        "cpm_trace_sampling 1",
    ] {
        assert!(m.contains(want), "{want} missing from\n{m}");
    }
    // The first worker's CPU time, read from /proc (a counter in seconds).
    let worker_cpu = m
        .lines()
        .find_map(|l| l.strip_prefix("cpm_worker_cpu_seconds_total{worker=\"0\"} "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(worker_cpu.is_some_and(|s| s >= 0.0), "worker CPU missing from\n{m}");
    // Every sample line is `name{labels} number`.
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(value.parse::<f64>().is_ok(), "bad sample {line:?}");
    }
}

/// The graph page in a real browser (headless Chromium driven by
/// playwright-core, tests/browser/graph.mjs) while sipp traffic runs: bob's
/// PF and device nodes are drawn, search and click-through work. Fails (never
/// skips) without node, chromium or `npm ci` in tests/browser. Saves its
/// screenshot under target/tmp/screenshots, or as docs/screenshots/graph.png
/// with `CPM_UPDATE_SCREENSHOTS=1`.
#[test]
fn graph_page_in_a_real_browser() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        node_ok,
        "node is required for the browser test (apt-get install -y nodejs npm)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "chromium is required for the browser test: apt-get install -y chromium"
    );
    assert!(
        std::path::Path::new(dir).join("node_modules/playwright-core").exists(),
        "playwright-core is required: (cd tests/browser && npm ci)"
    );
    let cpm = Cpm::start(&["--open"]);
    let devices = [Device::start(Transport::Udp), Device::start(Transport::Tcp)];
    assert!(register(
        &cpm,
        Transport::Udp,
        "bob",
        &devices[0].contact(),
        1,
        600,
        200
    ));
    assert!(register(
        &cpm,
        Transport::Tcp,
        "bob",
        &devices[1].contact(),
        2,
        600,
        200
    ));
    assert!(register(
        &cpm,
        Transport::Udp,
        "carol",
        &devices[0].contact(),
        3,
        600,
        200
    ));
    assert!(message(&cpm, Transport::Udp, "alice", "bob", 200));
    // A group with traffic (its CF is drawn) and then a member who never had any.
    let r = send(
        &cpm,
        "PUT",
        "/api/groups/friends",
        "{\"owner\": \"alice\", \"members\": [\"alice\", \"bob\", \"carol\"]}",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(message(&cpm, Transport::Udp, "alice", "friends", 202));
    let r = send(
        &cpm,
        "PUT",
        "/api/groups/friends",
        "{\"owner\": \"alice\", \"members\": [\"alice\", \"bob\", \"carol\", \"erin\"]}",
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Traffic while the page is open.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, udp) = (stop.clone(), cpm.udp);
        std::thread::spawn(move || {
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 200 {
                let ok = sipp_call(
                    udp,
                    Transport::Udp,
                    "message_uac.xml",
                    &[("from", "alice"), ("to", if sent % 2 == 0 { "bob" } else { "carol" })],
                    200,
                );
                assert!(ok, "message during the browser test");
                sent += 1;
            }
            sent
        })
    };
    // The committed screenshot changes only when asked for; a plain test
    // run leaves the tree as it was.
    let shots = match std::env::var_os("CPM_UPDATE_SCREENSHOTS") {
        Some(_) => concat!(env!("CARGO_MANIFEST_DIR"), "/docs/screenshots"),
        None => concat!(env!("CARGO_TARGET_TMPDIR"), "/screenshots"),
    };
    std::fs::create_dir_all(shots).expect("screenshot directory");
    let out = Command::new("node")
        .arg("graph.mjs")
        .current_dir(dir)
        .env("CPM_ADMIN_URL", base(&cpm))
        .env("CPM_USER", "sip:bob@127.0.0.1")
        .env("CPM_DEVICES", "2")
        .env("CPM_GROUP", "sip:friends@127.0.0.1")
        .env("CPM_GROUP_PASSIVE", "sip:erin@127.0.0.1")
        .env("CPM_SCREENSHOT", format!("{shots}/graph.png"))
        .output()
        .expect("run node");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = traffic.join().expect("traffic thread");
    assert!(
        out.status.success(),
        "browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sent > 0, "traffic ran while the page was open");
    assert!(std::path::Path::new(shots).join("graph.png").exists());
}

/// PUT /api/groups/{uri} with `body`.
fn put_group(cpm: &Cpm, group: &str, body: &str) -> Response {
    send(cpm, "PUT", &format!("/api/groups/{group}"), body)
}

#[test]
fn group_provisioning_refuses_bad_input() {
    let cpm = Cpm::start(&["--open"]);
    let bad = |body: &str| assert_error(&put_group(&cpm, "friends", body), 400);
    assert!(bad("{\"owner\": \"alice\", \"members\": [\"bob\", \"sip:eve@elsewhere.example\"]}").contains("elsewhere"));
    assert!(bad("{\"owner\": \"alice\", \"members\": [\"tel:+15550100\"]}").contains("not a SIP URI"));
    assert!(bad("{\"owner\": \"alice\", \"members\": [\"a\", \"b\", \"c\"], \"max_size\": 2}").contains("max_size"));
    assert!(bad("{\"owner\": \"alice\", \"max_size\": 0}").contains("max_size"));
    assert!(bad("{\"owner\": \"sip:a@elsewhere.example\"}").contains("owner"));
    assert!(bad("{\"owner\": \"alice\", \"send_policy\": \"everybody\"}").contains("everybody"));
    assert!(bad("{\"owner\": \"alice\", \"colour\": \"red\"}").contains("colour"));
    assert!(bad("{\"owner\": \"alice\", \"uri\": \"sip:other@127.0.0.1\"}").contains("path"));
    bad("{\"members\": [\"bob\"]}");
    bad("not json");
    bad("[1, 2]");
    assert_error(
        &put_group(&cpm, "sip:g@elsewhere.example", "{\"owner\": \"alice\"}"),
        400,
    );
    assert_error(&put_group(&cpm, "uri-list", "{\"owner\": \"alice\"}"), 400);
    // Nothing was created.
    assert_eq!(json(&get(&cpm, "/api/groups", None))["groups"], serde_json::json!([]));
    assert_error(&get(&cpm, "/api/groups/friends", None), 404);
    assert_error(&send(&cpm, "DELETE", "/api/groups/friends", ""), 404);
}

#[test]
fn group_membership_changes_take_effect_for_the_next_message_and_cf_is_in_the_graph() {
    let cpm = Cpm::start(&["--open"]);
    let t = Transport::Udp;
    let (bob, carol) = (Device::start(t), Device::start(t));
    assert!(register(&cpm, t, "bob", &bob.contact(), 1, 600, 200));
    assert!(register(&cpm, t, "carol", &carol.contact(), 2, 600, 200));

    // Create: canonical members, duplicates dropped, defaults filled in.
    let r = put_group(
        &cpm,
        "friends",
        "{\"owner\": \"alice\", \"members\": [\"alice\", \"sip:bob@127.0.0.1\", \"carol@127.0.0.1\", \"bob\"]}",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let def = json(&r);
    assert_eq!(def["uri"], "sip:friends@127.0.0.1");
    assert_eq!(
        def["members"],
        serde_json::json!(["sip:alice@127.0.0.1", "sip:bob@127.0.0.1", "sip:carol@127.0.0.1"])
    );
    assert_eq!(
        (def["send_policy"].as_str(), def["max_size"].as_u64()),
        (Some("members"), Some(100))
    );
    let list = json(&get(&cpm, "/api/groups", None));
    assert_eq!(list["groups"][0]["uri"], "sip:friends@127.0.0.1", "{list}");
    assert_eq!(list["groups"][0]["active"], false);

    assert!(message(&cpm, t, "alice", "friends", 202));
    assert_eq!(bob.wait_lines(1, WAIT).len(), 1);
    assert_eq!(carol.wait_lines(1, WAIT).len(), 1);

    // The graph: the CF node and its edges to every member from the registry.
    let g = json(&get(&cpm, "/api/graph", None));
    let nodes = g["nodes"].as_array().unwrap();
    let cf = nodes
        .iter()
        .find(|n| n["id"] == "cf:sip:friends@127.0.0.1")
        .unwrap_or_else(|| panic!("CF node in {g}"));
    assert_eq!(cf["kind"], "cf");
    assert_eq!(cf["key"], "sip:friends@127.0.0.1");
    assert!(
        cf["age_ms"].as_u64().is_some() && cf["idle_ms"].as_u64().is_some(),
        "{cf}"
    );
    assert!(
        cf["in_flight"].as_u64().is_some(),
        "group messages being fanned out: {cf}"
    );
    assert!(cf["detail"]["copies_in_flight"].as_u64().is_some(), "{cf}");
    assert_eq!(cf["detail"]["pending_reports"], 1, "{cf}");
    assert_eq!(cf["detail"]["members"], 3, "{cf}");
    assert_eq!(g["counts"]["cf"], 1);
    let member_edge = |g: &Value, to: &str| -> Option<String> {
        g["edges"].as_array().unwrap().iter().find_map(|e| {
            (e["from"] == "cf:sip:friends@127.0.0.1" && e["to"] == format!("pf:{to}"))
                .then(|| e["kind"].as_str().unwrap_or_default().to_string())
        })
    };
    for m in ["sip:bob@127.0.0.1", "sip:carol@127.0.0.1"] {
        assert_eq!(member_edge(&g, m).as_deref(), Some("member"), "{m}: {g}");
        assert!(nodes.iter().any(|n| n["id"] == format!("pf:{m}")), "{m}'s PF is a node");
    }
    assert!(
        member_edge(&g, "sip:alice@127.0.0.1").is_some(),
        "the sender is a member too"
    );
    let one = json(&get(&cpm, "/api/groups/sip:friends@127.0.0.1", None));
    assert_eq!(one["active"], true, "{one}");
    // Nobody reported on the message yet: its record is counted (in the
    // admin API, off the CF's thread).
    assert_eq!(one["live"]["pending_reports"], 1, "{one}");
    assert!(one["live"]["copies_in_flight"].as_u64().is_some(), "{one}");
    // The user filter keeps a group when it or one of its members matches.
    assert_eq!(json(&get(&cpm, "/api/graph?user=carol", None))["counts"]["cf"], 1);
    assert_eq!(json(&get(&cpm, "/api/graph?user=nobody", None))["counts"]["cf"], 0);

    // Replace: carol out, erin (never active) in; the graph marks erin's edge.
    let r = put_group(
        &cpm,
        "sip:friends@127.0.0.1",
        "{\"owner\": \"alice\", \"members\": [\"alice\", \"bob\", \"erin\"], \"max_size\": 5}",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let g = json(&get(&cpm, "/api/graph", None));
    assert_eq!(
        member_edge(&g, "sip:erin@127.0.0.1").as_deref(),
        Some("member-passive"),
        "{g}"
    );
    assert!(member_edge(&g, "sip:carol@127.0.0.1").is_none(), "{g}");
    assert_eq!(
        g["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == "cf:sip:friends@127.0.0.1")
            .unwrap()["detail"]["passive_members"],
        1
    );
    let dot = get(&cpm, "/api/graph?format=dot", None).body;
    assert!(dot.contains("\"cf:sip:friends@127.0.0.1\" [shape=hexagon"), "{dot}");
    assert!(
        dot.contains("\"cf:sip:friends@127.0.0.1\" -> \"pf:sip:bob@127.0.0.1\" [label=\"member\"]"),
        "{dot}"
    );
    assert!(
        dot.contains(
            "\"cf:sip:friends@127.0.0.1\" -> \"pf:sip:erin@127.0.0.1\" [label=\"member-passive\", style=dashed]"
        ),
        "{dot}"
    );

    // The next message follows the new membership.
    assert!(message(&cpm, t, "alice", "friends", 202));
    assert_eq!(bob.wait_lines(2, WAIT).len(), 2);
    assert_eq!(
        carol.wait_lines(2, Duration::from_secs(2)).len(),
        1,
        "carol is no longer a member"
    );

    // Delete: gone from the API.
    let r = send(&cpm, "DELETE", "/api/groups/friends", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["deleted"], "sip:friends@127.0.0.1");
    assert_error(&get(&cpm, "/api/groups/sip:friends@127.0.0.1", None), 404);
    assert_eq!(json(&get(&cpm, "/api/groups", None))["groups"], serde_json::json!([]));
}

#[test]
fn a_user_created_with_a_password_can_authenticate() {
    let (_dir, cfg) = config("");
    let cpm = Cpm::start(&["--config", &cfg]);
    assert_error(
        &send(
            &cpm,
            "POST",
            "/api/users",
            "{\"address\": \"dora\", \"password\": \"\"}",
        ),
        400,
    );
    let r = send(
        &cpm,
        "POST",
        "/api/users",
        "{\"address\": \"dora\", \"password\": \"dora-pw\"}",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let device = RawDevice::start(|_, _| 200);
    let dora = Client::for_domain(&cpm, "127.0.0.1");
    let resp = dora.register_as("dora", "dora-pw", "dora", &device.contact(), Alg::Sha256);
    assert_eq!(status_of(&resp), Some(200), "{resp}");
    let wrong = Client::for_domain(&cpm, "127.0.0.1").register_as("dora", "nope", "dora", &device.contact(), Alg::Md5);
    assert_ne!(status_of(&wrong), Some(200), "{wrong}");
    // Deleting the user removes its credentials too.
    assert_eq!(send(&cpm, "DELETE", "/api/users/dora", "").status, 200);
    let again =
        Client::for_domain(&cpm, "127.0.0.1").register_as("dora", "dora-pw", "dora", &device.contact(), Alg::Sha256);
    assert_ne!(status_of(&again), Some(200), "{again}");
}

#[test]
fn provider_policy_changes_at_run_time() {
    let cpm = Cpm::start(&["--open"]);
    assert_error(
        &send(&cpm, "PUT", "/api/policy", "{\"registrar\": {\"min_expires\": 0}}"),
        400,
    );
    assert_error(&send(&cpm, "PUT", "/api/policy", "{\"colour\": {}}"), 400);
    assert_error(&send(&cpm, "PUT", "/api/policy", "{\"actors\": {\"workers\": 8}}"), 400);
    assert_error(&send(&cpm, "PUT", "/api/policy", "not json"), 400);
    let r = send(
        &cpm,
        "PUT",
        "/api/policy",
        "{\"deferred\": {\"max_messages\": 1, \"retry_after_s\": 77}}",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["deferred"]["max_messages"], 1);
    assert_eq!(json(&get(&cpm, "/api/policy", None))["deferred"]["retry_after_s"], 77);
    // In force for the next message: bob is offline, his queue now holds one.
    assert!(message(&cpm, Transport::Udp, "alice", "bob", 202));
    assert!(message(&cpm, Transport::Udp, "alice", "bob", 486), "over the new cap");

    // Stored: it outlives a crash, and replaces the config file's until
    // DELETE /api/policy goes back to it.
    let mut cpm = cpm;
    cpm.restart();
    assert_eq!(json(&get(&cpm, "/api/policy", None))["deferred"]["retry_after_s"], 77);
    assert!(cpm
        .log()
        .contains("the provider policy set through the admin API replaces"));
    let r = send(&cpm, "DELETE", "/api/policy", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let back = json(&r)["deferred"]["retry_after_s"].clone();
    assert_ne!(back, 77, "the config file's (default) again");
    assert_error(&send(&cpm, "DELETE", "/api/policy", ""), 404);
    cpm.restart();
    assert_eq!(json(&get(&cpm, "/api/policy", None))["deferred"]["retry_after_s"], back);
}
