//! A real HTTP/1.1 server on loopback for the webhook tests, written on tokio's `TcpListener`
//! (keep-alive, `Content-Length` bodies). It follows a script: the n-th request it receives
//! gets the n-th reply (503, a hang past the client's timeout, or 200), and every request past
//! the script gets 200. It records each request and what it answered.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reply {
    /// 200 at once.
    Ok,
    /// 503 at once.
    Fail,
    /// No answer until the client hangs up (or 10 s pass), then 503 on the closed connection.
    Hang,
    /// This status at once, with an empty body.
    Status(u16),
}

#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// What the server answered (None while a hang is in progress).
    pub answered: Option<u16>,
}

impl Received {
    pub fn alert_id(&self) -> Option<&str> {
        self.headers.get("x-exfilwatch-alert-id").map(String::as_str)
    }
}

#[derive(Debug)]
pub struct HangOutcome {
    /// How long the request went unanswered.
    pub held: Duration,
    /// The client closed the connection (as opposed to the server's 10 s cap running out).
    pub client_gave_up: bool,
}

#[derive(Default)]
pub struct Log {
    pub requests: Vec<Received>,
    pub hangs: Vec<HangOutcome>,
}

pub struct Server {
    pub addr: std::net::SocketAddr,
    pub log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(script: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let (script, shared) = (Arc::new(script), Arc::clone(&log));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&script), Arc::clone(&shared)));
            }
        });
        Server { addr, log, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/exfilwatch?source=test", self.addr)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.log.lock().unwrap().requests.clone()
    }

    /// The ids the server answered 200, in order.
    pub fn accepted_ids(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r.answered == Some(200))
            .map(|r| r.alert_id().unwrap_or("<none>").to_owned())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One connection: requests one after another (keep-alive) until the client closes it.
async fn serve(mut stream: TcpStream, script: Arc<Vec<Reply>>, log: Arc<Mutex<Log>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_owned();
        let path = request_line.next().unwrap_or_default().to_owned();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while buf.len() < head_end + len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);

        // Record before answering: once the client has its answer, the log has the request.
        let reply = {
            let mut log = log.lock().unwrap();
            let n = log.requests.len();
            let reply = script.get(n).copied().unwrap_or(Reply::Ok);
            let answered = match reply {
                Reply::Ok => Some(200),
                Reply::Fail => Some(503),
                Reply::Hang => None,
                Reply::Status(code) => Some(code),
            };
            log.requests.push(Received { method, path, headers, body, answered });
            (n, reply)
        };
        match reply {
            (_, Reply::Ok) => {
                let answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
            }
            (_, Reply::Fail) => {
                let answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
            }
            (_, Reply::Status(code)) => {
                let answer = format!("HTTP/1.1 {code} Refused\r\nContent-Length: 0\r\n\r\n");
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
            (n, Reply::Hang) => {
                // Hold the request until the client hangs up (read sees EOF or a reset).
                let started = Instant::now();
                let waited = tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                })
                .await;
                let held = started.elapsed();
                {
                    let mut log = log.lock().unwrap();
                    log.requests[n].answered = Some(503);
                    log.hangs.push(HangOutcome { held, client_gave_up: waited.is_ok() });
                }
                let _ = stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
                return;
            }
        }
    }
}
