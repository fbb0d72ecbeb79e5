//! Writes the raw seed inputs of the fuzz targets from `sample-logs/` and
//! `models/sample-baseline` (see README.md): `cargo run --release --example seeds -- OUT_DIR`,
//! then `cargo fuzz cmin` into `corpus/<target>/`.

use exfilwatch::config::Config;
use exfilwatch::decode::{Decoded, Decoder, Event};
use exfilwatch::detect::Detector;
use exfilwatch::service::wire::{BatchBuilder, Source};
use exfilwatch::sources::{collect_streams, UnitReader};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus-raw".into()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for t in ["decode", "wire", "state", "config"] {
        std::fs::create_dir_all(out.join(t))?;
    }
    let mut n = 0usize;
    let mut put = |target: &str, bytes: &[u8]| -> anyhow::Result<()> {
        n += 1;
        std::fs::write(out.join(target).join(format!("seed-{n:05}")), bytes)?;
        Ok(())
    };
    // decode: units of every sample (at most 40 per file), and their events for the others.
    let mut decoder = Decoder::new();
    let mut events: Vec<Event<'static>> = Vec::new();
    let mut units: Vec<Vec<u8>> = Vec::new();
    for stream in collect_streams(&[root.join("sample-logs")])? {
        let mut r = UnitReader::new(stream, 512 << 20);
        let mut taken = 0;
        while let Some(unit) = r.next_unit()? {
            if taken < 40 {
                units.push(unit.bytes.to_vec());
                taken += 1;
            }
            decoder.decode(unit.bytes, |d| {
                if let Decoded::Event(e) = d {
                    events.push(e.into_owned());
                }
            });
        }
    }
    for u in &units {
        put("decode", u)?;
    }
    // wire: batches of 1, 5 and 20 events, with and without the backlog flag.
    let mut builder = BatchBuilder::default();
    for (i, chunk) in events.chunks(20).take(30).enumerate() {
        let take = [1, 5, 20][i % 3].min(chunk.len());
        for e in &chunk[..take] {
            builder.push(e);
        }
        let src = Source { topic: Cow::Borrowed("cosmos-diagnostics"), partition: (i % 4) as i32, offset: i as i64 };
        put("wire", &builder.finish(&src, i % 2 == 0))?;
    }
    // state: checkpoints (first byte 255) of detectors fed 50, 500 and every event; the model's
    // tables (first byte: the table's index) and manifest (7).
    for k in [50usize, 500, events.len()] {
        let mut d = Detector::new(Config::default().detect);
        let mut alerts = Vec::new();
        for e in events.iter().take(k) {
            d.ingest(e, &mut alerts);
        }
        let body = serde_json::json!({ "detector": serde_json::from_slice::<serde_json::Value>(&d.snapshot()?)?, "delivered": {} });
        let mut seed = vec![255u8];
        seed.extend(serde_json::to_vec(&body)?);
        put("state", &seed)?;
    }
    let model = root.join("models/sample-baseline");
    for (i, f) in exfilwatch::model::FILES.iter().enumerate() {
        let mut seed = vec![i as u8];
        seed.extend(std::fs::read(model.join(f))?);
        put("state", &seed)?;
    }
    let mut seed = vec![7u8];
    seed.extend(std::fs::read(model.join(exfilwatch::model::MANIFEST))?);
    put("state", &seed)?;
    // config: the defaults, and a few hand-written ones touching every section.
    put("config", include_bytes!("../../src/config_defaults.toml"))?;
    for text in CONFIGS {
        put("config", text.as_bytes())?;
    }
    Ok(())
}

const CONFIGS: [&str; 5] = [
    "[detect]\norigin_granularity = \"ip\"\nfamiliar_after = \"12h\"\nunfamiliar_bytes = \"512MiB\"\nnew_origin = true\n",
    "[detect]\nipv4_prefix = 16\nipv6_prefix = 48\nvolume_p_value = 0.01\nmax_origins_per_key = 10\nlearning_period = \"1d\"\n",
    "[kafka]\nbootstrap_servers = \"b1:9093,b2:9093\"\nsecurity_protocol = \"sasl_ssl\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"$ConnectionString\"\nsasl_password_env = \"EH_CONN\"\nlibrdkafka_options = { \"fetch.max.bytes\" = \"1048576\" }\n",
    "[sinks]\nstdout = false\nfile = \"alerts.jsonl\"\nwebhook_url = \"https://hooks.example.com/x?y=1\"\nalertmanager_url = \"http://127.0.0.1:9093\"\n[service]\nrole = \"detect\"\nstate_store = \"s3://bucket/prefix\"\nstate_store_options = { region = \"eu-west-1\" }\n",
    "[allow]\ncidrs = [{ cidr = \"10.0.0.0/8\", comment = \"vnet\" }, { cidr = \"2001:db8::/32\", until = \"2030-01-01T00:00:00Z\" }]\ncredentials = [{ credential = \"key:primarymasterkey\", comment = \"etl\" }]\nuser_agents = [{ user_agent = \"backup\", comment = \"nightly\" }]\n[input]\nstrict = true\nmax_document_bytes = \"1MiB\"\n",
];
