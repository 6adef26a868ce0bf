//! `GET /dashboard` of `examples/axum_stack`: one self-contained page, and
//! that page, in headless Chromium, drawing a spike's shedding from
//! `/stats`.
//!
//! The browser test is ignored by default: it needs Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs before running it with
//! `-- --ignored`. It drives the browser through chromedriver's WebDriver
//! HTTP protocol and reads back `window.dashboard`, the series the page
//! draws. With `DASHBOARD_SCREENSHOT=docs/dashboard.png` it also writes a
//! screenshot of the page after the spike (the one in the README):
//!
//! ```text
//! DASHBOARD_SCREENSHOT=docs/dashboard.png \
//!     cargo test --all-features --test dashboard -- --ignored
//! ```

mod support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Empty;
use serde_json::{Value, json};
use support::{HttpClient, h1_client, h2_client};

#[path = "../examples/flash_sale/backend.rs"]
#[allow(dead_code)]
mod backend;

#[path = "../examples/axum_stack/stack.rs"]
mod axum_stack;

/// The page is served as HTML, exactly the file in the example, outside the
/// limiter and round the shedder, and loads nothing from anywhere else.
#[tokio::test]
async fn dashboard_is_one_self_contained_page() {
    let config = axum_stack::Config {
        capacity: 2,
        service: Duration::from_millis(1),
        trust_priority_header: false,
    };
    let (app, handles) = axum_stack::app(&config);
    let addr = support::serve_axum(app).await;
    let client: HttpClient = h1_client();
    let (status, headers, body) = support::send(&client, support::get(addr, "/dashboard")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let page = std::str::from_utf8(&body).expect("UTF-8");
    assert_eq!(page, axum_stack::DASHBOARD);
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.contains("<canvas"), "it draws");
    assert!(
        page.contains("window.dashboard"),
        "it exposes what it draws"
    );
    assert!(
        page.contains(r#"fetch("stats""#),
        "it polls /stats by a relative URL"
    );
    assert_eq!(external_references(page), Vec::<String>::new());
    assert_eq!(handles.shed.snapshot().bypassed, 1, "round the shedder");
    assert_eq!(handles.limit.snapshot().admitted, 0, "without a permit");
}

/// Every `src=`, `href=`, `url(`, `@import` and `fetch(` of the page that
/// names an absolute or protocol-relative URL.
fn external_references(page: &str) -> Vec<String> {
    let lower = page.to_ascii_lowercase();
    let mut found = Vec::new();
    for what in ["src=", "href=", "url(", "@import", "fetch(", "action="] {
        for (at, _) in lower.match_indices(what) {
            let value = lower[at + what.len()..].trim_start_matches([' ', '"', '\'']);
            if ["http:", "https:", "//"]
                .iter()
                .any(|s| value.starts_with(s))
            {
                found.push(lower[at..].chars().take(80).collect());
            }
        }
    }
    found
}

/// Under a spike far over the database's capacity, the page in headless
/// Chromium draws Low being shed while Critical is admitted and never shed,
/// and its rates add up to the shedder's own counters.
#[test]
#[ignore = "needs chromium and chromedriver; .ci/run installs them and runs it"]
fn dashboard_in_chromium_draws_the_shedding_of_a_spike() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // 4 slots x 20 ms: 200 writes/s.
    let config = axum_stack::Config {
        capacity: 4,
        service: Duration::from_millis(20),
        trust_priority_header: false,
    };
    let (addr, handles) = rt.block_on(async {
        let (app, handles) = axum_stack::app(&config);
        (support::serve_axum(app).await, handles)
    });

    let browser = Browser::start();
    browser.navigate(&format!("http://{addr}/dashboard"));
    let calm = browser.wait_for("a few calm points", Duration::from_secs(30), |d| {
        d["points"].as_u64() >= Some(6)
    });
    assert_eq!(calm["errors"], 0, "no failed poll: {calm}");

    // The spike: 200 callers of Low and Default, and a few payments.
    let spike_start = wall_ms();
    let sent = rt.block_on(spike(addr, Duration::from_secs(6)));
    let spike_end = wall_ms();
    println!("spike: {sent:?}");
    rt.block_on(support::wait_idle(
        "the stack drains",
        Duration::from_secs(30),
        &handles.limit,
        &handles.shed,
    ));
    // Calm again, for a few polls: the page draws the recovery.
    let polls = browser.dashboard()["polls"].as_u64().unwrap();
    let d = browser.wait_for("polls after the spike", Duration::from_secs(30), |d| {
        d["polls"].as_u64() >= Some(polls + 8)
    });

    if let Some(path) = std::env::var_os("DASHBOARD_SCREENSHOT") {
        let png = browser.screenshot();
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
    }

    let s = &d["series"];
    let points = d["points"].as_u64().unwrap() as usize;
    let at = numbers(&s["at"]);
    assert_eq!(at.len(), points);
    for name in [
        "t",
        "limit",
        "in_flight",
        "queued",
        "queue_delay_ms",
        "load_level",
    ] {
        assert_eq!(
            numbers(&s[name]).iter().flatten().count(),
            points,
            "{name}: a value at every point"
        );
    }
    let during = |a: &Option<f64>| a.is_some_and(|a| a >= spike_start && a <= spike_end + 2_000.0);
    let before = |a: &Option<f64>| a.is_some_and(|a| a < spike_start);
    let rates = |name: &str, p: &str| numbers(&s[name][p]);
    let max_where = |values: &[Option<f64>], when: &dyn Fn(&Option<f64>) -> bool| {
        values
            .iter()
            .zip(&at)
            .filter(|(_, a)| when(a))
            .filter_map(|(v, _)| *v)
            .fold(0.0, f64::max)
    };

    let shed_low = rates("shed", "low");
    assert!(
        max_where(&shed_low, &during) > 0.0,
        "the page drew Low being shed during the spike: {shed_low:?}"
    );
    assert_eq!(
        max_where(&shed_low, &before),
        0.0,
        "nothing shed before the spike: {shed_low:?}"
    );
    let shed_critical = rates("shed", "critical");
    assert!(
        shed_critical.iter().flatten().all(|&r| r == 0.0),
        "Critical is never shed: {shed_critical:?}"
    );
    let admitted_critical = rates("admitted", "critical");
    assert!(
        max_where(&admitted_critical, &during) > 0.0,
        "the page drew Critical being admitted: {admitted_critical:?}"
    );
    assert!(
        numbers(&s["limit"]).iter().flatten().all(|&l| l >= 1.0),
        "a limit at every point"
    );

    // The rates drawn add up to the shedder's counters: nothing was lost
    // between the polls, and nothing counted twice.
    let t = numbers(&s["t"]);
    let total = |values: &[Option<f64>]| -> f64 {
        (1..points)
            .map(|i| values[i].unwrap_or(0.0) * (t[i].unwrap() - t[i - 1].unwrap()))
            .sum()
    };
    let shed = handles.shed.snapshot();
    for (p, counted, drawn) in [
        ("low shed", shed.shed.low, total(&shed_low)),
        (
            "default shed",
            shed.shed.default,
            total(&rates("shed", "default")),
        ),
        (
            "critical admitted",
            shed.admitted.critical,
            total(&admitted_critical),
        ),
    ] {
        assert!(
            (drawn - counted as f64).abs() < 0.5,
            "{p}: the page's rates add up to {drawn}, the shedder counted {counted}"
        );
    }
    println!(
        "{points} points; peak low shed {:.0}/s; shedder: {:?}",
        max_where(&shed_low, &during),
        shed.shed
    );

    // A poll that fails is shown, and the page keeps polling: with every
    // fetch failing for a while, then answered again.
    browser.execute(
        "window.realFetch = window.fetch; \
         window.fetch = () => Promise.reject(new TypeError('Failed to fetch')); \
         return null;",
    );
    let failing = browser.wait_for("failed polls", Duration::from_secs(30), |d| {
        d["failing"].as_u64() >= Some(3)
    });
    assert_eq!(status(&browser)["class"], "err", "{failing}");
    browser.execute("window.fetch = window.realFetch; return null;");
    let polls = failing["polls"].as_u64().unwrap();
    browser.wait_for("polls again", Duration::from_secs(30), |d| {
        d["polls"].as_u64() >= Some(polls + 2) && d["failing"] == 0
    });
    assert_eq!(status(&browser)["class"], "ok");
    drop(browser);
}

/// The page's poll indicator: its class (`ok`, `err`) and text.
fn status(browser: &Browser) -> Value {
    browser.execute(
        "const el = document.getElementById('status'); \
         return { class: el.className, text: el.textContent };",
    )
}

/// Milliseconds since the epoch, as the page's `Date.now()` reads them.
fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// A series of the page as numbers, `None` where the page has `null`.
fn numbers(v: &Value) -> Vec<Option<f64>> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a series: {v}"))
        .iter()
        .map(Value::as_f64)
        .collect()
}

// ---- the spike --------------------------------------------------------------

/// For `length`: 120 callers of `/analytics` (Low) and 80 of `/likes`
/// (Default) over HTTP/2, each posting again as soon as it is answered
/// (20 ms after a refusal), and 4 callers of `/payments` (Critical) over
/// HTTP/1.1, one payment every 50 ms each. Every answer is `200` or `503`.
/// Returns (path, ok, refused) for each route.
async fn spike(addr: SocketAddr, length: Duration) -> Vec<(&'static str, u64, u64)> {
    let until = tokio::time::Instant::now() + length;
    let flood = h2_client();
    let payments = h1_client();
    let routes = [
        ("/analytics", 120, &flood, Duration::ZERO),
        ("/likes", 80, &flood, Duration::ZERO),
        ("/payments", 4, &payments, Duration::from_millis(50)),
    ];
    let mut out = Vec::new();
    let mut tasks = Vec::new();
    for (path, callers, client, pause) in routes {
        let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        for _ in 0..callers {
            let (client, ok, refused) = (client.clone(), ok.clone(), refused.clone());
            tasks.push(tokio::spawn(async move {
                while tokio::time::Instant::now() < until {
                    let req = Request::builder()
                        .method(Method::POST)
                        .uri(format!("http://{addr}{path}"))
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    match support::send(&client, req).await.0 {
                        StatusCode::OK => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(pause).await;
                        }
                        StatusCode::SERVICE_UNAVAILABLE => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => panic!("{path}: unexpected status {other}"),
                    }
                }
            }));
        }
        out.push((path, ok, refused));
    }
    for task in tasks {
        task.await.unwrap();
    }
    out.into_iter()
        .map(|(path, ok, refused)| {
            (
                path,
                ok.load(Ordering::Relaxed),
                refused.load(Ordering::Relaxed),
            )
        })
        .collect()
}

// ---- the browser --------------------------------------------------------------

/// Headless Chromium behind chromedriver, in a process group of its own and
/// with a fresh profile. Dropping it ends the session and kills the group,
/// whether the test passed or panicked.
struct Browser {
    driver: Child,
    webdriver: SocketAddr,
    session: String,
    profile: PathBuf,
}

impl Browser {
    fn start() -> Self {
        let chromedriver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let profile = std::env::temp_dir().join(format!(
            "spillway-dashboard-{}-{}",
            std::process::id(),
            wall_ms() as u64
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(profile.with_extension("log")).unwrap();
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("{chromedriver} starts: {e}"))
        };
        let mut browser = Self {
            driver,
            webdriver: SocketAddr::from(([127, 0, 0, 1], port)),
            session: String::new(),
            profile,
        };

        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, status)) = webdriver(browser.webdriver, "GET", "/status", None) {
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not get ready: {}",
                browser.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }

        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("--user-data-dir={}", browser.profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }}});
        let session = browser.call("POST", "/session", Some(&caps));
        browser.session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("a session: {session}"))
            .to_owned();
        browser
    }

    /// A WebDriver command; its `value`. Panics on an error answer.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        match webdriver(self.webdriver, method, path, body) {
            Ok((200, mut answer)) => answer["value"].take(),
            Ok((status, answer)) => panic!("{method} {path}: {status} {answer}"),
            Err(e) => panic!("{method} {path}: {e}\n{}", self.log()),
        }
    }

    fn navigate(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.call("POST", &path, Some(&json!({ "url": url })));
    }

    /// Runs `script` in the page; what it returns.
    fn execute(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        let body = json!({ "script": script, "args": [] });
        self.call("POST", &path, Some(&body))
    }

    /// `window.dashboard`, as JSON.
    fn dashboard(&self) -> Value {
        let text = self.execute("return JSON.stringify(window.dashboard || null);");
        serde_json::from_str(text.as_str().expect("a string")).expect("JSON")
    }

    /// Polls `window.dashboard` until `cond` holds; its last value.
    fn wait_for(&self, what: &str, within: Duration, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let d = self.dashboard();
            if !d.is_null() && cond(&d) {
                return d;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {d}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The viewport as PNG.
    fn screenshot(&self) -> Vec<u8> {
        let path = format!("/session/{}/screenshot", self.session);
        let png = base64_decode(self.call("GET", &path, None).as_str().expect("base64"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        png
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.profile.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = webdriver(self.webdriver, "DELETE", &path, None);
        }
        // chromedriver and every browser process it started share its
        // process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
        let _ = std::fs::remove_file(self.profile.with_extension("log"));
    }
}

/// One WebDriver request over HTTP/1.1 on loopback: the status and the JSON
/// answer (`null` if the body is not JSON).
fn webdriver(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(90)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    let mut buf = [0; 64 * 1024];
    let (head_end, length) = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            break (end + 4, length);
        }
    };
    // chromedriver sends a length; without one, the body ends with the
    // connection.
    while length.is_none_or(|len| raw.len() < head_end + len) {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let end = length.map_or(raw.len(), |len| (head_end + len).min(raw.len()));
    Ok((
        status,
        serde_json::from_slice(&raw[head_end..end]).unwrap_or(Value::Null),
    ))
}

/// Standard base64 (padding optional), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let digit = |c: u8| -> u32 {
        u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:#x}"),
        })
    };
    let digits: Vec<u32> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .map(digit)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | d << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes_what_webdriver_sends() {
    assert_eq!(base64_decode("TWFu"), b"Man");
    assert_eq!(base64_decode("TWE="), b"Ma");
    assert_eq!(base64_decode("TQ=="), b"M");
    assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
}
