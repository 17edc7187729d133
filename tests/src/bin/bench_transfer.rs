//! bench_transfer: one document between two daemons on loopback, next to what the machine can do
//! without them, all from ONE run: scp of the same file through a private sshd on a loopback port,
//! and a plain TCP copy (socket to file, no encryption, no framing). Also the peak RSS growth of
//! both daemons during the transfer (VmHWM, reset just before it starts).
//!
//! Usage: bench_transfer [--size-mib N] [--rounds N] [--streams N] [--quic] [--skip-scp]   (default 1024 MiB, 5 rounds)
//! Rounds interleave the three copies; each figure is shown for the best round and the median
//! round, the RSS growth for the worst.
//! Build the release daemon and this bench first:
//!   cargo build --release -p firma-daemon -p firma-tests --bin bench_transfer
//!   target/release/bench_transfer
//! Needs `sshd`, `scp` and `ssh-keygen` (Debian: openssh-server, openssh-client) unless --skip-scp.
//! Not part of the test command: it moves gigabytes and wants a quiet machine.

use std::net::{Ipv4Addr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use firma_ipc::transfer::TransferState;
use firma_tests::machine::load;
use firma_tests::transfer::{make_document, send, sha256_file, transfer, transfer_opts, upload_doc};
use firma_tests::{Daemon, wait_for};

const MIB: u64 = 1 << 20;
/// Longest any one copy may take before the bench calls it stuck.
const COPY_DEADLINE: Duration = Duration::from_secs(900);
/// Copy buffer of the plain TCP baseline: what a simple, decent copy loop uses.
const TCP_BUF: usize = 1 << 20;

struct Args {
    size_mib: u64,
    scp: bool,
    rounds: u32,
    /// `transfer.parallel_streams` for both daemons; `None` keeps the daemon's default.
    streams: Option<u32>,
    /// Connect the daemons over QUIC instead of TCP+Noise+Yamux.
    quic: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        size_mib: 1024,
        scp: true,
        rounds: 5,
        streams: None,
        quic: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--size-mib" => a.size_mib = args.next().context("--size-mib needs a number")?.parse()?,
            "--skip-scp" => a.scp = false,
            "--quic" => a.quic = true,
            "--rounds" => a.rounds = args.next().context("--rounds needs a number")?.parse()?,
            "--streams" => a.streams = Some(args.next().context("--streams needs a number")?.parse()?),
            _ => bail!("usage: bench_transfer [--size-mib N] [--rounds N] [--streams N] [--quic] [--skip-scp]"),
        }
    }
    ensure!(a.size_mib > 0, "--size-mib must be at least 1");
    ensure!((1..=20).contains(&a.rounds), "--rounds must be 1 to 20");
    Ok(a)
}

fn mib_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / MIB as f64 / took.as_secs_f64().max(1e-9)
}

/// The shortest of the rounds' times: the best round.
fn best(times: &[Duration]) -> Duration {
    times.iter().copied().min().unwrap_or(Duration::MAX)
}

/// The median of the rounds' times (the upper one of an even count).
fn median(times: &[Duration]) -> Duration {
    let mut t = times.to_vec();
    t.sort();
    t.get(t.len() / 2).copied().unwrap_or(Duration::MAX)
}

/// A `/proc/PID/status` field in KiB, e.g. `VmHWM`.
fn status_kib(status: &str, field: &str) -> anyhow::Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/PID/status"))?;
    Ok(line.split_whitespace().nth(1).context("malformed line")?.parse()?)
}

/// Reset the peak RSS (VmHWM) of `d` to its current RSS, so that the next peak is this run's.
fn reset_peak(d: &Daemon) -> anyhow::Result<u64> {
    let pid = d.pid().context("daemon not running")?;
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("resetting VmHWM (needs Linux >= 4.0)")?;
    status_kib(&d.proc_status()?, "VmRSS:")
}

struct DaemonRun {
    took: Duration,
    received_after: Duration,
    rss_growth_kib: [u64; 2],
    chunks_resent: u64,
}

/// One transfer of `doc` from `a` to `b` (uploaded into `a` first, not timed).
async fn bench_daemons(
    a: &Daemon,
    b: &Daemon,
    doc: &firma_tests::transfer::TestDoc,
    dir: &Path,
) -> anyhow::Result<DaemonRun> {
    // Recycled memory for both the upload and the receiver's copy, primed BEFORE the upload: a
    // scratch file written after it evicted the freshly staged copy whenever memory was tight,
    // and the sender then read it back from disk (scp's source, read every round, stays cached).
    prime_page_cache(dir, 2 * doc.size)?;
    let t = Instant::now();
    let staged = upload_doc(a, doc).await?;
    println!(
        "upload into the sending daemon: {:.0} MiB/s (not part of the figure)",
        mib_per_s(doc.size, t.elapsed())
    );
    // The upload's writeback happens now, not during the transfer.
    nix::unistd::sync();
    let base = [reset_peak(a)?, reset_peak(b)?];
    let t = Instant::now();
    let out = send(a, b.peer_id(), &[staged], None).await?;
    let (incoming, _) = firma_tests::wait_for_value(COPY_DEADLINE, "the receiver to list the transfer", || async {
        firma_tests::transfer::transfers(b, firma_ipc::transfer::TransferFilter::Incoming)
            .await
            .ok()?
            .into_iter()
            .find(|t| t.documents.first().is_some_and(|d| d.sha256 == doc.sha256) && !t.state.is_final())
    })
    .await?;
    // When the receiver had every byte verified, before the receipt went back.
    let received_after = std::sync::Mutex::new(None);
    wait_for(COPY_DEADLINE, "the transfer to be delivered", || async {
        let seen = received_after.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        if !seen
            && transfer(b, &incoming.id)
                .await
                .is_ok_and(|t| t.state == TransferState::Received)
        {
            *received_after.lock().unwrap_or_else(|p| p.into_inner()) = Some(t.elapsed());
        }
        transfer(a, &out.id).await.is_ok_and(|t| t.state.is_final())
    })
    .await?;
    let received_after = received_after.into_inner().unwrap_or_else(|p| p.into_inner());
    let took = t.elapsed();
    let done = transfer(a, &out.id).await?;
    ensure!(
        done.state == TransferState::Delivered,
        "transfer ended {:?}: {:?}",
        done.state,
        done.error
    );
    let peak = [
        status_kib(&a.proc_status()?, "VmHWM:")?,
        status_kib(&b.proc_status()?, "VmHWM:")?,
    ];
    Ok(DaemonRun {
        took,
        received_after: received_after.unwrap_or(took),
        rss_growth_kib: [peak[0].saturating_sub(base[0]), peak[1].saturating_sub(base[1])],
        chunks_resent: done.chunks_resent,
    })
}

/// Writes `size` bytes to a scratch file in `dir` and deletes it, so that the copy measured next
/// writes into page-cache memory the guest has touched before, with no writeback pending. On this VM (virtio-balloon free
/// page reporting) writing into never-touched memory runs at 250–470 MiB/s against over
/// 3 GiB/s into recycled pages; without this, whichever copy runs right after another one's
/// output was deleted gets recycled pages and the others do not, which decides the ratios.
fn prime_page_cache(dir: &Path, size: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let path = dir.join("prime");
    let mut f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let block = vec![0u8; TCP_BUF];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    drop(f);
    std::fs::remove_file(&path)?;
    // And no dirty pages left from earlier copies (the daemons keep theirs; scp's and TCP's are
    // deleted): otherwise their writeback takes CPU from whichever copy runs next.
    nix::unistd::sync();
    Ok(())
}

/// A loopback port nobody listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// sshd on 127.0.0.1 with its own host key, config and authorized key, in `dir`; killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

async fn start_sshd(dir: &Path) -> anyhow::Result<Sshd> {
    let host_key = dir.join("host_ed25519");
    let key = dir.join("client_ed25519");
    for k in [&host_key, &key] {
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(k))?;
    }
    std::fs::copy(key.with_extension("pub"), dir.join("authorized_keys"))?;
    let port = free_port()?;
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nPubkeyAuthentication yes\nSubsystem sftp internal-sftp\n",
            host_key.display(),
            dir.join("authorized_keys").display(),
            dir.join("sshd.pid").display()
        ),
    )?;
    // sshd insists on its privilege-separation directory.
    std::fs::create_dir_all("/run/sshd")?;
    let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("sshd not found: install openssh-server, or pass --skip-scp")?;
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log"))?)
        .spawn()?;
    let sshd = Sshd { child, port, key };
    wait_for(Duration::from_secs(10), "sshd to listen", || async move {
        tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .is_ok()
    })
    .await?;
    Ok(sshd)
}

async fn bench_scp(sshd: &Sshd, dir: &Path, file: &Path) -> anyhow::Result<Duration> {
    let dest = dir.join("scp-copy");
    prime_page_cache(dir, std::fs::metadata(file)?.len())?;
    let t = Instant::now();
    let mut cmd = tokio::process::Command::new("scp");
    cmd.arg("-q")
        .args(["-i"])
        .arg(&sshd.key)
        .args(["-P", &sshd.port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
        ])
        .arg(file)
        .arg(format!("root@127.0.0.1:{}", dest.display()))
        .kill_on_drop(true);
    let out = tokio::time::timeout(COPY_DEADLINE, cmd.output())
        .await
        .context("scp did not finish")??;
    let took = t.elapsed();
    ensure!(
        out.status.success(),
        "scp failed: {}\nsshd log: {}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
    );
    ensure!(sha256_file(&dest)? == sha256_file(file)?, "scp copy differs");
    std::fs::remove_file(&dest)?;
    Ok(took)
}

/// File → TCP socket → file with plain blocking reads and writes on two threads: the floor of
/// what moving these bytes through the loopback and the page cache costs on this machine.
fn bench_tcp(dir: &Path, file: &Path, size: u64) -> anyhow::Result<Duration> {
    use std::io::{Read, Write};
    let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let dest = dir.join("tcp-copy");
    let dest2 = dest.clone();
    prime_page_cache(dir, size)?;
    let t = Instant::now();
    let receiver = std::thread::spawn(move || -> anyhow::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut out = std::fs::File::create(&dest2)?;
        let mut buf = vec![0u8; TCP_BUF];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            out.write_all(&buf[..n])?;
            got += n as u64;
        }
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    let mut src = std::fs::File::open(file)?;
    let mut buf = vec![0u8; TCP_BUF];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n])?;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let got = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("tcp receiver panicked"))??;
    let took = t.elapsed();
    ensure!(got == size, "tcp copy moved {got} of {size} bytes");
    std::fs::remove_file(&dest)?;
    Ok(took)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    println!("machine: {}", firma_tests::machine::describe());
    println!("load average at start: {}", load());
    println!("daemon binary: {}", firma_tests::bins::daemon()?.display());
    let tmp = tempfile::Builder::new().prefix("firma-bench-transfer-").tempdir()?;
    let size = args.size_mib * MIB;
    // At most four copies at once: the document and either two scratch copies, or the sender's
    // staged copy and the receiver's; each round's daemons leave with their files.
    let needed = size * 4;
    let fs = nix::sys::statvfs::statvfs(tmp.path()).context("statvfs of the temp dir")?;
    let free = fs.blocks_available() as u64 * fs.fragment_size() as u64;
    ensure!(
        free >= needed,
        "{} has {} MiB free; this run needs about {} MiB (lower --size-mib or --rounds, or set TMPDIR)",
        tmp.path().display(),
        free / MIB,
        needed / MIB
    );
    let t = Instant::now();
    let doc = make_document(tmp.path(), "bench.bin", size, 42)?;
    println!("made a {} MiB document in {:.1?}", args.size_mib, t.elapsed());

    let opts = |name| {
        let mut o = transfer_opts(name, "accept");
        if let Some(n) = args.streams {
            o.env
                .push(("FIRMA_TRANSFER__PARALLEL_STREAMS".to_owned(), n.to_string()));
        }
        o.quic = args.quic;
        o.echo_log_on_drop = false;
        o
    };
    // Each round gets a fresh pair of daemons, removed with their files at its end: otherwise
    // every round leaves two more copies of the document in the page cache, and later rounds ran
    // under growing memory pressure (a 5-round run slowed from 294 to 176 MiB/s while scp did not).
    let pair = || async {
        let (a, b) = tokio::try_join!(Daemon::spawn(opts("bench-send")), Daemon::spawn(opts("bench-recv")))?;
        if args.quic {
            a.connect_over(&b, "/quic-v1").await?;
        } else {
            a.connect_to(&b).await?;
        }
        anyhow::Ok((a, b))
    };
    println!(
        "daemons connect over {}",
        if args.quic { "QUIC" } else { "TCP+Noise+Yamux" }
    );

    // Rounds interleave the three copies, so that load from others on a shared machine hits
    // them alike; each figure is the best of its rounds.
    let sshd = match args.scp {
        true => Some(start_sshd(tmp.path()).await?),
        false => None,
    };
    // Every round's time per copy: the table shows the best and the median of each.
    let (mut tcp, mut scp, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    let mut rss_growth_kib = [0u64; 2];
    for round in 1..=args.rounds {
        let took = tokio::task::block_in_place(|| bench_tcp(tmp.path(), &doc.path, size))?;
        println!("round {round}: plain TCP copy {:.0} MiB/s", mib_per_s(size, took));
        tcp.push(took);
        if let Some(sshd) = &sshd {
            let took = bench_scp(sshd, tmp.path(), &doc.path).await?;
            println!("round {round}: scp {:.0} MiB/s", mib_per_s(size, took));
            scp.push(took);
        }
        let (a, b) = pair().await?;
        let run = bench_daemons(&a, &b, &doc, tmp.path()).await?;
        drop((a, b));
        println!(
            "round {round}: daemons {:.0} MiB/s to the verified receipt ({:.0} MiB/s to received), {} chunks re-sent, \
             RSS growth {:.1} / {:.1} MiB (load {})",
            mib_per_s(size, run.took),
            mib_per_s(size, run.received_after),
            run.chunks_resent,
            run.rss_growth_kib[0] as f64 / 1024.0,
            run.rss_growth_kib[1] as f64 / 1024.0,
            load()
        );
        ours.push(run.took);
        for (worst, now) in rss_growth_kib.iter_mut().zip(run.rss_growth_kib) {
            *worst = (*worst).max(now);
        }
    }
    println!();
    println!(
        "| measurement ({} MiB, loopback, {} rounds) | figure | baseline | ratio |",
        args.size_mib, args.rounds
    );
    println!("|---|---|---|---|");
    for (label, pick) in [("best", best as fn(&[Duration]) -> Duration), ("median", median)] {
        let ours = mib_per_s(size, pick(&ours));
        let mut baselines = vec![("plain TCP copy", pick(&tcp))];
        if args.scp {
            baselines.insert(0, ("scp", pick(&scp)));
        }
        for (name, took) in baselines {
            let theirs = mib_per_s(size, took);
            println!(
                "| transfer, create → receipt verified, {label} round | {ours:.0} MiB/s | {name} {theirs:.0} MiB/s ({label}) | {:.2}x |",
                ours / theirs
            );
        }
    }
    for (who, kib) in ["sender", "receiver"].iter().zip(rss_growth_kib) {
        println!(
            "| peak RSS growth of the {who} daemon (VmHWM, worst round) | {:.1} MiB | target < 64 MiB | |",
            kib as f64 / 1024.0
        );
    }
    println!(
        "(ratios are ours/baseline: above 1.00x is faster than the baseline; load average at end: {})",
        load()
    );
    Ok(())
}
