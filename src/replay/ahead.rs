//! Decoding ahead on worker threads (`--threads N`, N > 1).
//!
//! The reading thread still reads every stream itself and decides the order (the merge by
//! event time needs each unit's decoded times): it cuts what it reads of a stream into chunks
//! of whole units (about [`CHUNK_BYTES`], fewer when many streams are merged), numbers them and
//! hands them to decode threads; a decoded chunk comes back with its events packed
//! ([`Packed`]) and is consumed in the stream's order, unit by unit. Decoding is a pure
//! function of a unit's bytes, so a unit decoded here gives what the reading thread's own
//! decoder gives. While a stream is being consumed, up to [`AHEAD_PER_THREAD`] chunks per
//! decode thread of it are read ahead, within a budget of chunks for all streams.

use crate::decode::{Category, Decoded, Decoder, Malformed};
use crate::replay::packed::Packed;
use crate::replay::shards::ShardError;
use crate::sources::file::{frame_lines, give_back, Framing, InputFault, MappedRange};
use crate::sources::UnitReader;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes of units per chunk (one stream).
pub const CHUNK_BYTES: usize = 1 << 20;
/// Units per chunk at most, when the reading thread frames them.
const CHUNK_UNITS: usize = 4096;
/// Units per chunk at most, when a decode thread frames them in place (the rest of its range
/// goes in a chunk of its own): bounds a chunk's list of units on a file of tiny records.
const FRAMED_UNITS: usize = 16_384;
/// Chunks of a stream read ahead per decode thread. A thread decodes a chunk in about a
/// millisecond, less than a scheduler's time slice: with one chunk ahead per thread, the
/// decode threads ran dry whenever the reading thread was not on a core, and the reading
/// thread waited for them whenever it was (`--threads 2` on the typical file: 0.88 of the
/// time with three ahead, paired: BENCHMARKS.md).
const AHEAD_PER_THREAD: usize = 3;

/// A decoded record of a unit.
pub enum Item {
    /// An event, by its index in the chunk's [`Packed`].
    Event(usize),
    Skipped(Category),
    Malformed {
        reason: Malformed,
        index: Option<usize>,
    },
}

/// A unit of a chunk.
pub struct UnitMeta {
    /// In [`Chunk::bytes`], or in the mapped file when the chunk is a range of it.
    pub bytes: Range<usize>,
    pub line: u64,
    /// Index in [`Chunk::sources`].
    pub source: usize,
    pub too_large: bool,
    /// Bytes the reader consumed for it.
    pub read: u64,
    /// Damage the reader met while reading it.
    pub faults: Vec<InputFault>,
}

/// Units of one stream, in order: copied into `bytes` by the reading thread, or, in a mapped
/// file that holds one JSON value per line, a range of the file (`map`, `range`) that the
/// decode thread frames into units in place ([`frame_lines`]). A range's units get their line
/// numbers and the bytes read before them (blank lines at the end of the range before) when
/// they are consumed, in order ([`ReadAhead::advance`]).
pub struct Chunk {
    id: u64,
    pub bytes: Vec<u8>,
    map: Option<Arc<memmap2::Mmap>>,
    range: Range<usize>,
    /// Lines of the file before the range, when the reader knew (else: those of the ranges
    /// before it).
    lines_before: Option<u64>,
    /// The file's place in its stream, to read on from a line that opens a multi-line value.
    next_file: usize,
    /// How the range's framing ended.
    framing: Framing,
    /// Units the range's framing gives at most.
    max_units: usize,
    pub sources: Vec<String>,
    pub units: Vec<UnitMeta>,
    /// Per unit, its records in `items`: written by the decode thread, apart from `units`,
    /// which only the reading thread writes (a line both threads write goes back and forth
    /// between their cores: measured as most of the reading thread's time).
    pub unit_items: Vec<Range<usize>>,
    pub items: Vec<Item>,
    pub events: Packed,
    /// Set when the stream ends after these units: the damage met at its end.
    end: Option<Vec<InputFault>>,
}

/// What a stream gives next.
pub enum Step {
    /// A unit: see [`ReadAhead::unit`].
    Unit,
    /// The end of the stream, with the damage met there.
    End(Vec<InputFault>),
}

type Jobs = Arc<Mutex<Receiver<Chunk>>>;

/// A decoded record kept in its chunk: an event packed, the rest as it is.
fn keep(items: &mut Vec<Item>, events: &mut Packed, d: Decoded<'_>) {
    items.push(match d {
        Decoded::Event(ev) => Item::Event(events.push(&ev)),
        Decoded::Skipped(c) => Item::Skipped(c),
        Decoded::Malformed { reason, index } => Item::Malformed { reason, index },
    });
}

fn decode_chunks(jobs: Jobs, done: Sender<Chunk>) {
    let mut decoder = Decoder::new();
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut chunk) = job else { return };
        // Its lists come empty (`ReadAhead::dispatch`).
        let Chunk { bytes, map, range, framing, max_units, units, unit_items, items, events, .. } = &mut chunk;
        if let Some(data) = map.as_deref().and_then(|m| m.get(range.clone())) {
            let base = range.start;
            *framing = frame_lines(data, *max_units, |r, line, read| {
                let start = items.len();
                decoder.decode(&data[r.clone()], |d| keep(items, events, d));
                unit_items.push(start..items.len());
                let bytes = base + r.start..base + r.end;
                units.push(UnitMeta { bytes, line, source: 0, too_large: false, read, faults: Vec::new() });
            });
        } else {
            for u in units.iter() {
                let start = items.len();
                if !u.too_large {
                    decoder.decode(&bytes[u.bytes.clone()], |d| keep(items, events, d));
                }
                unit_items.push(start..items.len());
            }
        }
        if done.send(chunk).is_err() {
            return;
        }
    }
}

pub struct ReadAhead {
    readers: Vec<UnitReader>,
    jobs: Option<Sender<Chunk>>,
    done: Receiver<Chunk>,
    handles: Vec<JoinHandle<()>>,
    arrived: FxHashMap<u64, Chunk>,
    /// Per stream: chunks sent to be decoded, in order.
    queued: Vec<VecDeque<u64>>,
    /// Per stream: the reader gave its end.
    ended: Vec<bool>,
    /// Per stream: the chunk being consumed and its next unit.
    current: Vec<Option<(Chunk, usize)>>,
    /// Per stream: lines of the file before the range being consumed (ranges' line numbers
    /// are counted from their start).
    line_base: Vec<u64>,
    /// Per stream: bytes read after the last unit consumed (blank lines at the end of a
    /// range), counted toward the next.
    carry: Vec<u64>,
    /// Chunks sent before their stream was read again from an earlier place: dropped on
    /// arrival.
    discard: FxHashSet<u64>,
    next_id: u64,
    /// Chunks sent and not yet consumed.
    outstanding: usize,
    /// Consumed chunks, emptied and used again for the next ones: their buffers (a megabyte
    /// of units, the packed events) are not allocated, faulted in and freed once per chunk.
    spare: Vec<Chunk>,
    budget: usize,
    per_stream: usize,
    chunk_bytes: usize,
    framed_units: usize,
}

impl ReadAhead {
    pub fn new(readers: Vec<UnitReader>, threads: usize) -> Result<Self, ShardError> {
        // Many streams merged: smaller chunks, so that what waits decoded stays small.
        let chunk_bytes = (16 * CHUNK_BYTES / readers.len().max(1)).clamp(64 << 10, CHUNK_BYTES);
        Self::sized(readers, threads, chunk_bytes, FRAMED_UNITS)
    }

    /// With chunks of about `chunk_bytes`, a range's framing capped at `framed_units` units.
    fn sized(
        readers: Vec<UnitReader>,
        threads: usize,
        chunk_bytes: usize,
        framed_units: usize,
    ) -> Result<Self, ShardError> {
        let threads = threads.max(1);
        let per_stream = AHEAD_PER_THREAD * threads;
        let budget = per_stream + threads + 2;
        // Unbounded: what is sent is bounded by `budget` (and one chunk per stream besides).
        let (job_tx, job_rx) = channel::<Chunk>();
        let (done_tx, done) = channel::<Chunk>();
        let jobs: Jobs = Arc::new(Mutex::new(job_rx));
        let mut handles = Vec::new();
        for i in 0..threads {
            let (jobs, done_tx) = (jobs.clone(), done_tx.clone());
            let h = std::thread::Builder::new()
                .name(format!("decode-{i}"))
                .spawn(move || decode_chunks(jobs, done_tx))
                .map_err(|e| ShardError(format!("cannot start a decode thread: {e}")))?;
            handles.push(h);
        }
        let n = readers.len();
        Ok(ReadAhead {
            readers,
            jobs: Some(job_tx),
            done,
            handles,
            arrived: FxHashMap::default(),
            queued: (0..n).map(|_| VecDeque::new()).collect(),
            ended: vec![false; n],
            current: (0..n).map(|_| None).collect(),
            line_base: vec![0; n],
            carry: vec![0; n],
            discard: FxHashSet::default(),
            next_id: 0,
            outstanding: 0,
            spare: Vec::new(),
            budget,
            per_stream,
            chunk_bytes,
            framed_units,
        })
    }

    pub fn streams(&self) -> usize {
        self.readers.len()
    }

    /// An empty chunk (a consumed one, emptied, when there is one) with the next id.
    fn fresh_chunk(&mut self) -> Chunk {
        let id = self.next_id;
        self.next_id += 1;
        match self.spare.pop() {
            Some(mut c) => {
                c.id = id;
                c.bytes.clear();
                c.map = None;
                c.range = 0..0;
                c.lines_before = None;
                c.next_file = 0;
                c.framing = Framing::default();
                c.max_units = self.framed_units;
                c.sources.clear();
                c.units.clear();
                c.items.clear();
                c.unit_items.clear();
                c.events.clear();
                c.end = None;
                c
            }
            None => Chunk {
                id,
                bytes: Vec::with_capacity(self.chunk_bytes + (64 << 10)),
                map: None,
                range: 0..0,
                lines_before: None,
                next_file: 0,
                framing: Framing::default(),
                max_units: self.framed_units,
                sources: Vec::new(),
                units: Vec::new(),
                unit_items: Vec::new(),
                items: Vec::new(),
                events: Packed::default(),
                end: None,
            },
        }
    }

    /// A chunk of a range of a mapped file, to be framed and decoded in place.
    fn range_chunk(&mut self, r: MappedRange) -> Chunk {
        let mut chunk = self.fresh_chunk();
        let records = (r.range.len() / 256).max(1);
        chunk.events.reserve(records, r.range.len() / 4);
        chunk.items.reserve(records);
        chunk.map = Some(r.map);
        chunk.range = r.range;
        chunk.lines_before = r.lines_before;
        chunk.next_file = r.next_file;
        chunk.sources.push(r.source);
        chunk
    }

    /// Reads the next chunk of stream `i` and sends it to be decoded: a range of the mapped
    /// file when the reader can give one, else units it reads and copies.
    fn dispatch(&mut self, i: usize) -> Result<(), ShardError> {
        if let Some(r) = self.readers[i].next_range(self.chunk_bytes) {
            let chunk = self.range_chunk(r);
            return self.send(i, chunk, false);
        }
        let mut chunk = self.fresh_chunk();
        let reader = &mut self.readers[i];
        while chunk.bytes.len() < self.chunk_bytes && chunk.units.len() < CHUNK_UNITS {
            let before = reader.bytes_read;
            let Some(unit) = reader.next_unit() else {
                chunk.end = Some(reader.take_faults());
                self.ended[i] = true;
                break;
            };
            if chunk.sources.last().is_none_or(|s| s != unit.source) {
                chunk.sources.push(unit.source.to_string());
            }
            let start = chunk.bytes.len();
            chunk.bytes.extend_from_slice(unit.bytes);
            let meta = UnitMeta {
                bytes: start..chunk.bytes.len(),
                line: unit.line,
                source: chunk.sources.len() - 1,
                too_large: unit.too_large,
                read: 0,
                faults: Vec::new(),
            };
            chunk.units.push(meta);
            if let Some(m) = chunk.units.last_mut() {
                m.read = reader.bytes_read - before;
                m.faults = reader.take_faults();
            }
            if reader.can_range() {
                // The rest of this file goes in ranges.
                break;
            }
        }
        chunk.events.reserve(chunk.units.len(), chunk.bytes.len() / 4);
        chunk.items.reserve(chunk.units.len());
        self.send(i, chunk, false)
    }

    /// Sends `chunk` of stream `i` to be decoded, to be consumed after the stream's chunks
    /// sent before (or, `first`, before them).
    fn send(&mut self, i: usize, chunk: Chunk, first: bool) -> Result<(), ShardError> {
        if first {
            self.queued[i].push_front(chunk.id);
        } else {
            self.queued[i].push_back(chunk.id);
        }
        self.outstanding += 1;
        let sent = match &self.jobs {
            Some(tx) => tx.send(chunk).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(ShardError("the decode threads are gone".into()))
        }
    }

    /// Done with `done` of stream `i`: a range's lines and trailing bytes counted, its pages
    /// given back, and what its framing stopped at read on; then kept for reuse.
    fn finish(&mut self, i: usize, done: Chunk) -> Result<(), ShardError> {
        if let Some(map) = &done.map {
            self.line_base[i] += done.framing.lines;
            self.carry[i] += done.framing.tail;
            let used = done.framing.stop.map_or(done.range.end, |at| done.range.start + at);
            give_back(map, done.range.start..used);
            match done.framing.stop {
                Some(at) if done.framing.opens => {
                    // A multi-line value: the reader reads the file on from that line, line
                    // by line; what was sent of the stream after this chunk is dropped.
                    for id in std::mem::take(&mut self.queued[i]) {
                        if let Some(c) = self.arrived.remove(&id) {
                            self.outstanding -= 1;
                            self.recycle(c);
                        } else {
                            self.discard.insert(id);
                        }
                    }
                    self.ended[i] = false;
                    let source = done.sources.first().cloned().unwrap_or_default();
                    let at = done.range.start + at;
                    self.readers[i].resume_at(map.clone(), source, done.next_file, at, self.line_base[i]);
                }
                Some(at) => {
                    // Its units were capped: the rest of the range next, before the chunks after.
                    let rest = MappedRange {
                        map: map.clone(),
                        range: done.range.start + at..done.range.end,
                        lines_before: None,
                        source: done.sources.first().cloned().unwrap_or_default(),
                        next_file: done.next_file,
                    };
                    let chunk = self.range_chunk(rest);
                    self.send(i, chunk, true)?;
                }
                None => {}
            }
        }
        self.recycle(done);
        Ok(())
    }

    fn recycle(&mut self, mut c: Chunk) {
        c.map = None; // the file is unmapped once no chunk holds it
        if self.spare.len() < self.budget {
            self.spare.push(c);
        }
    }

    fn prefetch(&mut self, i: usize) -> Result<(), ShardError> {
        while !self.ended[i] && self.queued[i].len() < self.per_stream && self.outstanding < self.budget {
            self.dispatch(i)?;
        }
        Ok(())
    }

    fn wait_for(&mut self, id: u64) -> Result<Chunk, ShardError> {
        loop {
            if let Some(c) = self.arrived.remove(&id) {
                return Ok(c);
            }
            match self.done.recv_timeout(Duration::from_millis(200)) {
                Ok(c) if self.discard.remove(&c.id) => {
                    self.outstanding -= 1;
                    self.recycle(c);
                }
                Ok(c) => {
                    self.arrived.insert(c.id, c);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.handles.iter().any(|h| h.is_finished()) {
                        return Err(ShardError("a decode thread ended (panicked)".into()));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err(ShardError("the decode threads are gone".into())),
            }
        }
    }

    /// Moves stream `i` to its next unit (then [`ReadAhead::unit`]) or its end. Not called
    /// again for a stream after its end.
    pub fn advance(&mut self, i: usize) -> Result<Step, ShardError> {
        loop {
            if let Some((chunk, next)) = &mut self.current[i] {
                if let Some(u) = chunk.units.get_mut(*next) {
                    if chunk.map.is_some() {
                        u.line += self.line_base[i];
                    }
                    u.read += std::mem::take(&mut self.carry[i]);
                    *next += 1;
                    self.prefetch(i)?;
                    return Ok(Step::Unit);
                }
                let end = chunk.end.take();
                if let Some((done, _)) = self.current[i].take() {
                    self.finish(i, done)?;
                }
                if let Some(faults) = end {
                    return Ok(Step::End(faults));
                }
            }
            if self.queued[i].is_empty() {
                if self.ended[i] {
                    return Ok(Step::End(Vec::new()));
                }
                self.dispatch(i)?;
            }
            let Some(id) = self.queued[i].pop_front() else { continue };
            let chunk = self.wait_for(id)?;
            self.outstanding -= 1;
            if let (Some(_), Some(lines)) = (&chunk.map, chunk.lines_before) {
                self.line_base[i] = lines;
            }
            self.current[i] = Some((chunk, 0));
        }
    }

    /// The unit stream `i` is at (after [`ReadAhead::advance`] gave [`Step::Unit`]), with its
    /// chunk and its records.
    pub fn unit(&self, i: usize) -> Option<(&Chunk, &UnitMeta, &[Item])> {
        let (chunk, next) = self.current[i].as_ref()?;
        let at = next.checked_sub(1)?;
        let items = chunk.items.get(chunk.unit_items.get(at)?.clone())?;
        Some((chunk, chunk.units.get(at)?, items))
    }

    /// The damage the reader met while reading the current unit of stream `i`, taken.
    pub fn take_faults(&mut self, i: usize) -> Vec<InputFault> {
        match self.current[i].as_mut() {
            Some((chunk, next)) => match next.checked_sub(1).and_then(|at| chunk.units.get_mut(at)) {
                Some(u) => std::mem::take(&mut u.faults),
                None => Vec::new(),
            },
            None => Vec::new(),
        }
    }
}

impl Chunk {
    /// The bytes of one of its units.
    pub fn unit_bytes(&self, u: &UnitMeta) -> &[u8] {
        let data = match &self.map {
            Some(m) => &m[..],
            None => &self.bytes[..],
        };
        data.get(u.bytes.clone()).unwrap_or_default()
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // The decode threads end once the jobs are gone (and a decoded chunk has nowhere to go).
        self.jobs = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::InputStream;
    use std::io::Write;
    use std::path::PathBuf;

    /// (source, line, bytes, bytes read, faults) of every unit, then the faults at the end.
    type Seen = (Vec<(String, u64, Vec<u8>, u64, usize)>, usize);

    fn read_here(files: &[PathBuf]) -> Seen {
        let mut r = UnitReader::new(InputStream::Files(files.to_vec()), 1 << 20);
        let mut units = Vec::new();
        loop {
            let before = r.bytes_read;
            let Some(u) = r.next_unit() else { break };
            let (source, line, bytes) = (u.source.to_string(), u.line, u.bytes.to_vec());
            units.push((source, line, bytes, r.bytes_read - before, r.take_faults().len()));
        }
        (units, r.take_faults().len())
    }

    fn read_ahead(files: &[PathBuf], threads: usize, chunk_bytes: usize, framed_units: usize) -> Seen {
        let reader = UnitReader::new(InputStream::Files(files.to_vec()), 1 << 20);
        let mut a = ReadAhead::sized(vec![reader], threads, chunk_bytes, framed_units).unwrap();
        let mut units = Vec::new();
        loop {
            match a.advance(0).unwrap() {
                Step::End(faults) => return (units, faults.len()),
                Step::Unit => {
                    let (chunk, u, _) = a.unit(0).unwrap();
                    let source = chunk.sources[u.source].clone();
                    let seen = (source, u.line, chunk.unit_bytes(u).to_vec(), u.read, 0);
                    units.push(seen);
                    let faults = a.take_faults(0).len();
                    if let Some(last) = units.last_mut() {
                        last.4 = faults;
                    }
                }
            }
        }
    }

    /// Lines of every kind the framing meets: records, blank and whitespace lines, CRLF, a
    /// pretty-printed value, a line that opens a value that never closes.
    fn text(seed: u64, records: usize, multi_line_at: Option<usize>) -> String {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut t = String::new();
        for i in 0..records {
            if Some(i) == multi_line_at {
                t.push_str("{\n  \"time\": \"2021-08-01T00:00:00Z\",\n  \"a\": [1,\n 2]\n}\n");
                t.push_str("{\"cut\": 1,\n"); // opens, never closes: given back alone
            }
            match next() % 9 {
                0 => t.push('\n'),
                1 => t.push_str("  \t \r\n"),
                2 => t.push_str(&format!("{{\"n\": {i}}}\r\n")),
                _ => t.push_str(&format!("  {{\"n\": {i}, \"pad\": \"{}\"}}\n", "x".repeat((next() % 90) as usize))),
            }
        }
        t
    }

    #[test]
    fn ranges_framed_on_the_decode_threads_give_the_units_the_reader_gives() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            p
        };
        let gz = dir.path().join("c.json.gz");
        let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), Default::default());
        enc.write_all(text(3, 200, Some(50)).as_bytes()).unwrap();
        enc.finish().unwrap();
        let plain = write("a.json", &text(1, 3000, None));
        // The last line has no line end; blank lines end the file before it.
        let multi = write("b.json", &(text(2, 3000, Some(1700)) + "\n\n{\"last\": 1}"));
        let blank_end = write("d.json", &(text(4, 500, None) + "\n \n"));
        let streams = [
            vec![plain.clone()],
            vec![multi.clone()],
            vec![plain.clone(), multi.clone(), gz.clone(), blank_end.clone(), plain.clone()],
            vec![blank_end.clone(), dir.path().join("missing.json"), gz.clone(), multi.clone()],
        ];
        for files in &streams {
            let want = read_here(files);
            assert!(want.0.len() > 400, "{files:?}");
            for (threads, chunk_bytes, framed_units) in
                [(2, 700, 1 << 20), (3, 4096, 7), (2, 1 << 20, 16_384), (1, 1, 2)]
            {
                let got = read_ahead(files, threads, chunk_bytes, framed_units);
                assert_eq!(got.0.len(), want.0.len(), "{files:?} {chunk_bytes} {framed_units}");
                for (g, w) in got.0.iter().zip(&want.0) {
                    assert_eq!(g, w, "{files:?} {chunk_bytes} {framed_units}");
                }
                assert_eq!(got.1, want.1);
            }
        }
    }

    #[test]
    fn framing_stops_at_a_line_that_opens_a_value_and_after_its_units() {
        let data = b"\n{\"a\":1}\r\n  \n{\"b\":2}\n\n{\"c\":\n3}\n";
        let mut seen = Vec::new();
        let f = frame_lines(data, 10, |r, line, read| seen.push((data[r].to_vec(), line, read)));
        assert_eq!(seen, vec![(b"{\"a\":1}".to_vec(), 2, 10), (b"{\"b\":2}".to_vec(), 4, 11)]);
        assert_eq!(f, Framing { lines: 5, tail: 1, stop: Some(22), opens: true });
        let f = frame_lines(data, 1, |_, _, _| {});
        assert_eq!(f, Framing { lines: 2, tail: 0, stop: Some(10), opens: false });
        let f = frame_lines(b"{}\n \n", 10, |_, _, _| {});
        assert_eq!(f, Framing { lines: 2, tail: 2, stop: None, opens: false });
    }
}
