//! End to end in headless Chromium: the chat app as users see it, against the real binary with
//! several workers, a private Redis and live websockets.
//!
//! The admin logs in and creates a user in the admin; that user logs in in a second browser;
//! a message sent on `/chat/` in one browser appears in the other; a message sent to the new
//! user on `/userchat/` appears in that user's browser only. Screenshots of the chat pages are
//! written to `target/screenshots/` for people to look at.
//!
//! Needs Debian's `chromium` and `chromium-driver`: `make test` installs them
//! (`scripts/ensure-deps.sh chromium`). Without them this test fails, saying so.

mod common;
mod deploy;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::web::Database;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

/// How long a page may take to show what the test waits for.
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// A chromedriver on a free port; killed when dropped.
struct Driver {
    child: Child,
    port: u16,
    profiles: PathBuf,
}

impl Driver {
    fn start() -> Self {
        let found = Command::new("chromedriver")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "\n\n*** chromedriver is not installed: the browser test cannot run. ***\n\
             Install Chromium with `scripts/ensure-deps.sh chromium` (as root), or run `make test`,\n\
             which does it.\n"
        );
        let port = common::free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profiles =
            std::env::temp_dir().join(format!("wsredis-chromium-{}-{port}", std::process::id()));
        let driver = Driver {
            child,
            port,
            profiles,
        };
        assert!(
            common::wait_until(Duration::from_secs(20), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "chromedriver did not start"
        );
        driver
    }

    /// A new browser with a fresh profile (its own cookies).
    async fn browser(&self, name: &str) -> Client {
        let profile = self.profiles.join(name);
        std::fs::create_dir_all(&profile).unwrap();
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1000,720",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut options = serde_json::json!({ "args": args });
        if std::path::Path::new("/usr/lib/chromium/chromium").exists() {
            options["binary"] = "/usr/lib/chromium/chromium".into();
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profiles);
    }
}

/// Wait until the text of `css` contains `needle`; returns whether it did.
async fn shows(client: &Client, css: &str, needle: &str) -> bool {
    let deadline = Instant::now() + PAGE_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(e) = client.find(Locator::Css(css)).await
            && e.text().await.is_ok_and(|t| t.contains(needle))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Wait until the chat page's socket is connected.
async fn connected(client: &Client) {
    client
        .wait()
        .at_most(PAGE_TIMEOUT)
        .for_element(Locator::Css("#chat[data-state='connected']"))
        .await
        .expect("the chat page connects its websocket");
}

async fn fill(client: &Client, css: &str, text: &str) {
    let e = client.find(Locator::Css(css)).await.expect(css);
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .expect(css)
        .click()
        .await
        .unwrap();
}

async fn login(client: &Client, base: &str, username: &str, password: &str, next: &str) {
    client
        .goto(&format!("{base}/accounts/login/?next={next}"))
        .await
        .unwrap();
    fill(client, "#id_username", username).await;
    fill(client, "#id_password", password).await;
    click(client, "#login-submit").await;
    assert!(
        shows(client, "#whoami", username).await,
        "{username} is logged in"
    );
}

async fn send(client: &Client, text: &str) {
    fill(client, "#text_message", text).await;
    click(client, "#send_message").await;
}

fn screenshots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_in_two_browsers() {
    let db = Database::with_fixtures();
    let server = db.serve(&[
        "--workers",
        "3",
        "--heartbeat=--heartbeat--",
        "--history",
        "chat=100:600",
    ]);
    let base = format!("http://{}", server.base());
    let driver = Driver::start();
    let admin = driver.browser("admin").await;
    let erin = driver.browser("erin").await;
    let result = scenario(Some(&server), &base, &admin, &erin).await;
    let _ = admin.close().await;
    let _ = erin.close().await;
    if let Err(e) = result {
        panic!("{e}\nserver log:\n{}", server.log_text());
    }
}

/// The users' flow; with `server`, also a rolling reload of its workers at the end.
async fn scenario(
    server: Option<&common::server::Server>,
    base: &str,
    admin: &Client,
    erin: &Client,
) -> Result<(), String> {
    // The admin creates erin, in the group chatusers.
    login(admin, base, "admin", "secret", "/admin/").await;
    admin
        .goto(&format!("{base}/admin/users/add/"))
        .await
        .unwrap();
    fill(admin, "#id_username", "erin").await;
    fill(admin, "#id_password", "erin-secret").await;
    fill(admin, "#id_first_name", "Erin").await;
    click(admin, "input[name='groups'][value='chatusers']").await;
    click(admin, "#save-user").await;
    if !shows(admin, "main", "The user was created.").await {
        return Err("the admin could not create erin".into());
    }
    screenshot(admin, "admin-user-created").await;

    // Erin logs in in another browser; both open the broadcast chat.
    login(erin, base, "erin", "erin-secret", "/chat/").await;
    admin.goto(&format!("{base}/chat/")).await.unwrap();
    connected(admin).await;
    connected(erin).await;
    send(admin, "hello from admin").await;
    if !shows(erin, "#billboard", "admin: hello from admin").await {
        return Err("erin did not see the admin's broadcast".into());
    }
    send(erin, "hi admin, erin here").await;
    if !shows(admin, "#billboard", "erin: hi admin, erin here").await {
        return Err("the admin did not see erin's broadcast".into());
    }
    if !shows(admin, "#billboard", "admin: hello from admin").await {
        return Err("the admin's own message is not echoed".into());
    }
    // Each sees the other in the page's online list (presence, polled from the API).
    if !shows(admin, "#online_users", "erin").await {
        return Err("the admin's online list does not show erin".into());
    }
    if !shows(erin, "#online_users", "admin").await {
        return Err("erin's online list does not show the admin".into());
    }
    screenshot(admin, "chat-admin").await;
    screenshot(erin, "chat-erin").await;

    // A message to erin on /userchat/ reaches erin's browser, not the sender's.
    admin.goto(&format!("{base}/userchat/")).await.unwrap();
    erin.goto(&format!("{base}/userchat/")).await.unwrap();
    connected(admin).await;
    connected(erin).await;
    admin
        .find(Locator::Css("#target"))
        .await
        .map_err(|e| e.to_string())?
        .select_by_value("erin")
        .await
        .map_err(|e| e.to_string())?;
    send(admin, "a private word for erin").await;
    if !shows(admin, "#feedback", "sent to Erin (erin)").await {
        return Err("the admin's page did not confirm the send".into());
    }
    if !shows(erin, "#billboard", "admin: a private word for erin").await {
        return Err("erin did not receive the private message".into());
    }
    let admin_board = admin
        .find(Locator::Css("#billboard"))
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    if admin_board.contains("private word") {
        return Err(format!(
            "the sender's browser received the private message: {admin_board}"
        ));
    }
    screenshot(admin, "userchat-admin").await;
    screenshot(erin, "userchat-erin").await;

    // A rolling reload closes every socket (1001); the pages reconnect to the new workers.
    let Some(server) = server else {
        return Ok(());
    };
    let old = server.worker_pids();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    // Published to erin (on /userchat/) while the pages lose their sockets: recovered from the
    // history on reconnect (or delivered live), shown exactly once either way.
    let redis_url = server.redis.as_ref().map(|r| r.url()).unwrap_or_default();
    let bus = wsredis::bus::Bus::connect_url(&redis_url, 4)
        .await
        .map_err(|e| e.to_string())?;
    let history = Some(wsredis::bus::Retention {
        size: 100,
        ttl_secs: 600,
    });
    bus.publish_with(
        &["user:erin:chat".to_owned()],
        "server: during the reload".into(),
        3600,
        history,
    )
    .await
    .map_err(|e| e.to_string())?;
    bus.quit().await;
    let replaced = common::eventually(Duration::from_secs(30), || {
        let now = server.worker_pids();
        now.len() == old.len() && now.iter().all(|p| !old.contains(p))
    })
    .await;
    if !replaced {
        return Err("the workers were not replaced after SIGHUP".into());
    }
    send(admin, "after the reload").await;
    if !shows(erin, "#billboard", "admin: after the reload").await {
        return Err("erin's page did not reconnect after the reload".into());
    }
    connected(erin).await;
    let board = erin
        .find(Locator::Css("#billboard"))
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    if board.matches("server: during the reload").count() != 1 {
        return Err(format!(
            "the message published during the reload is not shown exactly once: {board}"
        ));
    }
    Ok(())
}

/// The same flow through `make run-behind-nginx`'s stack: nginx in front, pages from the HTTP
/// pool, websockets from the websocket pool, sessions shared through Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_in_two_browsers_behind_nginx() {
    if !deploy::have("nginx", "the stack needs nginx") {
        return;
    }
    let var = deploy::TempDir::new("browser-nginx");
    let addr = format!("127.0.0.1:{}", common::free_port());
    let log = var.join("script.log");
    let mut cmd = Command::new(deploy::repo().join("scripts/run-behind-nginx.sh"));
    cmd.env("VAR", &var.0)
        .env("WSREDIS_BIN", common::server::binary())
        .env("RUN_REDIS", "private")
        .env("NGINX_LISTEN", &addr)
        .env("HTTP_METRICS_BIND", "off")
        .env("WS_METRICS_BIND", "off")
        .env("HTTP_WORKERS", "2")
        .env("WS_WORKERS", "2")
        .env("WSREDIS_HEARTBEAT", "--heartbeat--")
        .env_remove("WSREDIS_REDIS_URL")
        .env_remove("WSREDIS_DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let stack = deploy::Group::spawn(cmd);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        common::wait_until(Duration::from_secs(60), || log_text().contains("ready:")),
        "stack did not come up:\n{}",
        log_text()
    );
    let base = format!("http://{addr}");
    let driver = Driver::start();
    let admin = driver.browser("nginx-admin").await;
    let erin = driver.browser("nginx-erin").await;
    let result = scenario(None, &base, &admin, &erin).await;
    let _ = admin.close().await;
    let _ = erin.close().await;
    drop(stack);
    if let Err(e) = result {
        panic!("{e}\nstack log:\n{}", log_text());
    }
}

/// Run one of the JS client checks below in a browser on the chat page of a one-worker server
/// (the checks replace `WebSocket` with a fake); what the script passed to its callback.
async fn js_check(name: &str, script: &str) -> serde_json::Value {
    let db = Database::with_fixtures();
    let server = db.serve(&["--workers", "1"]);
    let driver = Driver::start();
    let browser = driver.browser(name).await;
    browser
        .goto(&format!("http://{}/chat/", server.base()))
        .await
        .unwrap();
    let result = browser
        .execute_async(script, Vec::new())
        .await
        .expect("the script ran");
    let _ = browser.close().await;
    result
}

/// The `events` a JS client check recorded, in order.
fn events(result: &serde_json::Value) -> Vec<String> {
    result["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect()
}

/// The JS client on its own, in the browser, against a fake `WebSocket`: heartbeats are not
/// delivered, silence past the heartbeat limit reconnects, the backoff is bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_heartbeats_and_reconnects() {
    let result = js_check("client", JS_CLIENT_CHECK).await;
    let events = events(&result);
    assert_eq!(
        events[..3],
        ["connecting", "connected", "msg:hello"],
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e.contains("--hb--")),
        "heartbeats are not delivered: {events:?}"
    );
    let closed = events
        .iter()
        .position(|e| e == "closed:4000")
        .unwrap_or_else(|| panic!("silence closes the socket: {events:?}"));
    assert_eq!(
        events[closed + 1..closed + 3],
        ["connecting", "connected"],
        "and it reconnects: {events:?}"
    );
    assert!(result["sockets"].as_u64().unwrap() >= 2);
    assert!(
        result["sent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "--hb--"),
        "the client sends heartbeats: {result}"
    );
    for bound in result["bounds"].as_array().unwrap() {
        assert!(bound.as_u64().unwrap() <= 40, "backoff is capped: {result}");
    }
}

/// Runs in the page: a fake `WebSocket` that opens, delivers a heartbeat and a message, then
/// stays silent.
const JS_CLIENT_CHECK: &str = r#"
const done = arguments[arguments.length - 1];
const events = [];
const all = [];
class Fake {
  constructor(url) {
    this.url = url; this.readyState = 0; this.sent = []; all.push(this);
    setTimeout(() => { this.readyState = 1; if (this.onopen) this.onopen(); }, 5);
  }
  send(m) { this.sent.push(m); }
  close() { this.readyState = 3; }
}
const real = window.WebSocket;
window.WebSocket = Fake;
const c = WSRedis({
  uri: 'ws://example.invalid/ws/t?subscribe-broadcast', heartbeat_msg: '--hb--',
  heartbeat_interval: 50, max_missed_heartbeats: 3, backoff_base: 10, backoff_max: 40,
  connecting: () => events.push('connecting'), connected: () => events.push('connected'),
  receive_message: (m) => events.push('msg:' + m),
  disconnected: (e) => events.push('closed:' + e.code)
});
setTimeout(() => { all[0].onmessage({ data: '--hb--' }); all[0].onmessage({ data: 'hello' }); }, 30);
setTimeout(() => {
  window.WebSocket = real;
  const bounds = [];
  for (let i = 0; i < 50; i++) bounds.push(c.backoff(i % 12));
  c.close();
  done({ events, sockets: all.length, sent: all[0].sent, bounds });
}, 900);
"#;

/// The JS client's envelope mode, in the browser, against a fake `WebSocket`: it offers
/// wsredis.v1, hands the body to receive_message, tracks the position per channel, sends it as
/// `recover=` on reconnect and calls onRecoveryFailed / onEvent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_tracks_positions_and_recovers() {
    let result = js_check("client-envelope", JS_ENVELOPE_CHECK).await;
    let events = events(&result);
    assert_eq!(
        events,
        [
            "msg:first",
            "event:join",
            "closed",
            "failed:broadcast:f:0",
            "msg:second"
        ],
        "{result}"
    );
    assert_eq!(result["protocols"][0], "wsredis.v1", "{result}");
    assert_eq!(
        result["urls"][0],
        "ws://example.invalid/ws/t?subscribe-broadcast"
    );
    let second = result["urls"][1].as_str().unwrap();
    let recover = second
        .split_once("&recover=")
        .map(|(_, r)| {
            percent_encoding::percent_decode_str(r)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_else(|| panic!("no recover on reconnect: {second}"));
    let recover: serde_json::Value = serde_json::from_str(&recover).unwrap();
    assert_eq!(
        recover,
        serde_json::json!({"broadcast": {"epoch": "e", "offset": 5}})
    );
    assert_eq!(
        result["positions"],
        serde_json::json!({"broadcast": {"epoch": "f", "offset": 1}})
    );
}

/// Runs in the page: a fake `WebSocket` that selects wsredis.v1 and plays envelope frames.
const JS_ENVELOPE_CHECK: &str = r#"
const done = arguments[arguments.length - 1];
const events = [];
const all = [];
class Fake {
  constructor(url, protocols) {
    this.url = url; this.protocols = protocols; this.readyState = 0; all.push(this);
    this.protocol = protocols && protocols[0] === 'wsredis.v1' ? 'wsredis.v1' : '';
    setTimeout(() => { this.readyState = 1; if (this.onopen) this.onopen(); }, 5);
  }
  send() {}
  close() { this.readyState = 3; }
}
const real = window.WebSocket;
window.WebSocket = Fake;
const c = WSRedis({
  uri: 'ws://example.invalid/ws/t?subscribe-broadcast', envelope: true,
  backoff_base: 10, backoff_max: 20,
  receive_message: (m) => events.push('msg:' + m),
  disconnected: () => events.push('closed'),
  onRecoveryFailed: (f) => events.push('failed:' + f.ch + ':' + f.epoch + ':' + f.offset),
  onEvent: (f) => events.push('event:' + f.type)
});
const frame = (o) => ({ data: JSON.stringify(o) });
setTimeout(() => {
  all[0].onmessage(frame({type: 'message', ch: 'broadcast', data: 'first', offset: 5, epoch: 'e'}));
  all[0].onmessage(frame({type: 'join', ch: 'broadcast', user: 'erin'}));
  all[0].onclose({ code: 1006 });
}, 30);
setTimeout(() => {
  all[1].onmessage(frame({type: 'recovery_failed', ch: 'broadcast', epoch: 'f', offset: 0}));
  all[1].onmessage(frame({type: 'message', ch: 'broadcast', data: 'second', offset: 1, epoch: 'f'}));
  window.WebSocket = real;
  c.close();
  done({ events, urls: all.map((s) => s.url), protocols: all[0].protocols, positions: c.positions() });
}, 200);
"#;
