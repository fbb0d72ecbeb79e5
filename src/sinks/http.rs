//! What the HTTP sinks (`webhook.rs`, `alertmanager/`) share: the client (configured headers,
//! bearer token, trusted roots), the URL as it may be logged, and an error with its causes in
//! one line.
//!
//! TLS is rustls (the `ring` provider). The trusted roots are the system's (rustls-native-certs)
//! and Mozilla's (webpki-roots), or, when a CA file is configured, that file's certificates
//! only: a private CA then vouches for the endpoint and no public CA can.

pub use crate::config::HttpTlsAuth;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use std::collections::BTreeMap;

/// A client builder with the sink's headers, bearer token and trusted roots, no redirects.
/// Err: what is wrong (a header's name, never its value; the CA file and why).
pub(crate) fn client_builder(
    headers: &BTreeMap<String, String>,
    auth: &HttpTlsAuth,
    timeout: std::time::Duration,
) -> Result<reqwest::ClientBuilder, String> {
    let mut extra = header_map(headers).map_err(|(name, reason)| format!("invalid header {name:?}: {reason}"))?;
    if let Some(token) = &auth.bearer_token {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| "the token is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        extra.insert(AUTHORIZATION, value);
    }
    let mut b = reqwest::Client::builder()
        .default_headers(extra)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &auth.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read the CA file {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("the CA file {} is not PEM: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("the CA file {} holds no certificate", ca.display()));
        }
        b = b.tls_built_in_root_certs(false);
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    Ok(b)
}

/// Configured request headers, each marked sensitive (typically credentials: kept out of debug
/// output). Err: the header's name and why it is invalid (its value is never shown).
pub(crate) fn header_map(headers: &BTreeMap<String, String>) -> Result<HeaderMap, (String, String)> {
    let mut extra = HeaderMap::new();
    for (name, value) in headers {
        let invalid = |reason: String| (name.clone(), reason);
        let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let mut header_value =
            HeaderValue::from_str(value).map_err(|_| invalid("the value is not a valid header value".to_owned()))?;
        header_value.set_sensitive(true);
        extra.insert(header_name, header_value);
    }
    Ok(extra)
}

/// The URL without user info, query or fragment: safe to log.
pub(crate) fn shown(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    // Both only fail for URLs that cannot have them, which then have none to remove.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// Logs a warning when a token would travel in clear: an `http://` URL to a host other than
/// loopback. (The token itself is never logged.)
pub(crate) fn warn_cleartext_token(url: &reqwest::Url, auth: &HttpTlsAuth, sink: &str) {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if auth.bearer_token.is_some() && url.scheme() == "http" && !loopback {
        tracing::warn!(
            message = "The sink's token is sent in clear (http:// to another host): use https.",
            sink,
            target = %shown(url)
        );
    }
}

/// A URL string as it may be logged ([`shown`]); one that does not parse is not shown.
pub(crate) fn shown_str(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(|_| "<invalid URL>".to_owned(), |u| shown(&u))
}

/// An error and its causes in one line (reqwest's own message is only the outermost layer,
/// e.g. "error sending request", with the reason in its sources).
pub(crate) fn error_chain(e: reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
