//! What the HTTP sinks (`webhook.rs`, `alertmanager/`) share: configured headers, the URL as it
//! may be logged, and an error with its causes in one line.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::collections::BTreeMap;

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
