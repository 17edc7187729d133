//! A real `firma-web` process in a temp dir, and the small HTTP/1.1 and WebSocket clients the web
//! suites and `bench_web` drive it with (hand-rolled on tokio so each request is one fresh TCP
//! connection, which is what "no refused connection during a reload" must be measured with).
//!
//! Layout of a web process's temp dir: `state/` (web.token, login links, sessions), `web.log`
//! (stderr of the process and of every build it re-executes into on SIGUSR2: the pid stays).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use firma_ipc::client::{CALL_TIMEOUT, ctx};
use firma_ipc::types::{PeerFilter, Role};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::RngCore as _;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::harness::{clear_firma_env, flatten};
use crate::wait::{wait_for, wait_for_value};

/// How long a web process gets to start serving.
pub const WEB_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one reload may take before a test calls it failed (the target is ~100 ms).
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline of one HTTP request or WebSocket read in the suites.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest HTTP response the client reads.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;
const LOG_TAIL_LINES: usize = 120;

/// `firma-web`.
pub fn web_bin() -> anyhow::Result<PathBuf> {
    crate::bins::bin("firma-web")
}

#[derive(Debug, Clone)]
pub struct WebOpts {
    pub name: String,
    /// The daemon's control socket.
    pub socket: PathBuf,
    /// Use this state dir instead of `<tmp>/state` (to share web.token between processes).
    pub state_dir: Option<PathBuf>,
    /// Fast reconnects, so daemon-restart tests measure the web tier rather than a long backoff.
    pub args: Vec<String>,
    /// Run this copy of the binary instead of the built one (reload-into-a-new-build tests).
    pub bin: Option<PathBuf>,
}

impl WebOpts {
    pub fn new(name: &str, socket: &Path) -> Self {
        Self {
            name: name.to_owned(),
            socket: socket.to_owned(),
            state_dir: None,
            args: vec![
                "--reconnect-interval-ms".into(),
                "50".into(),
                "--reconnect-max-ms".into(),
                "250".into(),
            ],
            bin: None,
        }
    }
}

/// One web process under test. Dropping it kills and reaps the process and prints its log tail.
pub struct Web {
    pub opts: WebOpts,
    _dir: TempDir,
    state_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    addr: SocketAddr,
    token: String,
}

impl Web {
    /// Start `firma-web` on 127.0.0.1, port 0, and wait until it serves and its token exists.
    pub async fn spawn(opts: WebOpts) -> anyhow::Result<Web> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("firma-web-{}-", opts.name))
            .tempdir()?;
        let state_dir = opts.state_dir.clone().unwrap_or_else(|| dir.path().join("state"));
        let log_path = dir.path().join("web.log");
        let mut cmd = Command::new(match &opts.bin {
            Some(b) => b.clone(),
            None => web_bin()?,
        });
        clear_firma_env(&mut cmd);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--socket")
            .arg(&opts.socket)
            .arg("--state-dir")
            .arg(&state_dir);
        cmd.args(&opts.args);
        cmd.env("RUST_LOG", "info").env("RUST_BACKTRACE", "1");
        let mut log = OpenOptions::new().create(true).append(true).open(&log_path)?;
        writeln!(log, "===== harness: starting web `{}`: {:?}", opts.name, cmd)?;
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let mut web = Web {
            opts,
            _dir: dir,
            state_dir,
            log_path,
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: String::new(),
        };
        let what = format!("web `{}` to log its listening address", web.opts.name);
        let found = wait_for_value(WEB_READY_TIMEOUT, &what, || {
            let addr = serving_addr(&web.log());
            async move { addr }
        })
        .await;
        let (addr, _) = match found {
            Ok(v) => v,
            Err(e) => bail!("{e:#}\nlog:\n{}", web.log_tail()),
        };
        web.addr = addr;
        let token_path = web.state_dir.join("web.token");
        web.token = std::fs::read_to_string(&token_path)
            .with_context(|| format!("reading {}", token_path.display()))?
            .trim()
            .to_owned();
        Ok(web)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The `Host` header value this server accepts.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn token(&self) -> &str {
        &self.token
    }
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
    pub fn pid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .map(Pid::from_raw)
    }
    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("web `{}` is not running", self.opts.name))?;
        kill(pid, sig).with_context(|| format!("sending {sig} to web `{}`", self.opts.name))
    }

    /// The authorization headers of an API client.
    pub fn auth(&self) -> Vec<(String, String)> {
        vec![("authorization".into(), format!("Bearer {}", self.token))]
    }

    /// An authenticated GET.
    pub async fn get(&self, path: &str) -> anyhow::Result<HttpResponse> {
        Ok(http(self.addr, "GET", path, &self.auth(), None).await?)
    }

    /// An authenticated POST of a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<HttpResponse> {
        let mut h = self.auth();
        h.push(("content-type".into(), "application/json".into()));
        Ok(http(self.addr, "POST", path, &h, Some(body.to_string().as_bytes())).await?)
    }

    /// An authenticated GET that must answer 200 with JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let r = self.get(path).await?;
        if r.status != 200 {
            bail!("GET {path} answered {}: {}", r.status, r.text());
        }
        r.json()
    }

    /// A fresh login link from `firma-web login-url`, as a person gets one: its path and query.
    pub fn login_path(&self) -> anyhow::Result<String> {
        let mut cmd = Command::new(web_bin()?);
        clear_firma_env(&mut cmd);
        let out = cmd
            .arg("login-url")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--listen")
            .arg(self.addr.to_string())
            .output()
            .context("running firma-web login-url")?;
        if !out.status.success() {
            bail!("firma-web login-url failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let url = String::from_utf8(out.stdout)?.trim().to_owned();
        url.split_once(&self.addr.to_string())
            .map(|(_, p)| p.to_owned())
            .with_context(|| format!("the login link {url} names another address"))
    }

    /// Sign in as the page does: redeem a fresh login link's nonce with a same-origin
    /// `POST /login`; the session id (sent as `Authorization: Bearer`).
    pub async fn session(&self) -> anyhow::Result<String> {
        let path = self.login_path()?;
        let nonce = path
            .split_once("nonce=")
            .map(|(_, n)| n.to_owned())
            .context("no nonce in the login link")?;
        let h = [
            ("origin".to_owned(), self.origin()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ];
        let body = serde_json::json!({ "nonce": nonce }).to_string();
        let r = http(self.addr, "POST", "/login", &h, Some(body.as_bytes())).await?;
        if r.status != 200 {
            bail!("POST /login answered {}: {}", r.status, r.text());
        }
        r.json()?["session"]
            .as_str()
            .map(str::to_owned)
            .context("no session in the answer to POST /login")
    }

    /// `/api/info`'s `instance_id`, if the server answers.
    pub async fn instance_id(&self) -> Option<String> {
        let v = self.get_json("/api/info").await.ok()?;
        v["instance_id"].as_str().map(str::to_owned)
    }

    /// SIGUSR2, then wait until a new build answers with a new `instance_id`; returns how long it took.
    pub async fn reload(&self) -> anyhow::Result<Duration> {
        let old = self
            .instance_id()
            .await
            .context("the server does not answer /api/info before the reload")?;
        self.signal(Signal::SIGUSR2)?;
        let what = format!("web `{}` to come back with a new instance_id", self.opts.name);
        wait_for(RELOAD_TIMEOUT, &what, || async {
            self.instance_id().await.is_some_and(|id| id != old)
        })
        .await
        .with_context(|| format!("log:\n{}", self.log_tail()))
    }

    /// Open `path` (e.g. `/ws?since=3`) as an authenticated same-origin WebSocket client.
    pub async fn ws(&self, path: &str) -> anyhow::Result<WsClient> {
        let mut h = self.auth();
        h.push(("origin".into(), self.origin()));
        ws_connect(self.addr, path, &h)
            .await
            .map_err(|e| anyhow::anyhow!("{e}\nlog:\n{}", self.log_tail()))
    }

    /// SIGTERM and wait for the exit.
    pub async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal(Signal::SIGTERM)?;
        let Some(mut child) = self.child.take() else {
            bail!("web `{}` is not running", self.opts.name)
        };
        let what = format!("web `{}` to exit", self.opts.name);
        let (st, _) = wait_for_value(Duration::from_secs(15), &what, || {
            let st = child.try_wait().ok().flatten();
            async move { st }
        })
        .await?;
        Ok(st)
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- log of web `{}` -----\n{}", self.opts.name, self.log_tail());
        }
    }
}

/// How long one connect or disconnect of a churn may take to show.
pub const CHURN_TIMEOUT: Duration = Duration::from_secs(10);

/// Make events: through the daemon at `socket`, connect to the peer at `target` (`peer_id`) and
/// disconnect again, waiting for each to show, until `stop` is set; `pace` is a pause between
/// rounds (zero: as fast as the daemon goes). Returns the number of rounds.
pub fn spawn_churn(
    socket: PathBuf,
    target: String,
    peer_id: String,
    stop: Arc<AtomicBool>,
    pace: Duration,
) -> tokio::task::JoinHandle<anyhow::Result<u32>> {
    tokio::spawn(async move {
        let conn = firma_ipc::client::connect(&socket, "churn", Role::Operator).await?;
        let c = &conn.client;
        let connected = || async {
            flatten(c.peers(ctx(CALL_TIMEOUT), PeerFilter::Connected).await)
                .is_ok_and(|p| p.iter().any(|p| p.peer_id == peer_id))
        };
        let mut rounds = 0u32;
        // Start at a random point of the pace, so that several churners do not connect in lockstep
        // (their bursts of events would arrive together, which independent peers do not do).
        if !pace.is_zero() {
            tokio::time::sleep(pace.mul_f64(rand::random::<f64>())).await;
        }
        while !stop.load(Ordering::Relaxed) {
            flatten(c.connect(ctx(CALL_TIMEOUT), target.clone()).await).context("churn: connect")?;
            wait_for(CHURN_TIMEOUT, "the peer to connect", connected).await?;
            flatten(c.disconnect(ctx(CALL_TIMEOUT), peer_id.clone()).await).context("churn: disconnect")?;
            wait_for(CHURN_TIMEOUT, "the peer to disconnect", || async { !connected().await }).await?;
            rounds += 1;
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
        }
        anyhow::Ok(rounds)
    })
}

/// The address from the newest `firma-web serving addr=...` line of a log.
fn serving_addr(log: &str) -> Option<SocketAddr> {
    let line = log.lines().rev().find(|l| l.contains("firma-web serving"))?;
    let rest = line.split("addr=").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// One HTTP response, read to the end (the client always sends `Connection: close`).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("status {} body is not JSON: {}", self.status, self.text()))
    }
}

/// Why an HTTP exchange failed: `Connect` separates refused connections from everything else.
#[derive(Debug)]
pub enum HttpError {
    Connect(std::io::Error),
    Io(std::io::Error),
    Protocol(String),
}

impl std::error::Error for HttpError {}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "connect failed: {e}"),
            HttpError::Io(e) => write!(f, "I/O failed: {e}"),
            HttpError::Protocol(m) => write!(f, "bad HTTP: {m}"),
        }
    }
}

impl HttpError {
    pub fn is_refused(&self) -> bool {
        matches!(self, HttpError::Connect(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    }
}

fn request_head(addr: SocketAddr, method: &str, path: &str, headers: &[(String, String)], extra: &str) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(extra);
    head.push_str("\r\n");
    head
}

/// Read a status line and headers.
async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(rd: &mut R) -> Result<(u16, Vec<(String, String)>), HttpError> {
    let mut line = String::new();
    rd.read_line(&mut line).await.map_err(HttpError::Io)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Protocol(format!("status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        let n = rd.read_line(&mut line).await.map_err(HttpError::Io)?;
        if n == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    Ok((status, headers))
}

/// One request on a fresh connection. `headers` may override `host`.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> Result<HttpResponse, HttpError> {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.map_err(HttpError::Connect)?;
        stream.set_nodelay(true).map_err(HttpError::Io)?;
        let (rd, mut wr) = stream.into_split();
        let len = body.map_or(0, <[u8]>::len);
        let extra = if body.is_some() || method != "GET" {
            format!("connection: close\r\ncontent-length: {len}\r\n")
        } else {
            "connection: close\r\n".to_owned()
        };
        let mut req = request_head(addr, method, path, headers, &extra).into_bytes();
        req.extend_from_slice(body.unwrap_or_default());
        wr.write_all(&req).await.map_err(HttpError::Io)?;
        let mut rd = BufReader::new(rd);
        let (status, headers) = read_head(&mut rd).await?;
        let mut raw = Vec::new();
        (&mut rd)
            .take(MAX_RESPONSE as u64)
            .read_to_end(&mut raw)
            .await
            .map_err(HttpError::Io)?;
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked { dechunk(&raw)? } else { raw };
        Ok(HttpResponse { status, headers, body })
    };
    match tokio::time::timeout(IO_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "HTTP exchange timed out",
        ))),
    }
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return Ok(out);
        };
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| HttpError::Protocol(format!("chunk size {size_text:?}")))?;
        raw = &raw[eol + 2..];
        if size == 0 || raw.len() < size {
            return Ok(out);
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
}

/// A message from the server, after control frames are dealt with.
#[derive(Debug, Clone, PartialEq)]
pub enum WsMsg {
    Text(String),
    Binary(Vec<u8>),
    /// The server closed, with its close code if it gave one.
    Close(Option<u16>),
    /// The server pinged (already answered unless `answer_pings` is off).
    Ping,
}

/// Why a WebSocket could not be opened: refused outright, answered with a non-101, or broken.
#[derive(Debug)]
pub enum WsConnectError {
    Http(HttpError),
    Rejected { status: u16, body: String },
}

impl std::fmt::Display for WsConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsConnectError::Http(e) => write!(f, "WebSocket connect: {e}"),
            WsConnectError::Rejected { status, body } => write!(f, "WebSocket upgrade answered {status}: {body}"),
        }
    }
}

impl std::error::Error for WsConnectError {}

impl WsConnectError {
    pub fn status(&self) -> Option<u16> {
        match self {
            WsConnectError::Rejected { status, .. } => Some(*status),
            WsConnectError::Http(_) => None,
        }
    }
    pub fn is_refused(&self) -> bool {
        matches!(self, WsConnectError::Http(e) if e.is_refused())
    }
}

/// A minimal RFC 6455 client: masked frames out, pings answered, fragments joined.
pub struct WsClient {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    /// Pings the server sent so far.
    pub pings: u64,
    /// Answer pings with pongs (on by default; off to play a dead client).
    pub answer_pings: bool,
}

/// Open a WebSocket at `path` with `headers` (auth, origin) on a fresh connection.
pub async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
) -> Result<WsClient, WsConnectError> {
    ws_connect_with(addr, path, headers, None).await
}

/// `ws_connect` with the client socket's receive buffer set to `recv_buffer` bytes: a small one
/// plays a slow consumer whose backlog reaches the server quickly.
pub async fn ws_connect_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    recv_buffer: Option<u32>,
) -> Result<WsClient, WsConnectError> {
    let connect = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        socket.connect(addr).await
    };
    let stream = connect.await.map_err(|e| WsConnectError::Http(HttpError::Connect(e)))?;
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    // The server checks the key's form, not its randomness; this is RFC 6455's sample key.
    let extra = "upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\n\
                 sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let head = request_head(addr, "GET", path, headers, extra);
    let io = |e| WsConnectError::Http(HttpError::Io(e));
    tokio::time::timeout(IO_TIMEOUT, wr.write_all(head.as_bytes()))
        .await
        .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
        .map_err(io)?;
    let mut rd = BufReader::new(rd);
    let (status, resp_headers) = tokio::time::timeout(IO_TIMEOUT, read_head(&mut rd))
        .await
        .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
        .map_err(WsConnectError::Http)?;
    if status != 101 {
        let len = resp_headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len.min(64 * 1024)];
        let _ = tokio::time::timeout(IO_TIMEOUT, rd.read_exact(&mut body)).await;
        return Err(WsConnectError::Rejected {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(WsClient {
        rd,
        wr,
        pings: 0,
        answer_pings: true,
    })
}

impl WsClient {
    async fn write_frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len <= u16::MAX as usize {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mut mask = [0u8; 4];
        rand::thread_rng().fill_bytes(&mut mask);
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.wr.write_all(&frame).await
    }

    pub async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        self.write_frame(0x1, text.as_bytes()).await
    }

    /// Send a close frame (1000) and stop.
    pub async fn close(mut self) {
        let _ = self.write_frame(0x8, &1000u16.to_be_bytes()).await;
    }

    /// Send a normal close (1000) and wait for the server's answering close frame; returns its
    /// code. A connection that ends without one (what a browser reports as 1006) is an error.
    pub async fn close_handshake(mut self, deadline: Duration) -> anyhow::Result<Option<u16>> {
        self.write_frame(0x8, &1000u16.to_be_bytes()).await?;
        let answer = tokio::time::timeout(deadline, async {
            loop {
                match self.recv().await {
                    Ok(WsMsg::Close(code)) => return Ok(code),
                    Ok(_) => continue,
                    Err(e) => bail!("the connection ended without a close frame ({e})"),
                }
            }
        });
        answer
            .await
            .map_err(|_| anyhow::anyhow!("no close frame within {deadline:?}"))?
    }

    async fn read_frame(&mut self) -> std::io::Result<(bool, u8, Vec<u8>)> {
        let mut h = [0u8; 2];
        self.rd.read_exact(&mut h).await?;
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let len = match h[1] & 0x7f {
            126 => u64::from(self.rd.read_u16().await?),
            127 => self.rd.read_u64().await?,
            n => u64::from(n),
        };
        if len > MAX_RESPONSE as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("frame of {len} bytes"),
            ));
        }
        let mut mask = [0u8; 4];
        if masked {
            self.rd.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len as usize];
        self.rd.read_exact(&mut payload).await?;
        if masked {
            payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= mask[i % 4]);
        }
        Ok((fin, opcode, payload))
    }

    /// The next data message or close; answers pings on the way.
    pub async fn recv(&mut self) -> std::io::Result<WsMsg> {
        let mut buf = Vec::new();
        let mut kind = 0u8;
        loop {
            let (fin, opcode, payload) = self.read_frame().await?;
            match opcode {
                0x9 => {
                    self.pings += 1;
                    if self.answer_pings {
                        self.write_frame(0xA, &payload).await?;
                    }
                    if buf.is_empty() {
                        return Ok(WsMsg::Ping);
                    }
                }
                0xA => {}
                0x8 => {
                    let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok(WsMsg::Close(code));
                }
                0x0..=0x2 => {
                    if opcode != 0 {
                        kind = opcode;
                    }
                    buf.extend_from_slice(&payload);
                    if fin {
                        return Ok(if kind == 0x1 {
                            WsMsg::Text(String::from_utf8_lossy(&buf).into_owned())
                        } else {
                            WsMsg::Binary(buf)
                        });
                    }
                }
                other => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("opcode {other}"),
                    ));
                }
            }
        }
    }

    /// The next message within `deadline`.
    pub async fn recv_within(&mut self, deadline: Duration) -> anyhow::Result<WsMsg> {
        match tokio::time::timeout(deadline, self.recv()).await {
            Ok(r) => Ok(r?),
            Err(_) => bail!("no WebSocket message within {deadline:?}"),
        }
    }

    /// The next text message as JSON (pings skipped); a close or binary message is an error.
    pub async fn recv_json(&mut self, deadline: Duration) -> anyhow::Result<Value> {
        let end = Instant::now() + deadline;
        loop {
            match self.recv_within(end.saturating_duration_since(Instant::now())).await? {
                WsMsg::Text(t) => return serde_json::from_str(&t).with_context(|| format!("not JSON: {t}")),
                WsMsg::Ping => continue,
                other => bail!("expected a JSON text message, got {other:?}"),
            }
        }
    }

    /// Skip messages until one satisfies `pred`, all within `deadline`.
    pub async fn wait_json(
        &mut self,
        deadline: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let v = self
                .recv_json(left)
                .await
                .with_context(|| format!("waiting for {what}"))?;
            if pred(&v) {
                return Ok(v);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_serving_address() {
        let log = "x\n2026 INFO firma_web: firma-web serving addr=127.0.0.1:4242 instance_id=ab reloaded=false\n";
        assert_eq!(serving_addr(log), Some("127.0.0.1:4242".parse().unwrap()));
        assert_eq!(serving_addr("nothing"), None);
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(), b"abcde");
    }
}
