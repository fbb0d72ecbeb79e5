//! Deterministic randomness and ids: the splitmix64 generator (`Rng`, one stream per label),
//! `mix64`, and GUIDs and Cosmos-style resource ids made from it.

/// splitmix64: tiny, fast, and good enough for synthetic data. Each generator part gets its
/// own stream (seed derived from a label), so changing one scenario does not shift the others.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub(crate) fn stream(label: &str) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a of the label, then mixed
        for b in label.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rng(mix64(h ^ 0x5eed_c05d_b0a7_2021))
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
    /// Uniform in [0, 1).
    pub(crate) fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform integer in [lo, hi] (inclusive).
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    pub(crate) fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }
    /// Log-uniform in [lo, hi].
    pub(crate) fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + (hi.ln() - lo.ln()) * self.f64()).exp()
    }
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    pub(crate) fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next() % xs.len() as u64) as usize]
    }
    /// A random version-4 style GUID, lowercase.
    pub(crate) fn guid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        guid_string(a, b)
    }
}

pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn guid_bytes(a: u64, b: u64) -> [u8; 36] {
    // version nibble 4, variant 10xx, like real v4 GUIDs
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let mut out = [b'-'; 36];
    let mut nib = [0u8; 32];
    for i in 0..16 {
        nib[i] = HEX[((a >> (60 - 4 * i)) & 0xf) as usize];
        nib[16 + i] = HEX[((b >> (60 - 4 * i)) & 0xf) as usize];
    }
    let mut j = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        if i == 8 || i == 13 || i == 18 || i == 23 {
            continue;
        }
        *slot = nib[j];
        j += 1;
    }
    out
}

fn guid_string(a: u64, b: u64) -> String {
    String::from_utf8_lossy(&guid_bytes(a, b)).into_owned()
}

/// A Cosmos-style base64 resource id ("kXQ1AK7m8QA=") from a seed.
pub(crate) fn rid_string(seed: u64, len_bytes: usize) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut r = Rng::new(seed);
    let bytes: Vec<u8> = (0..len_bytes).map(|_| (r.next() & 0xff) as u8).collect();
    let mut s = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            (chunk[0] as u32) << 16 | (*chunk.get(1).unwrap_or(&0) as u32) << 8 | *chunk.get(2).unwrap_or(&0) as u32;
        s.push(B64[(n >> 18) as usize & 63] as char);
        s.push(B64[(n >> 12) as usize & 63] as char);
        s.push(if chunk.len() > 1 { B64[(n >> 6) as usize & 63] as char } else { '=' });
        s.push(if chunk.len() > 2 { B64[n as usize & 63] as char } else { '=' });
    }
    s
}
