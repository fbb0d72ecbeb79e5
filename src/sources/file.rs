//! Files, directories and stdin.
//!
//! - A directory is walked recursively, in path order. Files in the Azure Storage archive
//!   layout (`.../y=YYYY/m=MM/d=DD/h=HH/m=00/PT1H.json`) that share everything before `/y=`
//!   hold one account's (and category's) history hour by hour: they are chained into one
//!   stream, read in path (= time) order. Every other file is a stream of its own.
//! - Gzip is recognised by its magic bytes, whatever the file is called, and on stdin too.
//! - A file the inputs reach more than once (a directory and a file in it, a link, a path
//!   given twice: the same device and inode) is read once, where first reached.
//! - Framing: one JSON value per line (JSON Lines, since 2018), except that a line that
//!   visibly opens a multi-line value (it ends with `{`, `[`, `,` or `:`) starts a multi-line
//!   unit that runs until its brackets balance: the pretty-printed pre-2018 blob. If they never
//!   balance (a truncated line that happened to end with a comma), the first line is given
//!   back as a unit of its own, to be reported malformed, and the lines after it are read again
//!   one by one: nothing after a bad line is lost.
//! - Damage loses only itself. A file that ends in the middle of its data (a gzip stream cut
//!   short by an interrupted download, a read error) gives the records before the damage, its
//!   last partial line as a unit (to be reported malformed), and an [`InputFault`]
//!   (`truncated_input`); a file or directory that cannot be opened or listed (permissions,
//!   removed meanwhile) is an [`InputFault`] (`unreadable_input`). Reading goes on with the
//!   next file. Only an input named on the command line that does not exist is an error.

use super::table::{table_format, TableError, TableReader};
use crate::decode::Malformed;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("input {0} does not exist")]
    Missing(String),
}

/// Input that could not be read whole; what could be read of it was used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputFault {
    /// [`Malformed::TruncatedInput`] or [`Malformed::UnreadableInput`].
    pub reason: Malformed,
    /// The file or directory; for a truncated file `path:line`, the first line not read whole.
    pub location: String,
    /// The error, as the system or the decompressor gave it.
    pub error: String,
}

impl InputFault {
    fn unreadable(path: &Path, e: &io::Error) -> Self {
        InputFault { reason: Malformed::UnreadableInput, location: path.display().to_string(), error: e.to_string() }
    }
}

/// One sequential stream of input: stdin, or files read one after the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputStream {
    Stdin,
    Files(Vec<PathBuf>),
}

impl InputStream {
    pub fn describe(&self) -> String {
        match self {
            InputStream::Stdin => "-".into(),
            InputStream::Files(f) if f.len() == 1 => f[0].display().to_string(),
            InputStream::Files(f) => format!("{} (+{} files)", f[0].display(), f.len() - 1),
        }
    }
}

/// The files under `dir`, in path order; a directory that cannot be listed is a fault.
fn walk(dir: &Path, out: &mut Vec<PathBuf>, faults: &mut Vec<InputFault>) {
    let listed = std::fs::read_dir(dir).and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect());
    let mut entries: Vec<PathBuf> = match listed {
        Ok(v) => v,
        Err(e) => {
            faults.push(InputFault::unreadable(dir, &e));
            return;
        }
    };
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out, faults);
        } else if p.is_file() && !is_ignored(&p) {
            out.push(p);
        }
    }
}

/// Files a directory walk leaves out: documentation and hidden files next to the logs.
fn is_ignored(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with('.') || name.ends_with(".md") || name.ends_with(".txt")
}

/// The chain a file belongs to: the path before `/y=` in the archive layout.
fn chain_key(p: &Path) -> Option<String> {
    let s = p.to_string_lossy();
    let i = s.find("/y=")?;
    Some(s[..i].to_string())
}

/// Turns command-line inputs (files, directories, `-`) into streams, in a stable order.
///
/// A file reached more than once (a directory and a file inside it, a symlink, the same path
/// given twice: the same device and inode) is read once, where it was first reached; each
/// repeat is logged. Stdin (`-`) given twice is read once. Directories that cannot be listed
/// are returned as faults; an input that does not exist is an error.
pub fn collect_streams(inputs: &[PathBuf]) -> Result<(Vec<InputStream>, Vec<InputFault>), SourceError> {
    let mut streams: Vec<InputStream> = Vec::new();
    let mut faults = Vec::new();
    let mut chains: Vec<(String, usize)> = Vec::new();
    let mut seen: std::collections::HashMap<FileId, PathBuf> = std::collections::HashMap::new();
    let (mut repeats, mut example) = (0usize, None);
    for input in inputs {
        if input.as_os_str() == "-" {
            if streams.contains(&InputStream::Stdin) {
                tracing::warn!(message = "Input given twice; read once.", input = "-");
            } else {
                streams.push(InputStream::Stdin);
            }
            continue;
        }
        let mut files = Vec::new();
        if input.is_dir() {
            walk(input, &mut files, &mut faults);
        } else if input.exists() {
            files.push(input.clone());
        } else {
            return Err(SourceError::Missing(input.display().to_string()));
        }
        for f in files {
            if let Some(id) = file_id(&f) {
                if let Some(first) = seen.get(&id) {
                    repeats += 1;
                    example.get_or_insert_with(|| (f.clone(), first.clone()));
                    continue;
                }
                seen.insert(id, f.clone());
            }
            match chain_key(&f) {
                Some(k) => match chains.iter().find(|(c, _)| *c == k) {
                    Some(&(_, i)) => {
                        if let InputStream::Files(v) = &mut streams[i] {
                            v.push(f);
                        }
                    }
                    None => {
                        chains.push((k, streams.len()));
                        streams.push(InputStream::Files(vec![f]));
                    }
                },
                None => streams.push(InputStream::Files(vec![f])),
            }
        }
    }
    if let Some((again, first)) = example {
        tracing::warn!(
            message = "Files reached more than once by the inputs; each is read once.",
            repeats,
            example = %again.display(),
            first_as = %first.display()
        );
    }
    Ok((streams, faults))
}

/// A file's identity: its device and inode (the same file by any path or link).
type FileId = (u64, u64);

fn file_id(p: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// An opened input file: memory-mapped when plain, a decompressing reader when gzip.
pub enum Opened {
    Mapped(memmap2::Mmap),
    Reader(Box<dyn Read + Send>),
}

/// Opens a file, decompressing gzip (by magic bytes). A plain file is memory-mapped: lines are
/// then slices of the page cache, with no copy at all. (A file truncated by another process
/// while it is mapped can make the process fail; archives are not written while replayed.)
pub fn open_file(path: &Path) -> io::Result<Opened> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut f = BufReader::with_capacity(256 << 10, file);
    let magic = f.fill_buf()?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        return Ok(Opened::Reader(Box::new(flate2::bufread::MultiGzDecoder::new(f))));
    }
    if len > 0 {
        // SAFETY: the map is read-only and private to this reader; see the note above on
        // concurrent truncation.
        if let Ok(map) = unsafe { memmap2::Mmap::map(f.get_ref()) } {
            return Ok(Opened::Mapped(map));
        }
    }
    Ok(Opened::Reader(Box::new(f)))
}

/// The bytes being read: the mapped file, or the block buffer.
fn buf<'x>(map: &'x Option<Arc<memmap2::Mmap>>, block: &'x [u8]) -> &'x [u8] {
    match map {
        Some(m) => m,
        None => block,
    }
}

/// A unit: the bytes of one JSON value and where it started.
pub struct Unit<'a> {
    pub bytes: &'a [u8],
    /// 1-based line number of the unit's first line.
    pub line: u64,
    /// The file it came from (`-` for stdin).
    pub source: &'a str,
    /// True when the unit exceeded the document size limit and was cut off.
    pub too_large: bool,
}

const BLOCK: usize = 4 << 20;
/// Pages of a mapped file are given back in steps of this many bytes.
const RELEASE_STEP: usize = 2 << 20;

/// Reads units from a stream of files (or stdin).
///
/// Lines are found in a large block buffer and handed out as slices of it: no copy per line.
pub struct UnitReader {
    stream: InputStream,
    next_file: usize,
    reader: Option<Box<dyn Read + Send>>,
    /// The current file, when it is mapped (then `reader` is unused); shared with the ranges
    /// of it handed out to be framed elsewhere ([`UnitReader::next_range`]).
    map: Option<Arc<memmap2::Mmap>>,
    /// The lines of the current file are read here to its end (it has a line that opens a
    /// multi-line value): no more ranges of it.
    lines_only: bool,
    /// `line_no` is not known: ranges of the current file were handed out since it was.
    lines_handed_out: bool,
    /// How much of the map has been handed back to the kernel (see `release_read`).
    released: usize,
    eof: bool,
    name: String,
    line_no: u64,
    /// The block buffer: zeroed once as it grows, then read into again and again; its bytes
    /// are `block[..end]`. (Zeroing the whole block before each read cost 4 MiB of writes per
    /// read, and a pipe or a gzip stream gives at most tens of kilobytes a read.)
    block: Vec<u8>,
    end: usize,
    pos: usize,
    /// The current line (from `read_line`) as a range of `block`.
    cur: (usize, usize),
    /// A line served from `pending`.
    line: Vec<u8>,
    doc: Vec<u8>,
    /// Lines to read again after a multi-line attempt failed: (line number, bytes).
    pending: VecDeque<(u64, Vec<u8>)>,
    max_document: usize,
    /// Bytes consumed from the underlying files (after decompression).
    pub bytes_read: u64,
    /// Damage met since the caller last took them ([`UnitReader::take_faults`]).
    faults: Vec<InputFault>,
    /// The current file when it is a table (CSV or Parquet export): its rows, as JSON records.
    table: Option<TableReader>,
}

impl UnitReader {
    pub fn new(stream: InputStream, max_document: usize) -> Self {
        UnitReader {
            stream,
            next_file: 0,
            reader: None,
            map: None,
            lines_only: false,
            lines_handed_out: false,
            released: 0,
            eof: false,
            name: String::new(),
            line_no: 0,
            block: Vec::new(),
            end: 0,
            pos: 0,
            cur: (0, 0),
            line: Vec::new(),
            doc: Vec::new(),
            pending: VecDeque::new(),
            max_document,
            bytes_read: 0,
            faults: Vec::new(),
            table: None,
        }
    }

    /// The damage met so far (files cut short or unreadable), emptied.
    pub fn take_faults(&mut self) -> Vec<InputFault> {
        std::mem::take(&mut self.faults)
    }

    fn open_next(&mut self) -> bool {
        match &self.stream {
            InputStream::Stdin => {
                if self.next_file > 0 {
                    return false;
                }
                self.next_file = 1;
                self.name = "-".into();
                // Gzip by its magic bytes, as for a file.
                let mut stdin = BufReader::with_capacity(256 << 10, io::stdin());
                let gzip = match stdin.fill_buf() {
                    Ok(head) => head.starts_with(&[0x1f, 0x8b]),
                    Err(e) => {
                        self.faults.push(InputFault::unreadable(Path::new("-"), &e));
                        return false;
                    }
                };
                self.reader =
                    Some(if gzip { Box::new(flate2::bufread::MultiGzDecoder::new(stdin)) } else { Box::new(stdin) });
            }
            InputStream::Files(files) => {
                let opened = loop {
                    let Some(path) = files.get(self.next_file) else {
                        return false;
                    };
                    self.next_file += 1;
                    self.name = path.display().to_string();
                    if let Some(format) = table_format(path) {
                        // A table's rows are served by `next_unit`; the line reader sees an
                        // empty file and moves on when it is done.
                        match TableReader::open(path, format) {
                            Ok(t) => {
                                self.table = Some(t);
                                self.map = None;
                                self.reader = Some(Box::new(io::empty()));
                                self.end = 0;
                                self.pos = 0;
                                self.eof = true;
                                self.line_no = 0;
                                return true;
                            }
                            Err(e) => {
                                self.faults.push(table_fault(Malformed::UnreadableInput, e));
                                continue;
                            }
                        }
                    }
                    match open_file(path) {
                        Ok(o) => break o,
                        Err(e) => self.faults.push(InputFault::unreadable(path, &e)),
                    }
                };
                match opened {
                    Opened::Mapped(m) => {
                        let _ = m.advise(memmap2::Advice::Sequential);
                        self.map = Some(Arc::new(m));
                        self.lines_only = false;
                        self.lines_handed_out = false;
                        self.released = 0;
                        self.reader = Some(Box::new(io::empty()));
                        self.end = 0;
                        self.pos = 0;
                        self.eof = true;
                        self.line_no = 0;
                        return true;
                    }
                    Opened::Reader(r) => self.reader = Some(r),
                }
            }
        }
        self.map = None;
        if self.block.len() < BLOCK {
            self.block.resize(BLOCK, 0);
        }
        self.end = 0;
        self.pos = 0;
        self.eof = false;
        self.line_no = 0;
        true
    }

    /// Unmaps pages of a mapped file that are well behind the read position, so that the
    /// process's resident memory stays that of its state, not of the file (the pages stay in
    /// the page cache).
    fn release_read(&mut self) {
        if let Some(m) = &self.map {
            let upto = self.pos / RELEASE_STEP * RELEASE_STEP;
            if upto > self.released {
                // Pages before `pos` are not read again.
                give_back(m, self.released..upto);
                self.released = upto;
            }
        }
    }

    /// Finds the next physical line and sets `cur` to it; false at the end of the stream.
    fn read_line(&mut self) -> bool {
        loop {
            if self.table.is_some() {
                // Its rows come first (`next_unit`).
                return false;
            }
            if self.reader.is_none() && (!self.open_next() || self.table.is_some()) {
                return false;
            }
            self.release_read();
            let data = buf(&self.map, &self.block[..self.end]);
            if let Some(i) = memchr::memchr(b'\n', &data[self.pos..]) {
                self.cur = (self.pos, self.pos + i + 1);
                self.pos += i + 1;
                self.line_no += 1;
                self.bytes_read += (i + 1) as u64;
                return true;
            }
            if self.eof {
                if self.pos < data.len() {
                    self.cur = (self.pos, data.len());
                    self.bytes_read += (data.len() - self.pos) as u64;
                    self.pos = data.len();
                    self.line_no += 1;
                    return true;
                }
                self.reader = None;
                self.map = None;
                continue;
            }
            // Keep the partial line, refill behind it (growing for a line longer than a block).
            self.block.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
            let len = self.end;
            if self.block.len() - len < BLOCK / 2 {
                self.block.resize(self.block.len() + BLOCK.max(len), 0);
            }
            let read = match self.reader.as_mut() {
                Some(r) => loop {
                    match r.read(&mut self.block[len..]) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => break other,
                    }
                },
                None => Ok(0),
            };
            match read {
                Ok(n) => {
                    self.end = len + n;
                    self.eof = n == 0;
                }
                Err(e) => {
                    // The file is damaged here: what was read is used (its last partial line
                    // included, as a unit of its own), then the next file.
                    self.eof = true;
                    self.faults.push(InputFault {
                        reason: Malformed::TruncatedInput,
                        location: format!("{}:{}", self.name, self.line_no + 1),
                        error: e.to_string(),
                    });
                }
            }
        }
    }

    /// The next unit, or `None` at the end of the stream.
    pub fn next_unit(&mut self) -> Option<Unit<'_>> {
        loop {
            if self.pending.is_empty() {
                if let Some(table) = self.table.as_mut() {
                    match table.next_record(&mut self.line) {
                        Ok(Some(row)) => {
                            self.bytes_read += self.line.len() as u64;
                            return Some(Unit { bytes: &self.line, line: row, source: &self.name, too_large: false });
                        }
                        Ok(None) => self.table = None,
                        Err(e) => {
                            // The rows before the bad one were used.
                            self.faults.push(table_fault(Malformed::TruncatedInput, e));
                            self.table = None;
                        }
                    }
                }
            }
            let (line_no, from_pending) = if let Some((n, l)) = self.pending.pop_front() {
                self.line = l;
                (n, true)
            } else if self.read_line() {
                (self.line_no, false)
            } else if self.table.is_some() {
                continue;
            } else {
                return None;
            };
            let line: &[u8] = if from_pending {
                &self.line
            } else {
                &buf(&self.map, &self.block[..self.end])[self.cur.0..self.cur.1]
            };
            let trimmed = trim(line);
            if trimmed.is_empty() {
                continue;
            }
            if !opens_value(trimmed) || from_pending {
                let (s, e) = span(line);
                let bytes = if from_pending {
                    &self.line[s..e]
                } else {
                    &buf(&self.map, &self.block[..self.end])[self.cur.0 + s..self.cur.0 + e]
                };
                return Some(Unit { bytes, line: line_no, source: &self.name, too_large: false });
            }
            // A multi-line value: accumulate until brackets balance.
            let mut scan = Depth::default();
            scan.feed(line);
            self.doc.clear();
            self.doc.extend_from_slice(line);
            let first_len = self.doc.len();
            // Lines after the first, as (line number, start, end) in `doc`.
            let mut held: Vec<(u64, usize, usize)> = Vec::new();
            let mut too_large = false;
            while !scan.closed() {
                if self.doc.len() > self.max_document {
                    too_large = true;
                    break;
                }
                let start = self.doc.len();
                let n = if let Some((n, l)) = self.pending.pop_front() {
                    self.doc.extend_from_slice(&l);
                    n
                } else if self.read_line() {
                    self.doc.extend_from_slice(&buf(&self.map, &self.block[..self.end])[self.cur.0..self.cur.1]);
                    self.line_no
                } else {
                    break;
                };
                scan.feed(&self.doc[start..]);
                held.push((n, start, self.doc.len()));
            }
            if scan.closed() && !too_large {
                return Some(Unit { bytes: &self.doc, line: line_no, source: &self.name, too_large: false });
            }
            // Never balanced (or too large): give the first line back alone, reread the rest.
            for &(n, s, e) in held.iter().rev() {
                self.pending.push_front((n, self.doc[s..e].to_vec()));
            }
            let (s, e) = span(&self.doc[..first_len]);
            return Some(Unit { bytes: &self.doc[s..e], line: line_no, source: &self.name, too_large });
        }
    }
}

/// A range of a mapped file, cut at a line end, whose lines are framed elsewhere
/// ([`frame_lines`]), in place: [`UnitReader::next_range`].
pub struct MappedRange {
    pub map: Arc<memmap2::Mmap>,
    pub range: Range<usize>,
    /// Lines of the file before the range, when the reader knows (it read them itself);
    /// `None`: as many as the file's ranges handed out before this one hold.
    pub lines_before: Option<u64>,
    /// The file's name, and the reader's place in its stream (for [`UnitReader::resume_at`]).
    pub source: String,
    pub next_file: usize,
}

impl UnitReader {
    /// Whether the next units can be handed out as a [`MappedRange`]: in a mapped file, with no
    /// line to read again and no multi-line value met in the file.
    pub fn can_range(&self) -> bool {
        self.map.as_ref().is_some_and(|m| self.pos < m.len())
            && self.table.is_none()
            && self.pending.is_empty()
            && !self.lines_only
            && self.reader.is_some()
    }

    /// The next range of about `max` bytes of the mapped file being read, ending at a line end
    /// (or the file's end), when [`UnitReader::can_range`]; else `None` (then
    /// [`UnitReader::next_unit`]: it also moves to the next file). Only the bytes near the cut
    /// are read here.
    pub fn next_range(&mut self, max: usize) -> Option<MappedRange> {
        if !self.can_range() {
            return None;
        }
        let map = self.map.clone()?;
        let (start, len) = (self.pos, map.len());
        let mut cut = start.saturating_add(max.max(1)).min(len);
        if cut < len {
            cut = match memchr::memrchr(b'\n', &map[start..cut]) {
                Some(i) => start + i + 1,
                // A line longer than `max`: to its end.
                None => memchr::memchr(b'\n', &map[cut..]).map_or(len, |i| cut + i + 1),
            };
        }
        self.pos = cut;
        let lines_before = (!self.lines_handed_out).then_some(self.line_no);
        self.lines_handed_out = true;
        // Its pages are given back by whoever frames it, once used.
        self.released = self.released.max(cut.div_ceil(RELEASE_STEP) * RELEASE_STEP);
        Some(MappedRange { map, range: start..cut, lines_before, source: self.name.clone(), next_file: self.next_file })
    }

    /// Reads on from `at` in the file of a range handed out before (`map`, `source`,
    /// `next_file` as the range gave them), line by line to the file's end, with `line_no`
    /// lines of it before `at`: the range's framing met a line that opens a multi-line value.
    /// What was read past `at` is forgotten (the caller drops what it made of it).
    pub fn resume_at(&mut self, map: Arc<memmap2::Mmap>, source: String, next_file: usize, at: usize, line_no: u64) {
        self.map = Some(map);
        self.name = source;
        self.next_file = next_file;
        self.reader = Some(Box::new(io::empty()));
        self.table = None;
        self.pending.clear();
        self.faults.clear();
        self.end = 0;
        self.pos = at;
        self.eof = true;
        self.line_no = line_no;
        self.lines_only = true;
        self.lines_handed_out = false;
        self.released = at / RELEASE_STEP * RELEASE_STEP;
    }
}

/// How [`frame_lines`] ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Framing {
    /// Lines framed (blank ones included), before `stop`.
    pub lines: u64,
    /// Bytes after the last unit, before `stop` or the end (blank lines): they count toward
    /// the next unit's bytes read.
    pub tail: u64,
    /// Where framing stopped before the end: at a line that opens a multi-line value
    /// (`opens`), or after `max_units` units.
    pub stop: Option<usize>,
    pub opens: bool,
}

/// Frames the lines of `data` (whole lines: a range of [`UnitReader::next_range`]) as
/// [`UnitReader::next_unit`] does, one JSON value per line: `unit(bytes, line, read)` for each,
/// with the unit's bytes (trimmed), its 1-based line in `data` and the bytes read for it (the
/// blank lines before it included). Stops at a line that opens a multi-line value (the reader
/// reads on from there) or after `max_units` units.
pub fn frame_lines(data: &[u8], max_units: usize, mut unit: impl FnMut(Range<usize>, u64, u64)) -> Framing {
    let (mut pos, mut from, mut lines, mut units) = (0usize, 0usize, 0u64, 0usize);
    while pos < data.len() {
        if units == max_units {
            return Framing { lines, tail: 0, stop: Some(pos), opens: false };
        }
        let end = memchr::memchr(b'\n', &data[pos..]).map_or(data.len(), |i| pos + i + 1);
        let line = &data[pos..end];
        let (s, e) = span(line);
        if s == e {
            lines += 1;
            pos = end;
            continue;
        }
        if opens_value(&line[s..e]) {
            return Framing { lines, tail: (pos - from) as u64, stop: Some(pos), opens: true };
        }
        lines += 1;
        unit(pos + s..pos + e, lines, (end - from) as u64);
        units += 1;
        pos = end;
        from = end;
    }
    Framing { lines, tail: (pos - from) as u64, stop: None, opens: false }
}

/// Whether a (trimmed, non-blank) line visibly opens a multi-line value: it ends with `{`, `[`,
/// `,` or `:` (the pre-2018 pretty-printed blob).
fn opens_value(trimmed: &[u8]) -> bool {
    matches!(trimmed.last(), Some(b'{' | b'[' | b',' | b':'))
}

/// Gives the whole pages of `range` of a mapped file back to the kernel (the page `range`
/// ends in stays), so that the process's resident memory stays that of its state, not of the
/// file (the pages stay in the page cache).
pub fn give_back(map: &memmap2::Mmap, range: Range<usize>) {
    const PAGE: usize = 4096;
    let (from, to) = (range.start / PAGE * PAGE, range.end / PAGE * PAGE);
    if to > from {
        // SAFETY: the map is a private, read-only mapping of a file, never written: a page
        // given back holds the same bytes when touched again (read again from the file), so
        // nothing that borrows it sees a change.
        let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from) };
    }
}

/// A table file refused when opened (`unreadable_input`) or stopped at a bad row
/// (`truncated_input`): the fault names the file, the row and the column.
fn table_fault(reason: Malformed, e: TableError) -> InputFault {
    let mut location = e.file.clone();
    if let Some(r) = e.row {
        location.push_str(&format!(": row {r}"));
    }
    if let Some(c) = &e.column {
        location.push_str(&format!(", column {c}"));
    }
    InputFault { reason, location, error: e.problem }
}

fn span(b: &[u8]) -> (usize, usize) {
    let s = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let e = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(s, |i| i + 1);
    (s, e.max(s))
}

fn trim(b: &[u8]) -> &[u8] {
    let (s, e) = span(b);
    &b[s..e]
}

/// Bracket depth outside strings, across lines.
#[derive(Default)]
struct Depth {
    depth: i64,
    in_string: bool,
    escaped: bool,
    started: bool,
}

impl Depth {
    fn feed(&mut self, b: &[u8]) {
        for &c in b {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if c == b'\\' {
                    self.escaped = true;
                } else if c == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match c {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    self.started = true;
                }
                b'}' | b']' => self.depth -= 1,
                _ => {}
            }
        }
    }
    fn closed(&self) -> bool {
        self.started && self.depth <= 0 && !self.in_string
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn units_of(text: &str) -> Vec<(u64, String)> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        std::fs::write(&p, text).unwrap();
        let mut r = UnitReader::new(InputStream::Files(vec![p]), 1 << 20);
        let mut out = Vec::new();
        while let Some(u) = r.next_unit() {
            out.push((u.line, String::from_utf8_lossy(u.bytes).into_owned()));
        }
        out
    }

    #[test]
    fn json_lines_and_blank_lines() {
        let u = units_of("{\"a\":1}\n\n  {\"b\":2}  \n{\"c\":3}");
        assert_eq!(u, vec![(1, "{\"a\":1}".into()), (3, "{\"b\":2}".into()), (4, "{\"c\":3}".into())]);
    }

    #[test]
    fn pretty_printed_document_is_one_unit() {
        let doc = "{\n  \"records\": [\n    {\n      \"time\": \"x{\"\n    },\n    {}\n  ]\n}\n{\"after\":1}\n";
        let u = units_of(doc);
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].0, 1);
        assert!(serde_json::from_str::<serde_json::Value>(&u[0].1).is_ok());
        assert_eq!(u[1], (9, "{\"after\":1}".into()));
    }

    #[test]
    fn unbalanced_opening_line_loses_nothing_after_it() {
        let u = units_of("{\"time\": \"2021\",\n{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(u, vec![(1, "{\"time\": \"2021\",".into()), (2, "{\"a\":1}".into()), (3, "{\"b\":2}".into())]);
    }

    #[test]
    fn gzip_by_magic_and_archive_chains() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("c/resourceId=/X/DATABASEACCOUNTS/A");
        for h in ["00", "01"] {
            let d = base.join(format!("y=2021/m=08/d=01/h={h}/m=00"));
            std::fs::create_dir_all(&d).unwrap();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(format!("{{\"h\":\"{h}\"}}\n").as_bytes()).unwrap();
            std::fs::write(d.join("PT1H.json"), gz.finish().unwrap()).unwrap();
        }
        std::fs::write(dir.path().join("other.json"), "{}\n").unwrap();
        std::fs::write(dir.path().join("README.md"), "# not logs\n").unwrap();
        let (streams, faults) = collect_streams(&[dir.path().to_path_buf()]).unwrap();
        assert!(faults.is_empty());
        assert_eq!(streams.len(), 2);
        let InputStream::Files(chain) = &streams[0] else { panic!() };
        assert_eq!(chain.len(), 2);
        let mut r = UnitReader::new(streams[0].clone(), 1 << 20);
        let mut seen = Vec::new();
        while let Some(u) = r.next_unit() {
            seen.push(String::from_utf8_lossy(u.bytes).into_owned());
        }
        assert_eq!(seen, vec!["{\"h\":\"00\"}", "{\"h\":\"01\"}"]);
        assert!(collect_streams(&[dir.path().join("nope")]).is_err());
    }

    /// A stream read (not mapped) across many refills of the block: lines cut by every
    /// refill, a line longer than two blocks (the block grows), a last line without its
    /// newline, then a mapped file.
    #[test]
    fn a_read_stream_gives_every_line_across_refills() {
        let dir = tempfile::tempdir().unwrap();
        let mut want: Vec<String> =
            (0..120_000).map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 97))).collect();
        want.insert(60_000, format!("{{\"long\":\"{}\"}}", "y".repeat(2 * BLOCK + 12_345)));
        want.push("{\"last\":true}".into());
        let text = want.join("\n");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let (a, b) = (dir.path().join("a.json.gz"), dir.path().join("b.json"));
        std::fs::write(&a, gz.finish().unwrap()).unwrap();
        std::fs::write(&b, "{\"mapped\":1}\n").unwrap();
        want.push("{\"mapped\":1}".into());
        let mut r = UnitReader::new(InputStream::Files(vec![a, b]), 64 << 20);
        let mut seen = Vec::new();
        while let Some(u) = r.next_unit() {
            assert!(!u.too_large);
            seen.push(String::from_utf8_lossy(u.bytes).into_owned());
        }
        assert_eq!(seen.len(), want.len());
        for (i, (s, w)) in seen.iter().zip(&want).enumerate() {
            assert!(s == w, "unit {i}: {} bytes, want {}", s.len(), w.len());
        }
        assert!(r.take_faults().is_empty());
    }

    #[test]
    fn a_gzip_file_cut_short_gives_what_precedes_the_damage_and_the_next_file() {
        let dir = tempfile::tempdir().unwrap();
        let lines: String = (0..5000).map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i % 97))).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(lines.as_bytes()).unwrap();
        let whole = gz.finish().unwrap();
        let cut = dir.path().join("a-cut.json.gz");
        std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
        let good = dir.path().join("b-good.json");
        std::fs::write(&good, "{\"after\":1}\n").unwrap();
        let mut r = UnitReader::new(InputStream::Files(vec![cut.clone(), good]), 1 << 20);
        let mut units = Vec::new();
        while let Some(u) = r.next_unit() {
            units.push(String::from_utf8_lossy(u.bytes).into_owned());
        }
        let faults = r.take_faults();
        assert_eq!(faults.len(), 1, "{faults:?}");
        assert_eq!(faults[0].reason, Malformed::TruncatedInput);
        // Every whole line before the damage, in order, then the partial one, then the next file.
        let whole_lines = units.iter().take_while(|u| u.ends_with('}')).count();
        assert!(whole_lines > 100, "{whole_lines}");
        assert!(units[..whole_lines - 1].iter().enumerate().all(|(i, u)| u.starts_with(&format!("{{\"n\":{i},"))));
        assert_eq!(faults[0].location, format!("{}:{}", cut.display(), whole_lines + 1));
        assert_eq!(units.last().map(String::as_str), Some("{\"after\":1}"));
        assert!(r.take_faults().is_empty(), "taken once");
    }

    #[test]
    fn unreadable_files_and_directories_are_faults_not_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), "{\"a\":1}\n").unwrap();
        let gone = dir.path().join("b.json");
        std::fs::write(&gone, "{\"b\":1}\n").unwrap();
        std::fs::write(dir.path().join("c.json"), "{\"c\":1}\n").unwrap();
        let (streams, faults) = collect_streams(&[dir.path().to_path_buf()]).unwrap();
        assert!(faults.is_empty());
        // Removed between the walk and its turn, as in a directory cleaned up mid-replay.
        std::fs::remove_file(&gone).unwrap();
        let mut seen = Vec::new();
        let mut faults = Vec::new();
        for s in streams {
            let mut r = UnitReader::new(s, 1 << 20);
            while let Some(u) = r.next_unit() {
                seen.push(String::from_utf8_lossy(u.bytes).into_owned());
            }
            faults.extend(r.take_faults());
        }
        assert_eq!(seen, ["{\"a\":1}", "{\"c\":1}"]);
        assert_eq!(faults.len(), 1);
        assert_eq!(
            (faults[0].reason, faults[0].location.as_str()),
            (Malformed::UnreadableInput, gone.to_str().unwrap())
        );
        // A sub-directory that cannot be listed: a fault, and its siblings are still read.
        let missing = dir.path().join("no-such-dir");
        let mut files = Vec::new();
        let mut dir_faults = Vec::new();
        walk(&missing, &mut files, &mut dir_faults);
        assert_eq!(dir_faults.len(), 1);
        assert_eq!(dir_faults[0].reason, Malformed::UnreadableInput);
    }
}
