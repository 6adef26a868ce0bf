//! The spill store survives SIGKILL: `examples/spill_shop.rs` is killed in
//! the middle of a spike and started again on the same SQLite files, and
//! every like it answered (`200` at once, or `202` for later) is applied,
//! each at most once.

mod support;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use support::{TempDir, h1_client, send};

/// The example's binary, which `cargo test` builds beside the tests.
fn binary() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let exe = target.join("debug/examples/spill_shop");
    assert!(exe.exists(), "{} is built by `cargo test`", exe.display());
    exe
}

/// A running `spill_shop`, killed with SIGKILL when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let mut child = Command::new(binary())
            .args([
                "--addr",
                "127.0.0.1:0",
                "--capacity",
                "16",
                "--service-ms",
                "20",
            ])
            .arg("--spill-db")
            .arg(dir.join("spill.db"))
            .arg("--ledger")
            .arg(dir.join("ledger.db"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spill_shop starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Self { child, addr }
    }

    /// SIGKILL: no shutdown, no flush, nothing but what was committed.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn stats(addr: SocketAddr) -> Value {
    let client = h1_client::<Full<Bytes>>();
    let req = Request::get(format!("http://{addr}/stats"))
        .body(Full::default())
        .unwrap();
    let (status, _, body) = send(&client, req).await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_like_answered_before_a_sigkill_is_applied_once_after_the_restart() {
    let dir = TempDir::new("crash");
    let dir = dir.path();
    let mut server = Server::start(dir);
    let addr = server.addr;

    // A spike far over the database's 800 writes/s: 256 callers, each
    // sending likes back to back, each with its own key.
    let answered: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
    let mut callers = Vec::new();
    for caller in 0..256 {
        let answered = Arc::clone(&answered);
        callers.push(tokio::spawn(async move {
            let client = h1_client::<Full<Bytes>>();
            for n in 0.. {
                let key = format!("like-{caller}-{n}");
                let req = Request::post(format!("http://{addr}/likes"))
                    .header("idempotency-key", &key)
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .unwrap();
                match client.request(req).await {
                    Ok(res) => answered.lock().unwrap().push((key, res.status().as_u16())),
                    // The server is gone: what was in flight has no answer,
                    // so nothing was promised for it.
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    for caller in callers {
        let _ = tokio::time::timeout(Duration::from_secs(10), caller).await;
    }
    let answered = answered.lock().unwrap().clone();
    let promised: Vec<&String> = answered
        .iter()
        .filter(|(_, status)| *status == 200 || *status == 202)
        .map(|(key, _)| key)
        .collect();
    let accepted = answered.iter().filter(|(_, s)| *s == 202).count();
    assert!(
        accepted > 50,
        "the spike spilled: {accepted} of {} answered 202",
        answered.len()
    );

    // Started again on the same files, the drain replays what was stored.
    let server = Server::start(dir);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let s = stats(server.addr).await;
        let store = &s["store"];
        let waiting: u64 = store["queued"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>()
            + store["running"].as_u64().unwrap();
        if waiting == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog did not drain: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(server);

    let ledger = rusqlite::Connection::open(dir.join("ledger.db")).unwrap();
    let mut applied = std::collections::HashSet::new();
    let mut rows = ledger.prepare("SELECT key FROM likes").unwrap();
    for key in rows.query_map([], |r| r.get::<_, String>(0)).unwrap() {
        applied.insert(key.unwrap());
    }
    let lost: Vec<_> = promised
        .iter()
        .filter(|k| !applied.contains(k.as_str()))
        .collect();
    println!(
        "answered {}, promised {} ({accepted} for later), applied {}, lost {}",
        answered.len(),
        promised.len(),
        applied.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} promised likes were lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}
