//! The user agents a key uses, for `new_user_agents`: a key that always read with its SDK and
//! now reads gigabytes with `python-requests` or `curl` is more likely a theft than one whose
//! own application reads more. The volume rules' alerts (`unfamiliar_origin_volume`,
//! `unfamiliar_origins_aggregate`, `volume_anomaly`) name the user agents of their evidence
//! whose family the key had not used before, which raises the alert's confidence in the OCSF
//! and ECS forms (`src/formats/`); a new user agent never raises an alert on its own.
//!
//! Memory per key is small and bounded: at most [`AGENT_FAMILIES`] families, each a 32-bit
//! hash of the product token (the text before the first `/`, space, `(` or `;`, lowercased:
//! `python-requests/2.25.1` and `python-requests/2.31.0` are one family, so an upgrade is not
//! new) with its first and last minute of use in event time. Past the cap the least recently
//! used family is forgotten (ties by hash); a family unused for `history_window` is dropped by
//! the daily sweep. A family is new while its first use is less than `familiar_after` old, as
//! an origin is, and only against a key with at least one familiar family (its habits).
//! Deterministic: hashes are FNV-1a, not the process's random hasher.

use super::*;

/// User-agent families remembered per key.
pub(super) const AGENT_FAMILIES: usize = 8;

/// One family a key used: (hash, first minute, last minute), minutes since the Unix epoch of
/// event time. 12 bytes; serialized as a three-number array.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentSeen(pub u32, pub i32, pub i32);

/// A key's families: the first inline (most keys read with one application), no heap block
/// for it; the same 24 bytes in the key's state as a `Vec`.
pub(super) type Agents = smallvec::SmallVec<[AgentSeen; 1]>;

/// The family of a user agent: FNV-1a (32-bit) of its lowercased product token.
pub(super) fn family(ua: &str) -> u32 {
    let token = ua.trim_start().split(['/', ' ', '(', ';']).next().unwrap_or("");
    let mut h: u32 = 0x811c_9dc5;
    for b in token.bytes() {
        h ^= u32::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn minute(t: Nanos) -> i32 {
    t.div_euclid(MINUTE).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// Notes a read with a user agent of `fam` at `t`.
pub(super) fn observe(list: &mut Agents, fam: u32, t: Nanos) {
    let m = minute(t);
    if let Some(a) = list.iter_mut().find(|a| a.0 == fam) {
        a.1 = a.1.min(m);
        a.2 = a.2.max(m);
        return;
    }
    if list.len() >= AGENT_FAMILIES {
        if let Some(i) = (0..list.len()).min_by_key(|&i| (list[i].2, list[i].0)) {
            list.swap_remove(i);
        }
    }
    grow::room_for_one_small(list); // most keys use one or two families
    list.push(AgentSeen(fam, m, m));
}

/// Forgets the families unused for `forget` at `t` (the sweep).
pub(super) fn sweep(list: &mut Agents, t: Nanos, forget: Nanos) {
    list.retain(|a| t - i64::from(a.2) * MINUTE <= forget);
    if list.is_empty() {
        *list = Agents::new(); // give the allocation back
    }
}

impl Ctx {
    /// The user agents of `top` (an alert's evidence) whose family `key` had not used
    /// `familiar_after` before `t`: new to it, or first used within that span (by the alert's
    /// own reads, typically). "(other)", the symbol table's overflow, is never named. None
    /// while the key has no familiar family at all: a key seen for less than `familiar_after`
    /// has no habits to break, and neither has one restored from a checkpoint or model written
    /// before the families were kept (until `familiar_after` after its restore).
    pub(super) fn new_user_agents(&self, key: &KeyState, top: &[NameCount], t: Nanos) -> Vec<String> {
        let familiar_after = self.cfg.familiar_after.0;
        if !key.agents.iter().any(|a| t - i64::from(a.1) * MINUTE >= familiar_after) {
            return Vec::new();
        }
        top.iter()
            .filter(|n| !n.name.is_empty() && n.name != self.syms.name(intern::OTHER))
            .filter(|n| {
                let fam = family(&n.name);
                match key.agents.iter().find(|a| a.0 == fam) {
                    Some(a) => t - i64::from(a.1) * MINUTE < familiar_after,
                    None => true,
                }
            })
            .map(|n| n.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_product_tokens_and_memory_is_bounded_by_recency() {
        assert_eq!(family("python-requests/2.25.1"), family("Python-Requests/2.31.0"));
        assert_eq!(family("curl/7.68.0"), family("curl"));
        assert_eq!(
            family("Microsoft.Azure.Documents.Client/2.14.0 (netstandard2.0; Linux)"),
            family("microsoft.azure.documents.client/2.16.0")
        );
        assert_ne!(family("python-requests/2.25.1"), family("curl/7.68.0"));
        assert_ne!(family("azsdk-python-cosmos/4.5.1"), family("azsdk-js-cosmos/4.0.0"));
        let mut list = Agents::new();
        for i in 0..AGENT_FAMILIES as i64 {
            observe(&mut list, family(&format!("tool{i}/1.0")), i * MINUTE);
        }
        observe(&mut list, family("tool0/2.0"), 100 * MINUTE); // tool0 used again: tool1 is the oldest
        observe(&mut list, family("curl/8"), 101 * MINUTE);
        assert_eq!(list.len(), AGENT_FAMILIES);
        assert!(list.iter().any(|a| a.0 == family("tool0") && a.1 == 0 && a.2 == 100));
        assert!(!list.iter().any(|a| a.0 == family("tool1")), "the least recently used is forgotten");
        sweep(&mut list, 101 * MINUTE + DAY, DAY);
        assert_eq!(list.iter().map(|a| a.0).collect::<Vec<_>>(), [family("curl")]);
    }
}
