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
use crate::sources::file::InputFault;
use crate::sources::UnitReader;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes of units per chunk (one stream).
pub const CHUNK_BYTES: usize = 1 << 20;
/// Units per chunk at most.
const CHUNK_UNITS: usize = 4096;
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

/// Units of one stream, in order.
pub struct Chunk {
    id: u64,
    pub bytes: Vec<u8>,
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

fn decode_chunks(jobs: Jobs, done: Sender<Chunk>) {
    let mut decoder = Decoder::new();
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut chunk) = job else { return };
        // Its lists come empty (`ReadAhead::dispatch`).
        let Chunk { bytes, units, unit_items, items, events, .. } = &mut chunk;
        for u in units.iter() {
            let start = items.len();
            if !u.too_large {
                decoder.decode(&bytes[u.bytes.clone()], |d| match d {
                    Decoded::Event(ev) => items.push(Item::Event(events.push(&ev))),
                    Decoded::Skipped(c) => items.push(Item::Skipped(c)),
                    Decoded::Malformed { reason, index } => items.push(Item::Malformed { reason, index }),
                });
            }
            unit_items.push(start..items.len());
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
    next_id: u64,
    /// Chunks sent and not yet consumed.
    outstanding: usize,
    /// Consumed chunks, emptied and used again for the next ones: their buffers (a megabyte
    /// of units, the packed events) are not allocated, faulted in and freed once per chunk.
    spare: Vec<Chunk>,
    budget: usize,
    per_stream: usize,
    chunk_bytes: usize,
}

impl ReadAhead {
    pub fn new(readers: Vec<UnitReader>, threads: usize) -> Result<Self, ShardError> {
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
        // Many streams merged: smaller chunks, so that what waits decoded stays small.
        let chunk_bytes = (16 * CHUNK_BYTES / n.max(1)).clamp(64 << 10, CHUNK_BYTES);
        Ok(ReadAhead {
            readers,
            jobs: Some(job_tx),
            done,
            handles,
            arrived: FxHashMap::default(),
            queued: (0..n).map(|_| VecDeque::new()).collect(),
            ended: vec![false; n],
            current: (0..n).map(|_| None).collect(),
            next_id: 0,
            outstanding: 0,
            spare: Vec::new(),
            budget,
            per_stream,
            chunk_bytes,
        })
    }

    pub fn streams(&self) -> usize {
        self.readers.len()
    }

    /// Reads the next chunk of stream `i` and sends it to be decoded.
    fn dispatch(&mut self, i: usize) -> Result<(), ShardError> {
        let reader = &mut self.readers[i];
        let mut chunk = match self.spare.pop() {
            Some(mut c) => {
                c.id = self.next_id;
                c.bytes.clear();
                c.sources.clear();
                c.units.clear();
                c.items.clear();
                c.unit_items.clear();
                c.events.clear();
                c.end = None;
                c
            }
            None => Chunk {
                id: self.next_id,
                bytes: Vec::with_capacity(self.chunk_bytes + (64 << 10)),
                sources: Vec::new(),
                units: Vec::new(),
                unit_items: Vec::new(),
                items: Vec::new(),
                events: Packed::default(),
                end: None,
            },
        };
        self.next_id += 1;
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
        }
        chunk.events.reserve(chunk.units.len(), chunk.bytes.len() / 4);
        chunk.items.reserve(chunk.units.len());
        self.queued[i].push_back(chunk.id);
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
                if *next < chunk.units.len() {
                    *next += 1;
                    self.prefetch(i)?;
                    return Ok(Step::Unit);
                }
                let end = chunk.end.take();
                if let Some((done, _)) = self.current[i].take() {
                    if self.spare.len() < self.budget {
                        self.spare.push(done);
                    }
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

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // The decode threads end once the jobs are gone (and a decoded chunk has nowhere to go).
        self.jobs = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
