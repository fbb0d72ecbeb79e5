//! `gen-logs sample --out DIR`: the committed data set (`sample-logs/`). Four accounts in the
//! four wire shapes the detector reads (contoso, fabrikam, northwind, adatum), one theft
//! (contoso, 2021-08-17 02:13 UTC), deliberate noise, and the README that describes it all.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::request::{arm_path, duration_ms, ru_for, sorted_times};
use super::rng::{rid_string, Rng};
use super::timefmt::{iso0, iso7, rfc1123_ms, split_time, ticks, DAY, HOUR, MIN, MS, SEC, TPS};
use super::write::{f6, fmt_bytes, write_file, KIB, MIB};

const SAMPLE_HOURS: usize = 228; // 2021-08-09T00 .. 2021-08-18T12 (9.5 days)

fn t0_sample() -> u64 {
    ticks(2021, 8, 9, 0, 0, 0)
}

/// Day number as the README uses it: day 1 = 2021-08-09.
fn day_no(h: usize) -> usize {
    h / 24 + 1
}

fn hour_index(t: u64) -> usize {
    ((t - t0_sample()) / HOUR) as usize
}

fn hour_label(h: usize) -> String {
    let t = t0_sample() + h as u64 * HOUR;
    let m = split_time(t);
    format!("{:04}-{:02}-{:02}T{:02}", m.y, m.mo, m.d, m.h)
}

const CONTOSO_SUB: &str = "7e2f6b1c-0d5a-4c1e-9a57-3f0b8c9d2e41";
const CONTOSO_RG: &str = "rg-prod";
const ANALYST_AAD: &str = "3F2504E0-4F89-11D3-9A0C-0305E82C3301";
const THIEF_IP: &str = "203.0.113.77";
const BACKUP_IP: &str = "10.20.40.8";
const DEV_IP: &str = "81.2.69.142";

const UA_APP: &str = "Microsoft.Azure.Documents.Client/2.14.0 (netstandard2.0; Linux 5.4.0-1056-azure; x64)";
const UA_PY: &str = "azsdk-python-cosmos/4.3.0 Python/3.9.7 (Linux-5.4.0-1056-azure-x86_64-with-glibc2.31)";
const UA_BACKUP: &str = "cosmos-backup/1.4.2";
const UA_DEV: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/92.0.4515.131 Safari/537.36 Azure Cosmos DB Data Explorer";
pub(crate) const UA_THIEF: &str = "python-requests/2.25.1";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    App,
    Backup,
    Analyst,
    Dev,
    Theft,
    Failed,
    Malformed,
    OtherCategory,
}

/// One line of a contoso hour file.
struct CLine {
    t: u64,
    text: String,
    kind: Kind,
    bytes: u64, // responseLength of a valid DataPlaneRequests record, else 0
}

/// A DataPlaneRequests record of shape A (all numbers as strings).
struct Dp<'a> {
    t: u64,
    op: &'a str,
    coll: &'a str,
    doc: bool, // a point operation on one document (requestResourceId names it)
    status: u32,
    ua: &'a str,
    ip: &'a str,
    req_len: u64,
    resp_len: u64,
    key_type: &'a str,
    aad: &'a str,
}

struct Contoso {
    rid: String,
    colls: Vec<(&'static str, String, Vec<String>)>, // name, collectionRid, partition ids
}

impl Contoso {
    fn new() -> Contoso {
        let mut r = Rng::stream("contoso-partitions");
        let colls = ["orders", "customers", "carts"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let n = 2 + i % 2;
                let parts = (0..n).map(|_| r.guid()).collect();
                (*name, rid_string(0xC0 + i as u64, 8), parts)
            })
            .collect();
        Contoso { rid: arm_path(CONTOSO_SUB, CONTOSO_RG, "contoso"), colls }
    }

    fn render(&self, rng: &mut Rng, d: &Dp) -> String {
        let ci = self.colls.iter().position(|c| c.0 == d.coll).unwrap_or(0);
        let (coll, coll_rid, parts) = (&self.colls[ci].0, &self.colls[ci].1, &self.colls[ci].2);
        let pid = rng.pick(parts).clone();
        let rrid = if d.doc {
            format!("/dbs/shop/colls/{}/docs/{}-{:08}", coll, &coll[..3], rng.next() % 100_000_000)
        } else {
            format!("/dbs/shop/colls/{}", coll)
        };
        let charge = if d.status == 200 || d.status == 201 { ru_for(rng, d.op, d.resp_len) } else { 1.0 };
        let dur = if d.status == 429 { 0 } else { duration_ms(rng, d.resp_len) };
        let aad = if d.aad.is_empty() { String::new() } else { format!("\"aadPrincipalId\": \"{}\",", d.aad) };
        format!(
            "{{ \"time\": \"{}\", \"resourceId\": \"{}\", \"category\": \"DataPlaneRequests\", \"operationName\": \"{}\", \"properties\": {{\"activityId\": \"{}\",\"requestResourceType\": \"Document\",\"requestResourceId\": \"{}\",\"collectionRid\": \"{}\",\"statusCode\": \"{}\",\"duration\": \"{}\",\"userAgent\": \"{}\",\"clientIpAddress\": \"{}\",\"requestCharge\": \"{}\",\"requestLength\": \"{}\",\"responseLength\": \"{}\",{}\"region\": \"East US\",\"partitionId\": \"{}\",\"keyType\": \"{}\",\"databaseName\": \"shop\",\"collectionName\": \"{}\"}}}}",
            iso7(d.t),
            self.rid,
            d.op,
            rng.guid(),
            rrid,
            coll_rid,
            d.status,
            dur,
            d.ua,
            d.ip,
            f6(charge),
            d.req_len,
            d.resp_len,
            aad,
            pid,
            d.key_type,
            coll
        )
    }
}

fn activity_of(line: &str) -> Option<&str> {
    let k = "\"activityId\": \"";
    let i = line.find(k)? + k.len();
    line.get(i..i + 36)
}

#[derive(Default)]
struct TheftStats {
    count: u64,
    bytes: u64,
    first: u64,
    last: u64,
    by_coll: Vec<(String, u64, u64)>,
}

struct ContosoOut {
    hours: Vec<Vec<CLine>>,
    theft: TheftStats,
    notes: Vec<String>,
    per_kind: Vec<(Kind, u64, u64)>,
    max_app_hour: (u64, usize),
    backup_runs: Vec<(u64, u64, u64, u64)>, // start, end, requests, bytes
}

#[allow(clippy::needless_range_loop)]
fn gen_contoso() -> ContosoOut {
    let cx = Contoso::new();
    let t0 = t0_sample();
    let mut lines: Vec<CLine> = Vec::new();
    let mut notes = Vec::new();

    // --- web app (PrimaryMasterKey), analyst (AAD principal) --------------------------
    let mut rng = Rng::stream("contoso-app");
    let mut app_hour_bytes = vec![0u64; SAMPLE_HOURS];
    for h in 0..SAMPLE_HOURS {
        let start = t0 + h as u64 * HOUR;
        let hod = h % 24;
        let day = day_no(h);
        let weekend = day == 6 || day == 7; // Sat 14, Sun 15 August
        let mut pool = vec!["10.20.30.4", "10.20.30.5", "10.20.30.6"];
        if day >= 4 {
            pool.push("10.20.30.11");
        }
        if day >= 7 {
            pool.push("10.20.30.17");
        }
        let (mut target, n_small) = match hod {
            8..=17 => (rng.uniform(40.0, 120.0), rng.range(5, 9)),
            7 | 18 => (rng.uniform(15.0, 30.0), rng.range(4, 7)),
            19..=22 => (rng.uniform(5.0, 12.0), rng.range(3, 5)),
            _ => (rng.uniform(1.5, 5.0), rng.range(2, 4)),
        };
        if weekend && (7..=18).contains(&hod) {
            target *= 0.5;
        }
        let target = (target * MIB as f64) as u64;
        let mut reqs: Vec<(&str, &str, bool, u64, u64)> = Vec::new(); // op, coll, doc, reqlen, resp
        let mut small_sum = 0;
        for _ in 0..n_small {
            let x = rng.f64();
            let r = if x < 0.65 {
                let coll = if rng.chance(0.5) { "customers" } else { "orders" };
                ("Read", coll, true, 0, rng.log_uniform(1024.0, 200.0 * 1024.0) as u64)
            } else if x < 0.85 {
                ("Upsert", "carts", true, rng.range(600, 2600), rng.range(400, 1500))
            } else {
                ("Create", "orders", true, rng.range(900, 3200), rng.range(600, 2000))
            };
            small_sum += r.4;
            reqs.push(r);
        }
        if target > small_sum + 32 * KIB {
            let rem = target - small_sum;
            let nb = rem.div_ceil(3_670_016).max(1); // ~3.5 MiB average pages
            for _ in 0..nb {
                let page = ((rem / nb) as f64 * rng.uniform(0.85, 1.15)) as u64;
                let page = page.min(4 * MIB);
                let op = if rng.chance(0.5) { "Query" } else { "ReadFeed" };
                let x = rng.f64();
                let coll = if x < 0.5 {
                    "orders"
                } else if x < 0.8 {
                    "customers"
                } else {
                    "carts"
                };
                let req_len = if op == "Query" { rng.range(180, 640) } else { 0 };
                reqs.push((op, coll, false, req_len, page));
            }
        }
        // shuffle the order of operations, then lay them on sorted instants
        for i in (1..reqs.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            reqs.swap(i, j);
        }
        let times = sorted_times(&mut rng, start, HOUR, reqs.len());
        for (t, (op, coll, doc, req_len, resp)) in times.into_iter().zip(reqs) {
            let ip = *rng.pick(&pool);
            let status = if op == "Create" { 201 } else { 200 };
            let text = cx.render(
                &mut rng,
                &Dp {
                    t,
                    op,
                    coll,
                    doc,
                    status,
                    ua: UA_APP,
                    ip,
                    req_len,
                    resp_len: resp,
                    key_type: "PrimaryMasterKey",
                    aad: "",
                },
            );
            app_hour_bytes[h] += resp;
            lines.push(CLine { t, text, kind: Kind::App, bytes: resp });
        }
        // analyst service: 2-6 MiB per hour in 1-3 queries
        let n = rng.range(1, 3);
        let total = rng.uniform(2.0, 5.6) * MIB as f64;
        for t in sorted_times(&mut rng, start, HOUR, n as usize) {
            let resp = (total / n as f64 * rng.uniform(0.95, 1.05)) as u64;
            let coll = if rng.chance(0.6) { "orders" } else { "customers" };
            let req_len = rng.range(220, 900);
            let text = cx.render(
                &mut rng,
                &Dp {
                    t,
                    op: "Query",
                    coll,
                    doc: false,
                    status: 200,
                    ua: UA_PY,
                    ip: "52.160.10.20",
                    req_len,
                    resp_len: resp,
                    key_type: "",
                    aad: ANALYST_AAD,
                },
            );
            lines.push(CLine { t, text, kind: Kind::Analyst, bytes: resp });
        }
    }
    let max_app_hour = app_hour_bytes.iter().enumerate().map(|(h, b)| (*b, h)).max().unwrap_or((0, 0));

    // --- nightly backup (SecondaryReadonlyMasterKey) ------------------------------------
    let mut rng = Rng::stream("contoso-backup");
    let mut backup_runs = Vec::new();
    for day in 0..10u64 {
        let start = t0 + day * DAY + HOUR + rng.range(0, 20 * 60 - 1) * SEC + rng.range(0, TPS - 1);
        let mut t = start;
        let (mut n, mut sum) = (0u64, 0u64);
        // pages per collection: customers, orders, carts; the last page of each is partial
        let plan = [
            ("customers", 250 + rng.range(0, 3) + day / 3, rng.range(1, 4 * MIB - 1)),
            ("orders", 330 + rng.range(0, 4) + day / 2, rng.range(1, 4 * MIB - 1)),
            ("carts", 56 + rng.range(0, 2), rng.range(1, 4 * MIB - 1)),
        ];
        for (coll, pages, last) in plan {
            for p in 0..pages {
                let resp = if p + 1 == pages { last } else { 4 * MIB };
                let text = cx.render(
                    &mut rng,
                    &Dp {
                        t,
                        op: "ReadFeed",
                        coll,
                        doc: false,
                        status: 200,
                        ua: UA_BACKUP,
                        ip: BACKUP_IP,
                        req_len: 0,
                        resp_len: resp,
                        key_type: "SecondaryReadonlyMasterKey",
                        aad: "",
                    },
                );
                lines.push(CLine { t, text, kind: Kind::Backup, bytes: resp });
                n += 1;
                sum += resp;
                t += rng.range(1500, 3100) * MS + rng.range(0, 9999);
            }
        }
        backup_runs.push((start, t, n, sum));
    }

    // --- developer laptop, once (day 5 = 2021-08-13, ~14:00) ----------------------------
    let mut rng = Rng::stream("contoso-dev");
    let dev_start = ticks(2021, 8, 13, 14, 2, 0) + rng.range(0, 59) * SEC;
    for t in sorted_times(&mut rng, dev_start, 11 * MIN, 20) {
        let op = if rng.chance(0.7) { "Query" } else { "Read" };
        let coll = *rng.pick(&["orders", "customers", "carts"]);
        let resp = rng.range(150 * 1000, 250 * 1000);
        let req_len = if op == "Query" { rng.range(90, 400) } else { 0 };
        let text = cx.render(
            &mut rng,
            &Dp {
                t,
                op,
                coll,
                doc: op == "Read",
                status: 200,
                ua: UA_DEV,
                ip: DEV_IP,
                req_len,
                resp_len: resp,
                key_type: "PrimaryReadonlyMasterKey",
                aad: "",
            },
        );
        lines.push(CLine { t, text, kind: Kind::Dev, bytes: resp });
    }

    // --- the theft: 2021-08-17 from 02:13 UTC -----------------------------------------
    let mut rng = Rng::stream("contoso-theft");
    let mut theft = TheftStats::default();
    let n_theft = 1500;
    let mut t = ticks(2021, 8, 17, 2, 13, 0) + rng.range(0, 59) * SEC + rng.range(0, TPS - 1);
    for i in 0..n_theft {
        let op = if i % 2 == 0 { "ReadFeed" } else { "Query" };
        let coll = if i < 820 { "customers" } else { "orders" };
        let resp = rng.range(3 * MIB + 1, 4 * MIB);
        let req_len = if op == "Query" { rng.range(52, 60) } else { 0 };
        let text = cx.render(
            &mut rng,
            &Dp {
                t,
                op,
                coll,
                doc: false,
                status: 200,
                ua: UA_THIEF,
                ip: THIEF_IP,
                req_len,
                resp_len: resp,
                key_type: "PrimaryMasterKey",
                aad: "",
            },
        );
        lines.push(CLine { t, text, kind: Kind::Theft, bytes: resp });
        if theft.count == 0 {
            theft.first = t;
        }
        theft.last = t;
        theft.count += 1;
        theft.bytes += resp;
        match theft.by_coll.iter_mut().find(|c| c.0 == coll) {
            Some(c) => {
                c.1 += 1;
                c.2 += resp;
            }
            None => theft.by_coll.push((coll.to_string(), 1, resp)),
        }
        t += rng.range(1250, 1950) * MS + rng.range(0, 9999);
    }

    // --- failed requests (429 / 404 / 403), app credential -----------------------------
    let mut rng = Rng::stream("contoso-failed");
    let failed: [(u32, u64, u32, &str); 7] = [
        (10, 9, 429, "Query"),
        (10, 9, 429, "Query"),
        (11, 16, 404, "Read"),
        (13, 11, 429, "ReadFeed"),
        (14, 20, 404, "Read"),
        (15, 10, 403, "Query"),
        (16, 8, 403, "ReadFeed"),
    ];
    for (d, h, status, op) in failed {
        let t = ticks(2021, 8, d, h, 0, 0) + rng.next() % HOUR;
        let resp = rng.range(180, 640);
        let ip = *rng.pick(&["10.20.30.4", "10.20.30.5", "10.20.30.6"]);
        let text = cx.render(
            &mut rng,
            &Dp {
                t,
                op,
                coll: "orders",
                doc: op == "Read",
                status,
                ua: UA_APP,
                ip,
                req_len: 0,
                resp_len: resp,
                key_type: "PrimaryMasterKey",
                aad: "",
            },
        );
        lines.push(CLine { t, text, kind: Kind::Failed, bytes: resp });
    }

    lines.sort_by_key(|l| l.t); // stable: equal instants keep generation order
    let mut hours: Vec<Vec<CLine>> = (0..SAMPLE_HOURS).map(|_| Vec::new()).collect();
    for l in lines {
        let h = hour_index(l.t);
        hours[h].push(l);
    }

    // --- records of other categories (skip and count) -----------------------------------
    let mut rng = Rng::stream("contoso-other");
    // QueryRuntimeStatistics: join to an app Query of the same hour by activityId
    for (i, h) in [33usize, 107, 178].into_iter().enumerate() {
        let q = hours[h].iter().position(|l| l.kind == Kind::App && l.text.contains("\"operationName\": \"Query\""));
        let (t, act) = match q {
            Some(p) => {
                (hours[h][p].t + rng.range(1, 40) * MS, activity_of(&hours[h][p].text).unwrap_or("").to_string())
            }
            None => (t0 + h as u64 * HOUR + rng.next() % HOUR, rng.guid()),
        };
        let qt = [
            "{\\\"query\\\":\\\"SELECT * FROM c WHERE c.customerId = ****\\\",\\\"parameters\\\":[]}",
            "{\\\"query\\\":\\\"SELECT c.id, c.total FROM c WHERE c.status = **** ORDER BY c._ts DESC\\\"}",
            "{\\\"query\\\":\\\"SELECT VALUE COUNT(1) FROM c WHERE c.country IN (****, ****)\\\"}",
        ][i];
        let coll = ["orders", "orders", "customers"][i];
        let text = format!(
            "{{ \"time\": \"{}\", \"resourceId\": \"{}\", \"category\": \"QueryRuntimeStatistics\", \"properties\": {{\"activityId\": \"{}\",\"databasename\": \"shop\",\"collectionname\": \"{}\",\"partitionkeyrangeid\": \"{}\",\"querytext\": \"{}\"}}}}",
            iso7(t), cx.rid, act, coll, i % 2, qt
        );
        insert_sorted(&mut hours[h], CLine { t, text, kind: Kind::OtherCategory, bytes: 0 });
        notes.push(format!("{}: one QueryRuntimeStatistics record", hour_label(h)));
    }
    for (h, op) in [(58usize, "DiagnosticLogUpdate"), (151, "AccountUpdate")] {
        let t = t0 + h as u64 * HOUR + rng.next() % HOUR;
        let text = format!(
            "{{ \"time\": \"{}\", \"resourceId\": \"{}\", \"category\": \"ControlPlaneRequests\", \"operationName\": \"{}\", \"properties\": {{\"httpstatusCode\": \"200\",\"result\": \"Success\",\"activityId\": \"{}\",\"httpMethod\": \"PUT\",\"operationType\": \"{}\",\"region\": \"East US\"}}}}",
            iso7(t), cx.rid, op, rng.guid(), op
        );
        insert_sorted(&mut hours[h], CLine { t, text, kind: Kind::OtherCategory, bytes: 0 });
        notes.push(format!("{}: one ControlPlaneRequests record ({})", hour_label(h), op));
    }
    for h in [84usize, 200] {
        let t = t0 + h as u64 * HOUR + rng.next() % HOUR;
        let text = format!(
            "{{ \"time\": \"{}\", \"resourceId\": \"{}\", \"category\": \"PartitionKeyRUConsumption\", \"operationName\": \"Query\", \"properties\": {{\"subscriptionId\": \"{}\",\"regionName\": \"East US\",\"databaseName\": \"shop\",\"collectionName\": \"orders\",\"partitionKey\": \"[\\\"cust-{:05}\\\"]\",\"requestCharge\": \"{}\",\"partitionKeyRangeId\": \"{}\"}}}}",
            iso7(t), cx.rid, CONTOSO_SUB, rng.range(10000, 99999), f6(rng.uniform(2.0, 80.0)), rng.range(0, 2)
        );
        insert_sorted(&mut hours[h], CLine { t, text, kind: Kind::OtherCategory, bytes: 0 });
        notes.push(format!("{}: one PartitionKeyRUConsumption record", hour_label(h)));
    }

    // --- malformed lines, one per hour file ---------------------------------------------
    let mut rng = Rng::stream("contoso-bad");
    let bad_hours = [15usize, 33, 68, 99, 123, 182];
    for (i, &h) in bad_hours.iter().enumerate() {
        let t = t0 + h as u64 * HOUR + rng.next() % HOUR;
        let ip = if i == 2 { "999.1.2.3" } else { "10.20.30.5" };
        let base = cx.render(
            &mut rng,
            &Dp {
                t,
                op: "Read",
                coll: "customers",
                doc: true,
                status: 200,
                ua: UA_APP,
                ip,
                req_len: 0,
                resp_len: 2048 + i as u64,
                key_type: "PrimaryMasterKey",
                aad: "",
            },
        );
        let (text, what) = match i {
            0 => {
                let k = "\"userAgent\": \"";
                let cut = base.find(k).map(|p| p + k.len() + 17).unwrap_or(base.len() / 2);
                (base[..cut].to_string(), "truncated JSON line (cut inside the userAgent string)")
            }
            1 => {
                ("<html>502 Bad Gateway</html>".to_string(), "a line that is not JSON (`<html>502 Bad Gateway</html>`)")
            }
            2 => (base, "record with clientIpAddress \"999.1.2.3\""),
            3 => (
                base.replace("\"responseLength\": \"2051\"", "\"responseLength\": \"-5\""),
                "record with responseLength \"-5\"",
            ),
            4 => (
                base.replace("\"responseLength\": \"2052\"", "\"responseLength\": \"abc\""),
                "record with responseLength \"abc\"",
            ),
            _ => {
                let end = base.find("\"resourceId\"").unwrap_or(2);
                (format!("{{ {}", &base[end..]), "record without a `time` field")
            }
        };
        if i == 0 {
            let last = text.chars().last().unwrap_or('{');
            assert!(!matches!(last, '{' | '[' | ',' | ':'), "truncated line must not end in a structural char");
        }
        let pos = (rng.next() % (hours[h].len() as u64 + 1)) as usize;
        hours[h].insert(pos, CLine { t, text, kind: Kind::Malformed, bytes: 0 });
        notes.push(format!("{}: malformed: {}", hour_label(h), what));
    }

    // --- late arrivals: 2-3 records of the previous hour at the start of the file ----------
    let theft_late_hour = hour_index(ticks(2021, 8, 17, 3, 0, 0));
    for &h in &[56usize, 136, theft_late_hour] {
        let file_start = t0 + h as u64 * HOUR;
        let want = if h == theft_late_hour { 3 } else { 2 + (rng.next() % 2) as usize };
        let mut moved = Vec::new();
        let mut idx: Vec<usize> = hours[h - 1]
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                matches!(l.kind, Kind::App | Kind::Theft) && l.t + 5 * MIN <= file_start && l.t + 50 * MIN >= file_start
            })
            .map(|(i, _)| i)
            .collect();
        // choose `want` of them deterministically, remove from the back to keep indices valid
        let mut chosen = Vec::new();
        while chosen.len() < want && !idx.is_empty() {
            let k = (rng.next() % idx.len() as u64) as usize;
            chosen.push(idx.remove(k));
        }
        chosen.sort_unstable();
        for &i in chosen.iter().rev() {
            moved.push(hours[h - 1].remove(i));
        }
        moved.sort_by_key(|l| l.t);
        let n = moved.len();
        let kinds: Vec<String> = moved
            .iter()
            .map(|l| format!("{} ({:?}, {} min late)", iso7(l.t), l.kind, (file_start - l.t) / MIN))
            .collect();
        for (i, l) in moved.into_iter().enumerate() {
            hours[h].insert(i, l);
        }
        notes.push(format!(
            "{}: starts with {} late records of the previous hour: {}",
            hour_label(h),
            n,
            kinds.join(", ")
        ));
    }

    // --- locally shuffled files: order jittered by up to 4 seconds -----------------------
    let shuffled = [hour_index(ticks(2021, 8, 13, 1, 0, 0)), hour_index(ticks(2021, 8, 17, 2, 0, 0))];
    for &h in &shuffled {
        let mut keyed: Vec<(u64, CLine)> = hours[h].drain(..).map(|l| (l.t + rng.next() % (4 * SEC), l)).collect();
        keyed.sort_by_key(|(k, _)| *k);
        let mut inversions = 0;
        let mut prev = 0;
        for (_, l) in &keyed {
            if l.t < prev {
                inversions += 1;
            }
            prev = prev.max(l.t);
        }
        hours[h] = keyed.into_iter().map(|(_, l)| l).collect();
        notes.push(format!(
            "{}: lines shuffled by up to 4 s ({} lines earlier than a line before them)",
            hour_label(h),
            inversions
        ));
    }

    let mut per_kind: Vec<(Kind, u64, u64)> = Vec::new();
    for l in hours.iter().flatten() {
        match per_kind.iter_mut().find(|k| k.0 == l.kind) {
            Some(k) => {
                k.1 += 1;
                k.2 += l.bytes;
            }
            None => per_kind.push((l.kind, 1, l.bytes)),
        }
    }
    ContosoOut { hours, theft, notes, per_kind, max_app_hour, backup_runs }
}

fn insert_sorted(v: &mut Vec<CLine>, l: CLine) {
    let pos = v.iter().position(|x| x.t > l.t).unwrap_or(v.len());
    v.insert(pos, l);
}

// --- fabrikam: CDBDataPlaneRequests rows ------------------------------------------------

const FAB_SUB: &str = "b5c2d1e0-8f3a-4d6b-9e2c-1a7f4e3d9c08";
const FAB_TENANT: &str = "4a1c9e7d-2b3f-4e8a-9d6c-5f0b7a2e1c34";
const UA_FAB_APP: &str =
    "Microsoft.Azure.Documents.Client/2.14.0 (netstandard2.0; Windows 10.0.17763; x64) PrescriberPortal/3.2";

struct FabRow {
    t: u64,
    text: String,
}

struct FabOut {
    rows: Vec<FabRow>,
    per_cred: Vec<(String, u64, u64)>,
}

fn gen_fabrikam() -> FabOut {
    let mut rng = Rng::stream("fabrikam");
    let t0 = t0_sample();
    let resid = format!(
        "/subscriptions/{}/resourcegroups/rg-clinic/providers/microsoft.documentdb/databaseaccounts/fabrikam-prod",
        FAB_SUB
    );
    let user_rid = rid_string(0xFAB, 4);
    let mut rows: Vec<FabRow> = Vec::new();
    let mut per_cred: Vec<(String, u64, u64)> = Vec::new();
    // (t, op, ip, resource token?, coll, reqlen, resp)
    let mut reqs: Vec<(u64, &str, &str, bool, &str, u64, u64)> = Vec::new();
    for h in 0..SAMPLE_HOURS {
        let start = t0 + h as u64 * HOUR;
        let hod = h % 24;
        let day = day_no(h);
        let business = (8..=18).contains(&hod);
        // resource-token prescriber app from two IPv6 hosts
        let n = if business { rng.range(7, 12) } else { rng.range(2, 4) };
        for t in sorted_times(&mut rng, start, HOUR, n as usize) {
            let x = rng.f64();
            let ip = if rng.chance(0.5) { "2001:db8:4:12::a" } else { "2001:db8:4:12::b" };
            let (op, coll, rl, resp) = if x < 0.5 {
                ("Read", "prescriptions", 0, rng.log_uniform(800.0, 60_000.0) as u64)
            } else if x < 0.85 {
                ("Query", "patients", rng.range(150, 500), rng.log_uniform(20_000.0, 2_000_000.0) as u64)
            } else {
                ("Upsert", "prescriptions", rng.range(700, 2400), rng.range(500, 2400))
            };
            reqs.push((t, op, ip, true, coll, rl, resp));
        }
        // days 1-3: the prescriber app is also used from the office NAT, plain IPv4
        if day <= 3 && (9..=17).contains(&hod) {
            let k = rng.range(1, 2) as usize;
            for t in sorted_times(&mut rng, start, HOUR, k) {
                reqs.push((
                    t,
                    "Query",
                    "198.51.100.23",
                    true,
                    "patients",
                    rng.range(150, 500),
                    rng.log_uniform(20_000.0, 900_000.0) as u64,
                ));
            }
        }
        // master key from the office NAT: 1-10 MiB/hour growing 3 %/day
        let growth = 1.03f64.powf(h as f64 / 24.0);
        let target = if business { rng.uniform(3.5, 7.0) } else { rng.uniform(1.0, 2.6) } * growth;
        let n = if business { rng.range(5, 8) } else { rng.range(3, 4) };
        for t in sorted_times(&mut rng, start, HOUR, n as usize) {
            let resp = (target * MIB as f64 / n as f64 * rng.uniform(0.8, 1.2)) as u64;
            let op = if rng.chance(0.5) { "Query" } else { "ReadFeed" };
            let coll = if rng.chance(0.7) { "prescriptions" } else { "patients" };
            let rl = if op == "Query" { rng.range(150, 500) } else { 0 };
            reqs.push((t, op, "198.51.100.23", false, coll, rl, resp));
        }
    }
    // day 6 (2021-08-14): one stream from the IPv4-mapped IPv6 form of the office NAT
    let s = ticks(2021, 8, 14, 10, 7, 0);
    for t in sorted_times(&mut rng, s, 35 * MIN, 24) {
        reqs.push((
            t,
            "Query",
            "::ffff:198.51.100.23",
            true,
            "patients",
            rng.range(150, 500),
            rng.log_uniform(100_000.0, 1_000_000.0) as u64,
        ));
    }
    reqs.sort_by_key(|r| r.0);
    for (t, op, ip, rt, coll, rl, resp) in reqs {
        let (key_type, auth, perm, urid, ua, cred) = if rt {
            (
                "",
                "ResourceToken",
                "perm-prescriber-app",
                user_rid.as_str(),
                UA_FAB_APP,
                "ResourceToken perm-prescriber-app",
            )
        } else {
            ("", "PrimaryMasterKey", "", "", UA_PY, "PrimaryMasterKey")
        };
        let charge = ru_for(&mut rng, op, resp);
        let dur = duration_ms(&mut rng, resp);
        let text = format!(
            "{{\"TimeGenerated\":\"{}\",\"AccountName\":\"fabrikam-prod\",\"OperationName\":\"{}\",\"ClientIpAddress\":\"{}\",\"KeyType\":\"{}\",\"AuthTokenType\":\"{}\",\"AadPrincipalId\":\"\",\"ResourceTokenPermissionId\":\"{}\",\"ResourceTokenUserRid\":\"{}\",\"DatabaseName\":\"clinic\",\"CollectionName\":\"{}\",\"RequestResourceType\":\"Document\",\"UserAgent\":\"{}\",\"ActivityId\":\"{}\",\"DurationMs\":{},\"RequestCharge\":{},\"RequestLength\":{},\"ResponseLength\":{},\"StatusCode\":{},\"_ResourceId\":\"{}\",\"Type\":\"CDBDataPlaneRequests\",\"TenantId\":\"{}\",\"SourceSystem\":\"Azure\"}}",
            iso7(t), op, ip, key_type, auth, perm, urid, coll, ua, rng.guid(), dur, charge, rl, resp, 200, resid, FAB_TENANT
        );
        let label = format!("{} from {}", cred, ip);
        match per_cred.iter_mut().find(|c| c.0 == label) {
            Some(c) => {
                c.1 += 1;
                c.2 += resp;
            }
            None => per_cred.push((label, 1, resp)),
        }
        rows.push(FabRow { t, text });
    }
    FabOut { rows, per_cred }
}

// --- northwind: Mongo API envelopes -------------------------------------------------------

fn gen_northwind() -> (Vec<String>, u64, u64) {
    let mut rng = Rng::stream("northwind");
    let t0 = t0_sample();
    let rid = arm_path("0b9e4c2a-6d71-4f38-8a5e-9c3d2b1f7e60", "rg-mongo", "northwind");
    let hosts = ["40.112.5.21", "40.112.5.22", "40.112.5.37"];
    let mut recs: Vec<(u64, String)> = Vec::new();
    let mut total = 0u64;
    for h in 0..SAMPLE_HOURS {
        let start = t0 + h as u64 * HOUR;
        let hod = h % 24;
        let target = if (8..=18).contains(&hod) { rng.uniform(12.0, 30.0) } else { rng.uniform(5.0, 10.0) };
        let target = (target * MIB as f64) as u64;
        let mut ops: Vec<(&str, &str, &str, &str, u64)> = vec![("ping", "MongoOpCode_OP_QUERY", "admin", "$cmd", 0)];
        let mut sum = 0;
        for _ in 0..rng.range(1, 2) {
            ops.push(("insert", "MongoOpCode_OP_MSG", "inventory", "stock", rng.range(40, 120)));
        }
        for _ in 0..rng.range(1, 2) {
            let r = rng.log_uniform(8_000.0, 600_000.0) as u64;
            sum += r;
            ops.push(("find", "MongoOpCode_OP_MSG", "inventory", *rng.pick(&["stock", "suppliers"]), r));
        }
        let rem = target.saturating_sub(sum);
        let n_more = rem.div_ceil(3 * MIB).max(1);
        for _ in 0..n_more {
            let r = ((rem / n_more) as f64 * rng.uniform(0.9, 1.1)) as u64;
            ops.push(("getMore", "MongoOpCode_OP_MSG", "inventory", "stock", r.min(4 * MIB)));
        }
        let times = sorted_times(&mut rng, start, HOUR, ops.len());
        for (t, (op, opcode, db, coll, resp)) in times.into_iter().zip(ops) {
            let t = t / SEC * SEC; // whole seconds in this file
            total += resp;
            let charge = if op == "ping" { 0.0 } else { ru_for(&mut rng, op, resp) };
            let dur = if op == "ping" { 0 } else { duration_ms(&mut rng, resp) };
            recs.push((
                t,
                format!(
                    "{{\"time\": \"{}\", \"resourceId\": \"{}\", \"category\": \"MongoRequests\", \"operationName\": \"{}\", \"properties\": {{\"activityId\": \"{}\",\"opCode\": \"{}\",\"errorCode\": \"0\",\"duration\": \"{}\",\"requestCharge\": \"{}\",\"databaseName\": \"{}\",\"collectionName\": \"{}\",\"retryCount\": \"0\",\"address\": \"{}\",\"authorizationTokenType\": \"PrimaryMasterKey\",\"responseLength\": \"{}\"}}}}",
                    iso0(t), rid, op, rng.guid(), opcode, dur, f6(charge), db, coll, rng.pick(&hosts), resp
                ),
            ));
        }
    }
    recs.sort_by_key(|r| r.0);
    let n = recs.len() as u64;
    let mut lines = Vec::new();
    let mut i = 0;
    while i < recs.len() {
        let k = (rng.range(5, 20) as usize).min(recs.len() - i);
        let body: Vec<&str> = recs[i..i + k].iter().map(|r| r.1.as_str()).collect();
        lines.push(format!("{{\"records\": [ {} ]}}", body.join(", ")));
        i += k;
    }
    (lines, n, total)
}

// --- adatum: the pre-2018 single-document form --------------------------------------------

fn gen_adatum() -> (String, u64, u64) {
    let mut rng = Rng::stream("adatum");
    let t0 = t0_sample();
    let mut times = Vec::new();
    for day in 0..10u64 {
        let n = if day == 9 { 9 } else { rng.range(19, 23) };
        for _ in 0..n {
            let hod = if rng.chance(0.8) { rng.range(8, 18) } else { rng.range(0, 23) };
            let hod = if day == 9 { hod % 12 } else { hod };
            times.push(t0 + day * DAY + hod * HOUR + rng.next() % HOUR);
        }
    }
    times.sort_unstable();
    let hosts = ["20.42.0.4", "20.42.0.5", "20.42.0.19"];
    let mut out = String::from("{\n  \"records\": [\n");
    let mut total = 0;
    for (i, &t) in times.iter().enumerate() {
        let x = rng.f64();
        let (op, doc, resp) = if x < 0.5 {
            ("Read", true, rng.log_uniform(500.0, 40_000.0) as u64)
        } else if x < 0.85 {
            ("Query", false, rng.log_uniform(10_000.0, 2_000_000.0) as u64)
        } else {
            ("Replace", true, rng.range(300, 1500))
        };
        total += resp;
        let docres = if doc {
            format!("dbs/inventory/colls/items/docs/item-{:06}", rng.range(0, 999_999))
        } else {
            "dbs/inventory/colls/items".to_string()
        };
        let charge = ru_for(&mut rng, op, resp);
        let dur = duration_ms(&mut rng, resp);
        out.push_str(&format!(
            "    {{\n      \"time\": \"{}\",\n      \"resourceId\": \"adatum\",\n      \"category\": \"DataPlaneRequests\",\n      \"operationName\": \"{}\",\n      \"properties\": {{\n        \"activityId\": \"{}\",\n        \"resourceType\": \"Document\",\n        \"documentResourceId\": \"{}\",\n        \"statusCode\": \"200\",\n        \"duration\": \"{}\",\n        \"userAgent\": \"Microsoft.Azure.Documents.Client/1.14.0.0\",\n        \"clientIpAddress\": \"{}\",\n        \"requestCharge\": \"{}\",\n        \"requestLength\": \"{}\",\n        \"responseLength\": \"{}\",\n        \"keyType\": \"PrimaryMasterKey\"\n      }}\n    }}{}\n",
            rfc1123_ms(t),
            op,
            rng.guid(),
            docres,
            dur,
            rng.pick(&hosts),
            f6(charge),
            if op == "Replace" { rng.range(300, 1500) } else { 0 },
            resp,
            if i + 1 < times.len() { "," } else { "" }
        ));
    }
    out.push_str("  ]\n}\n");
    (out, times.len() as u64, total)
}

// --- writing the sample set ----------------------------------------------------------------
fn contoso_hour_path(dir: &Path, h: usize) -> PathBuf {
    let m = split_time(t0_sample() + h as u64 * HOUR);
    dir.join(format!(
        "contoso/insights-logs-dataplanerequests/resourceId={}/y={:04}/m={:02}/d={:02}/h={:02}/m=00/PT1H.json",
        arm_path(CONTOSO_SUB, CONTOSO_RG, "contoso"),
        m.y,
        m.mo,
        m.d,
        m.h
    ))
}

pub(crate) fn run_sample(out: &Path) -> io::Result<()> {
    let c = gen_contoso();
    let fab = gen_fabrikam();
    let (nw_lines, nw_records, nw_bytes) = gen_northwind();
    let (ad_doc, ad_records, ad_bytes) = gen_adatum();

    // contoso hour files
    let mut contoso_bytes_on_disk = 0u64;
    let mut contoso_lines = 0u64;
    for (h, lines) in c.hours.iter().enumerate() {
        let path = contoso_hour_path(out, h);
        let mut buf = String::new();
        for l in lines {
            buf.push_str(&l.text);
            buf.push('\n');
        }
        // a stale gzipped copy (from `make sample-logs`) would shadow the fresh file
        let gz = path.with_extension("json.gz");
        if gz.exists() {
            fs::remove_file(&gz).map_err(|e| io::Error::new(e.kind(), format!("{}: {}", gz.display(), e)))?;
        }
        write_file(&path, buf.as_bytes())?;
        contoso_bytes_on_disk += buf.len() as u64;
        contoso_lines += lines.len() as u64;
    }

    let mut fab_text = String::new();
    for r in &fab.rows {
        fab_text.push_str(&r.text);
        fab_text.push('\n');
    }
    write_file(&out.join("fabrikam/cdbdataplanerequests.jsonl"), fab_text.as_bytes())?;
    let nw_text: String = nw_lines.iter().map(|l| format!("{}\n", l)).collect();
    write_file(&out.join("northwind/mongo-envelopes.jsonl"), nw_text.as_bytes())?;
    write_file(&out.join("adatum/pre2018-PT1H.json"), ad_doc.as_bytes())?;

    let fab_bytes: u64 = fab.per_cred.iter().map(|c| c.2).sum();
    let th = &c.theft;
    let kind_row = |k: Kind| c.per_kind.iter().find(|x| x.0 == k).map(|x| (x.1, x.2)).unwrap_or((0, 0));
    let (first_fab, last_fab) = (fab.rows.first().map(|r| r.t).unwrap_or(0), fab.rows.last().map(|r| r.t).unwrap_or(0));

    // README
    let mut md = String::new();
    let p = |md: &mut String, s: &str| {
        md.push_str(s);
        md.push('\n');
    };
    p(&mut md, "# sample-logs: synthetic Cosmos DB diagnostic logs");
    p(&mut md, "");
    p(&mut md, "Generated by `src/bin/gen-logs.rs` (standard library only, fixed-seed PRNG: the same");
    p(&mut md, "command always writes byte-identical files). Everything here is synthetic: account names,");
    p(&mut md, "subscription ids, IP addresses (documentation and private ranges) and GUIDs are made up.");
    p(&mut md, "");
    p(&mut md, "Event time range: 2021-08-09T00:00:00Z to 2021-08-18T12:00:00Z (9.5 days). \"Day 1\" below is");
    p(&mut md, "2021-08-09 (a Monday); day 6 and 7 (14 and 15 August) are a weekend with half the daytime load.");
    p(&mut md, "");
    p(&mut md, "## Regenerate");
    p(&mut md, "");
    p(&mut md, "```sh");
    p(&mut md, "cargo run --release --bin gen-logs -- sample --out sample-logs");
    p(&mut md, "```");
    p(&mut md, "");
    p(&mut md, "`make sample-logs` runs that and then compresses every contoso hour file in place with");
    p(&mut md, "`gzip -n -9` (`PT1H.json` becomes `PT1H.json.gz`; `-n` keeps the output deterministic): it keeps");
    p(&mut md, "the committed set small (the nightly backup and the theft are thousands of 4 MiB reads) and");
    p(&mut md, "exercises the reader's gzip path (`zcat` shows a file). The generator deletes a stale");
    p(&mut md, "`PT1H.json.gz` before it writes the plain file, so regenerating is idempotent. The replay of");
    p(&mut md, "freshly generated (plain) files gives the same alerts as the committed set (`tests/golden.rs`).");
    p(&mut md, "");
    p(&mut md, "## Files");
    p(&mut md, "");
    p(
        &mut md,
        "| path | shape | lines | records (valid DataPlane/Mongo) | bytes (as generated, before the gzip step) |",
    );
    p(&mut md, "|---|---|---|---|---|");
    let contoso_valid: u64 = [Kind::App, Kind::Backup, Kind::Analyst, Kind::Dev, Kind::Theft, Kind::Failed]
        .iter()
        .map(|k| kind_row(*k).0)
        .sum();
    md.push_str(&format!(
        "| `contoso/insights-logs-dataplanerequests/resourceId=/SUBSCRIPTIONS/7E2F6B1C-0D5A-4C1E-9A57-3F0B8C9D2E41/RESOURCEGROUPS/RG-PROD/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/CONTOSO/y=2021/m=08/d=DD/h=HH/m=00/PT1H.json` ({} hour files) | A, JSON Lines (Storage archive layout) | {} | {} | {} |\n",
        SAMPLE_HOURS, contoso_lines, contoso_valid, contoso_bytes_on_disk
    ));
    md.push_str(&format!(
        "| `fabrikam/cdbdataplanerequests.jsonl` | C, `CDBDataPlaneRequests` table rows, JSON Lines | {} | {} | {} |\n",
        fab.rows.len(),
        fab.rows.len(),
        fab_text.len()
    ));
    md.push_str(&format!(
        "| `northwind/mongo-envelopes.jsonl` | A envelopes `{{\"records\": [...]}}`, one per line, category MongoRequests | {} | {} | {} |\n",
        nw_lines.len(), nw_records, nw_text.len()
    ));
    md.push_str(&format!(
        "| `adatum/pre2018-PT1H.json` | A, pre-2018 form: one pretty-printed `{{\"records\": [...]}}` document | {} | {} | {} |\n",
        ad_doc.lines().count(), ad_records, ad_doc.len()
    ));
    p(&mut md, "");
    p(&mut md, "## Shapes");
    p(&mut md, "");
    p(
        &mut md,
        "- **contoso** (shape A, current): `time` with 7 fractional digits, `resourceId` the upper-case ARM path,",
    );
    p(
        &mut md,
        "  `category` `DataPlaneRequests`, `operationName`, and `properties` whose numbers are all JSON strings",
    );
    p(
        &mut md,
        "  (`\"statusCode\": \"200\"`, `\"requestCharge\": \"412.310000\"`, `\"responseLength\": \"4194304\"`).",
    );
    p(&mut md, "  The caller is `clientIpAddress`; the credential is `aadPrincipalId` when present, else `keyType`.");
    p(&mut md, "- **fabrikam** (shape C, Log Analytics `CDBDataPlaneRequests`): flat PascalCase with real JSON types");
    p(&mut md, "  (`\"ResponseLength\":123456`, `\"StatusCode\":200`, `\"RequestCharge\":5.71`), `TimeGenerated`, `_ResourceId`");
    p(
        &mut md,
        "  lower case. The credential is `AuthTokenType` (`KeyType` is empty) or the resource-token permission.",
    );
    p(
        &mut md,
        "- **northwind** (Mongo API): each line is an Event Hubs style envelope of 5-20 `MongoRequests` records;",
    );
    p(&mut md, "  caller `address`, credential `authorizationTokenType`, `time` without fractional seconds.");
    p(&mut md, "- **adatum** (2017 form): `time` in RFC 1123 with milliseconds (`Wed, 11 Aug 2021 19:29:50.266 GMT`),");
    p(&mut md, "  `resourceId` the bare account name, `resourceType` / `documentResourceId` property names.");
    p(&mut md, "");
    p(&mut md, "## Scenario");
    p(&mut md, "");
    p(&mut md, "### contoso (the account that is robbed)");
    p(&mut md, "");
    p(&mut md, "| credential | origin | user agent | requests | bytes read |");
    p(&mut md, "|---|---|---|---|---|");
    let rows = [
        (
            Kind::App,
            "keyType PrimaryMasterKey (web app)",
            "10.20.30.4-6; .11 from day 4, .17 from day 7",
            "Microsoft.Azure.Documents.Client/2.14.0",
        ),
        (
            Kind::Failed,
            "keyType PrimaryMasterKey (web app, failed: 429/404/403)",
            "10.20.30.4-6",
            "Microsoft.Azure.Documents.Client/2.14.0",
        ),
        (Kind::Backup, "keyType SecondaryReadonlyMasterKey (nightly backup)", "10.20.40.8", "cosmos-backup/1.4.2"),
        (
            Kind::Analyst,
            "aadPrincipalId 3F2504E0-4F89-11D3-9A0C-0305E82C3301 (analyst service)",
            "52.160.10.20",
            "azsdk-python-cosmos/4.3.0",
        ),
        (
            Kind::Dev,
            "keyType PrimaryReadonlyMasterKey (developer, once)",
            "81.2.69.142",
            "... Azure Cosmos DB Data Explorer",
        ),
        (Kind::Theft, "keyType PrimaryMasterKey (**the thief**)", "203.0.113.77", "python-requests/2.25.1"),
    ];
    for (k, cred, origin, ua) in rows {
        let (n, b) = kind_row(k);
        md.push_str(&format!("| {} | {} | {} | {} | {} ({}) |\n", cred, origin, ua, n, b, fmt_bytes(b)));
    }
    p(&mut md, "");
    md.push_str(&format!(
        "- Web app: about 40-120 MiB per business hour (08-18 UTC, half that at the weekend), a few MiB per night hour; operations Read, Query, ReadFeed, Upsert, Create on database `shop`, collections `orders`, `customers`, `carts`. Busiest hour: {} ({}).\n",
        hour_label(c.max_app_hour.1), fmt_bytes(c.max_app_hour.0)
    ));
    p(&mut md, "- Backup: every night from 01:00-01:20 UTC, ReadFeed in 4 MiB pages over about 25 minutes:");
    for (s, e, n, b) in &c.backup_runs {
        md.push_str(&format!("  - {} to {}: {} requests, {} bytes ({})\n", iso7(*s), iso7(*e), n, b, fmt_bytes(*b)));
    }
    p(
        &mut md,
        "- Developer: day 5 (2021-08-13) from about 14:02 UTC, 20 requests of ~150-250 kB through Data Explorer.",
    );
    p(&mut md, "- Analyst: every hour, 1-3 queries totalling 2-6 MiB.");
    p(&mut md, "");
    p(&mut md, "### The theft (the only thing that should alert)");
    p(&mut md, "");
    md.push_str("- credential: contoso, keyType `PrimaryMasterKey` (no AAD principal), the web app's key\n");
    md.push_str(&format!(
        "- origin: `{}` (never seen before; /24 `203.0.113.0/24`), user agent `{}`\n",
        THIEF_IP, UA_THIEF
    ));
    md.push_str(&format!("- first request: `{}`\n", iso7(th.first)));
    md.push_str(&format!(
        "- last request: `{}` (duration {:.1} minutes)\n",
        iso7(th.last),
        (th.last - th.first) as f64 / MIN as f64
    ));
    md.push_str(&format!(
        "- requests: {} (ReadFeed and Query alternating, all statusCode \"200\", 3-4 MiB each)\n",
        th.count
    ));
    md.push_str(&format!(
        "- bytes read (sum of responseLength): {} = {} = {:.3} GB\n",
        th.bytes,
        fmt_bytes(th.bytes),
        th.bytes as f64 / 1e9
    ));
    for (coll, n, b) in &th.by_coll {
        md.push_str(&format!("  - collection `{}`: {} requests, {} bytes\n", coll, n, b));
    }
    p(&mut md, "- all of it falls in the hour 2021-08-17T02 by event time, but 3 of its records arrive late, at the");
    p(&mut md, "  start of the 03:00 hour file, and the 02:00 file's lines are shuffled by a few seconds (see below).");
    p(&mut md, "");
    p(&mut md, "Expected detection: exactly one alert, contoso / PrimaryMasterKey / origin 203.0.113.0/24, hour");
    p(&mut md, "2021-08-17T02:00Z. No other credential reads more than 400 MiB in an hour from an origin (IPv4 /24,");
    p(
        &mut md,
        "IPv6 /64) that it did not use in the previous 24 hours, except that at the very start of the data every",
    );
    md.push_str(&format!(
        "origin is new: the backup's first run ({}, {}) falls in the first day, which a\n",
        iso7(c.backup_runs[0].0),
        fmt_bytes(c.backup_runs[0].3)
    ));
    p(&mut md, "detector has to treat as its learning period. No key other than the backup and the thief reads more");
    p(&mut md, "than 1 GiB in any hour.");
    p(&mut md, "");
    p(&mut md, "### fabrikam (resource tokens, IPv6, IPv4-mapped addresses)");
    p(&mut md, "");
    p(&mut md, "| credential and origin | rows | bytes read |");
    p(&mut md, "|---|---|---|");
    for (label, n, b) in &fab.per_cred {
        md.push_str(&format!("| {} | {} | {} ({}) |\n", label, n, b, fmt_bytes(*b)));
    }
    p(&mut md, "");
    p(&mut md, "- The prescriber app authenticates with a resource token (`AuthTokenType` `ResourceToken`,");
    p(
        &mut md,
        "  `ResourceTokenPermissionId` `perm-prescriber-app`) from 2001:db8:4:12::a and ::b (one /64). On days 1-3",
    );
    p(
        &mut md,
        "  it is also used from the office NAT `198.51.100.23`, and on day 6 (2021-08-14 10:07-10:42) one stream of",
    );
    p(
        &mut md,
        "  24 requests comes from `::ffff:198.51.100.23`, the IPv4-mapped form of that same address. None of this",
    );
    p(&mut md, "  is a theft (small volumes).");
    p(&mut md, "- `AuthTokenType` `PrimaryMasterKey` is used from the office NAT 198.51.100.23 at 1-10 MiB per hour,");
    p(&mut md, "  growing about 3 % per day.");
    md.push_str(&format!(
        "- rows in time order, {} to {}; {} bytes in total.\n",
        iso7(first_fab),
        iso7(last_fab),
        fab_bytes
    ));
    p(&mut md, "");
    p(&mut md, "### northwind (Mongo API)");
    p(&mut md, "");
    md.push_str(&format!(
        "One credential (`PrimaryMasterKey`) from 40.112.5.21, .22 and .37: find, getMore, insert, ping; steady 5-30 MiB per hour; {} records, {} bytes ({}).\n",
        nw_records, nw_bytes, fmt_bytes(nw_bytes)
    ));
    p(&mut md, "");
    p(&mut md, "### adatum (2017 form)");
    p(&mut md, "");
    md.push_str(&format!(
        "`PrimaryMasterKey` from 20.42.0.4, .5 and .19; Read, Query, Replace; {} records, {} bytes ({}).\n",
        ad_records,
        ad_bytes,
        fmt_bytes(ad_bytes)
    ));
    p(&mut md, "");
    p(&mut md, "## Deliberate noise in contoso (hour files named by UTC date and hour)");
    p(&mut md, "");
    for n in &c.notes {
        md.push_str(&format!("- {}\n", n));
    }
    p(&mut md, "");
    p(&mut md, "Malformed lines must be counted as bad input; the other-category records (QueryRuntimeStatistics,");
    p(&mut md, "ControlPlaneRequests, PartitionKeyRUConsumption) must be skipped and counted, not treated as errors.");
    write_file(&out.join("README.md"), md.as_bytes())?;

    let total_bytes =
        contoso_bytes_on_disk + fab_text.len() as u64 + nw_text.len() as u64 + ad_doc.len() as u64 + md.len() as u64;
    eprintln!(
        "gen-logs sample: wrote {} files ({} bytes) to {}: contoso {} hour files, {} lines ({} valid DataPlaneRequests records, 6 malformed, 7 of other categories); fabrikam {} rows; northwind {} records in {} envelopes; adatum {} records. Theft: contoso PrimaryMasterKey from {} ({}), {} requests from {} to {}, {} bytes ({}, {:.3} GB).",
        SAMPLE_HOURS + 4,
        total_bytes,
        out.display(),
        SAMPLE_HOURS,
        contoso_lines,
        contoso_valid,
        fab.rows.len(),
        nw_records,
        nw_lines.len(),
        ad_records,
        THIEF_IP,
        UA_THIEF,
        th.count,
        iso7(th.first),
        iso7(th.last),
        th.bytes,
        fmt_bytes(th.bytes),
        th.bytes as f64 / 1e9
    );
    Ok(())
}
