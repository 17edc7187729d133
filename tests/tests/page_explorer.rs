//! The Peer Explorer page in a real headless Chromium (Debian's, driven by tests/js/page/browser.mjs
//! through playwright-core) against real daemons and real firma-web processes:
//!
//! - the page shows two live daemons' peers (and a js-libp2p peer whose agent string is HTML,
//!   which must appear as literal text);
//! - SIGUSR2 on firma-web: the page shows "reconnecting", then live again with the same peers,
//!   without a page reload and without a gap in its event log, although peers changed meanwhile;
//! - a document dropped on the page reaches the other daemon, is accepted on that daemon's page,
//!   and the sender's page shows the verified receipt; the bytes downloaded back match;
//! - the daemon stopped: "transport unavailable", stale banner, actions disabled; back: live;
//! - readable at 400 px wide and in the dark theme.
//!
//! Screenshots of each state go to `target/screenshots/explorer-*.png` for people to look at.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use firma_ipc::client::{CALL_TIMEOUT, ctx};
use firma_tests::harness::{clear_firma_env, flatten};
use firma_tests::js::{JsNode, js_dir};
use firma_tests::transfer::{hex, sha256_hex};
use firma_tests::web::{Web, WebOpts, http, web_bin};
use firma_tests::{Daemon, DaemonOpts, wait_for_value};
use nix::sys::signal::Signal;
use rand::{RngCore as _, SeedableRng as _};
use serde_json::{Value, json};

/// Debian's browser; CI installs the `chromium` package.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Starting Chromium on a busy 2-core machine.
const BROWSER_READY: Duration = Duration::from_secs(60);
/// One browser command (a `wait` carries its own, shorter, timeout inside).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the page may take to show something the daemons already did.
const PAGE_TIMEOUT_MS: u64 = 30_000;
/// An agent string that is markup: it must show as these characters, and run nothing.
const HTML_AGENT_NAME: &str = "<img src=x onerror=window.__xss=1>evil-peer";
/// A file name that is markup (no `/`: it is one path component).
const HTML_FILE_NAME: &str = "<img src=y onerror=window.__xss=2>contract.pdf";

/// The browser process. Commands go to its stdin as JSON lines; a reader thread collects its
/// answers. Dropping it closes stdin (the script closes Chromium), then kills and reaps it.
struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    next_id: u64,
}

impl Browser {
    async fn launch() -> anyhow::Result<Browser> {
        ensure!(
            std::path::Path::new(CHROMIUM).is_file(),
            "{CHROMIUM} is missing: install Debian's `chromium` package (scripts/test.sh does)"
        );
        let dir = js_dir();
        ensure!(
            dir.join("node_modules").join("playwright-core").is_dir(),
            "playwright-core is not installed in {}.\n  Run: (cd tests/js && npm ci)  (scripts/test.sh does it)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg("page/browser.mjs")
            .current_dir(&dir)
            .env("FIRMA_CHROMIUM", CHROMIUM)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting `node page/browser.mjs` (is Node.js 20+ installed?)")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(out) = child.stdout.take() {
            let lines = lines.clone();
            // A thread: the pipe is blocking and ends with the process.
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let v = serde_json::from_str(&line).unwrap_or_else(|_| json!({ "unparsed": line }));
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(v);
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut s = stderr.lock().unwrap_or_else(|p| p.into_inner());
                    // Bounded: the last few KiB say what went wrong.
                    if s.len() > 64 * 1024 {
                        s.clear();
                    }
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        let stdin = child.stdin.take();
        let b = Browser {
            child,
            stdin,
            lines,
            stderr,
            next_id: 1,
        };
        let ready = b
            .wait_line(BROWSER_READY, "the browser to start", |v| v["event"] == "ready")
            .await?;
        eprintln!("browser: Chromium {}", ready["version"]);
        Ok(b)
    }

    async fn wait_line(&self, deadline: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let lines = self.lines.clone();
        let found = wait_for_value(deadline, what, || {
            let v = lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|v| pred(v))
                .cloned();
            async move { v }
        })
        .await;
        match found {
            Ok((v, _)) => Ok(v),
            Err(e) => Err(e.context(format!(
                "browser stderr:\n{}",
                self.stderr.lock().unwrap_or_else(|p| p.into_inner())
            ))),
        }
    }

    /// Send one command; its answer's `value`, or an error carrying the browser's message.
    async fn call(&mut self, mut cmd: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        cmd["id"] = json!(id);
        let stdin = self.stdin.as_mut().context("the browser's stdin is closed")?;
        writeln!(stdin, "{cmd}")?;
        stdin.flush()?;
        let mut shown = cmd.clone();
        if let Some(files) = shown["files"].as_array_mut() {
            files.iter_mut().for_each(|f| f["hex"] = json!("…"));
        }
        let answer = self
            .wait_line(COMMAND_TIMEOUT, &format!("the browser's answer to {shown}"), |v| {
                v["id"] == json!(id)
            })
            .await?;
        if answer["ok"] != json!(true) {
            bail!("browser command {shown} failed: {}", answer["error"]);
        }
        Ok(answer["value"].clone())
    }

    /// Poll the JS expression `js` in `page` until it is truthy; its value.
    async fn wait(&mut self, page: &str, what: &str, js: &str) -> anyhow::Result<Value> {
        self.call(json!({"cmd": "wait", "page": page, "js": js, "timeout": PAGE_TIMEOUT_MS}))
            .await
            .with_context(|| format!("waiting on page {page} for {what}"))
    }

    async fn eval(&mut self, page: &str, js: &str) -> anyhow::Result<Value> {
        self.call(json!({"cmd": "eval", "page": page, "js": js})).await
    }

    async fn click(&mut self, page: &str, selector: &str) -> anyhow::Result<()> {
        self.call(json!({"cmd": "click", "page": page, "selector": selector}))
            .await
            .map(drop)
    }

    async fn screenshot(&mut self, page: &str, name: &str) -> anyhow::Result<PathBuf> {
        let dir = firma_tests::bins::workspace_root().join("target").join("screenshots");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("explorer-{name}.png"));
        self.call(json!({"cmd": "screenshot", "page": page, "path": path}))
            .await?;
        eprintln!("screenshot: {}", path.display());
        Ok(path)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing stdin makes the script close Chromium and exit; give it a moment, then insist.
        drop(self.stdin.take());
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh single-use login link for `web`, from `firma-web login-url` (as a person would get one).
fn login_url(web: &Web) -> anyhow::Result<String> {
    let mut cmd = Command::new(web_bin()?);
    clear_firma_env(&mut cmd);
    let out = cmd
        .arg("login-url")
        .arg("--state-dir")
        .arg(web.state_dir())
        .arg("--listen")
        .arg(web.addr().to_string())
        .output()
        .context("running firma-web login-url")?;
    ensure!(
        out.status.success(),
        "firma-web login-url failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout)?.trim().to_owned();
    ensure!(url.contains("/login?nonce="), "not a login link: {url}");
    Ok(url)
}

/// JS: the page is live and lists each of `peers` as connected.
fn live_with(peers: &[&str]) -> String {
    let ids = serde_json::to_string(peers).unwrap_or_default();
    format!(
        "window.explorer && explorer.conn.state === 'live' && {ids}.every((id) => \
         explorer.peers.get(id)?.connected && document.querySelector(`#peer-table tr[data-peer=\"${{id}}\"].connected`))"
    )
}

/// JS: the seq numbers shown in the event log, checked to follow each other with no gap or repeat.
const LOG_CHECK: &str = "(() => {
  const seqs = [...document.querySelectorAll('#log-list li')].filter((li) => li.dataset.seq !== '').map((li) => Number(li.dataset.seq));
  const bad = seqs.findIndex((s, i) => i > 0 && s !== seqs[i - 1] + 1);
  const m = window.explorer;
  return { seqs: seqs.length, first: seqs[0] ?? null, last: seqs[seqs.length - 1] ?? null, bad,
           around: bad > 0 ? seqs.slice(Math.max(0, bad - 3), bad + 3) : [], gaps: m.gaps, modelSeq: m.seq,
           snapshotSeq: m.snapshotSeq,
           snapshots: m.log.filter((e) => e.type === 'snapshot').length,
           resyncs: m.log.filter((e) => e.type === 'resync').length,
           resumed: m.log.filter((e) => e.type === 'resumed').length };
})()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_in_a_real_browser() -> anyhow::Result<()> {
    let mut a = Daemon::spawn(DaemonOpts::named("page-a")).await?;
    let b = Daemon::spawn(DaemonOpts::named("page-b")).await?;
    let js = JsNode::spawn(&format!("{HTML_AGENT_NAME}/1.0")).await?;
    let html_agent = format!("{HTML_AGENT_NAME}/1.0");
    a.connect_to(&b).await?;
    a.connect(js.addr()).await?;
    a.wait_connected(&js.peer_id, Duration::from_secs(10)).await?;
    let wa = Web::spawn(WebOpts::new("page-a", a.socket())).await?;
    let wb = Web::spawn(WebOpts::new("page-b", b.socket())).await?;
    let mut br = Browser::launch().await?;

    // 1. Two live daemons' peers (and the HTML-named js peer) on daemon a's page.
    let url = login_url(&wa)?;
    br.call(json!({"cmd": "open", "page": "a", "url": url, "width": 1280, "height": 800}))
        .await?;
    let peers_a = [b.peer_id(), js.peer_id.as_str()];
    br.wait("a", "live, with b and the js peer connected", &live_with(&peers_a))
        .await?;
    let own = br
        .eval("a", "document.getElementById('own-peer-id').textContent")
        .await?;
    ensure!(own == json!(a.peer_id()), "the header shows {own}, not {}", a.peer_id());
    br.eval("a", "window.__marker = 'no reload'; true").await?;

    // 2. The peer named with HTML: literal text, no element made, nothing run.
    let agent_js = format!(
        "document.querySelector('#peer-table tr[data-peer=\"{}\"] .agent')?.textContent",
        js.peer_id
    );
    let shown = br.wait("a", "the js peer's agent string", &agent_js).await?;
    ensure!(
        shown == json!(html_agent),
        "agent shown as {shown}, expected the literal {html_agent:?}"
    );
    let injected = br
        .eval(
            "a",
            "document.querySelectorAll('main img, #topology image').length + (window.__xss === undefined ? 0 : 100)",
        )
        .await?;
    ensure!(
        injected == json!(0),
        "peer-supplied markup became elements or ran: {injected}"
    );
    br.screenshot("a", "live-1280").await?;

    // 3. SIGUSR2: reconnecting, then live again with the same peers, resumed without a gap while
    //    a peer disconnects and reconnects during the reload.
    let before = br.eval("a", LOG_CHECK).await?;
    wa.signal(Signal::SIGUSR2)?;
    {
        let c = a.client().await?;
        flatten(c.client.disconnect(ctx(CALL_TIMEOUT), b.peer_id().to_owned()).await)?;
    }
    let reconnecting = br
        .wait(
            "a",
            "the reconnecting state",
            // The model changes at once, the header on the next frame: wait for the header.
            "explorer.conn.state === 'reconnecting' \
             && document.getElementById('conn-text').textContent.startsWith('Reconnecting') \
             && document.getElementById('conn-text').textContent",
        )
        .await?;
    ensure!(
        reconnecting
            .as_str()
            .is_some_and(|t| t.starts_with("Reconnecting (attempt")),
        "header reads {reconnecting}"
    );
    br.screenshot("a", "reconnecting").await?;
    a.connect_to(&b).await?;
    br.wait("a", "live again with the same peers", &live_with(&peers_a))
        .await?;
    let after = br.eval("a", LOG_CHECK).await?;
    eprintln!("event log before the reload: {before}\nafter: {after}");
    ensure!(after["bad"] == json!(-1), "the event log has a gap or repeat: {after}");
    ensure!(after["gaps"] == json!(0), "the page saw a gap: {after}");
    ensure!(
        after["first"].as_u64() == after["snapshotSeq"].as_u64().map(|s| s + 1),
        "the log does not begin right after the snapshot: {after}"
    );
    ensure!(
        after["snapshots"] == before["snapshots"] && after["resyncs"] == before["resyncs"],
        "the page resynced instead of resuming: {after}"
    );
    ensure!(
        after["resumed"].as_u64() > before["resumed"].as_u64(),
        "no resume noted: {after}"
    );
    let churn = after["modelSeq"].as_u64().unwrap_or(0) - before["modelSeq"].as_u64().unwrap_or(0);
    ensure!(
        churn >= 2,
        "the disconnect and reconnect did not reach the log: {after}"
    );
    let marker = br.eval("a", "window.__marker ?? null").await?;
    ensure!(marker == json!("no reload"), "the page was reloaded");
    let known = br.eval("a", "[...explorer.peers.keys()].sort()").await?;
    ensure!(
        peers_a
            .iter()
            .all(|p| known.as_array().is_some_and(|k| k.contains(&json!(p)))),
        "peers after the reload: {known}"
    );
    br.screenshot("a", "live-after-reload").await?;

    // 4. A document dropped on a's page reaches b; accepted on b's page; a shows the verified receipt.
    let mut bytes = vec![0u8; 700 * 1024]; // over one IPC chunk: the upload is streamed in parts
    rand::rngs::StdRng::seed_from_u64(5).fill_bytes(&mut bytes);
    let sha = sha256_hex(&bytes);
    br.call(json!({"cmd": "select", "page": "a", "selector": "#send-peer", "value": b.peer_id()}))
        .await?;
    br.call(json!({"cmd": "fill", "page": "a", "selector": "#send-message", "value": "Please sign <b>this</b>"}))
        .await?;
    br.call(json!({"cmd": "drop", "page": "a", "selector": "#drop-zone",
                   "files": [{"name": HTML_FILE_NAME, "type": "application/pdf", "hex": hex(&bytes)}]}))
        .await?;
    br.wait(
        "a",
        "the dropped file to be staged",
        "document.querySelector('#staged li .name')?.textContent",
    )
    .await?;
    br.screenshot("a", "dropped").await?;
    br.click("a", "#send-button").await?;
    br.wait(
        "a",
        "the outgoing transfer",
        "document.querySelector('#outgoing .transfer')?.dataset.transfer",
    )
    .await?;

    let url_b = login_url(&wb)?;
    br.call(json!({"cmd": "open", "page": "b", "url": url_b, "width": 1280, "height": 800}))
        .await?;
    br.wait(
        "b",
        "the incoming transfer waiting for a decision",
        "document.querySelector('#incoming .transfer[data-state=\"pending\"] button[data-key^=\"accept-\"]')",
    )
    .await?;
    let name_b = br
        .eval("b", "document.querySelector('#incoming .doc .name').textContent")
        .await?;
    ensure!(name_b == json!(HTML_FILE_NAME), "file name shown as {name_b}");
    let message_b = br
        .eval("b", "document.querySelector('#incoming .message').textContent")
        .await?;
    ensure!(
        message_b == json!("“Please sign <b>this</b>”"),
        "message shown as {message_b}"
    );
    br.screenshot("b", "incoming-pending").await?;
    br.click("b", "#incoming button[data-key^=\"accept-\"]").await?;
    br.wait(
        "a",
        "the verified receipt",
        "document.querySelector('#outgoing .transfer[data-state=\"delivered\"] [data-receipt=\"verified\"]')?.textContent",
    )
    .await?;
    br.wait(
        "b",
        "the received document with its download link",
        "document.querySelector('#incoming .transfer[data-state=\"received\"] a.download')",
    )
    .await?;
    // The page's own download link: it cannot carry the session header, so it goes with a
    // single-use ticket, and the browser saves the very bytes dropped on a's page.
    let saved = br
        .call(json!({"cmd": "download", "page": "b",
                     "selector": "#incoming .transfer[data-state=\"received\"] a.download"}))
        .await?;
    ensure!(
        saved["sha256"] == json!(sha),
        "the page's download saved other bytes: {saved}"
    );
    br.screenshot("a", "delivered").await?;
    br.screenshot("b", "received").await?;
    let xss = br
        .eval(
            "b",
            "document.querySelectorAll('main img').length + (window.__xss === undefined ? 0 : 100)",
        )
        .await?;
    ensure!(
        xss == json!(0),
        "a peer's file name or message became markup on b's page: {xss}"
    );

    // The bytes at b, downloaded through b's web tier, are the ones dropped on a's page.
    let list = wb.get_json("/api/transfers?filter=incoming").await?;
    let t = list
        .as_array()
        .and_then(|l| l.iter().find(|t| t["state"] == "received"))
        .with_context(|| format!("no received transfer at b: {list}"))?;
    ensure!(
        t["receipt"].is_null() || t["receipt"]["verified"] != json!(false),
        "{t}"
    );
    let doc = &t["documents"][0];
    ensure!(doc["sha256"] == json!(sha), "b holds {} not {sha}", doc["sha256"]);
    let path = format!(
        "/api/transfers/{}/documents/{}",
        t["id"].as_str().unwrap_or_default(),
        doc["id"].as_str().unwrap_or_default()
    );
    let got = wb.get(&path).await?;
    ensure!(got.status == 200, "download answered {}: {}", got.status, got.text());
    ensure!(sha256_hex(&got.body) == sha, "downloaded bytes differ");
    ensure!(got.header("content-type") == Some("application/octet-stream"));
    let disposition = got.header("content-disposition").unwrap_or_default();
    ensure!(
        disposition.starts_with("attachment;") && !disposition.contains('<') && !disposition.contains('/'),
        "content-disposition {disposition:?}"
    );

    // 5. The daemon goes away: transport unavailable, stale, actions disabled; then back to live.
    a.stop().await?;
    let banner = br
        .wait(
            "a",
            "the transport-unavailable state",
            "explorer.conn.state === 'unavailable' && !document.getElementById('stale').hidden \
             && document.getElementById('stale').textContent",
        )
        .await?;
    ensure!(
        banner.as_str().is_some_and(|t| t.contains("last known state")),
        "{banner}"
    );
    let disabled = br
        .eval(
            "a",
            "[...document.querySelectorAll('#send-button, #peer-table td.actions button, #add-peer button')].every((b) => b.disabled)",
        )
        .await?;
    ensure!(disabled == json!(true), "actions stay enabled while the daemon is away");
    br.screenshot("a", "transport-unavailable").await?;
    a.start().await?;
    br.wait(
        "a",
        "live again after the daemon restart",
        "explorer.conn.state === 'live'",
    )
    .await?;
    let resynced = br.eval("a", LOG_CHECK).await?;
    ensure!(
        resynced["snapshots"].as_u64() > after["snapshots"].as_u64(),
        "a restarted daemon needs a fresh snapshot: {resynced}"
    );

    // 6. Narrow and dark: nothing wider than the window.
    br.call(json!({"cmd": "viewport", "page": "a", "width": 400, "height": 860}))
        .await?;
    let wide = br.eval("a", "document.documentElement.scrollWidth").await?;
    ensure!(
        wide.as_u64().is_some_and(|w| w <= 400),
        "the page is {wide} px wide at 400 px"
    );
    br.screenshot("a", "narrow-400").await?;
    br.call(json!({"cmd": "scheme", "page": "b", "colorScheme": "dark"}))
        .await?;
    let bg = br.eval("b", "getComputedStyle(document.body).backgroundColor").await?;
    ensure!(bg != json!("rgb(244, 246, 250)"), "the dark theme did not apply: {bg}");
    br.screenshot("b", "dark-1280").await?;
    br.call(json!({"cmd": "scheme", "page": "a", "colorScheme": "dark"}))
        .await?;
    br.screenshot("a", "narrow-400-dark").await?;

    for page in ["a", "b"] {
        let errors = br.call(json!({"cmd": "errors", "page": page})).await?;
        let thrown: Vec<&Value> = errors
            .as_array()
            .map(|e| {
                e.iter()
                    .filter(|m| m.as_str().is_some_and(|m| m.starts_with("pageerror")))
                    .collect()
            })
            .unwrap_or_default();
        ensure!(thrown.is_empty(), "page {page} threw: {thrown:?}");
        // 503s while the daemon was away are expected console noise; a CSP violation never is.
        eprintln!("page {page} console errors: {errors}");
        ensure!(
            !errors.to_string().contains("Content Security Policy"),
            "page {page} broke its CSP: {errors}"
        );
    }
    drop(js);
    Ok(())
}

/// A stand-in for any other program listening on loopback (another user's, or a malicious
/// dev server): answers every request with a small page and keeps what the browser sent.
struct Eavesdropper {
    addr: std::net::SocketAddr,
    heard: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Eavesdropper {
    async fn start() -> anyhow::Result<Eavesdropper> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let heard = Arc::new(Mutex::new(Vec::new()));
        let kept = heard.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    kept.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(String::from_utf8_lossy(&buf).into_owned());
                    let body = "<!doctype html><title>elsewhere</title><p>another listener</p>";
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
                });
            }
        });
        Ok(Eavesdropper { addr, heard, task })
    }

    fn heard(&self) -> Vec<String> {
        self.heard.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Eavesdropper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every run of 64 hex digits in `text`: the shape of every firma-web secret.
fn secret_shaped(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            if run.len() >= 64 {
                out.push(run[..64].to_owned());
            }
            run.clear();
        }
    }
    out
}

/// Issue 11 item 4: cookies are not isolated by port, so a session kept in one was handed to any
/// other listener on 127.0.0.1 the browser visited. The page keeps its session in origin-scoped
/// storage instead: such a listener receives nothing that opens the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_loopback_listener_gets_no_session() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("page-sess")).await?;
    let wa = Web::spawn(WebOpts::new("page-sess", a.socket())).await?;
    let eve = Eavesdropper::start().await?;
    let mut br = Browser::launch().await?;
    br.call(json!({"cmd": "open", "page": "s", "url": login_url(&wa)?}))
        .await?;
    br.wait("s", "the signed-in page to go live", "explorer.conn.state === 'live'")
        .await?;

    // The victim's browser visits the other listener (a link, a redirect, a dev server).
    for path in ["/", "/api/info"] {
        let url = format!("http://127.0.0.1:{}{path}", eve.addr.port());
        br.call(json!({"cmd": "open", "page": format!("eve{path}"), "url": url, "context": "s"}))
            .await?;
    }
    let heard = eve.heard();
    ensure!(heard.len() >= 2, "the other listener heard {} requests", heard.len());
    let live_sessions: Vec<String> = std::fs::read_dir(wa.state_dir().join("web-sessions"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure!(!live_sessions.is_empty(), "the page signed in without a session");
    for request in &heard {
        for id in &live_sessions {
            ensure!(
                !request.contains(id.as_str()),
                "the other listener received the session:\n{request}"
            );
        }
        // Whatever it got that looks like a secret opens nothing, as a cookie or as a bearer.
        for candidate in secret_shaped(request) {
            for header in [
                ("cookie".to_owned(), format!("firma_session={candidate}")),
                ("authorization".to_owned(), format!("Bearer {candidate}")),
            ] {
                let r = http(wa.addr(), "GET", "/api/info", &[header], None).await?;
                ensure!(
                    r.status == 401,
                    "a secret the other listener heard opens the API: {request}"
                );
            }
        }
    }

    // The page's own session lives in its origin's storage and works from there.
    let kept = br.eval("s", "sessionStorage.getItem('firma-session')").await?;
    let kept = kept.as_str().context("no session in the page's sessionStorage")?;
    let auth = [("authorization".to_owned(), format!("Bearer {kept}"))];
    ensure!(http(wa.addr(), "GET", "/api/info", &auth, None).await?.status == 200);

    // "Sign out" ends the session on the server, and the page says so.
    br.click("s", "#sign-out").await?;
    br.wait(
        "s",
        "the signed-out page",
        "explorer.conn.state === 'signed-out' && !document.getElementById('signin').hidden \
         && sessionStorage.getItem('firma-session') === null",
    )
    .await?;
    ensure!(
        http(wa.addr(), "GET", "/api/info", &auth, None).await?.status == 401,
        "the session still works after signing out"
    );
    Ok(())
}
