//! What a restart loads: a checkpoint's body or a model's tables. The first byte chooses:
//! 0..=6 replaces that table of `models/sample-baseline` (in `exfilwatch::model::FILES`
//! order) with the rest of the input, 7 replaces its manifest, anything else is a checkpoint
//! body.
#![no_main]

use std::sync::OnceLock;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/sample-baseline");

/// The sample model's manifest and tables, read once.
fn sample() -> &'static (Vec<u8>, Vec<Vec<u8>>) {
    static SAMPLE: OnceLock<(Vec<u8>, Vec<Vec<u8>>)> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let read = |name: &str| std::fs::read(format!("{MODEL}/{name}")).expect("models/sample-baseline");
        (read(exfilwatch::model::MANIFEST), exfilwatch::model::FILES.iter().map(|f| read(f)).collect())
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The loader catches a panic of the Parquet reader and refuses the file; libfuzzer-sys's
    // panic hook would abort before that. A panic the loader does not catch still unwinds out
    // of this closure, and libfuzzer-sys reports it as a crash.
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Some((&which, rest)) = data.split_first() else { return };
    match which {
        0..=6 => {
            let (manifest, tables) = sample();
            let mut tables = tables.clone();
            tables[which as usize] = rest.to_vec();
            exfilwatch::fuzzing::model(manifest, tables);
        }
        7 => exfilwatch::fuzzing::model(rest, sample().1.clone()),
        _ => exfilwatch::fuzzing::checkpoint(rest),
    }
});
