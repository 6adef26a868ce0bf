//! Hostile traffic against the copyable stacks of `examples/axum_stack.rs`
//! and `examples/tonic_stack.rs`, served on loopback exactly as the examples
//! build them: oversized and malformed headers, invalid UTF-8, tens of
//! thousands of distinct keys (100,000 and more in an optimised build),
//! slowloris connections, HTTP/2 streams reset mid-body, garbage gRPC
//! frames. Every request is answered or its connection closed, nothing
//! panics, memory stays bounded, and the limiter's and the shedder's
//! in-flight and queued counts return to zero.
//!
//! A panic in a server task would die with its task, unseen: every test
//! installs a hook that records panics, and asserts at its end that none
//! happened (in any test of this binary: none panics on purpose). The memory
//! test counts live heap bytes with this binary's own allocator, so it runs
//! alone: the other tests wait for it, and it for them.

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, Once,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{RwLock, RwLockReadGuard},
    time::{Instant, sleep, timeout},
};

use support::live_heap;

#[path = "../examples/flash_sale/backend.rs"]
#[allow(dead_code)]
mod backend;

#[path = "../examples/axum_stack/stack.rs"]
#[allow(dead_code)]
mod axum_stack;

#[path = "../examples/tonic_stack/shop.rs"]
#[allow(dead_code)]
mod shop;

// ---- the watch: panics, memory, one test at a time -----------------------

#[global_allocator]
static ALLOCATOR: support::Counting = support::Counting;

/// The resident set, in bytes.
fn rss() -> isize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: isize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

const MIB: isize = 1 << 20;

static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Held shared by every test, exclusively by the memory test.
static ALONE: RwLock<()> = RwLock::const_new(());

/// Starts a test: panics anywhere in the process are recorded from now on.
async fn watch() -> RwLockReadGuard<'static, ()> {
    install_panic_hook();
    ALONE.read().await
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let entry = format!("{}: {info}", thread.name().unwrap_or("unnamed"));
            PANICS.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
            previous(info);
        }));
    });
}

fn assert_no_panics() {
    let panics = PANICS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(panics.is_empty(), "panicked: {panics:#?}");
}

/// The longest any hostile exchange may take to be answered or closed.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

// ---- the servers, as the examples serve them ------------------------------

async fn serve_axum(config: &axum_stack::Config) -> (SocketAddr, axum_stack::Handles) {
    let (app, handles) = axum_stack::app(config);
    (support::serve_axum(app).await, handles)
}

async fn serve_tonic(config: &shop::Config) -> (SocketAddr, shop::Handles) {
    support::serve_tonic_with(|incoming| shop::serve(incoming, config)).await
}

fn calm_axum() -> axum_stack::Config {
    axum_stack::Config {
        capacity: 8,
        service: Duration::from_millis(1),
        trust_priority_header: false,
    }
}

fn calm_shop() -> shop::Config {
    shop::Config {
        capacity: 8,
        service: Duration::from_millis(1),
        quota_per_key: 100_000,
    }
}

/// Waits (up to 10 s) until every in-flight and queued count of the axum
/// stack is back to zero.
async fn axum_settles(handles: &axum_stack::Handles) {
    let what = "the axum stack's counters are back to zero";
    support::wait_idle(what, SETTLE_WITHIN, &handles.limit, &handles.shed).await;
}

/// Waits (up to 10 s) until every in-flight and queued count of the tonic
/// stack is back to zero.
async fn tonic_settles(handles: &shop::Handles) {
    let what = "the tonic stack's counters are back to zero";
    support::wait_idle(what, SETTLE_WITHIN, &handles.limit, &handles.shed).await;
}

const SETTLE_WITHIN: Duration = Duration::from_secs(10);

// ---- raw HTTP/1.1 ---------------------------------------------------------

/// What a raw HTTP/1.1 exchange came to.
#[derive(Debug, PartialEq)]
enum H1 {
    /// A status line, and whatever followed the head.
    Answered(u16, String),
    /// The connection closed without a status line.
    Closed,
}

impl H1 {
    fn status(&self) -> Option<u16> {
        match self {
            H1::Answered(status, _) => Some(*status),
            H1::Closed => None,
        }
    }
}

/// A request head from raw bytes: `Host`, an empty body and
/// `Connection: close` are added.
fn h1_request(method: &[u8], target: &[u8], headers: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: localhost\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: 0\r\nconnection: close\r\n\r\n");
    out
}

/// Sends `request` on a new connection and reads the answer: up to the end
/// of its body (by `content-length`), or until the server closes.
async fn h1_raw(addr: SocketAddr, request: &[u8]) -> H1 {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        // The server may answer and close before it has read it all.
        let _ = tcp.write_all(request).await;
        let mut buf = Vec::new();
        let mut chunk = vec![0; 16 * 1024];
        while !h1_complete(&buf) {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        parse_h1(&buf)
    };
    timeout(ANSWER_WITHIN, exchange)
        .await
        .expect("an HTTP/1.1 request neither answered nor closed")
}

/// Sends `request` on a new connection, keeps it open, and reads until the
/// server closes it.
async fn h1_raw_keep_open(addr: SocketAddr, request: &[u8]) -> H1 {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf).await;
    parse_h1(&buf)
}

/// `true` once `buf` holds a head and the `content-length` bytes after it.
fn h1_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    length.is_some_and(|len| buf.len() >= end + 4 + len)
}

fn parse_h1(buf: &[u8]) -> H1 {
    let Some(rest) = buf.strip_prefix(b"HTTP/1.1 ") else {
        return H1::Closed;
    };
    let Some(status) = rest
        .get(..3)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
    else {
        return H1::Closed;
    };
    let body = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or_else(String::new, |at| {
            String::from_utf8_lossy(&buf[at + 4..]).into_owned()
        });
    H1::Answered(status, body)
}

/// The `priority` of the stack's JSON answer.
fn answered_priority(body: impl AsRef<[u8]>) -> String {
    let body = body.as_ref();
    let json: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(body)));
    json["priority"].as_str().unwrap().to_owned()
}

// ---- HTTP/2, with the h2 crate ---------------------------------------------

type H2 = h2::client::SendRequest<Bytes>;

async fn h2_connect(addr: SocketAddr) -> H2 {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// `h2` still opens streams (a connection closed by a GOAWAY does not).
async fn usable(h2: &H2) -> bool {
    matches!(
        timeout(Duration::from_secs(5), h2.clone().ready()).await,
        Ok(Ok(_))
    )
}

/// An HTTP/2 answer: the head, the body and the trailers.
#[derive(Debug)]
struct H2Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl H2Answer {
    /// The gRPC status, from the trailers or a trailers-only answer.
    fn grpc_status(&self) -> Option<i32> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| self.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok()?.parse().ok())
    }
}

/// Sends `req` (and `body`, if any) on `h2` and reads the whole answer.
async fn h2_exchange(
    h2: &H2,
    req: Request<()>,
    body: Option<Bytes>,
) -> Result<H2Answer, h2::Error> {
    let exchange = async {
        let mut h2 = h2.clone().ready().await?;
        let (response, mut stream) = h2.send_request(req, body.is_none())?;
        if let Some(body) = body {
            stream.send_data(body, true)?;
        }
        let (parts, mut recv) = response.await?.into_parts();
        let mut data = BytesMut::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = recv.trailers().await?;
        Ok(H2Answer {
            status: parts.status,
            headers: parts.headers,
            body: data.freeze(),
            trailers,
        })
    };
    timeout(ANSWER_WITHIN, exchange)
        .await
        .expect("an HTTP/2 request neither answered nor reset")
}

fn h2_post(addr: SocketAddr, path: &str) -> http::request::Builder {
    Request::post(format!("http://{addr}{path}"))
}

// ---- gRPC over raw HTTP/2 -------------------------------------------------

/// One length-prefixed gRPC message.
fn grpc_frame(compressed: bool, message: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(u8::from(compressed));
    frame.put_u32(message.len() as u32);
    frame.extend_from_slice(message);
    frame.freeze()
}

fn write_request_bytes() -> Vec<u8> {
    prost::Message::encode_to_vec(&shop::WriteRequest {
        item: "sku-1".into(),
        quantity: 1,
    })
}

fn grpc_post(addr: SocketAddr, method: &str) -> http::request::Builder {
    Request::post(format!("http://{addr}{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
}

/// The priority the shop's reply names.
fn reply_priority(answer: &H2Answer) -> String {
    let body = &answer.body;
    assert!(body.len() >= 5, "no message in {answer:?}");
    let reply: shop::WriteReply = prost::Message::decode(&body[5..]).unwrap();
    assert!(reply.ok);
    reply.priority
}

// ---- the cases ------------------------------------------------------------

/// 64 KiB values in the headers the stack reads (`x-priority`,
/// `x-request-timeout`, `authorization`) and in one it does not, over raw
/// HTTP/1.1 and over HTTP/2: each is answered (hyper's HTTP/1.1 reads heads
/// up to 400 KB, so `200`) or its connection closed (HTTP/2 answers `431`
/// past its 16 KiB header list, and closes the connection with a GOAWAY
/// past four times that). Heads past 400 KB or 100 headers, and bodies past
/// the stack's 2 MB, are refused; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_header_values_are_answered_or_closed() {
    let _watch = watch().await;
    let (addr, handles) = serve_axum(&calm_axum()).await;
    let big = vec![b'a'; 64 * 1024];
    let mut seen = Vec::new();
    for name in [
        "x-priority",
        "x-request-timeout",
        "authorization",
        "x-hostile-junk",
    ] {
        let h1 = h1_raw(
            addr,
            &h1_request(b"POST", b"/payments", &[(name.as_bytes(), &big)]),
        )
        .await;
        if let Some(status) = h1.status() {
            assert!(
                [200, 400, 431, 503].contains(&status),
                "h1 {name}: {status}"
            );
        }
        let req = h2_post(addr, "/payments")
            .header(name, HeaderValue::from_bytes(&big).unwrap())
            .body(())
            .unwrap();
        // HTTP/2 refuses a header list over four times its 16 KiB limit
        // with a GOAWAY: each attempt on its own connection.
        let h2 = h2_connect(addr).await;
        let h2_answer = match h2_exchange(&h2, req, None).await {
            Ok(answer) => {
                let status = answer.status.as_u16();
                assert!(
                    [200, 400, 431, 503].contains(&status),
                    "h2 {name}: {status}"
                );
                status.to_string()
            }
            Err(e) => format!("{:?}", e.reason()),
        };
        seen.push((name, h1.status(), h2_answer));
    }
    // Past hyper's HTTP/1.1 head buffer, and more headers than it takes.
    let huge = vec![b'a'; 1024 * 1024];
    let h1 = h1_raw(
        addr,
        &h1_request(b"POST", b"/payments", &[(b"x-priority", &huge)]),
    )
    .await;
    assert!(
        matches!(h1.status(), None | Some(431 | 400)),
        "1 MiB: {h1:?}"
    );
    let names: Vec<Vec<u8>> = (0..200).map(|i| format!("x-h{i}").into_bytes()).collect();
    let many: Vec<(&[u8], &[u8])> = names.iter().map(|n| (&n[..], &b"1"[..])).collect();
    let h1 = h1_raw(addr, &h1_request(b"POST", b"/payments", &many)).await;
    assert!(
        matches!(h1.status(), None | Some(431 | 400)),
        "200 headers: {h1:?}"
    );

    // 20 KiB, over the limit but not four times over: a 431 on a connection
    // that stays usable.
    let h2 = h2_connect(addr).await;
    let req = h2_post(addr, "/payments")
        .header(
            "x-priority",
            HeaderValue::from_bytes(&big[..20 * 1024]).unwrap(),
        )
        .body(())
        .unwrap();
    let answer = h2_exchange(&h2, req, None).await;
    assert!(
        matches!(&answer, Ok(a) if a.status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        "20 KiB over HTTP/2: {answer:?}"
    );

    // A body over the 2 MB the stack reads: `413` before it is all read.
    let mut post =
        b"POST /payments HTTP/1.1\r\nhost: localhost\r\ncontent-length: 3145728\r\n\r\n".to_vec();
    post.resize(post.len() + (3 << 20), b'x');
    let h1 = h1_raw(addr, &post).await;
    assert!(
        matches!(h1.status(), None | Some(413)),
        "3 MiB body: {h1:?}"
    );
    let answer = h2_exchange(
        &h2_connect(addr).await,
        h2_post(addr, "/payments").body(()).unwrap(),
        Some(Bytes::from(vec![b'x'; 3 << 20])),
    )
    .await;
    match &answer {
        Ok(a) => assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "3 MiB body: {a:?}"),
        Err(e) => assert!(e.is_reset(), "3 MiB body: {e:?}"),
    }
    seen.push((
        "3 MiB body",
        h1.status(),
        format!("{:?}", answer.map(|a| a.status.as_u16())),
    ));

    // Still serving, on both protocols, on that HTTP/2 connection too.
    let H1::Answered(200, body) = h1_raw(addr, &h1_request(b"POST", b"/payments", &[])).await
    else {
        panic!("no 200 after the oversized heads");
    };
    assert_eq!(answered_priority(&body), "critical");
    let answer = h2_exchange(&h2, h2_post(addr, "/payments").body(()).unwrap(), None)
        .await
        .expect("the HTTP/2 connection survives a 431");
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answered_priority(&answer.body), "critical");
    axum_settles(&handles).await;
    println!("64 KiB header values (name, h1, h2): {seen:?}");
    assert_no_panics();
}

/// Garbage `x-priority`, `x-request-timeout`, `grpc-timeout` and request
/// `Retry-After` values are ignored: each request gets its route's priority
/// and a `200`, whether or not the stack trusts `x-priority`. Zero timeouts
/// are honoured (`200`, or a refusal), never a `500`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_priority_and_timeouts_are_ignored_and_the_route_decides() {
    let _watch = watch().await;
    let ten_kib_priority = "critical".repeat(1280);
    let ten_kib_digits = "9".repeat(10 * 1024);
    let priorities: Vec<&[u8]> = vec![
        b"urgent",
        b"",
        b"   ",
        b"9",
        b"-1",
        b"high, low",
        b"critical;q=1",
        ten_kib_priority.as_bytes(),
        "crïtical".as_bytes(),
        b"\xff\xfe",
        b"crit\x80cal",
    ];
    let timeouts: Vec<(&str, &[u8])> = vec![
        ("x-request-timeout", b"soon"),
        ("x-request-timeout", b"-1"),
        ("x-request-timeout", b"-0.5s"),
        ("x-request-timeout", b"99999999H"),
        ("x-request-timeout", b"123456789"),
        ("x-request-timeout", b"1e9"),
        ("x-request-timeout", b"inf"),
        ("x-request-timeout", b"NaN"),
        ("x-request-timeout", b"1h"),
        ("x-request-timeout", b""),
        ("x-request-timeout", ten_kib_digits.as_bytes()),
        ("x-request-timeout", b"\xff1s"),
        ("x-request-timeout", b"999999999999999"),
        ("grpc-timeout", b"99999999H"),
        ("grpc-timeout", b"123456789S"),
        ("grpc-timeout", b"-1S"),
        ("grpc-timeout", b"+5S"),
        ("grpc-timeout", b"1"),
        ("grpc-timeout", b"S"),
        ("grpc-timeout", b"1.5S"),
        ("grpc-timeout", b"10s"),
        ("grpc-timeout", b"\xff1S"),
        ("retry-after", b"120"),
        ("retry-after", b"Wed, 21 Oct 2015 07:28:00 GMT"),
        ("retry-after", b"-5"),
        ("retry-after", b"99999999999999999999"),
        ("retry-after", ten_kib_digits.as_bytes()),
        ("grpc-retry-pushback-ms", b"-1"),
        ("grpc-retry-pushback-ms", b"99999999999999999999"),
    ];
    let zero_timeouts: Vec<(&str, &[u8])> = vec![
        ("x-request-timeout", b"0"),
        ("x-request-timeout", b"0ms"),
        ("x-request-timeout", b"0.000000001"),
        ("grpc-timeout", b"0n"),
        ("grpc-timeout", b"1n"),
    ];
    let mut answers = 0;
    for trusted in [false, true] {
        let config = axum_stack::Config {
            trust_priority_header: trusted,
            ..calm_axum()
        };
        let (addr, handles) = serve_axum(&config).await;
        let h2 = h2_connect(addr).await;
        let routes = [
            ("/payments", "critical"),
            ("/analytics", "low"),
            ("/likes", "default"),
        ];
        for (path, expected) in routes {
            let cases = priorities
                .iter()
                .map(|v| ("x-priority", *v))
                .chain(timeouts.iter().copied());
            for (name, value) in cases {
                let what = format!("{path} {name}: {:?}", String::from_utf8_lossy(value));
                match h1_raw(
                    addr,
                    &h1_request(b"POST", path.as_bytes(), &[(name.as_bytes(), value)]),
                )
                .await
                {
                    H1::Answered(200, body) => {
                        assert_eq!(answered_priority(&body), expected, "h1 {what}")
                    }
                    other => panic!("h1 {what}: {other:?}"),
                }
                let req = h2_post(addr, path)
                    .header(name, HeaderValue::from_bytes(value).unwrap())
                    .body(())
                    .unwrap();
                let answer = h2_exchange(&h2, req, None)
                    .await
                    .unwrap_or_else(|e| panic!("h2 {what}: {e}"));
                assert_eq!(answer.status, StatusCode::OK, "h2 {what}");
                assert_eq!(answered_priority(&answer.body), expected, "h2 {what}");
                // A request's Retry-After says nothing to the server.
                assert!(answer.headers.get("retry-after").is_none(), "h2 {what}");
                answers += 2;
            }
            for (name, value) in &zero_timeouts {
                let what = format!("{path} {name}: {:?}", String::from_utf8_lossy(value));
                let h1 = h1_raw(
                    addr,
                    &h1_request(b"POST", path.as_bytes(), &[(name.as_bytes(), value)]),
                )
                .await;
                assert!(
                    matches!(h1.status(), Some(200 | 503 | 504)),
                    "h1 {what}: {h1:?}"
                );
                answers += 1;
            }
        }
        axum_settles(&handles).await;
    }
    println!("{answers} malformed-header requests answered with their route's priority");
    assert_no_panics();
}

/// Invalid UTF-8 and other bytes no client should send, in the request
/// line, the path and header names and values, over raw HTTP/1.1: answered
/// `400` (or normally, where the bytes are legal), never a `500`, never a
/// panic; and invalid UTF-8 header values over HTTP/2 are served normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_the_path_and_headers_is_answered() {
    let _watch = watch().await;
    let (addr, handles) = serve_axum(&calm_axum()).await;
    let requests: Vec<Vec<u8>> = vec![
        h1_request(b"POST", b"/payments\xff\xfe", &[]),
        h1_request(b"POST", b"/analytics/\xc3\x28", &[]),
        h1_request(b"POST", b"/\xe2\x82", &[]),
        h1_request(b"POST", b"/payments?q=\xff", &[]),
        h1_request(b"POST", b"/%ff%fe", &[]),
        h1_request(b"POST", b"/payments/%c3%28", &[]),
        h1_request(b"POST", b"/pay\x00ments", &[]),
        h1_request(b"POST", b"/pay ments", &[]),
        h1_request(b"POST", b"*", &[]),
        h1_request(b"POST", b"http://\xff/payments", &[]),
        h1_request(b"P\xffST", b"/payments", &[]),
        h1_request(b"POST", b"/payments", &[(b"x-\xff", b"1")]),
        h1_request(b"POST", b"/payments", &[(b"x-priority", b"\xff\xfe\xfd")]),
        h1_request(b"POST", b"/payments", &[(b"x-priority", b"low\x00")]),
        h1_request(
            b"POST",
            b"/payments",
            &[(b"x-request-timeout", b"\xc3\x28")],
        ),
        h1_request(
            b"POST",
            b"/payments",
            &[(b"authorization", b"Bearer \xff\xfe")],
        ),
        h1_request(b"POST", b"/payments", &[(b"host", b"\xff")]),
        b"\xff\xfe\xfd\r\n\r\n".to_vec(),
        b"POST /payments HTTP/1.1\r\nx-priority: \xff\r\n\r\n\r\n".to_vec(),
        b"POST /payments HTTP/9.9\r\ncontent-length: 0\r\n\r\n".to_vec(),
        b"POST /payments HTTP/1.1\r\ncontent-length: -1\r\n\r\n".to_vec(),
        b"POST /payments HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n".to_vec(),
        b"POST /payments HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(),
    ];
    let mut statuses = Vec::new();
    for request in &requests {
        let answer = h1_raw(addr, request).await;
        let what = String::from_utf8_lossy(&request[..request.len().min(60)]).into_owned();
        if let H1::Answered(status, _) = &answer {
            assert!(
                [200, 400, 404, 405, 413, 431, 501, 505].contains(status),
                "{what:?}: {answer:?}"
            );
        }
        statuses.push(answer.status());
    }
    // Invalid UTF-8 values over HTTP/2: hyper hands them over as bytes.
    let h2 = h2_connect(addr).await;
    for (name, value) in [
        ("x-priority", &b"\xff\xfe"[..]),
        ("x-request-timeout", b"\xc3\x28ms"),
        ("authorization", b"Bearer \x80\x81"),
        ("x-forwarded-for", b"\xff.\xff.\xff.\xff"),
    ] {
        let req = h2_post(addr, "/payments")
            .header(name, HeaderValue::from_bytes(value).unwrap())
            .body(())
            .unwrap();
        let answer = h2_exchange(&h2, req, None).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{name}");
        assert_eq!(answered_priority(&answer.body), "critical");
    }
    let H1::Answered(200, _) = h1_raw(addr, &h1_request(b"POST", b"/payments", &[])).await else {
        panic!("no 200 after the invalid requests");
    };
    axum_settles(&handles).await;
    println!("invalid bytes over HTTP/1.1, answers in order: {statuses:?}");
    assert_no_panics();
}

/// What a run of requests came to, by answer.
#[derive(Debug, Default)]
struct Tally {
    by_answer: Mutex<std::collections::BTreeMap<String, u64>>,
    errors: AtomicU64,
}

impl Tally {
    fn count(&self, answer: String) {
        *self.by_answer.lock().unwrap().entry(answer).or_default() += 1;
    }

    fn answers(&self) -> std::collections::BTreeMap<String, u64> {
        self.by_answer.lock().unwrap().clone()
    }
}

/// Sends the requests `make(i)` for `i` in `range`, `tasks` at a time over
/// `conns` HTTP/2 connections, and tallies each answer by `key`.
async fn drive(
    addr: SocketAddr,
    range: std::ops::Range<usize>,
    conns: usize,
    tasks: usize,
    make: impl Fn(usize) -> (Request<()>, Option<Bytes>) + Send + Sync + 'static,
    key: fn(&H2Answer) -> String,
) -> Arc<Tally> {
    let mut h2s = Vec::new();
    for _ in 0..conns {
        h2s.push(h2_connect(addr).await);
    }
    let next = Arc::new(AtomicUsize::new(range.start));
    let (make, tally) = (Arc::new(make), Arc::new(Tally::default()));
    let workers: Vec<_> = (0..tasks)
        .map(|t| {
            let (h2, next, make, tally) = (
                h2s[t % conns].clone(),
                next.clone(),
                make.clone(),
                tally.clone(),
            );
            let end = range.end;
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        return;
                    }
                    let (req, body) = make(i);
                    match h2_exchange(&h2, req, body).await {
                        Ok(answer) => tally.count(key(&answer)),
                        Err(_) => {
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    tally
}

/// A shop call whose every key is its own: `x-api-key` (one rate-limit
/// bucket each), `grpc-timeout`, `x-priority` and a metadata name.
fn distinct_shop_request(addr: SocketAddr, i: usize) -> (Request<()>, Option<Bytes>) {
    let method = shop::Method::ALL[i % 4].path();
    let req = grpc_post(addr, method)
        .header("x-api-key", format!("key-{i}"))
        .header("grpc-timeout", format!("{}m", 30_000 + i))
        .header("x-priority", format!("p{i}"))
        .header(format!("x-key-{i}"), "1")
        .body(())
        .unwrap();
    (req, Some(grpc_frame(false, &write_request_bytes())))
}

/// A route (even `i`) or not, and the status.
fn route_status(i: usize, status: &str) -> String {
    let route = if i % 2 == 0 { "route" } else { "missing" };
    format!("{route} {status}")
}

fn grpc_code(answer: &H2Answer) -> String {
    match answer.grpc_status() {
        Some(code) => format!("grpc {code}"),
        None => format!("http {} without grpc-status", answer.status),
    }
}

/// Sends the requests `make(i)` for `i` in `range` pipelined over `conns`
/// HTTP/1.1 connections, at most `depth` outstanding on each, and tallies
/// each answer by `key(i, status)`.
async fn drive_h1(
    addr: SocketAddr,
    range: std::ops::Range<usize>,
    conns: usize,
    depth: usize,
    make: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static,
    key: fn(usize, &str) -> String,
) -> Arc<Tally> {
    let make = Arc::new(make);
    let tally = Arc::new(Tally::default());
    let per = range.len().div_ceil(conns);
    let workers: Vec<_> = (0..conns)
        .map(|c| {
            let (make, tally) = (make.clone(), tally.clone());
            let start = range.start + c * per;
            let end = (start + per).min(range.end);
            tokio::spawn(async move {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let (mut rd, mut wr) = tcp.into_split();
                let (answered, mut seen) = tokio::sync::watch::channel(start);
                let writer = tokio::spawn(async move {
                    let mut next = start;
                    while next < end {
                        // Keep at most `depth` requests unanswered.
                        let done = *seen.wait_for(|&done| next < done + depth).await.unwrap();
                        let upto = (done + depth).min(end);
                        let out: Vec<u8> = (next..upto).flat_map(|i| make(i)).collect();
                        wr.write_all(&out).await.unwrap();
                        next = upto;
                    }
                    // Closing the write half now would end the connection
                    // (hyper takes a half-close for a client gone).
                    wr
                });
                let mut buf = BytesMut::with_capacity(64 * 1024);
                let mut done = start;
                while done < end {
                    while let Some(len) = h1_answer_len(&buf) {
                        tally.count(key(done, std::str::from_utf8(&buf[9..12]).unwrap()));
                        let _ = buf.split_to(len);
                        done += 1;
                    }
                    let _ = answered.send(done);
                    if done < end && rd.read_buf(&mut buf).await.unwrap() == 0 {
                        panic!("closed with {} answers outstanding", end - done);
                    }
                }
                drop(writer.await.unwrap());
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    tally
}

/// The length of the complete answer at the start of `buf`, if there is one.
fn h1_answer_len(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a content-length");
    (buf.len() >= end + 4 + length).then_some(end + 4 + length)
}

/// An axum request whose every key is its own: the path (half of them
/// routes, half not), `x-priority`, `x-request-timeout`, `grpc-timeout`,
/// `authorization`, `x-forwarded-for` and a header name.
fn distinct_axum_request(i: usize) -> Vec<u8> {
    let path = if i % 2 == 0 {
        format!("/likes?id={i}")
    } else {
        format!("/missing/{i}")
    };
    format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\nx-priority: p{i}\r\nx-request-timeout: {}ms\r\ngrpc-timeout: {}m\r\nauthorization: Bearer key-{i}\r\nx-forwarded-for: 10.{}.{}.{}\r\nx-key-{i}: 1\r\ncontent-length: 0\r\n\r\n",
        30_000 + i,
        30_000 + i,
        i >> 16 & 255,
        i >> 8 & 255,
        i & 255
    )
    .into_bytes()
}

/// The distinct keys sent to each stack: 100,000 (and, to tonic, past the
/// rate limit's default budget of 100,000 keys) where the build is
/// optimised; a debug build serves about a thousand gRPC calls a second on a
/// loaded 2-core machine, so it sends a share that keeps the run under 20 s.
const AXUM_KEYS: usize = if cfg!(debug_assertions) {
    30_000
} else {
    100_000
};
const SHOP_KEYS: usize = if cfg!(debug_assertions) {
    8_000
} else {
    110_000
};

/// Requests to each stack, each with keys no other request sends: to the
/// axum stack every key it reads (path, `x-priority`, timeouts) and some it
/// does not, over pipelined HTTP/1.1; to the tonic stack API keys (one
/// rate-limit bucket each), timeouts and metadata names, over HTTP/2. Each
/// is answered; the axum stack keeps nothing per key, the tonic stack a
/// rate-limit bucket; and the live heap and the resident set end within
/// 64 MiB of where they were after a warm-up of the same shapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_keys_leave_memory_bounded() {
    install_panic_hook();
    let _alone = ALONE.write().await;
    const WARM: usize = 1_000;
    let (axum_addr, axum_handles) = serve_axum(&axum_stack::Config {
        capacity: 64,
        service: Duration::from_millis(1),
        trust_priority_header: false,
    })
    .await;
    let (tonic_addr, tonic_handles) = serve_tonic(&calm_shop()).await;
    let shop_req = move |i| distinct_shop_request(tonic_addr, i);
    let settle = || async {
        axum_settles(&axum_handles).await;
        tonic_settles(&tonic_handles).await;
        sleep(Duration::from_millis(100)).await;
        (live_heap(), rss())
    };

    // Warm-up: every buffer, pool and table the shapes need, at the same
    // concurrency, with keys of their own.
    let offset = 1_000_000;
    let warm = offset..offset + WARM;
    drive_h1(
        axum_addr,
        warm.clone(),
        8,
        16,
        distinct_axum_request,
        route_status,
    )
    .await;
    drive(tonic_addr, warm, 2, 8, shop_req, grpc_code).await;
    let (heap_warm, rss_warm) = settle().await;

    let start = Instant::now();
    let axum = drive_h1(
        axum_addr,
        0..AXUM_KEYS,
        8,
        16,
        distinct_axum_request,
        route_status,
    )
    .await;
    let axum_took = start.elapsed();
    let (heap_axum, rss_axum) = settle().await;
    let start = Instant::now();
    let shop = drive(tonic_addr, 0..SHOP_KEYS, 2, 8, shop_req, grpc_code).await;
    let shop_took = start.elapsed();
    let (heap_end, rss_end) = settle().await;

    let errors = axum.errors.load(Ordering::Relaxed) + shop.errors.load(Ordering::Relaxed);
    let (axum, shop) = (axum.answers(), shop.answers());
    let keys = tonic_handles.rate.snapshot();
    let mib = |b: isize| b as f64 / MIB as f64;
    println!("axum: {AXUM_KEYS} requests in {axum_took:.1?}: {axum:?}");
    println!("tonic: {SHOP_KEYS} calls in {shop_took:.1?}: {shop:?}");
    println!(
        "heap {:.1} -> {:.1} (axum) -> {:.1} MiB (tonic, {} bytes per key), rss {:.1} -> {:.1} -> {:.1} MiB; rate-limit keys {} of {}",
        mib(heap_warm),
        mib(heap_axum),
        mib(heap_end),
        (heap_end - heap_axum) / SHOP_KEYS as isize,
        mib(rss_warm),
        mib(rss_axum),
        mib(rss_end),
        keys.keys,
        keys.max_keys,
    );
    assert_eq!(errors, 0, "every request answered");
    let n = |m: &std::collections::BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let half = AXUM_KEYS as u64 / 2;
    assert_eq!(
        n(&axum, "missing 404") + n(&axum, "missing 503"),
        half,
        "{axum:?}"
    );
    assert_eq!(
        n(&axum, "route 200") + n(&axum, "route 503"),
        half,
        "{axum:?}"
    );
    assert_eq!(
        n(&shop, "grpc 0") + n(&shop, "grpc 14"),
        SHOP_KEYS as u64,
        "{shop:?}"
    );
    assert!(keys.keys <= keys.max_keys, "{keys:?}");
    assert!(
        heap_axum - heap_warm < 8 * MIB,
        "the axum stack kept {} MiB for its keys",
        mib(heap_axum - heap_warm)
    );
    assert!(
        heap_end - heap_warm < 64 * MIB,
        "heap grew {} MiB",
        mib(heap_end - heap_warm)
    );
    assert!(
        rss_end - rss_warm < 64 * MIB,
        "rss grew {} MiB",
        mib(rss_end - rss_warm)
    );

    // Still serving normally.
    let H1::Answered(200, body) = h1_raw(axum_addr, &h1_request(b"POST", b"/payments", &[])).await
    else {
        panic!("no 200 after the distinct keys");
    };
    assert_eq!(answered_priority(&body), "critical");
    let h2 = h2_connect(tonic_addr).await;
    let req = grpc_post(tonic_addr, shop::Method::Pay.path())
        .body(())
        .unwrap();
    let answer = h2_exchange(&h2, req, Some(grpc_frame(false, &write_request_bytes())))
        .await
        .unwrap();
    assert_eq!(answer.grpc_status(), Some(0), "{answer:?}");
    assert_eq!(reply_priority(&answer), "critical");
    assert_no_panics();
}

/// Opens `n` connections to `addr` and writes `head` on each.
async fn open_and_write(
    addr: SocketAddr,
    n: usize,
    head: impl Fn(usize) -> Vec<u8>,
) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&head(i)).await.unwrap();
        conns.push(tcp);
    }
    conns
}

/// A POST to `path` that announces 1 MiB of body and sends 16 bytes of it.
fn stalled_post(path: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1048576\r\n\r\n0123456789abcdef"
    )
    .into_bytes()
}

/// The longest a normal request may take while the slowloris connections
/// hang: a loaded 2-core machine's margin over a few milliseconds.
const PROMPTLY: Duration = Duration::from_secs(2);

/// How long the HTTP face drains a refused request's body at most (see
/// `tower_spillway::http`).
const MAX_DRAIN_TIME: Duration = Duration::from_secs(1);

/// 200 slowloris connections to the axum stack (100 sending their head a
/// byte every 100 ms, 100 POSTs whose body stalls after 16 bytes, to
/// Critical and Low routes) and 50 HTTP/2 streams whose body stalls:
/// meanwhile payments, over either protocol, and health checks are answered
/// `200` within 2 s. The stalled bodies hold no limiter permit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_does_not_starve_axum() {
    let _watch = watch().await;
    let config = axum_stack::Config {
        capacity: 8,
        service: Duration::from_millis(5),
        trust_priority_header: false,
    };
    let (addr, handles) = serve_axum(&config).await;
    let mut heads = open_and_write(addr, 100, |_| {
        b"POST /payments HTTP/1.1\r\nhost: localhost\r\nx-slow: ".to_vec()
    })
    .await;
    let stalled = open_and_write(addr, 100, |i| {
        stalled_post(if i % 2 == 0 {
            "/payments"
        } else {
            "/analytics"
        })
    })
    .await;
    let h2 = h2_connect(addr).await;
    let mut streams = Vec::new();
    for i in 0..50 {
        let path = if i % 2 == 0 {
            "/payments"
        } else {
            "/analytics"
        };
        let req = h2_post(addr, path)
            .header("content-length", "1048576")
            .body(())
            .unwrap();
        let (response, mut body) = h2
            .clone()
            .ready()
            .await
            .unwrap()
            .send_request(req, false)
            .unwrap();
        body.send_data(Bytes::from_static(b"0123456789abcdef"), false)
            .unwrap();
        streams.push((response, body));
    }
    let drip = tokio::spawn(async move {
        loop {
            for tcp in &mut heads {
                let _ = tcp.write_all(b"a").await;
            }
            sleep(Duration::from_millis(100)).await;
        }
    });
    sleep(Duration::from_millis(300)).await;

    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let start = Instant::now();
        let answer = h1_raw(addr, &h1_request(b"POST", b"/payments", &[])).await;
        let took = start.elapsed();
        let H1::Answered(200, body) = answer else {
            panic!("h1 payment {i} while slowloris hangs: {answer:?} after {took:?}");
        };
        assert_eq!(answered_priority(&body), "critical");
        assert!(took < PROMPTLY, "h1 payment {i} took {took:?}");
        worst = worst.max(took);

        let start = Instant::now();
        let fresh = h2_connect(addr).await;
        let answer = h2_exchange(&fresh, h2_post(addr, "/payments").body(()).unwrap(), None).await;
        let took = start.elapsed();
        assert!(
            matches!(&answer, Ok(a) if a.status == StatusCode::OK),
            "h2 payment {i} while slowloris hangs: {answer:?} after {took:?}"
        );
        assert!(took < PROMPTLY, "h2 payment {i} took {took:?}");
        worst = worst.max(took);

        let start = Instant::now();
        let health = h1_raw(addr, &h1_request(b"GET", b"/healthz", &[])).await;
        let took = start.elapsed();
        assert_eq!(health.status(), Some(200));
        assert!(took < PROMPTLY, "health check {i} took {took:?}");
        worst = worst.max(took);
    }
    let limit = handles.limit.snapshot();
    println!(
        "axum under 200 slowloris connections and 50 stalled streams: slowest answer {worst:?}; limiter {} in flight of {}",
        limit.in_flight, limit.limit
    );
    assert!(
        limit.in_flight < limit.limit,
        "stalled bodies hold permits: {limit:?}"
    );

    // A stalled body is waited for no longer than its caller's deadline:
    // `408`, and the connection closed.
    let start = Instant::now();
    let short: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                let head = b"POST /payments HTTP/1.1\r\nhost: localhost\r\nx-request-timeout: 200ms\r\ncontent-length: 1048576\r\n\r\n0123";
                let answer = timeout(ANSWER_WITHIN, h1_raw_keep_open(addr, head)).await;
                (answer.expect("answered and closed within 10 s"), start.elapsed())
            })
        })
        .collect();
    let mut slowest_close = Duration::ZERO;
    for task in short {
        let (answer, took) = task.await.unwrap();
        assert_eq!(answer.status(), Some(408), "{answer:?}");
        slowest_close = slowest_close.max(took);
    }
    println!("20 stalled bodies with a 200 ms deadline: 408 and closed within {slowest_close:?}");
    assert!(
        slowest_close < Duration::from_millis(200) + PROMPTLY,
        "{slowest_close:?}"
    );
    drip.abort();
    drop(stalled);
    drop(streams);
    axum_settles(&handles).await;
    assert_no_panics();
}

/// 50 HTTP/2 calls to the tonic stack whose message stalls after 3 bytes:
/// meanwhile payments are answered within 2 s. Then calls refused by the
/// rate limit while their message stalls: each is answered at once
/// (`RESOURCE_EXHAUSTED`), and the server lets go of its stream once the
/// refused body's drain gives up (at most 1 s), not when the client does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_does_not_starve_tonic_and_refused_bodies_are_let_go() {
    let _watch = watch().await;
    let config = shop::Config {
        quota_per_key: 1,
        ..calm_shop()
    };
    let (addr, handles) = serve_tonic(&config).await;
    let message = grpc_frame(false, &write_request_bytes());
    let mut stalled = Vec::new();
    for c in 0..2 {
        let h2 = h2_connect(addr).await;
        for i in 0..25 {
            let method = shop::Method::ALL[i % 4].path();
            let req = grpc_post(addr, method)
                .header("x-api-key", format!("stalled-{c}-{i}"))
                .body(())
                .unwrap();
            let (response, mut body) = h2
                .clone()
                .ready()
                .await
                .unwrap()
                .send_request(req, false)
                .unwrap();
            body.send_data(message.slice(..3), false).unwrap();
            stalled.push((response, body));
        }
    }
    sleep(Duration::from_millis(300)).await;
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let start = Instant::now();
        let fresh = h2_connect(addr).await;
        let req = grpc_post(addr, shop::Method::Pay.path())
            .header("x-api-key", format!("payer-{i}"))
            .body(())
            .unwrap();
        let answer = h2_exchange(&fresh, req, Some(message.clone())).await;
        let took = start.elapsed();
        assert!(
            matches!(&answer, Ok(a) if a.grpc_status() == Some(0)),
            "payment {i} while calls stall: {answer:?} after {took:?}"
        );
        assert!(took < PROMPTLY, "payment {i} took {took:?}");
        worst = worst.max(took);
    }
    let limit = handles.limit.snapshot();
    println!(
        "tonic under 50 stalled calls: slowest payment {worst:?}; limiter {} in flight of {}",
        limit.in_flight, limit.limit
    );
    assert!(
        limit.in_flight < limit.limit,
        "stalled calls hold permits: {limit:?}"
    );
    drop(stalled);

    // Over quota with a stalled message: refused at once, the stream let go
    // within the drain's bound.
    let h2 = h2_connect(addr).await;
    let req = grpc_post(addr, shop::Method::Like.path())
        .header("x-api-key", "k")
        .body(())
        .unwrap();
    let answer = h2_exchange(&h2, req, Some(message.clone())).await.unwrap();
    assert_eq!(answer.grpc_status(), Some(0), "{answer:?}");
    let refused: Vec<_> = (0..100)
        .map(|_| {
            let h2 = h2.clone();
            let req = grpc_post(addr, shop::Method::Like.path())
                .header("x-api-key", "k")
                .body(())
                .unwrap();
            let part = message.slice(..3);
            tokio::spawn(async move {
                let start = Instant::now();
                let (response, mut body) =
                    h2.ready().await.unwrap().send_request(req, false).unwrap();
                body.send_data(part, false).unwrap();
                let answer = timeout(ANSWER_WITHIN, response)
                    .await
                    .expect("refused in time")
                    .unwrap();
                let answered = start.elapsed();
                let code = answer.headers().get("grpc-status").cloned();
                let reset = timeout(
                    ANSWER_WITHIN,
                    std::future::poll_fn(|cx| body.poll_reset(cx)),
                )
                .await
                .expect("the server lets go of a refused stalled body");
                (
                    answered,
                    start.elapsed(),
                    code,
                    reset.map_err(|e| e.to_string()),
                )
            })
        })
        .collect();
    let (mut slowest_answer, mut slowest_release) = (Duration::ZERO, Duration::ZERO);
    for task in refused {
        let (answered, released, code, reset) = task.await.unwrap();
        assert_eq!(
            code.as_ref().map(|c| c.as_bytes()),
            Some(&b"8"[..]),
            "RESOURCE_EXHAUSTED"
        );
        assert!(answered < PROMPTLY, "refused after {answered:?}");
        assert!(
            released < MAX_DRAIN_TIME + PROMPTLY,
            "stream held {released:?} ({reset:?})"
        );
        slowest_answer = slowest_answer.max(answered);
        slowest_release = slowest_release.max(released);
    }
    println!(
        "100 refused calls with stalled messages: answered within {slowest_answer:?}, streams released within {slowest_release:?}"
    );
    tonic_settles(&handles).await;
    assert_no_panics();
}

/// How a client abandons a request, in the reset tests.
#[derive(Debug, Clone, Copy)]
enum Abandon {
    /// `RST_STREAM(CANCEL)` right after the head, before any body.
    ResetAfterHead,
    /// Part of the body, a pause, then `RST_STREAM(CANCEL)`.
    ResetMidBody,
    /// Part of the body, a pause, then `RST_STREAM(INTERNAL_ERROR)`.
    ErrorMidBody,
    /// Part of the body, then every handle dropped (h2 resets the stream).
    DropMidBody,
    /// The whole request, a pause, then `RST_STREAM(CANCEL)` while the
    /// request waits in the queue or runs.
    ResetAwaitingAnswer,
    /// The whole request, then the answer dropped after its head.
    DropAnswer,
}

const ABANDONS: [Abandon; 6] = [
    Abandon::ResetAfterHead,
    Abandon::ResetMidBody,
    Abandon::ErrorMidBody,
    Abandon::DropMidBody,
    Abandon::ResetAwaitingAnswer,
    Abandon::DropAnswer,
];

/// Sends `req` on `h2` and abandons it as `how` says, after `part` of its
/// body and a pause of `pause`. Errors are the connection's (a GOAWAY).
async fn abandon(
    h2: H2,
    req: Request<()>,
    part: Bytes,
    whole: Bytes,
    how: Abandon,
    pause: Duration,
) -> Result<(), h2::Error> {
    let mut send = h2.ready().await?;
    let (response, mut body) = send.send_request(req, false)?;
    match how {
        Abandon::ResetAfterHead => body.send_reset(h2::Reason::CANCEL),
        Abandon::ResetMidBody | Abandon::ErrorMidBody => {
            body.send_data(part, false)?;
            sleep(pause).await;
            let reason = match how {
                Abandon::ResetMidBody => h2::Reason::CANCEL,
                _ => h2::Reason::INTERNAL_ERROR,
            };
            body.send_reset(reason);
        }
        Abandon::DropMidBody => {
            body.send_data(part, false)?;
            sleep(pause).await;
        }
        Abandon::ResetAwaitingAnswer => {
            body.send_data(whole, true)?;
            sleep(pause).await;
            body.send_reset(h2::Reason::CANCEL);
        }
        Abandon::DropAnswer => {
            body.send_data(whole, true)?;
            // A refused or reset stream is fine; only the head is awaited.
            let _ = timeout(ANSWER_WITHIN, response)
                .await
                .expect("answered or reset");
        }
    }
    Ok(())
}

/// Rounds of 50 HTTP/2 streams to every route of the axum stack, each
/// abandoned in one of six ways (reset before the body, reset or errored
/// mid-body, dropped mid-body, reset while awaiting the answer, answer
/// dropped after its head), at pauses from 0 to 40 ms so they land while
/// the body is read, in the queue, in the handler and in the response. The server survives, keeps the connection or closes it with
/// a GOAWAY, and afterwards the limiter and the shedder hold nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_reset_mid_body_leave_the_counters_at_zero() {
    let _watch = watch().await;
    let config = axum_stack::Config {
        capacity: 4,
        service: Duration::from_millis(20),
        trust_priority_header: false,
    };
    let (addr, handles) = serve_axum(&config).await;
    let paths = ["/payments", "/orders", "/likes", "/analytics"];
    // The most the limiter held and queued while streams were abandoned.
    let peaks = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let watcher = {
        let (limit, peaks) = (handles.limit.clone(), peaks.clone());
        tokio::spawn(async move {
            loop {
                peaks.0.fetch_max(limit.in_flight(), Ordering::Relaxed);
                peaks.1.fetch_max(limit.queued(), Ordering::Relaxed);
                sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let (mut h2, mut goaways, mut stuck, mut streams) = (h2_connect(addr).await, 0, 0, 0);
    for round in 0..8 {
        if !usable(&h2).await {
            goaways += 1;
            h2 = h2_connect(addr).await;
        }
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let h2 = h2.clone();
                let how = ABANDONS[(i + round) % ABANDONS.len()];
                let pause = Duration::from_millis((i as u64 * 7) % 41);
                let req = h2_post(addr, paths[i % paths.len()]).body(()).unwrap();
                let part = Bytes::from_static(&[b'x'; 100]);
                tokio::spawn(timeout(
                    ANSWER_WITHIN,
                    abandon(h2, req, part.clone(), part, how, pause),
                ))
            })
            .collect();
        for t in tasks {
            match t.await.unwrap() {
                Ok(Ok(())) => {}
                Ok(Err(_)) => goaways += 1,
                Err(_) => stuck += 1,
            }
            streams += 1;
        }
    }
    watcher.abort();
    axum_settles(&handles).await;
    let limit = handles.limit.snapshot();
    println!(
        "{streams} streams abandoned, {goaways} connection errors, {stuck} stuck; limiter admitted {} released {} (peak {} in flight, {} queued), shed admitted {:?}",
        limit.admitted,
        limit.released,
        peaks.0.load(Ordering::Relaxed),
        peaks.1.load(Ordering::Relaxed),
        handles.shed.snapshot().admitted
    );
    assert_eq!(
        stuck, 0,
        "every abandoned stream was answered, reset or refused"
    );
    assert!(
        limit.admitted > 0,
        "some abandoned requests reached the limiter"
    );
    // The connection still serves, or a new one does.
    if !usable(&h2).await {
        h2 = h2_connect(addr).await;
    }
    let answer = h2_exchange(&h2, h2_post(addr, "/payments").body(()).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    axum_settles(&handles).await;
    assert_no_panics();
}

/// Hostile calls to the tonic stack: malformed `grpc-timeout`, oversized
/// and unknown metadata, invalid protobuf and gRPC framing, unknown methods;
/// each is answered with a `grpc-status` (or, for a header list over
/// HTTP/2's limit, a `431` or a GOAWAY from the HTTP/2 layer), never a bare
/// HTTP error from the stack; the method decides the priority whatever the
/// metadata says; streams reset mid-body leave the counters at zero; and a
/// normal payment still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_stack_answers_hostile_calls_with_a_grpc_status() {
    let _watch = watch().await;
    let (addr, handles) = serve_tonic(&calm_shop()).await;
    let mut h2 = h2_connect(addr).await;
    let message = grpc_frame(false, &write_request_bytes());
    let pay = shop::Method::Pay.path();
    let track = shop::Method::Track.path();

    // Malformed deadlines are ignored (tonic and the stack agree); zero ones
    // are honoured.
    let ten_kib = "9".repeat(10 * 1024);
    for value in [
        &b""[..],
        b"-1S",
        b"123456789S",
        b"99999999H",
        b"1",
        b"S",
        b"1.5S",
        b"10s",
        b" 1S",
        b"\xff1S",
        ten_kib.as_bytes(),
    ] {
        let req = grpc_post(addr, pay)
            .header("grpc-timeout", HeaderValue::from_bytes(value).unwrap())
            .body(())
            .unwrap();
        let what = String::from_utf8_lossy(value);
        let answer = h2_exchange(&h2, req, Some(message.clone()))
            .await
            .unwrap_or_else(|e| panic!("grpc-timeout {what:?}: {e:?}"));
        assert_eq!(answer.status, StatusCode::OK, "{what}");
        assert_eq!(answer.grpc_status(), Some(0), "{what}: {answer:?}");
        assert_eq!(reply_priority(&answer), "critical");
    }
    for value in ["0n", "1n", "0m"] {
        let req = grpc_post(addr, pay)
            .header("grpc-timeout", value)
            .body(())
            .unwrap();
        let answer = h2_exchange(&h2, req, Some(message.clone()))
            .await
            .unwrap_or_else(|e| panic!("grpc-timeout {value}: {e:?}"));
        // OK, CANCELLED (tonic's own timeout), DEADLINE_EXCEEDED or
        // UNAVAILABLE (the limiter's refusal).
        assert!(
            matches!(answer.grpc_status(), Some(0 | 1 | 4 | 14)),
            "{value}: {answer:?}"
        );
    }

    // Metadata: unknown priorities change nothing; large values within
    // HTTP/2's 16 KiB header list are served; past it, HTTP/2 refuses.
    let twelve_kib = "k".repeat(12 * 1024);
    let bearer = format!("Bearer {twelve_kib}");
    for (method, expected) in [(pay, "critical"), (track, "low")] {
        for (name, value) in [
            ("x-priority", &b"critical"[..]),
            ("x-priority", b"urgent"),
            ("x-priority", b"\xff\xfe"),
            ("x-api-key", twelve_kib.as_bytes()),
            ("x-api-key", b"\xff\xfe"),
            ("authorization", bearer.as_bytes()),
            ("grpc-retry-pushback-ms", b"-1"),
            ("retry-after", b"99999999999999999999"),
        ] {
            let req = grpc_post(addr, method)
                .header(name, HeaderValue::from_bytes(value).unwrap())
                .body(())
                .unwrap();
            let answer = h2_exchange(&h2, req, Some(message.clone()))
                .await
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(answer.grpc_status(), Some(0), "{name}: {answer:?}");
            assert_eq!(reply_priority(&answer), expected, "{method} {name}");
        }
    }
    let mut oversized = Vec::new();
    for size in [20 * 1024, 64 * 1024] {
        let req = grpc_post(addr, pay)
            .header("x-api-key", "k".repeat(size))
            .body(())
            .unwrap();
        let conn = h2_connect(addr).await;
        match h2_exchange(&conn, req, Some(message.clone())).await {
            Ok(answer) => {
                assert_eq!(
                    answer.status,
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "{answer:?}"
                );
                oversized.push(format!("{} KiB: {}", size / 1024, answer.status.as_u16()));
            }
            Err(e) => oversized.push(format!("{} KiB: {:?}", size / 1024, e.reason())),
        }
    }

    // Bodies that are not a `WriteRequest`, or not gRPC framing at all:
    // INTERNAL, OUT_OF_RANGE or UNIMPLEMENTED from tonic, never OK, never
    // missing.
    let mut codes = std::collections::BTreeMap::<String, String>::new();
    let mut high_bit = grpc_frame(false, &write_request_bytes()).to_vec();
    high_bit[0] = 0x80;
    let garbage: Vec<(&str, Bytes)> = vec![
        ("garbage protobuf", grpc_frame(false, &[0xff; 32])),
        ("wrong wire type", grpc_frame(false, &[0x0a, 0x05, 0x01])),
        (
            "truncated frame",
            Bytes::from_static(&[0, 0, 0, 0, 100, 1, 2, 3]),
        ),
        ("short prefix", Bytes::from_static(&[0, 0, 0])),
        (
            "compressed, no encoding",
            grpc_frame(true, &write_request_bytes()),
        ),
        ("unknown flag", high_bit.into()),
        (
            "4 GiB length prefix",
            Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff, 1, 2]),
        ),
        ("no message", Bytes::new()),
    ];
    for (what, body) in garbage {
        for method in [pay, track] {
            let req = grpc_post(addr, method).body(()).unwrap();
            let answer = h2_exchange(&h2, req, Some(body.clone()))
                .await
                .unwrap_or_else(|e| panic!("{what}: {e:?}"));
            assert_eq!(answer.status, StatusCode::OK, "{what}: {answer:?}");
            let code = answer.grpc_status();
            assert!(
                matches!(code, Some(11..=13)),
                "{what} to {method}: {answer:?}"
            );
            codes.insert(format!("{what} {method}"), format!("{code:?}"));
        }
    }
    // Over the 4 MiB a message may have: refused before it is all read.
    let big = grpc_frame(false, &vec![0; 5 << 20]);
    let answer = h2_exchange(
        &h2_connect(addr).await,
        grpc_post(addr, pay).body(()).unwrap(),
        Some(big),
    )
    .await;
    match &answer {
        Ok(answer) => assert_eq!(answer.grpc_status(), Some(11), "5 MiB: {answer:?}"),
        Err(e) => assert!(e.is_reset(), "5 MiB: {e:?}"),
    }
    let outcome = match answer {
        Ok(answer) => format!("{:?}", answer.grpc_status()),
        Err(e) => format!("reset {:?}", e.reason()),
    };
    codes.insert("5 MiB message".into(), outcome);
    // Two messages to a unary method: tonic takes the first.
    let two: Bytes = [message.clone(), message.clone()].concat().into();
    let answer = h2_exchange(&h2, grpc_post(addr, pay).body(()).unwrap(), Some(two))
        .await
        .unwrap();
    assert!(answer.grpc_status().is_some(), "two messages: {answer:?}");
    codes.insert("two messages".into(), format!("{:?}", answer.grpc_status()));
    for (what, req) in [
        (
            "unknown method",
            grpc_post(addr, "/shop.v1.Shop/Refund").body(()).unwrap(),
        ),
        (
            "unknown service",
            grpc_post(addr, "/nope.v1.Nope/Pay").body(()).unwrap(),
        ),
        ("no method", grpc_post(addr, "/").body(()).unwrap()),
        (
            "json content-type",
            Request::post(format!("http://{addr}{pay}"))
                .header("content-type", "application/json")
                .body(())
                .unwrap(),
        ),
    ] {
        let outcome = match h2_exchange(&h2, req, Some(message.clone())).await {
            Ok(answer) => {
                assert!(
                    answer.grpc_status().is_some() || answer.status.is_client_error(),
                    "{what}: {answer:?}"
                );
                format!("{:?}", answer.grpc_status())
            }
            // Refused before its body was read: the stream is reset
            // after the answer, which may then be lost.
            Err(e) if e.is_reset() => format!("reset {:?}", e.reason()),
            Err(e) => panic!("{what}: {e:?}"),
        };
        codes.insert(what.into(), outcome);
    }

    // Streams reset mid-body, in every way, to every method.
    let (mut goaways, mut stuck, mut streams) = (0, 0, 0);
    for round in 0..6 {
        if !usable(&h2).await {
            goaways += 1;
            h2 = h2_connect(addr).await;
        }
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let h2 = h2.clone();
                let how = ABANDONS[(i + round) % ABANDONS.len()];
                let pause = Duration::from_millis((i as u64 * 7) % 41);
                let method = shop::Method::ALL[i % 4].path();
                let req = grpc_post(addr, method)
                    .header("x-api-key", format!("reset-{i}"))
                    .body(())
                    .unwrap();
                let whole = message.clone();
                let part = whole.slice(..3);
                tokio::spawn(timeout(
                    ANSWER_WITHIN,
                    abandon(h2, req, part, whole, how, pause),
                ))
            })
            .collect();
        for t in tasks {
            match t.await.unwrap() {
                Ok(Ok(())) => {}
                Ok(Err(_)) => goaways += 1,
                Err(_) => stuck += 1,
            }
            streams += 1;
        }
    }
    tonic_settles(&handles).await;

    // A normal payment, through the example's own client.
    let mut client = shop::ShopClient::new(support::channel(addr).await);
    let mut req = tonic::Request::new(shop::WriteRequest {
        item: "sku-1".into(),
        quantity: 1,
    });
    req.metadata_mut()
        .insert("x-priority", "low".parse().unwrap());
    let reply = client
        .call(shop::Method::Pay, req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.priority, "critical");
    tonic_settles(&handles).await;
    println!("oversized metadata: {oversized:?}");
    println!("grpc-status by body: {codes:?}");
    println!(
        "{streams} streams abandoned, {goaways} connection errors, {stuck} stuck; limit {:?}",
        handles.limit.snapshot()
    );
    assert_eq!(
        stuck, 0,
        "every abandoned stream was answered, reset or refused"
    );
    assert_no_panics();
}
