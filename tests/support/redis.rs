//! A `redis-server` of a test's own, for the tests that stop, restart or
//! slow Redis down: never the shared server `.ci/redis.sh` starts, which
//! other tests use at the same time.
//!
//! It listens on a free loopback port with no persistence (a restart comes
//! back empty, as a crashed cache does) in a directory of its own, and is
//! killed when dropped. `redis-server` is the one `.ci/redis.sh` installs.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::TempDir;

/// A Redis server of this test's own.
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port, with `DEBUG` enabled so a
    /// test can make it sleep.
    pub fn start() -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let mut server = Self {
            port,
            dir: TempDir::new("redis"),
            child: None,
        };
        server.restart();
        server
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The URL a client connects with.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr())
    }

    /// Kills the server (as a crash would: no shutdown, no save) and waits
    /// until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty, and waits until it
    /// answers `PING`.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (see .ci/redis.sh)");
        self.child = Some(child);
        // Up to 10 s, in steps of 10 ms.
        for attempt in 0.. {
            if self.command("PING").as_deref() == Some("+PONG") {
                break;
            }
            assert!(attempt < 1_000, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends one inline command (space-separated words) on a connection of
    /// its own and returns the first line of the reply, or `None` if the
    /// server cannot be reached.
    pub fn command(&self, line: &str) -> Option<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            if stream.read(&mut byte).ok()? == 0 {
                return None;
            }
            reply.push(byte[0]);
        }
        reply.truncate(reply.len() - 2);
        String::from_utf8(reply).ok()
    }

    /// Makes the server busy for `secs` seconds (`DEBUG SLEEP`), from a
    /// thread of its own: every command waits until it is done.
    pub fn sleep_in_background(&self, secs: f64) -> std::thread::JoinHandle<()> {
        let addr = self.addr();
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .write_all(format!("DEBUG SLEEP {secs}\r\n").as_bytes())
                .unwrap();
            let mut reply = [0u8; 5];
            stream.read_exact(&mut reply).unwrap();
            assert_eq!(&reply, b"+OK\r\n");
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
