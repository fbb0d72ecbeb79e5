//! `gen-logs scenarios --seed N --out DIR [--accounts N]`: a labelled month and a half of
//! Cosmos DB traffic for measuring detection accuracy (`make eval`, `bench/eval.py`).
//!
//! What it models (all of it a pure function of the seed and the account count):
//!
//! - **Time**: 42 days from Monday 2024-01-22 00:00 UTC. The first `WARMUP_DAYS` (10) are the
//!   warm-up the detector needs (7-day learning period, then volume history); thefts are
//!   planted only from day 12 on, and the evaluation counts false alerts only after the
//!   warm-up. Month ends inside the range: 2024-01-31 (warm-up) and 2024-02-29.
//! - **Accounts** (default 24), each in one wire shape: the legacy DataPlaneRequests record
//!   (numbers as strings) or a resource-specific `CDBDataPlaneRequests` row; one JSON Lines
//!   file per account under `DIR/logs/`. Each account has a time zone, a rhythm for its
//!   application (office hours with quiet weekends, consumer evenings with busier weekends, or
//!   a flat 24/7 service) and a growth factor (some grow 3x per month).
//! - **Keys** (1-4 per account): the application's key (its app servers in one or two /24s,
//!   sometimes also an IPv6 /64; autoscaling adds hosts inside those prefixes as load and
//!   growth rise), a nightly backup key (one backup VM, a full read of a database that grows),
//!   an analytics principal (office-hours queries, a month-end batch on some), a developer key
//!   (laptops on home ISPs whose addresses change). Some accounts use Entra ID (AAD) principals
//!   only. Developers also debug with the application's key from home now and then.
//! - **Migration**: one account moves its application to a new region: a new /24 takes a
//!   growing share of the traffic (5 %, 20 %, 50 %, 80 %, then all) and the old one goes
//!   quiet. Its label says whether the new origin read >= 1 GiB in its first 24 h, in which
//!   case an origin-based detector legitimately alerts (`expect_alert`).
//! - **Thefts**, one of each kind per seed (`THEFT_KINDS`, defined in BENCHMARKS.md "Detection accuracy"),
//!   planted in the eval period with their own records; their labels give the exact bytes and
//!   the event time at which their cumulative bytes cross 1 GiB.
//!
//! Output: `DIR/logs/<account>.jsonl` (time-ordered) and `DIR/labels.json`.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use super::request::{arm_path, duration_ms, ru_for, sorted_times};
use super::rng::{mix64, Rng};
use super::timefmt::{iso7, push_iso7, split_time, ticks, Tm, DAY, HOUR, MIN, MS, SEC, TPS};
use super::write::{f6, fmt_bytes, write_file, GIB, KIB, MIB};

const DAYS: u64 = 42;
const WARMUP_DAYS: u64 = 10;
const FIRST_THEFT_DAY: u64 = 12;

fn t_start() -> u64 {
    ticks(2024, 1, 22, 0, 0, 0)
}

pub(crate) struct ScenCfg {
    pub(crate) seed: u64,
    pub(crate) accounts: usize,
    pub(crate) out: PathBuf,
}

pub(crate) const THEFT_KINDS: [&str; 11] = [
    "new_origin_bulk_ipv4",
    "new_origin_bulk_ipv6",
    "new_origin_bulk_ipv4_mapped",
    "low_and_slow",
    "distributed",
    "known_origin_spike_weekday",
    "known_origin_spike_weekend",
    "new_credential_aad_only",
    "backup_window",
    "two_keys",
    "new_origin_bulk_small_key",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Shape {
    Legacy,
    Cdb,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rhythm {
    Office,
    Consumer,
    Flat,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    App,
    Backup,
    Analytics,
    Dev,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pfx {
    V4(u8, u8, u8),
    V6(u16, u16, u16, u16),
}

impl Pfx {
    fn addr(&self, host: u32) -> String {
        match *self {
            Pfx::V4(a, b, c) => format!("{}.{}.{}.{}", a, b, c, host.min(254)),
            Pfx::V6(a, b, c, d) => format!("{:x}:{:x}:{:x}:{:x}::{:x}", a, b, c, d, host),
        }
    }
    fn cidr(&self) -> String {
        match *self {
            Pfx::V4(a, b, c) => format!("{}.{}.{}.0/24", a, b, c),
            Pfx::V6(a, b, c, d) => format!("{:x}:{:x}:{:x}:{:x}::/64", a, b, c, d),
        }
    }
}

struct Key {
    cred: String,     // canonical, as the detector names it
    key_type: String, // keyType as written ("" for AAD)
    aad: String,      // principal ("" for keys)
    role: Role,
    peak: f64, // bytes in a busy hour at the start (app, analytics), or backup size
    prefixes: Vec<Pfx>,
    base_hosts: u32,
    extra_hosts: u32,
    ua: &'static str,
    /// A month-end batch (analytics): its size at the start of the data and its duration in
    /// hours. A recurring job reads about the same each month, growing with the data.
    month_end: Option<(f64, f64)>,
}

/// One request, rendered only after the account's requests are sorted.
#[derive(Clone, Copy)]
struct Req {
    t: u64,
    key: u8,
    ip: u32,
    op: u8,
    status: u16,
    ua: u16,
    bytes: u64,
    theft: u16, // 0: benign, else theft index + 1
}

const OPS: [&str; 6] = ["Read", "Query", "ReadFeed", "Upsert", "Create", "Replace"];
const OP_READ: u8 = 0;
const OP_QUERY: u8 = 1;
const OP_FEED: u8 = 2;
const OP_UPSERT: u8 = 3;

const UAS: [&str; 9] = [
    "Microsoft.Azure.Documents.Client/2.14.0 (netstandard2.0; Linux 5.4.0-1056-azure; x64) OrderService/5.12.3",
    "azsdk-python-cosmos/4.5.1 Python/3.11.4 (Linux-5.15.0-1041-azure-x86_64-with-glibc2.35) ingest-worker/2.7.1",
    "azure-cosmos/4.48.0 Linux/5.15.0-1041-azure JRE/17.0.8 reporting-service/1.9.0",
    "azsdk-js-azurecosmos/4.0.0 Node.js/v18.17.1 (linux; x64) catalog-api/4.0.2",
    "cosmos-backup/2.1.0 azsdk-python-cosmos/4.5.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Azure Cosmos DB Data Explorer",
    "azsdk-python-cosmos/4.5.1 Python/3.12.1 (macOS-14.2-arm64-arm-64bit)",
    "python-requests/2.31.0",
    "curl/8.4.0",
];
const UA_BACKUP_IX: u16 = 4;
const UA_EXPLORER_IX: u16 = 5;
const UA_LAPTOP_IX: u16 = 6;

const REGIONS: [&str; 6] = ["East US", "West Europe", "Southeast Asia", "East US 2", "North Europe", "Japan East"];

struct Acc {
    name: String,
    shape: Shape,
    sub: String,
    rg: String,
    region: &'static str,
    tz: i64, // hours east of UTC
    rhythm: Rhythm,
    growth: f64,
    aad_only: bool,
    keys: Vec<Key>,
    ips: Vec<String>,
    ip_ix: HashMap<String, u32>,
    reqs: Vec<Req>,
    db: String,
    colls: [&'static str; 3],
}

impl Acc {
    fn ip(&mut self, s: String) -> u32 {
        if let Some(i) = self.ip_ix.get(&s) {
            return *i;
        }
        let i = self.ips.len() as u32;
        self.ip_ix.insert(s.clone(), i);
        self.ips.push(s);
        i
    }
    fn local(&self, t: u64) -> Tm {
        split_time((t as i64 + self.tz * HOUR as i64) as u64)
    }
}

/// A benign event worth naming in the labels (and for attributing a false alert).
struct Benign {
    kind: &'static str,
    account: usize,
    key: usize,
    start: u64,
    end: u64,
    bytes: u64,
    origins: Vec<String>,
    expect_alert: bool,
    note: String,
}

struct Theft {
    kind: &'static str,
    account: usize,
    keys: Vec<usize>,
    origins: Vec<String>,
    start: u64,
    end: u64,
    bytes: u64,
    crosses_1gib: Option<u64>,
    note: String,
}

pub(crate) struct Generated {
    accounts: Vec<Acc>,
    thefts: Vec<Theft>,
    benign: Vec<Benign>,
}

fn growth_at(growth: f64, t: u64) -> f64 {
    let days = (t - t_start()) as f64 / DAY as f64;
    growth.powf(days / 30.0)
}

/// Share of the key's busy hour that is read in this local hour.
fn rhythm_factor(r: Rhythm, m: &Tm) -> f64 {
    let weekend = m.wday == 0 || m.wday == 6;
    let h = m.h;
    match r {
        Rhythm::Office => {
            let f = match h {
                9..=16 => 1.0,
                8 | 17 => 0.7,
                7 | 18 => 0.35,
                19..=21 => 0.15,
                _ => 0.05,
            };
            if weekend {
                f * 0.15 + 0.02
            } else {
                f
            }
        }
        Rhythm::Consumer => {
            let f: f64 = match h {
                0 => 0.35,
                1..=6 => 0.08,
                7..=11 => 0.3,
                12..=17 => 0.5,
                18..=22 => 1.0,
                _ => 0.6,
            };
            if weekend {
                (f * 1.25).min(1.0) + 0.05
            } else {
                f
            }
        }
        Rhythm::Flat => {
            let x = (h as f64 - 14.0) / 24.0 * std::f64::consts::TAU;
            let f = 0.7 + 0.3 * x.cos();
            if weekend {
                f * 0.9
            } else {
                f
            }
        }
    }
}

const WORDS: [&str; 24] = [
    "orders",
    "catalog",
    "billing",
    "telemetry",
    "crm",
    "inventory",
    "payments",
    "iot",
    "profiles",
    "search",
    "claims",
    "fleet",
    "ledger",
    "tickets",
    "media",
    "loyalty",
    "shipping",
    "hr",
    "booking",
    "pricing",
    "audit",
    "reviews",
    "quotes",
    "devices",
];

fn build_accounts(seed: u64, n: usize) -> Vec<Acc> {
    let mut rng = Rng::new(mix64(seed ^ 0x5ce7_a710));
    let mut accs = Vec::with_capacity(n);
    let mut used_v4: Vec<(u8, u8, u8)> = Vec::new();
    let mut fresh_v4 = |rng: &mut Rng, public: bool| loop {
        let p = if public {
            (*rng.pick(&[13u8, 20, 40, 51, 52, 104, 137, 168]), rng.range(0, 255) as u8, rng.range(0, 255) as u8)
        } else if rng.chance(0.5) {
            (10, rng.range(0, 255) as u8, rng.range(0, 255) as u8)
        } else {
            (172, rng.range(16, 31) as u8, rng.range(0, 255) as u8)
        };
        if !used_v4.contains(&p) {
            used_v4.push(p);
            return p;
        }
    };
    for i in 0..n {
        let shape = if rng.chance(0.4) { Shape::Cdb } else { Shape::Legacy };
        let rhythm = *rng.pick(&[Rhythm::Office, Rhythm::Office, Rhythm::Consumer, Rhythm::Consumer, Rhythm::Flat]);
        let growth = if rng.chance(0.3) { 3.0 } else { rng.uniform(1.0, 1.3) };
        let aad_only = i == 0 || (n >= 12 && i == n / 2);
        let name = format!("{}-{:02}{}", WORDS[(i + seed as usize) % WORDS.len()], i, ["prod", "eu", "app"][i % 3]);
        let sub = rng.guid();
        let tz = *rng.pick(&[-8i64, -5, -5, 0, 1, 1, 2, 8, 9]);
        let region = *rng.pick(&REGIONS);
        let mut keys = Vec::new();
        // the application
        let public = rng.chance(0.4);
        let mut prefixes = vec![{
            let p = fresh_v4(&mut rng, public);
            Pfx::V4(p.0, p.1, p.2)
        }];
        if rng.chance(0.35) {
            let p = fresh_v4(&mut rng, public);
            prefixes.push(Pfx::V4(p.0, p.1, p.2));
        }
        if rng.chance(0.3) {
            prefixes.push(Pfx::V6(
                0x2603,
                0x1030 + rng.range(0, 15) as u16,
                rng.range(1, 0xfff) as u16,
                rng.range(1, 0xff) as u16,
            ));
        }
        let (app_cred, app_kt, app_aad) = aad_or_key(&mut rng, aad_only, "PrimaryMasterKey");
        let peak = rng.log_uniform(12.0, 450.0) * MIB as f64;
        keys.push(Key {
            cred: app_cred,
            key_type: app_kt,
            aad: app_aad,
            role: Role::App,
            peak,
            prefixes,
            base_hosts: rng.range(2, 5) as u32,
            extra_hosts: rng.range(2, 10) as u32,
            ua: UAS[rng.range(0, 3) as usize],
            month_end: None,
        });
        let want_backup = rng.chance(0.55) || i == 1 || i == 2;
        let want_analytics = rng.chance(0.45);
        let want_dev = rng.chance(0.4) || i == 1;
        if want_backup {
            let p = fresh_v4(&mut rng, false);
            let (c, kt, a) = aad_or_key(&mut rng, aad_only, "SecondaryReadonlyMasterKey");
            keys.push(Key {
                cred: c,
                key_type: kt,
                aad: a,
                role: Role::Backup,
                peak: rng.log_uniform(0.4, 5.0) * GIB as f64,
                prefixes: vec![Pfx::V4(p.0, p.1, p.2)],
                base_hosts: 1,
                extra_hosts: 0,
                ua: UAS[UA_BACKUP_IX as usize],
                month_end: None,
            });
        }
        if want_analytics {
            let public = rng.chance(0.5);
            let p = fresh_v4(&mut rng, public);
            let principal = rng.guid();
            keys.push(Key {
                cred: format!("aad:{}", principal),
                key_type: String::new(),
                aad: principal,
                role: Role::Analytics,
                peak: rng.log_uniform(5.0, 80.0) * MIB as f64,
                prefixes: vec![Pfx::V4(p.0, p.1, p.2)],
                base_hosts: 1,
                extra_hosts: 1,
                ua: UAS[2],
                month_end: if rng.chance(0.6) {
                    Some((rng.log_uniform(0.8, 4.0) * GIB as f64, rng.uniform(1.5, 3.5)))
                } else {
                    None
                },
            });
        }
        if want_dev && keys.len() < 4 {
            let (c, kt, a) = aad_or_key(&mut rng, aad_only, "PrimaryReadonlyMasterKey");
            keys.push(Key {
                cred: c,
                key_type: kt,
                aad: a,
                role: Role::Dev,
                peak: rng.log_uniform(2.0, 60.0) * MIB as f64,
                prefixes: Vec::new(),
                base_hosts: rng.range(1, 4) as u32, // developers
                extra_hosts: 0,
                ua: UAS[UA_LAPTOP_IX as usize],
                month_end: None,
            });
        }
        accs.push(Acc {
            name,
            shape,
            sub,
            rg: format!("rg-{}", WORDS[(i * 7 + 3) % WORDS.len()]),
            region,
            tz,
            rhythm,
            growth,
            aad_only,
            keys,
            ips: Vec::new(),
            ip_ix: HashMap::new(),
            reqs: Vec::new(),
            db: format!("{}db", WORDS[(i + 5) % WORDS.len()]),
            colls: [
                *rng.pick(&["orders", "events", "items", "documents"]),
                *rng.pick(&["customers", "users", "accounts", "devices"]),
                *rng.pick(&["carts", "sessions", "audit", "metrics"]),
            ],
        });
    }
    accs
}

fn aad_or_key(rng: &mut Rng, aad: bool, class: &str) -> (String, String, String) {
    if aad {
        let p = rng.guid();
        (format!("aad:{}", p), String::new(), p)
    } else {
        (format!("key:{}", class.to_lowercase()), class.to_string(), String::new())
    }
}

/// A home-ISP address (developer laptops): residential ranges, never a key's own prefixes.
fn home_ip(rng: &mut Rng) -> String {
    if rng.chance(0.25) {
        format!(
            "2a02:{:x}:{:x}:{:x}::{:x}",
            rng.range(0x8000, 0x8fff),
            rng.range(1, 0xffff),
            rng.range(1, 0xffff),
            rng.range(1, 0xffff)
        )
    } else {
        let a = *rng.pick(&[24u8, 71, 73, 76, 81, 86, 92, 98, 174]);
        format!("{}.{}.{}.{}", a, rng.range(0, 255), rng.range(0, 255), rng.range(1, 254))
    }
}

/// Pages of a bulk read: `bytes` in pages of up to 4 MiB at about `rate` bytes/s from `start`.
/// Returns the requests' (time, size); the last page is partial.
fn pages(rng: &mut Rng, start: u64, bytes: u64, rate: f64, full_pages: bool) -> Vec<(u64, u64)> {
    let mut v = Vec::new();
    let mut left = bytes;
    let mut t = start;
    while left > 0 {
        let want = if full_pages { 4 * MIB } else { rng.range(MIB, 4 * MIB) };
        let p = want.min(left);
        v.push((t, p));
        left -= p;
        let dt = p as f64 / rate * rng.uniform(0.6, 1.4);
        t += (dt * TPS as f64) as u64 + rng.range(1, MS);
    }
    v
}

fn gen_benign(a: &mut Acc, ai: usize, rng: &mut Rng, benign: &mut Vec<Benign>, migration: Option<u64>) {
    let t0 = t_start();
    let new_region: Option<Pfx> = migration.map(|_| Pfx::V4(20, 40 + rng.range(0, 60) as u8, rng.range(0, 255) as u8));
    let mut mig_first_24h = 0u64;
    let mut mig_total = 0u64;
    let mut mig_first: Option<u64> = None;
    for ki in 0..a.keys.len() {
        let role = a.keys[ki].role;
        let mut dev_home: Vec<String> = (0..a.keys[ki].base_hosts.max(1)).map(|_| home_ip(rng)).collect();
        let mut hosts_min = u32::MAX;
        let mut hosts_max = 0;
        for day in 0..DAYS {
            let day_t = t0 + day * DAY;
            match role {
                Role::App | Role::Analytics => {
                    for h in 0..24u64 {
                        let start = day_t + h * HOUR;
                        let m = a.local(start);
                        let g = growth_at(a.growth, start);
                        let (f, active) = if role == Role::App {
                            (rhythm_factor(a.rhythm, &m), true)
                        } else {
                            let weekday = m.wday != 0 && m.wday != 6;
                            (if (9..=17).contains(&m.h) { rng.uniform(0.3, 1.0) } else { 0.0 }, weekday)
                        };
                        if !active || f <= 0.0 {
                            continue;
                        }
                        let k = &a.keys[ki];
                        let target = k.peak * f * g * rng.uniform(0.75, 1.25);
                        let hosts = k.base_hosts + (k.extra_hosts as f64 * f * g.min(3.0) / 3.0).round() as u32;
                        hosts_min = hosts_min.min(hosts);
                        hosts_max = hosts_max.max(hosts);
                        // requests: point reads and writes scale with load, the rest is query pages
                        let n_point = (3.0 + 18.0 * f) as u64 + rng.range(0, 3);
                        let n_write = (1.0 + 6.0 * f) as u64;
                        let mut plan: Vec<(u8, u64)> = Vec::new();
                        let mut small = 0u64;
                        for _ in 0..n_point {
                            let b = rng.log_uniform(600.0, 96.0 * KIB as f64) as u64;
                            small += b;
                            plan.push((OP_READ, b));
                        }
                        for _ in 0..n_write {
                            plan.push((OP_UPSERT, rng.range(300, 1800)));
                        }
                        let mut rem = (target as u64).saturating_sub(small);
                        while rem > 64 * KIB {
                            let p = (rng.uniform(0.25, 4.0) * MIB as f64) as u64;
                            let p = p.min(rem);
                            plan.push((if rng.chance(0.6) { OP_QUERY } else { OP_FEED }, p));
                            rem -= p;
                        }
                        let times = sorted_times(rng, start, HOUR, plan.len());
                        // migration share of this hour
                        let share = match (migration, new_region) {
                            (Some(md), Some(_)) if role == Role::App && start >= t0 + md * DAY => {
                                let d = ((start - (t0 + md * DAY)) / DAY) as usize;
                                [0.05, 0.2, 0.5, 0.8, 1.0].get(d).copied().unwrap_or(1.0)
                            }
                            _ => 0.0,
                        };
                        for (t, (op, b)) in times.into_iter().zip(plan) {
                            let k = &a.keys[ki];
                            let host = rng.range(0, hosts as u64 - 1) as u32;
                            let migrated = share > 0.0 && rng.chance(share);
                            let addr = match (migrated, new_region) {
                                (true, Some(nr)) => nr.addr(10 + host),
                                _ => {
                                    let p = *rng.pick(&k.prefixes);
                                    match p {
                                        Pfx::V4(..) => p.addr(4 + host),
                                        Pfx::V6(..) => p.addr(0x10 + host),
                                    }
                                }
                            };
                            let status = if op >= OP_QUERY && rng.chance(0.01) { 429 } else { 200 };
                            let bytes = if status == 429 { 0 } else { b };
                            if migrated && status == 200 {
                                let first = *mig_first.get_or_insert(t);
                                if t < first + DAY {
                                    mig_first_24h += bytes;
                                }
                                mig_total += bytes;
                            }
                            let ua = UAS.iter().position(|u| *u == k.ua).unwrap_or(0) as u16;
                            let ip = a.ip(addr);
                            a.reqs.push(Req { t, key: ki as u8, ip, op, status, ua, bytes, theft: 0 });
                        }
                    }
                    // developers debugging with the application's key from home, now and then
                    if role == Role::App && rng.chance(0.06) {
                        let m = a.local(day_t + 12 * HOUR);
                        if m.wday != 0 && m.wday != 6 {
                            let s = day_t + rng.range(9, 19) * HOUR + rng.range(0, HOUR - 1);
                            let ipstr = home_ip(rng);
                            let bytes = rng.log_uniform(0.5, 40.0) * MIB as f64;
                            dev_session(a, ai, ki, rng, s, ipstr, bytes, benign);
                        }
                    }
                    // the analyst's month-end batch: last local day of the month, 20:00 local
                    if let (Role::Analytics, Some((size, hours))) = (role, a.keys[ki].month_end) {
                        let noon = a.local(day_t + 12 * HOUR);
                        let next = a.local(day_t + 12 * HOUR + DAY);
                        if next.mo != noon.mo {
                            let s = ((day_t as i64) + (20 - a.tz) * HOUR as i64) as u64 + rng.range(0, 20 * MIN);
                            let bytes = (size * growth_at(a.growth, s) * rng.uniform(0.93, 1.07)) as u64;
                            let dur = hours * rng.uniform(0.9, 1.1) * 3600.0;
                            let p = a.keys[ki].prefixes[0].addr(4);
                            let ip = a.ip(p.clone());
                            let ps = pages(rng, s, bytes, bytes as f64 / dur, false);
                            let end = ps.last().map(|x| x.0).unwrap_or(s);
                            for (t, b) in ps {
                                a.reqs.push(Req {
                                    t,
                                    key: ki as u8,
                                    ip,
                                    op: OP_QUERY,
                                    status: 200,
                                    ua: 2,
                                    bytes: b,
                                    theft: 0,
                                });
                            }
                            // the first one in the data has nothing in the key's history that says it
                            // recurs: a volume alert on it is legitimate; the next must stay silent
                            let first =
                                !benign.iter().any(|b| b.kind == "month_end_batch" && b.account == ai && b.key == ki);
                            benign.push(Benign {
                                kind: "month_end_batch",
                                account: ai,
                                key: ki,
                                start: s,
                                end,
                                bytes,
                                origins: vec![p],
                                expect_alert: first,
                                note: format!(
                                    "{} over {:.1} h from the analyst's usual host{}",
                                    fmt_bytes(bytes),
                                    dur / 3600.0,
                                    if first {
                                        "; the first month end in the data (no history of it)"
                                    } else {
                                        "; the previous month end is in the key's 30-day history"
                                    }
                                ),
                            });
                        }
                    }
                }
                Role::Backup => {
                    let s = ((day_t as i64) + (1 - a.tz) * HOUR as i64).max(t0 as i64) as u64 + rng.range(0, 40 * MIN);
                    let size = (a.keys[ki].peak * 1.01f64.powf(day as f64) * rng.uniform(0.98, 1.02)) as u64;
                    let rate = rng.uniform(1.4, 2.6) * MIB as f64;
                    let p = a.keys[ki].prefixes[0].addr(8);
                    let ip = a.ip(p.clone());
                    let ps = pages(rng, s, size, rate, true);
                    let end = ps.last().map(|x| x.0).unwrap_or(s);
                    for (t, b) in ps {
                        a.reqs.push(Req {
                            t,
                            key: ki as u8,
                            ip,
                            op: OP_FEED,
                            status: 200,
                            ua: UA_BACKUP_IX,
                            bytes: b,
                            theft: 0,
                        });
                    }
                    benign.push(Benign {
                        kind: "nightly_backup",
                        account: ai,
                        key: ki,
                        start: s,
                        end,
                        bytes: size,
                        origins: vec![p],
                        expect_alert: false,
                        note: String::from("full read of the database from the backup VM"),
                    });
                }
                Role::Dev => {
                    let m = a.local(day_t + 12 * HOUR);
                    if m.wday == 0 || m.wday == 6 || !rng.chance(0.5) {
                        continue;
                    }
                    // a developer's home address changes now and then (dynamic ISP addresses)
                    let d = rng.range(0, dev_home.len() as u64 - 1) as usize;
                    if rng.chance(0.12) {
                        dev_home[d] = home_ip(rng);
                    }
                    let s = ((day_t as i64) + (rng.range(8, 18) as i64 - a.tz) * HOUR as i64).max(t0 as i64) as u64
                        + rng.range(0, HOUR - 1);
                    let bytes = a.keys[ki].peak * rng.uniform(0.1, 1.0);
                    dev_session(a, ai, ki, rng, s, dev_home[d].clone(), bytes, benign);
                }
            }
        }
        if role == Role::App && hosts_max > 0 {
            let k = &a.keys[ki];
            benign.push(Benign {
                kind: "autoscaling",
                account: ai,
                key: ki,
                start: t0,
                end: t0 + DAYS * DAY,
                bytes: 0,
                origins: k.prefixes.iter().map(|p| p.cidr()).collect(),
                expect_alert: false,
                note: format!("{}..{} app hosts per hour inside the key's own prefixes", hosts_min, hosts_max),
            });
        }
    }
    if let (Some(md), Some(nr)) = (migration, new_region) {
        let expect = mig_first_24h >= GIB;
        benign.push(Benign {
            kind: "region_migration",
            account: ai,
            key: 0,
            start: mig_first.unwrap_or(t0 + md * DAY),
            end: t0 + (md + 5) * DAY,
            bytes: mig_total,
            origins: vec![nr.cidr()],
            expect_alert: expect,
            note: format!(
                "the app moves to a new region over 5 days (5/20/50/80/100 % of requests); the new origin read {} in its first 24 h{}",
                fmt_bytes(mig_first_24h),
                if expect { ": >= 1 GiB, an origin-based alert is legitimate" } else { "" }
            ),
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn dev_session(
    a: &mut Acc,
    ai: usize,
    ki: usize,
    rng: &mut Rng,
    s: u64,
    ipstr: String,
    bytes: f64,
    benign: &mut Vec<Benign>,
) {
    let n = rng.range(5, 40) as usize;
    let dur = rng.range(10, 70) * MIN;
    let ip = a.ip(ipstr.clone());
    let ua = if rng.chance(0.5) { UA_EXPLORER_IX } else { UA_LAPTOP_IX };
    let mut total = 0;
    let times = sorted_times(rng, s, dur, n);
    let end = times.last().copied().unwrap_or(s);
    for t in times {
        let b = (bytes / n as f64 * rng.uniform(0.3, 1.7)) as u64;
        total += b;
        let op = if rng.chance(0.7) { OP_QUERY } else { OP_READ };
        a.reqs.push(Req { t, key: ki as u8, ip, op, status: 200, ua, bytes: b, theft: 0 });
    }
    benign.push(Benign {
        kind: "developer_laptop",
        account: ai,
        key: ki,
        start: s,
        end,
        bytes: total,
        origins: vec![ipstr],
        expect_alert: false,
        note: String::from("small reads from a home ISP"),
    });
}

// ---------------------------------------------------------------------------------------
// Thefts
// ---------------------------------------------------------------------------------------

fn vps_v4(rng: &mut Rng) -> String {
    let a = *rng.pick(&[45u8, 91, 146, 185, 193, 194, 209]);
    format!("{}.{}.{}.{}", a, rng.range(0, 255), rng.range(0, 255), rng.range(2, 254))
}

fn thief_ua(rng: &mut Rng) -> u16 {
    *rng.pick(&[7u16, 8, 1, 3])
}

/// Typical bytes per active hour of key `ki` in the week before `t` (benign records only).
fn typical_hour(a: &Acc, ki: usize, t: u64) -> f64 {
    let from = t.saturating_sub(7 * DAY);
    let mut per_hour: Vec<(u64, u64)> = Vec::new();
    for r in &a.reqs {
        if r.key as usize == ki && r.theft == 0 && r.t >= from && r.t < t {
            let h = r.t / HOUR;
            match per_hour.last_mut() {
                Some(x) if x.0 == h => x.1 += r.bytes,
                _ => per_hour.push((h, r.bytes)),
            }
        }
    }
    // requests are generated hour by hour per key, but sessions interleave: merge by hour
    per_hour.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (h, b) in per_hour {
        match merged.last_mut() {
            Some(x) if x.0 == h => x.1 += b,
            _ => merged.push((h, b)),
        }
    }
    if merged.is_empty() {
        return 0.0;
    }
    merged.iter().map(|x| x.1 as f64).sum::<f64>() / merged.len() as f64
}

fn local_day_start(a: &Acc, day: u64) -> u64 {
    ((t_start() + day * DAY) as i64 - a.tz * HOUR as i64) as u64
}

fn plant(a: &mut Acc, theft: u16, ki: usize, ipstr: &str, ua: u16, ps: &[(u64, u64)]) {
    let ip = a.ip(ipstr.to_string());
    for (i, &(t, b)) in ps.iter().enumerate() {
        let op = if i % 3 == 2 { OP_QUERY } else { OP_FEED };
        a.reqs.push(Req { t, key: ki as u8, ip, op, status: 200, ua, bytes: b, theft });
    }
}

/// One key's part of a theft: key index, client address, (time, bytes) of each page.
type Planted = (usize, String, Vec<(u64, u64)>);

/// A victim account satisfying `ok`, one not used by another theft when there is one.
fn pick(accs: &[Acc], rng: &mut Rng, used: &mut Vec<usize>, ok: &dyn Fn(&Acc) -> bool) -> Option<usize> {
    let n = accs.len();
    let off = rng.range(0, n as u64 - 1) as usize;
    let cands: Vec<usize> = (0..n).map(|i| (i + off) % n).filter(|&i| ok(&accs[i])).collect();
    let c = cands.iter().copied().find(|i| !used.contains(i)).or_else(|| cands.first().copied())?;
    used.push(c);
    Some(c)
}

fn plant_thefts(accs: &mut [Acc], seed: u64, migration_acc: usize) -> Vec<Theft> {
    let mut rng = Rng::new(mix64(seed ^ 0x7e_f7));
    let mut thefts: Vec<Theft> = Vec::new();
    let mut used: Vec<usize> = vec![migration_acc];
    let eval_days = DAYS - FIRST_THEFT_DAY - 1;
    for kind in THEFT_KINDS {
        let idx = thefts.len() as u16 + 1;
        let day = FIRST_THEFT_DAY + rng.range(0, eval_days - 1);
        let ua = thief_ua(&mut rng);
        let rate = rng.log_uniform(2.0, 25.0) * MIB as f64;
        let bulk = (rng.uniform(1.5, 12.0) * GIB as f64) as u64;
        let any_hour = |rng: &mut Rng| t_start() + day * DAY + rng.range(0, DAY - 1);
        let victim: Option<usize> = match kind {
            "new_credential_aad_only" => pick(accs, &mut rng, &mut used, &|a: &Acc| a.aad_only),
            "backup_window" => {
                pick(accs, &mut rng, &mut used, &|a: &Acc| a.keys.iter().any(|k| k.role == Role::Backup))
            }
            "two_keys" => pick(accs, &mut rng, &mut used, &|a: &Acc| a.keys.len() >= 2 && !a.aad_only),
            "known_origin_spike_weekday" | "known_origin_spike_weekend" => {
                pick(accs, &mut rng, &mut used, &|a: &Acc| a.keys[0].peak >= 150.0 * MIB as f64)
                    .or_else(|| pick(accs, &mut rng, &mut used, &|_: &Acc| true))
            }
            "new_origin_bulk_small_key" => {
                pick(accs, &mut rng, &mut used, &|a: &Acc| a.keys[0].peak < 40.0 * MIB as f64)
                    .or_else(|| pick(accs, &mut rng, &mut used, &|_: &Acc| true))
            }
            _ => pick(accs, &mut rng, &mut used, &|_: &Acc| true),
        };
        let Some(ai) = victim else { continue };
        let a = &mut accs[ai];
        let (keys, origins, ps_all, note): (Vec<usize>, Vec<String>, Vec<Planted>, String) = match kind {
            "new_origin_bulk_ipv4" | "new_origin_bulk_small_key" => {
                let ip = vps_v4(&mut rng);
                let s = any_hour(&mut rng);
                let ps = pages(&mut rng, s, bulk, rate, true);
                (
                    vec![0],
                    vec![ip.clone()],
                    vec![(0, ip, ps)],
                    format!("a VPS reads at ~{:.0} MiB/s", rate / MIB as f64),
                )
            }
            "new_origin_bulk_ipv6" => {
                let ip = format!(
                    "2a0{}:{:x}:{:x}:{:x}::{:x}",
                    rng.range(1, 9),
                    rng.range(0x100, 0xffff),
                    rng.range(1, 0xffff),
                    rng.range(1, 0xffff),
                    rng.range(2, 0xffff)
                );
                let s = any_hour(&mut rng);
                let ps = pages(&mut rng, s, bulk, rate, true);
                (
                    vec![0],
                    vec![ip.clone()],
                    vec![(0, ip, ps)],
                    format!("an IPv6 host reads at ~{:.0} MiB/s", rate / MIB as f64),
                )
            }
            "new_origin_bulk_ipv4_mapped" => {
                let ip = format!("::ffff:{}", vps_v4(&mut rng));
                let s = any_hour(&mut rng);
                let ps = pages(&mut rng, s, bulk, rate, true);
                (
                    vec![0],
                    vec![ip.clone()],
                    vec![(0, ip, ps)],
                    String::from("the client address logged in IPv4-mapped IPv6 form"),
                )
            }
            "low_and_slow" => {
                // one new origin, steady, below any hourly threshold: 1.2-2.0 GiB over 16-24 h
                let ip = vps_v4(&mut rng);
                let s = any_hour(&mut rng);
                let total = (rng.uniform(1.2, 2.0) * GIB as f64) as u64;
                let hours = rng.uniform(16.0, 23.5);
                let r = total as f64 / (hours * 3600.0);
                let ps = pages(&mut rng, s, total, r, false);
                (
                    vec![0],
                    vec![ip.clone()],
                    vec![(0, ip, ps)],
                    format!("{:.0} MiB/h for {:.1} h from one new origin", r * 3600.0 / MIB as f64, hours),
                )
            }
            "distributed" => {
                // many new prefixes, each below 1 GiB, together 2-6 GiB within 40 min - 3 h
                let k = rng.range(10, 30) as usize;
                let total = rng.uniform(2.0, 6.0) * GIB as f64;
                let span = rng.uniform(40.0 * 60.0, 3.0 * 3600.0);
                let s = any_hour(&mut rng);
                let mut v = Vec::new();
                let mut origins = Vec::new();
                for _ in 0..k {
                    let ip = if rng.chance(0.3) { home_ip(&mut rng) } else { vps_v4(&mut rng) };
                    let b = ((total / k as f64 * rng.uniform(0.6, 1.4)) as u64).min(900 * MIB);
                    let d = span * rng.uniform(0.3, 1.0);
                    let off = ((span - d) * rng.f64() * TPS as f64) as u64;
                    let ps = pages(&mut rng, s + off, b, b as f64 / d, false);
                    origins.push(ip.clone());
                    v.push((0, ip, ps));
                }
                (vec![0], origins, v, format!("{} origins over {:.0} min", k, span / 60.0))
            }
            "known_origin_spike_weekday" | "known_origin_spike_weekend" => {
                let weekend = kind.ends_with("weekend");
                let mut d = day;
                loop {
                    let w = a.local(local_day_start(a, d) + 12 * HOUR).wday;
                    if (w == 0 || w == 6) == weekend && (weekend || (2..=4).contains(&w)) {
                        break;
                    }
                    d = if d + 1 >= DAYS - 1 { FIRST_THEFT_DAY } else { d + 1 };
                }
                let s = local_day_start(a, d) + rng.range(10, 20) * HOUR + rng.range(0, HOUR - 1);
                let typical = typical_hour(a, 0, s);
                let mult = rng.uniform(20.0, 30.0);
                let total = (typical * mult) as u64;
                let pfx = a.keys[0].prefixes[0];
                let ip = match pfx {
                    Pfx::V4(..) => pfx.addr(240 + rng.range(0, 10) as u32),
                    Pfx::V6(..) => pfx.addr(0xf000 + rng.range(0, 255) as u32),
                };
                let dur = rng.uniform(40.0, 60.0) * 60.0;
                let ps = pages(&mut rng, s, total, total as f64 / dur, true);
                (
                    vec![0],
                    vec![ip.clone()],
                    vec![(0, ip, ps)],
                    format!(
                        "{:.0}x the key's typical hour ({}) within {:.0} min from a host in its own {}",
                        mult,
                        fmt_bytes(typical as u64),
                        dur / 60.0,
                        pfx.cidr()
                    ),
                )
            }
            "new_credential_aad_only" => {
                // the leaked primary master key of an account that only ever used Entra ID
                let cred_ix = a.keys.len();
                a.keys.push(Key {
                    cred: String::from("key:primarymasterkey"),
                    key_type: String::from("PrimaryMasterKey"),
                    aad: String::new(),
                    role: Role::App,
                    peak: 0.0,
                    prefixes: Vec::new(),
                    base_hosts: 0,
                    extra_hosts: 0,
                    ua: UAS[7],
                    month_end: None,
                });
                let ip = vps_v4(&mut rng);
                let s = any_hour(&mut rng);
                let ps = pages(&mut rng, s, bulk, rate, true);
                (
                    vec![cred_ix],
                    vec![ip.clone()],
                    vec![(cred_ix, ip, ps)],
                    String::from("PrimaryMasterKey, never used by this account"),
                )
            }
            "backup_window" => {
                let ki = a.keys.iter().position(|k| k.role == Role::Backup).unwrap_or(0);
                // the backup run of that night
                let night = local_day_start(a, day);
                let run = a
                    .reqs
                    .iter()
                    .filter(|r| r.key as usize == ki && r.t >= night && r.t < night + DAY)
                    .fold((u64::MAX, 0u64), |acc, r| (acc.0.min(r.t), acc.1.max(r.t)));
                let (rs, re) = if run.0 == u64::MAX { (night + HOUR, night + 2 * HOUR) } else { run };
                let s = rs + rng.range(2 * MIN, ((re - rs) / 2).max(3 * MIN));
                let total = (rng.uniform(1.5, 5.0) * GIB as f64) as u64;
                let r = rng.uniform(2.0, 6.0) * MIB as f64;
                let ip = vps_v4(&mut rng);
                let ps = pages(&mut rng, s, total, r, true);
                (
                    vec![ki],
                    vec![ip.clone()],
                    vec![(ki, ip, ps)],
                    String::from("a new origin with the backup key while the nightly backup runs"),
                )
            }
            "two_keys" => {
                // one new origin, two keys of the account, each share below 1 GiB, together above
                let k2 = 1;
                let ip = vps_v4(&mut rng);
                let s = any_hour(&mut rng);
                let b1 = (rng.uniform(0.55, 0.95) * GIB as f64) as u64;
                let b2 = (rng.uniform(0.55, 0.95) * GIB as f64) as u64;
                let p1 = pages(&mut rng, s, b1, rate / 2.0, true);
                let s2 = s + rng.range(1, 30 * SEC);
                let p2 = pages(&mut rng, s2, b2, rate / 2.0, true);
                (
                    vec![0, k2],
                    vec![ip.clone()],
                    vec![(0, ip.clone(), p1), (k2, ip, p2)],
                    String::from("each key's share below 1 GiB, together above"),
                )
            }
            _ => continue,
        };
        let mut times: Vec<(u64, u64)> = Vec::new();
        for (ki, ip, ps) in &ps_all {
            plant(a, idx, *ki, ip, ua, ps);
            times.extend(ps.iter().copied());
        }
        times.sort_unstable();
        let mut cum = 0u64;
        let mut cross = None;
        for (t, b) in &times {
            cum += b;
            if cross.is_none() && cum >= GIB {
                cross = Some(*t);
            }
        }
        thefts.push(Theft {
            kind,
            account: ai,
            keys,
            origins,
            start: times.first().map(|x| x.0).unwrap_or(0),
            end: times.last().map(|x| x.0).unwrap_or(0),
            bytes: cum,
            crosses_1gib: cross,
            note,
        });
    }
    thefts
}

pub(crate) fn generate(seed: u64, n_accounts: usize) -> Generated {
    let mut accs = build_accounts(seed, n_accounts);
    let mut benign = Vec::new();
    let mut rng = Rng::new(mix64(seed ^ 0xbe_9191));
    // the migrating account: one with a sizeable application, not AAD-only
    let mig_acc = (1..accs.len()).find(|&i| !accs[i].aad_only && accs[i].keys[0].peak > 30.0 * MIB as f64).unwrap_or(1);
    let mig_day = FIRST_THEFT_DAY + 2 + rng.range(0, 12);
    for (ai, a) in accs.iter_mut().enumerate() {
        let mut r = Rng::new(mix64(seed.wrapping_mul(0x1000_0000_01b3) ^ ai as u64));
        gen_benign(a, ai, &mut r, &mut benign, if ai == mig_acc { Some(mig_day) } else { None });
    }
    let thefts = plant_thefts(&mut accs, seed, mig_acc);
    for a in accs.iter_mut() {
        a.reqs.sort_by_key(|r| (r.t, r.key, r.theft));
    }
    benign.sort_by_key(|b| (b.account, b.key, b.start));
    Generated { accounts: accs, thefts, benign }
}

// ---------------------------------------------------------------------------------------
// Rendering and labels
// ---------------------------------------------------------------------------------------

fn render(a: &Acc, r: &Req, rng: &mut Rng, b: &mut Vec<u8>) {
    let k = &a.keys[r.key as usize];
    let op = OPS[r.op as usize];
    let coll = a.colls[(rng.next() % 3) as usize];
    let charge = if r.status == 200 { ru_for(rng, op, r.bytes) } else { 0.0 };
    let dur = if r.status == 200 { duration_ms(rng, r.bytes) } else { 1 };
    let req_len = match r.op {
        OP_QUERY => rng.range(120, 900),
        OP_UPSERT => rng.range(400, 2400),
        _ => 0,
    };
    let (auth, kt) = if k.aad.is_empty() { ("", k.key_type.as_str()) } else { ("AadToken", "") };
    let ip = &a.ips[r.ip as usize];
    let ua = UAS[r.ua as usize];
    b.clear();
    match a.shape {
        Shape::Legacy => {
            b.extend_from_slice(b"{ \"time\": \"");
            push_iso7(b, r.t);
            let _ = writeln!(
                b,
                "\", \"resourceId\": \"{}\", \"category\": \"DataPlaneRequests\", \"operationName\": \"{}\", \"properties\": {{\"activityId\": \"{}\",\"requestResourceType\": \"Document\",\"requestResourceId\": \"/dbs/{}/colls/{}\",\"statusCode\": \"{}\",\"duration\": \"{}\",\"userAgent\": \"{}\",\"clientIpAddress\": \"{}\",\"requestCharge\": \"{}\",\"requestLength\": \"{}\",\"responseLength\": \"{}\",\"keyType\": \"{}\",\"authTokenType\": \"{}\",\"aadPrincipalId\": \"{}\",\"region\": \"{}\",\"connectionMode\": \"Direct\",\"databaseName\": \"{}\",\"collectionName\": \"{}\"}}}}",
                arm_path(&a.sub, &a.rg, &a.name),
                op,
                rng.guid(),
                a.db,
                coll,
                r.status,
                dur,
                ua,
                ip,
                f6(charge),
                req_len,
                r.bytes,
                kt,
                auth,
                k.aad,
                a.region,
                a.db,
                coll
            );
        }
        Shape::Cdb => {
            b.extend_from_slice(b"{\"TimeGenerated\":\"");
            push_iso7(b, r.t);
            let _ = writeln!(
                b,
                "\",\"AccountName\":\"{}\",\"OperationName\":\"{}\",\"ClientIpAddress\":\"{}\",\"KeyType\":\"{}\",\"AuthTokenType\":\"{}\",\"AadPrincipalId\":\"{}\",\"DatabaseName\":\"{}\",\"CollectionName\":\"{}\",\"RequestResourceType\":\"Document\",\"UserAgent\":\"{}\",\"ActivityId\":\"{}\",\"DurationMs\":{},\"RequestCharge\":{},\"RequestLength\":{},\"ResponseLength\":{},\"StatusCode\":{},\"RegionName\":\"{}\",\"_ResourceId\":\"{}\",\"Type\":\"CDBDataPlaneRequests\",\"SourceSystem\":\"Azure\"}}",
                a.name,
                op,
                ip,
                kt,
                auth,
                k.aad,
                a.db,
                coll,
                ua,
                rng.guid(),
                dur,
                f6(charge),
                req_len,
                r.bytes,
                r.status,
                a.region,
                arm_path(&a.sub, &a.rg, &a.name).to_lowercase()
            );
        }
    }
}

fn js(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn js_list(v: &[String]) -> String {
    format!("[{}]", v.iter().map(|s| js(s)).collect::<Vec<_>>().join(", "))
}

fn labels_json(cfg: &ScenCfg, g: &Generated, records: u64) -> String {
    let t0 = t_start();
    let mut s = String::new();
    s.push_str("{\n");
    s.push_str(&format!(
        "  \"generator\": {{\"command\": \"gen-logs scenarios --seed {} --accounts {}\", \"seed\": {}, \"accounts\": {}, \"start\": {}, \"end\": {}, \"warmup_end\": {}, \"first_theft_day\": {}, \"records\": {}}},\n",
        cfg.seed,
        cfg.accounts,
        cfg.seed,
        cfg.accounts,
        js(&iso7(t0)),
        js(&iso7(t0 + DAYS * DAY)),
        js(&iso7(t0 + WARMUP_DAYS * DAY)),
        FIRST_THEFT_DAY,
        records
    ));
    s.push_str("  \"definitions\": {\"crosses_1gib\": \"event time of the theft record at which the theft's own bytes (all its keys and origins) reach 1 GiB cumulatively\", \"key_days\": \"days (UTC) on which the key read with a 2xx status\", \"expect_alert\": \"a benign event that legitimately trips an origin or volume rule; its alerts are not false alerts\"},\n");
    s.push_str("  \"accounts\": [\n");
    for (ai, a) in g.accounts.iter().enumerate() {
        let mut keys = Vec::new();
        for (ki, k) in a.keys.iter().enumerate() {
            let mut days: Vec<u64> = a
                .reqs
                .iter()
                .filter(|r| r.key as usize == ki && r.status == 200 && r.theft == 0)
                .map(|r| (r.t - t0) / DAY)
                .collect();
            days.dedup();
            days.sort_unstable();
            days.dedup();
            let eval_days = days.iter().filter(|d| **d >= WARMUP_DAYS).count();
            let role = match k.role {
                Role::App if k.peak == 0.0 => "stolen_only",
                Role::App => "app",
                Role::Backup => "nightly_backup",
                Role::Analytics => "analytics",
                Role::Dev => "developer",
            };
            keys.push(format!(
                "      {{\"credential\": {}, \"role\": {}, \"origins\": {}, \"peak_hour_bytes_at_start\": {}, \"month_end_batch\": {}, \"active_key_days\": {}, \"active_key_days_after_warmup\": {}}}",
                js(&k.cred),
                js(role),
                js_list(&k.prefixes.iter().map(|p| p.cidr()).collect::<Vec<_>>()),
                k.peak as u64,
                k.month_end.is_some(),
                days.len(),
                eval_days
            ));
        }
        s.push_str(&format!(
            "    {{\"account\": {}, \"shape\": {}, \"file\": {}, \"utc_offset_hours\": {}, \"rhythm\": {}, \"growth_per_30_days\": {:.3}, \"aad_only\": {}, \"keys\": [\n{}\n    ]}}{}\n",
            js(&a.name),
            js(match a.shape {
                Shape::Legacy => "DataPlaneRequests (legacy)",
                Shape::Cdb => "CDBDataPlaneRequests",
            }),
            js(&format!("logs/{}.jsonl", a.name)),
            a.tz,
            js(match a.rhythm {
                Rhythm::Office => "office_hours_weekdays",
                Rhythm::Consumer => "consumer_evenings_weekends",
                Rhythm::Flat => "flat_24x7",
            }),
            a.growth,
            a.aad_only,
            keys.join(",\n"),
            if ai + 1 < g.accounts.len() { "," } else { "" }
        ));
    }
    s.push_str("  ],\n  \"thefts\": [\n");
    for (i, t) in g.thefts.iter().enumerate() {
        let a = &g.accounts[t.account];
        let creds: Vec<String> = t.keys.iter().map(|k| a.keys[*k].cred.clone()).collect();
        s.push_str(&format!(
            "    {{\"id\": {}, \"kind\": {}, \"account\": {}, \"credentials\": {}, \"origins\": {}, \"start\": {}, \"end\": {}, \"bytes\": {}, \"crosses_1gib\": {}, \"note\": {}}}{}\n",
            i + 1,
            js(t.kind),
            js(&a.name),
            js_list(&creds),
            js_list(&t.origins),
            js(&iso7(t.start)),
            js(&iso7(t.end)),
            t.bytes,
            t.crosses_1gib.map(|x| js(&iso7(x))).unwrap_or_else(|| String::from("null")),
            js(&t.note),
            if i + 1 < g.thefts.len() { "," } else { "" }
        ));
    }
    s.push_str("  ],\n  \"benign\": [\n");
    for (i, b) in g.benign.iter().enumerate() {
        let a = &g.accounts[b.account];
        s.push_str(&format!(
            "    {{\"kind\": {}, \"account\": {}, \"credential\": {}, \"origins\": {}, \"start\": {}, \"end\": {}, \"bytes\": {}, \"expect_alert\": {}, \"note\": {}}}{}\n",
            js(b.kind),
            js(&a.name),
            js(&a.keys[b.key].cred),
            js_list(&b.origins),
            js(&iso7(b.start)),
            js(&iso7(b.end)),
            b.bytes,
            b.expect_alert,
            js(&b.note),
            if i + 1 < g.benign.len() { "," } else { "" }
        ));
    }
    s.push_str("  ]\n}\n");
    s
}

/// Every record of account `ai`, rendered in time order, one line at a time.
fn render_account(seed: u64, ai: usize, a: &Acc, sink: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    let mut rng = Rng::new(mix64(seed ^ 0x4e4d ^ ((ai as u64) << 20)));
    let mut line = Vec::with_capacity(2048);
    for r in &a.reqs {
        render(a, r, &mut rng, &mut line);
        sink(&line)?;
    }
    Ok(())
}

pub(crate) fn run_scenarios(cfg: &ScenCfg) -> io::Result<()> {
    if cfg.accounts < 12 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--accounts must be at least 12 (every theft kind needs its victim)",
        ));
    }
    let g = generate(cfg.seed, cfg.accounts);
    let logs = cfg.out.join("logs");
    fs::create_dir_all(&logs).map_err(|e| io::Error::new(e.kind(), format!("{}: {}", logs.display(), e)))?;
    let mut records = 0u64;
    for (ai, a) in g.accounts.iter().enumerate() {
        let path = logs.join(format!("{}.jsonl", a.name));
        let file =
            fs::File::create(&path).map_err(|e| io::Error::new(e.kind(), format!("{}: {}", path.display(), e)))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        render_account(cfg.seed, ai, a, &mut |line: &[u8]| out.write_all(line))?;
        out.flush()?;
        records += a.reqs.len() as u64;
    }
    write_file(&cfg.out.join("labels.json"), labels_json(cfg, &g, records).as_bytes())?;
    let keys: usize = g.accounts.iter().map(|a| a.keys.len()).sum();
    eprintln!(
        "gen-logs scenarios: seed {}: {} records in {} accounts ({} keys), {} thefts, {} benign events labelled; {}",
        cfg.seed,
        records,
        g.accounts.len(),
        keys,
        g.thefts.len(),
        g.benign.len(),
        cfg.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(line: &'a str, names: &[&str]) -> Option<&'a str> {
        for n in names {
            for pat in [format!("\"{}\": \"", n), format!("\"{}\":\"", n), format!("\"{}\":", n)] {
                if let Some(i) = line.find(&pat) {
                    let rest = &line[i + pat.len()..];
                    let end = rest.find(['"', ',', '}']).unwrap_or(rest.len());
                    return Some(&rest[..end]);
                }
            }
        }
        None
    }

    fn fnv(h: &mut u64, bytes: &[u8]) {
        for b in bytes {
            *h ^= *b as u64;
            *h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Same seed, same bytes (the written files against a second generation in memory);
    /// another seed, other thefts; and every labelled theft's bytes and 1 GiB crossing time
    /// are what the written records say.
    #[test]
    fn deterministic_and_labels_match_records() {
        let dir = std::env::temp_dir().join(format!("gen-logs-scenarios-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        run_scenarios(&ScenCfg { seed: 7, accounts: 12, out: dir.clone() }).unwrap();
        let g = generate(7, 12);
        for (ai, a) in g.accounts.iter().enumerate() {
            let mut again = 0xcbf2_9ce4_8422_2325u64;
            render_account(7, ai, a, &mut |l: &[u8]| {
                fnv(&mut again, l);
                Ok(())
            })
            .unwrap();
            let mut written = 0xcbf2_9ce4_8422_2325u64;
            fnv(&mut written, &fs::read(dir.join("logs").join(format!("{}.jsonl", a.name))).unwrap());
            assert_eq!(written, again, "{}: same seed, same records", a.name);
        }
        let labels = fs::read_to_string(dir.join("labels.json")).unwrap();
        assert_eq!(labels, labels_json(&ScenCfg { seed: 7, accounts: 12, out: dir.clone() }, &g, count(&g)));
        let other = generate(8, 12);
        assert_ne!(
            other.thefts.iter().map(|t| t.start).collect::<Vec<_>>(),
            g.thefts.iter().map(|t| t.start).collect::<Vec<_>>(),
            "another seed, other thefts"
        );

        assert_eq!(g.thefts.len(), THEFT_KINDS.len(), "every theft kind is planted");
        for t in &g.thefts {
            let a = &g.accounts[t.account];
            let creds: Vec<&Key> = t.keys.iter().map(|k| &a.keys[*k]).collect();
            let text = fs::read_to_string(dir.join("logs").join(format!("{}.jsonl", a.name))).unwrap();
            let mut hits: Vec<(String, u64)> = Vec::new();
            for line in text.lines() {
                let ip = field(line, &["clientIpAddress", "ClientIpAddress"]).unwrap();
                if !t.origins.iter().any(|o| o == ip) {
                    continue;
                }
                let kt = field(line, &["keyType", "KeyType"]).unwrap_or("");
                let aad = field(line, &["aadPrincipalId", "AadPrincipalId"]).unwrap_or("");
                if !creds.iter().any(|k| k.key_type == kt && k.aad == aad) {
                    continue;
                }
                let time = field(line, &["time", "TimeGenerated"]).unwrap().to_string();
                let bytes: u64 = field(line, &["responseLength", "ResponseLength"]).unwrap().parse().unwrap();
                hits.push((time, bytes));
            }
            hits.sort();
            let total: u64 = hits.iter().map(|h| h.1).sum();
            assert_eq!(total, t.bytes, "{}: labelled bytes equal the records' bytes", t.kind);
            assert!(total > GIB, "{}: a theft reads more than 1 GiB", t.kind);
            let mut cum = 0;
            let cross = hits.iter().find(|h| {
                cum += h.1;
                cum >= GIB
            });
            assert_eq!(cross.map(|c| c.0.clone()), t.crosses_1gib.map(iso7), "{}: crossing time", t.kind);
            assert!(labels.contains(&format!("\"bytes\": {}, \"crosses_1gib\": \"{}\"", t.bytes, iso7(cross_t(t)))));
        }
        // the definitions the kinds promise
        let by_kind = |k: &str| g.thefts.iter().find(|t| t.kind == k).unwrap();
        assert!(by_kind("distributed").origins.len() >= 10);
        assert!(g.accounts[by_kind("new_credential_aad_only").account].aad_only);
        assert_eq!(by_kind("two_keys").keys.len(), 2);
        assert!(by_kind("new_origin_bulk_ipv4_mapped").origins[0].starts_with("::ffff:"));
        let parts = |kind: &str, by: &dyn Fn(&Req) -> u64| {
            let i = g.thefts.iter().position(|t| t.kind == kind).unwrap();
            let mut v: Vec<(u64, u64)> = Vec::new();
            for r in g.accounts[g.thefts[i].account].reqs.iter().filter(|r| r.theft as usize == i + 1) {
                match v.iter_mut().find(|x| x.0 == by(r)) {
                    Some(x) => x.1 += r.bytes,
                    None => v.push((by(r), r.bytes)),
                }
            }
            v
        };
        let per_origin = parts("distributed", &|r: &Req| r.ip as u64);
        assert!(per_origin.len() >= 10 && per_origin.iter().all(|x| x.1 < GIB), "distributed: each origin below 1 GiB");
        let per_key = parts("two_keys", &|r: &Req| r.key as u64);
        assert!(per_key.len() == 2 && per_key.iter().all(|x| x.1 < GIB), "two_keys: each key's share below 1 GiB");
        let per_hour = parts("low_and_slow", &|r: &Req| r.t / HOUR);
        assert!(per_hour.iter().all(|x| x.1 < 200 * MIB), "low_and_slow: below 200 MiB in every clock hour");
        let ls = by_kind("low_and_slow");
        assert!(ls.crosses_1gib.unwrap() < ls.start + DAY, "low_and_slow: 1 GiB within its first day");
        let _ = fs::remove_dir_all(&dir);
    }

    fn cross_t(t: &Theft) -> u64 {
        t.crosses_1gib.unwrap_or(0)
    }

    fn count(g: &Generated) -> u64 {
        g.accounts.iter().map(|a| a.reqs.len() as u64).sum()
    }
}
