//! The operations endpoint: `/metrics` (Prometheus text format), `/healthz` (the process is
//! alive) and `/readyz` (see [`Health::readiness`]). A deliberately small HTTP/1.1 server:
//! GET only, one request per connection, bounded request size and read time. Used by `run`
//! and by `replay --metrics-addr`; `/metrics` includes `exfilwatch_ready`, computed from the
//! same [`Health`] as `/readyz`.

use crate::telemetry::{register_readiness, Health};
use prometheus::{Encoder, Registry, TextEncoder};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_REQUEST: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {addr} for /metrics, /healthz, /readyz: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("cannot register exfilwatch_ready: {0}")]
    Register(#[from] prometheus::Error),
}

/// Binds `addr` and serves in a background task; returns the bound address (port 0 picks one).
/// Needs a tokio runtime.
pub async fn serve(addr: &str, health: Arc<Health>, registry: Registry) -> Result<SocketAddr, BindError> {
    register_readiness(&registry, health.clone())?;
    let listener =
        TcpListener::bind(addr).await.map_err(|source| BindError::Listen { addr: addr.to_string(), source })?;
    let local = listener.local_addr().map_err(|source| BindError::Listen { addr: addr.to_string(), source })?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let (health, registry) = (health.clone(), registry.clone());
                    tokio::spawn(async move {
                        if let Err(error) = respond(stream, &health, &registry).await {
                            tracing::debug!(message = "Metrics endpoint connection failed.", %error);
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(message = "Metrics endpoint cannot accept.", %error);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    tracing::info!(message = "Serving /metrics, /healthz, /readyz.", addr = %local);
    Ok(local)
}

async fn respond(mut stream: TcpStream, health: &Health, registry: &Registry) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok::<_, std::io::Error>(Some(i));
            }
            if buf.len() > MAX_REQUEST {
                return Ok(None);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .unwrap_or(Ok(None))?;
    let Some(head_end) = head_end else {
        return write(&mut stream, "400 Bad Request", "text/plain", b"bad request\n").await;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return write(&mut stream, "405 Method Not Allowed", "text/plain", b"GET only\n").await;
    }
    match path {
        "/metrics" => {
            let mut body = Vec::new();
            let encoder = TextEncoder::new();
            if let Err(e) = encoder.encode(&registry.gather(), &mut body) {
                let msg = format!("cannot encode metrics: {e}\n");
                return write(&mut stream, "500 Internal Server Error", "text/plain", msg.as_bytes()).await;
            }
            write(&mut stream, "200 OK", encoder.format_type(), &body).await
        }
        "/healthz" => write(&mut stream, "200 OK", "text/plain", b"ok\n").await,
        "/readyz" => match health.readiness() {
            Ok(()) => write(&mut stream, "200 OK", "text/plain", b"ready\n").await,
            Err(why) => {
                write(&mut stream, "503 Service Unavailable", "text/plain", format!("not ready: {why}\n").as_bytes())
                    .await
            }
        },
        _ => write(&mut stream, "404 Not Found", "text/plain", b"not found: try /metrics, /healthz, /readyz\n").await,
    }
}

async fn write(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}
