//! Writing output: numbers pushed into byte lines by hand (`push_*`), request charges with 6
//! decimals, byte sizes for humans, and whole files (with the path in the error).

use std::fs;
use std::io;
use std::path::Path;

pub(crate) const KIB: u64 = 1024;
pub(crate) const MIB: u64 = 1024 * 1024;
pub(crate) const GIB: u64 = 1024 * MIB;

pub(crate) fn push_digits(b: &mut Vec<u8>, v: u64, width: usize) {
    let mut tmp = [b'0'; 20];
    let mut v = v;
    let mut i = 20;
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let n = 20 - i;
    for _ in n..width {
        b.push(b'0');
    }
    b.extend_from_slice(&tmp[i..]);
}

pub(crate) fn push_u64(b: &mut Vec<u8>, v: u64) {
    push_digits(b, v, 0);
}

/// A request charge the way Azure writes it: 6 decimals.
pub(crate) fn push_f6(b: &mut Vec<u8>, v: f64) {
    let micro = (v * 1e6).round().max(0.0) as u64;
    push_u64(b, micro / 1_000_000);
    b.push(b'.');
    push_digits(b, micro % 1_000_000, 6);
}

pub(crate) fn f6(v: f64) -> String {
    let mut b = Vec::new();
    push_f6(&mut b, v);
    String::from_utf8_lossy(&b).into_owned()
}

pub(crate) fn fmt_bytes(n: u64) -> String {
    if n >= GIB {
        format!("{:.2} GiB", n as f64 / GIB as f64)
    } else if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else if n >= KIB {
        format!("{:.1} KiB", n as f64 / KIB as f64)
    } else {
        format!("{} B", n)
    }
}

pub(crate) fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| io::Error::new(e.kind(), format!("{}: {}", dir.display(), e)))?;
    }
    fs::write(path, data).map_err(|e| io::Error::new(e.kind(), format!("{}: {}", path.display(), e)))
}
