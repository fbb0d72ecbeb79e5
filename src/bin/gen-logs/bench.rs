//! `gen-logs bench`: one large JSON Lines file of legacy shape-A records in event-time order,
//! for throughput benchmarks: `K` keys with `O` origins each, and `T` planted thefts.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use super::rng::{guid_bytes, mix64, Rng};
use super::sample::UA_THIEF;
use super::timefmt::{iso7, push_iso7, ticks, DAY, MS, TPS};
use super::write::{fmt_bytes, push_digits, push_f6, push_u64, MIB};

pub(crate) struct BenchCfg {
    pub(crate) records: u64,
    pub(crate) keys: u64,
    pub(crate) origins: u64,
    pub(crate) thefts: u64,
    pub(crate) out: PathBuf,
}

/// Credential of key `k`: (account index, credential slot 0..3). Accounts hold 1-4 credentials.
fn build_keys(k: u64) -> Vec<(u32, u8)> {
    let mut v = Vec::with_capacity(k as usize);
    let mut acct = 0u32;
    while (v.len() as u64) < k {
        let n = 1 + (mix64(acct as u64 ^ 0xacc7) % 4) as u8;
        for c in 0..n {
            if (v.len() as u64) < k {
                v.push((acct, c));
            }
        }
        acct += 1;
    }
    v
}

/// Origin `j` of key `k`: distinct /24s for all (k, j) while keys*origins <= 2^22,
/// first octet 40..103 (the thieves use 185.x.y.z, never among these).
fn push_origin(b: &mut Vec<u8>, k: u64, j: u64, origins: u64) {
    let n = (k * origins + j) & 0x3f_ffff;
    let p = n.wrapping_mul(0x2c_9277) & 0x3f_ffff; // odd multiplier: a bijection mod 2^22
    push_u64(b, 40 + (p >> 16));
    b.push(b'.');
    push_u64(b, (p >> 8) & 0xff);
    b.push(b'.');
    push_u64(b, p & 0xff);
    b.push(b'.');
    push_u64(b, 1 + mix64(n) % 254);
}

const BENCH_UAS: [&str; 4] = [
    "Microsoft.Azure.Documents.Client/2.14.0 documentdb-dotnet-sdk/2.14.0 Host/64-bit MicrosoftWindowsNT/10.0.17763.0 (netstandard2.0; Windows 10.0.17763; x64) OrderService/5.12.3 MicrosoftWindowsNT/6.2.9200.0",
    "azsdk-python-cosmos/4.3.0 Python/3.9.7 (Linux-5.4.0-1056-azure-x86_64-with-glibc2.31) ingest-worker/2.7.1 aiohttp/3.7.4.post0 urllib3/1.26.6 requests/2.26.0",
    "azure-cosmos/4.18.0 Linux/5.4.0-1056-azure JRE/11.0.12 (Eclipse Adoptium; OpenJDK 64-Bit Server VM 11.0.12+7) reporting-service/1.9.0 reactor-netty/1.0.9",
    "azsdk-js-azurecosmos/3.12.3 Node.js/v14.17.5 (linux; x64; 5.4.0-1056-azure) catalog-api/4.0.2 @azure/core-http/2.1.0 OS/Linux-5.4.0 Arch/x64",
];

struct BenchWriter<'a> {
    cfg: &'a BenchCfg,
    keys: Vec<(u32, u8)>,
    line: Vec<u8>,
    rng: Rng,
}

impl BenchWriter<'_> {
    /// Format one record into `self.line`.
    fn record(&mut self, t: u64, key: u64, theft_ip: Option<u64>, resp: u64, op: &str) {
        let (acct, cred) = self.keys[key as usize];
        let b = &mut self.line;
        b.clear();
        b.extend_from_slice(b"{ \"time\": \"");
        push_iso7(b, t);
        b.extend_from_slice(b"\", \"resourceId\": \"/SUBSCRIPTIONS/");
        let sub = mix64(acct as u64 % 16 + 0x5ab);
        b.extend_from_slice(&guid_bytes(sub, mix64(sub)).to_ascii_uppercase());
        b.extend_from_slice(b"/RESOURCEGROUPS/RG-BENCH/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/ACCT");
        push_digits(b, acct as u64, 5);
        b.extend_from_slice(b"\", \"category\": \"DataPlaneRequests\", \"operationName\": \"");
        b.extend_from_slice(op.as_bytes());
        b.extend_from_slice(b"\", \"properties\": {\"activityId\": \"");
        let (r1, r2, r3) = (self.rng.next(), self.rng.next(), self.rng.next());
        b.extend_from_slice(&guid_bytes(r1, r2));
        let db = acct as u64 % 3;
        let coll = r3 % 8;
        b.extend_from_slice(b"\",\"requestResourceType\": \"Document\",\"requestResourceId\": \"/dbs/db");
        push_digits(b, db, 2);
        b.extend_from_slice(b"/colls/coll");
        push_digits(b, coll, 2);
        if op == "Read" || op == "Upsert" {
            b.extend_from_slice(b"/docs/");
            b.extend_from_slice(&guid_bytes(r2, r3));
        }
        b.extend_from_slice(b"\",\"collectionRid\": \"");
        b.extend_from_slice(&guid_bytes(mix64(acct as u64 ^ 0xc011), mix64(coll))[..8]);
        b.extend_from_slice(b"AA==\",\"databaseRid\": \"");
        b.extend_from_slice(&guid_bytes(mix64(acct as u64 ^ 0xdb), mix64(db))[..6]);
        b.extend_from_slice(b"==\",\"statusCode\": \"200\",\"duration\": \"");
        push_u64(b, 2 + resp / 20_000 + (r3 >> 40) % 30);
        b.extend_from_slice(b"\",\"userAgent\": \"");
        if theft_ip.is_some() {
            b.extend_from_slice(UA_THIEF.as_bytes());
        } else {
            b.extend_from_slice(BENCH_UAS[(acct as usize + cred as usize) % 4].as_bytes());
        }
        b.extend_from_slice(b"\",\"clientIpAddress\": \"");
        match theft_ip {
            Some(i) => {
                b.extend_from_slice(b"185.");
                push_u64(b, (i >> 8) & 0xff);
                b.push(b'.');
                push_u64(b, i & 0xff);
                b.extend_from_slice(b".77");
            }
            None => push_origin(b, key, (r3 >> 20) % self.cfg.origins, self.cfg.origins),
        }
        b.extend_from_slice(b"\",\"requestCharge\": \"");
        push_f6(b, 1.0 + resp as f64 / 10_240.0 + ((r3 >> 8) % 100) as f64 / 100.0);
        b.extend_from_slice(b"\",\"requestLength\": \"");
        push_u64(
            b,
            if op == "Upsert" {
                400 + r3 % 2000
            } else if op == "Query" {
                120 + r3 % 400
            } else {
                0
            },
        );
        b.extend_from_slice(b"\",\"responseLength\": \"");
        push_u64(b, resp);
        b.extend_from_slice(b"\",\"resourceTokenPermissionId\": \"\",\"resourceTokenPermissionMode\": \"\",\"resourceTokenUserRid\": \"\",\"region\": \"East US 2\",\"partitionId\": \"");
        b.extend_from_slice(&guid_bytes(mix64(acct as u64 ^ 0x9a7), mix64(coll * 4 + r3 % 4)));
        b.extend_from_slice(b"\",\"keyType\": \"");
        match cred {
            0 => b.extend_from_slice(b"PrimaryMasterKey"),
            1 => b.extend_from_slice(b"SecondaryReadonlyMasterKey"),
            _ => {}
        }
        b.extend_from_slice(b"\",\"aadPrincipalId\": \"");
        if cred >= 2 {
            let g = mix64(acct as u64 * 4 + cred as u64);
            b.extend_from_slice(&guid_bytes(g, mix64(g ^ 0xaad)));
        }
        b.extend_from_slice(b"\",\"connectionMode\": \"Direct\",\"databaseName\": \"db");
        push_digits(b, db, 2);
        b.extend_from_slice(b"\",\"collectionName\": \"coll");
        push_digits(b, coll, 2);
        b.extend_from_slice(b"\"}}\n");
    }
}

pub(crate) fn run_bench(cfg: &BenchCfg) -> io::Result<()> {
    if cfg.keys == 0 || cfg.origins == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "--keys and --origins-per-key must be at least 1"));
    }
    let start = ticks(2021, 8, 1, 0, 0, 0);
    let span = 10 * DAY;
    let mut w =
        BenchWriter { cfg, keys: build_keys(cfg.keys), line: Vec::with_capacity(2048), rng: Rng::stream("bench") };

    // planted thefts: day 9 (2021-08-09), ~3 GiB of 4 MiB pages within ~40 minutes
    let mut trng = Rng::stream("bench-thefts");
    let mut thefts: Vec<(u64, u64, u64)> = Vec::new(); // t, key, theft index
    let mut theft_summary = Vec::new();
    for i in 0..cfg.thefts {
        let key = (i * cfg.keys / cfg.thefts.max(1) + cfg.keys / (2 * cfg.thefts.max(1))) % cfg.keys;
        let s = ticks(2021, 8, 9, (3 + i * 5) % 24, trng.range(0, 15), 0) + trng.range(0, TPS * 60);
        let n = trng.range(760, 800);
        let mut t = s;
        for _ in 0..n {
            thefts.push((t, key, i));
            t += trng.range(2600, 3100) * MS + trng.range(0, 9999);
        }
        theft_summary.push((key, i, s, t, n));
    }
    thefts.sort_unstable();

    let file =
        fs::File::create(&cfg.out).map_err(|e| io::Error::new(e.kind(), format!("{}: {}", cfg.out.display(), e)))?;
    let mut out = BufWriter::with_capacity(8 << 20, file);
    let (mut n_written, mut bytes) = (0u64, 0u64);
    let mut ti = 0usize;
    let step = span / cfg.records.max(1);
    let ops = ["Read", "Read", "Read", "Query", "Query", "ReadFeed", "Upsert"];
    for i in 0..cfg.records {
        let t = start + (i as u128 * span as u128 / cfg.records as u128) as u64 + w.rng.next() % step.max(1);
        while ti < thefts.len() && thefts[ti].0 <= t {
            let (tt, key, idx) = thefts[ti];
            let op = if ti & 1 == 0 { "ReadFeed" } else { "Query" };
            w.record(tt, key, Some(idx), 4 * MIB, op);
            out.write_all(&w.line)?;
            bytes += w.line.len() as u64;
            n_written += 1;
            ti += 1;
        }
        let r = w.rng.next();
        let key = r % cfg.keys;
        let op = ops[((r >> 32) % ops.len() as u64) as usize];
        let resp = (1024.0 * (1024f64.ln() * w.rng.f64()).exp()) as u64; // 1 KiB .. 1 MiB, log-uniform
        w.record(t, key, None, resp, op);
        out.write_all(&w.line)?;
        bytes += w.line.len() as u64;
        n_written += 1;
    }
    while ti < thefts.len() {
        let (tt, key, idx) = thefts[ti];
        let op = if ti & 1 == 0 { "ReadFeed" } else { "Query" };
        w.record(tt, key, Some(idx), 4 * MIB, op);
        out.write_all(&w.line)?;
        bytes += w.line.len() as u64;
        n_written += 1;
        ti += 1;
    }
    out.flush()?;
    let accounts = w.keys.last().map(|k| k.0 as u64 + 1).unwrap_or(0);
    eprintln!(
        "gen-logs bench: wrote {} records ({} regular + {} theft), {} bytes ({}) to {}; {} keys in {} accounts, {} origins per key",
        n_written,
        cfg.records,
        thefts.len(),
        bytes,
        fmt_bytes(bytes),
        cfg.out.display(),
        cfg.keys,
        accounts,
        cfg.origins
    );
    for (key, i, s, e, n) in theft_summary {
        let (acct, cred) = w.keys[key as usize];
        eprintln!(
            "  theft {}: key {} (ACCT{:05} credential slot {}), from 185.{}.{}.77, {} to {}, {} requests, {} bytes",
            i,
            key,
            acct,
            cred,
            (i >> 8) & 0xff,
            i & 0xff,
            iso7(s),
            iso7(e),
            n,
            n * 4 * MIB
        );
    }
    Ok(())
}
