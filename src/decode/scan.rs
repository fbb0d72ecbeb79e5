//! The direct scanner: a unit read straight from its bytes, without simd-json's tape.
//!
//! Nearly every unit is a record, or an envelope of records, whose values are plain strings
//! and small numbers. [`Scan::scan`] first indexes the unit's quotes in one vector pass (when
//! it has no backslash or control character, each string ends at the next quote), then checks
//! it as JSON in one pass and notes, for each field the decoder reads, where its value is:
//! nothing is copied, unescaped or put on a tape. Only then are the records normalized, from
//! those notes.
//!
//! The scanner reads a strict subset of JSON and gives up on anything outside it: a string
//! with an escape or a control character, a number with an exponent, more than 18 digits
//! before its point or 15 after it, `-0`, nesting deeper than [`MAX_DEPTH`], a top-level value
//! that is not an object, any syntax error. Giving up costs the pass so far; the decoder then
//! parses the unit with simd-json as before (`Decoder::decode`). Within the subset, the fields
//! read are those simd-json's tape gives, value for value (the last of a key given twice
//! wins, numbers have the same value and the same text), so the items decoded are the same
//! whichever reader answered. The unit's UTF-8 is checked by the caller after the scan.
//! Tests: `tests.rs` (`the_scanner_and_the_tape_agree`) and the fuzz target `decode`
//! (`src/fuzzing.rs`), which decode every input both ways.

use super::raw::{field_of, Field, RawRecord, Value, VALUE_FIELDS};
use super::{normalize, Decoded, Malformed};

/// Nesting the scanner follows; deeper units go to simd-json.
const MAX_DEPTH: u32 = 32;
/// Digits before a number's point: 18 always fit an `i64`.
const MAX_INT_DIGITS: usize = 18;
/// Digits after a number's point.
const MAX_FRACTION_DIGITS: usize = 15;
/// Significant digits of a number with a point, read as a value. With at most 15 of them and
/// at most 15 fraction digits the number is an integer below 2^53 divided by a power of ten
/// below 10^22, both exact as `f64`: one division, rounded once, which simd-json's fast path
/// and Rust's `parse` both compute, so they give the same `f64`.
const MAX_FLOAT_DIGITS: usize = 15;

/// The scanner gave up: the unit is outside its subset (or not JSON at all).
struct GiveUp;

type Scanned<T> = Result<T, GiveUp>;

/// A value read, as positions in the unit (no lifetime: the notes are kept from unit to unit).
#[derive(Clone, Copy, Debug, Default)]
enum Leaf {
    /// The key is not in the object.
    #[default]
    Missing,
    /// A string's contents: start and end offsets.
    Str(u32, u32),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    Container,
}

impl Leaf {
    #[inline]
    fn value(self, text: &str) -> Option<Value<'_>> {
        Some(match self {
            Leaf::Missing => return None,
            Leaf::Str(a, b) => Value::Str(text.get(a as usize..b as usize)?),
            Leaf::Int(i) => Value::I64(i),
            Leaf::Float(f) => Value::F64(f),
            Leaf::Bool(b) => Value::Bool(b),
            Leaf::Null => Value::Null,
            Leaf::Container => Value::Container,
        })
    }
}

/// The value fields of one object, by [`Field`] number.
#[derive(Clone, Copy, Debug, Default)]
struct Fields([Leaf; VALUE_FIELDS]);

impl Fields {
    fn record<'a>(&self, text: &'a str) -> RawRecord<'a> {
        RawRecord::from_fields(|f| self.0.get(f as usize).and_then(|leaf| leaf.value(text)))
    }

    fn slot(&mut self, f: Field) -> Option<&mut Leaf> {
        self.0.get_mut(f as usize)
    }
}

/// A record: its fields and, when its (last) `properties` is an object, that object's.
#[derive(Clone, Debug, Default)]
struct Obj {
    fields: Fields,
    props: Option<Fields>,
}

impl Obj {
    fn decode<'a>(&self, text: &'a str, index: Option<usize>) -> Decoded<'a> {
        let rec = self.fields.record(text);
        let props = self.props.as_ref().map(|p| p.record(text));
        normalize(&rec, props.as_ref(), index)
    }
}

/// What the last unit scanned holds; its buffers are kept for the next.
#[derive(Debug, Default)]
pub(super) struct Scan {
    top: Obj,
    /// The top level's (last) `records`: absent, not an array (`Some(false)`), or the array
    /// whose elements are `items` (`None`: an element that is not an object).
    records: Option<bool>,
    items: Vec<Option<Obj>>,
    /// The offsets of the unit's quotes, in order, when it is plain ([`index_quotes`]): every
    /// one of them opens or closes a string, so a string's end is the next one, read without a
    /// search.
    quotes: Vec<u32>,
    /// The unit last scanned is plain ASCII (every byte below 0x80), so valid UTF-8.
    ascii: bool,
}

impl Scan {
    /// Scans `unit`: true when it is inside the subset (its items are then ready for
    /// [`Scan::emit`]), false when the caller must parse it otherwise.
    pub(super) fn scan(&mut self, unit: &[u8]) -> bool {
        self.top = Obj::default();
        self.records = None;
        self.items.clear();
        if u32::try_from(unit.len()).is_err() {
            return false;
        }
        let Scan { top, records, items, quotes, ascii } = self;
        let (plain, is_ascii) = index_quotes(unit, quotes);
        *ascii = is_ascii;
        let mut c = Cursor { b: unit, i: 0, plain, quotes, q: 0 };
        c.ws();
        if c.peek() != Some(b'{') {
            return false;
        }
        let read = c.object(0, |c, f, depth| match f {
            Field::Properties => c.properties(depth, &mut top.props),
            Field::Records if c.peek() == Some(b'[') => {
                items.clear();
                c.array(depth, |c, depth| {
                    if c.peek() == Some(b'{') {
                        let mut rec = Obj::default();
                        c.record(depth, &mut rec)?;
                        items.push(Some(rec));
                    } else {
                        c.skip(depth)?;
                        items.push(None);
                    }
                    Ok(())
                })?;
                *records = Some(true);
                Ok(())
            }
            Field::Records => {
                *records = Some(false);
                c.skip(depth)
            }
            f => c.field(depth, top.fields.slot(f)),
        });
        if read.is_err() {
            return false;
        }
        c.ws();
        c.i == unit.len()
    }

    /// The unit last scanned (`unit`) as text, or `None` when it is not UTF-8. A plain ASCII
    /// unit (nearly every one) is not checked again: the scan saw every byte below 0x80.
    pub(super) fn text<'u>(&self, unit: &'u [u8]) -> Option<&'u str> {
        if self.ascii {
            debug_assert!(unit.is_ascii());
            // SAFETY: `self.ascii` was set by the scan of this very unit (the caller passes the
            // unit it scanned), and holds only when every byte of it is below 0x80: ASCII, which
            // is valid UTF-8.
            return Some(unsafe { std::str::from_utf8_unchecked(unit) });
        }
        std::str::from_utf8(unit).ok()
    }

    /// The items of the unit last scanned (`text` is that unit, checked as UTF-8): what
    /// simd-json's tape gives for it (`decode::walk_unit`).
    pub(super) fn emit<'a>(&self, text: &'a str, emit: &mut impl FnMut(Decoded<'a>)) {
        match self.records {
            None => emit(self.top.decode(text, None)),
            Some(false) => emit(Decoded::Malformed { reason: Malformed::NotAnObject, index: None }),
            Some(true) => {
                for (index, item) in self.items.iter().enumerate() {
                    emit(match item {
                        Some(rec) => rec.decode(text, Some(index)),
                        None => Decoded::Malformed { reason: Malformed::NotAnObject, index: Some(index) },
                    });
                }
            }
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The bytes of `v` (eight) that are zero, as their high bits. The lowest flagged byte is
/// always exact (a false flag can only appear above a true one), which is all [`find`] uses.
#[inline(always)]
fn zero_bytes(v: u64) -> u64 {
    v.wrapping_sub(ONES) & !v & HIGHS
}

/// The position of the first byte `stop` accepts in `b` at or after `i` (`b.len()` when there
/// is none): eight bytes at a time (`stops` flags them in a little-endian word, the lowest
/// flag exact), then one. (SSE2, sixteen at a time, measured slower on these strings, most
/// of them shorter than 40 bytes.)
#[inline(always)]
fn find(b: &[u8], mut i: usize, stops: impl Fn(u64) -> u64, stop: impl Fn(u8) -> bool) -> usize {
    while let Some(chunk) = b.get(i..i + 8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else { break };
        let flags = stops(u64::from_le_bytes(word));
        if flags != 0 {
            return i + flags.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if stop(c) {
            return i;
        }
        i += 1;
    }
    b.len()
}

/// The first quote, backslash or control character at or after `i`: where a string's plain
/// run ends.
#[inline(always)]
fn find_stop(b: &[u8], i: usize) -> usize {
    find(
        b,
        i,
        |w| {
            zero_bytes(w ^ (ONES * b'"' as u64))
                | zero_bytes(w ^ (ONES * b'\\' as u64))
                | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS)
        },
        |c| c == b'"' || c == b'\\' || c < 0x20,
    )
}

/// Whether `unit` is plain: neither a backslash nor a control character (a line of JSON nearly
/// always), and whether it is ASCII. A plain unit's strings end at their next quote, and
/// `quotes` is set to the offsets of all its quotes (empty when it is not plain). One pass
/// over the unit, 64 bytes at a time (SSE2 on x86_64: four 16-byte compares a block), then
/// one step per quote.
fn index_quotes(unit: &[u8], quotes: &mut Vec<u32>) -> (bool, bool) {
    quotes.clear();
    let mut blocks = unit.chunks_exact(64);
    let (mut bad, mut high) = (0u64, 0u64);
    let mut base = 0u32;
    for block in &mut blocks {
        let m = block_masks(block);
        bad |= m.bad;
        high |= m.high;
        push_bits(quotes, base, m.quotes);
        base += 64;
    }
    let m = tail_masks(blocks.remainder());
    bad |= m.bad;
    high |= m.high;
    push_bits(quotes, base, m.quotes);
    if bad != 0 {
        quotes.clear();
    }
    (bad == 0, high == 0)
}

/// A block's bytes of three kinds, as bit masks (bit `k`: byte `k`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Masks {
    /// Quotes.
    quotes: u64,
    /// Backslashes and control characters (below 0x20).
    bad: u64,
    /// Bytes from 0x80 (not ASCII).
    high: u64,
}

/// The offsets `base + k` of the bits `k` set in `mask`, appended in order.
#[inline(always)]
fn push_bits(quotes: &mut Vec<u32>, base: u32, mut mask: u64) {
    while mask != 0 {
        quotes.push(base + mask.trailing_zeros());
        mask &= mask - 1;
    }
}

/// A block's [`Masks`] (at most 64 bytes), one byte at a time: for the tail of a unit, and the
/// reference the vector version is tested against.
#[inline]
fn tail_masks(block: &[u8]) -> Masks {
    let mut m = Masks { quotes: 0, bad: 0, high: 0 };
    for (k, &c) in block.iter().enumerate().take(64) {
        m.quotes |= u64::from(c == b'"') << k;
        m.bad |= u64::from(c == b'\\' || c < 0x20) << k;
        m.high |= u64::from(c >= 0x80) << k;
    }
    m
}

/// [`tail_masks`] of a whole 64-byte block.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block_masks(block: &[u8]) -> Masks {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    debug_assert_eq!(block.len(), 64);
    let mut m = Masks { quotes: 0, bad: 0, high: 0 };
    for (k, lane) in block.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of x86_64's baseline, so these intrinsics are always available;
        // the load reads the 16 bytes of `lane` (unaligned loads allowed).
        let (q, b, h) = unsafe {
            let v = _mm_loadu_si128(lane.as_ptr().cast::<__m128i>());
            let q = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // c <= 0x1f exactly when min(c, 0x1f) == c (unsigned).
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
            // A byte's high bit is what `movemask` takes: the bytes from 0x80.
            (
                _mm_movemask_epi8(q) as u16,
                _mm_movemask_epi8(_mm_or_si128(backslash, control)) as u16,
                _mm_movemask_epi8(v) as u16,
            )
        };
        m.quotes |= u64::from(q) << (16 * k);
        m.bad |= u64::from(b) << (16 * k);
        m.high |= u64::from(h) << (16 * k);
    }
    m
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn block_masks(block: &[u8]) -> Masks {
    tail_masks(block)
}

struct Cursor<'b> {
    b: &'b [u8],
    i: usize,
    /// `b` is plain ([`index_quotes`]).
    plain: bool,
    /// When `plain`, the offsets of `b`'s quotes ([`index_quotes`]), and how many of them are
    /// behind `i` (`q`): only [`Cursor::string`] moves past a quote.
    quotes: &'b [u32],
    q: usize,
}

impl Cursor<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Scanned<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(GiveUp)
        }
    }

    /// A string (at its opening quote): its contents' offsets. A backslash or a control
    /// character gives up.
    #[inline(always)]
    fn string(&mut self) -> Scanned<(u32, u32)> {
        if self.plain {
            // Every quote of a plain unit opens or closes a string, and every one before `i`
            // has been read: this string is the next two.
            let (Some(&open), Some(&close)) = (self.quotes.get(self.q), self.quotes.get(self.q + 1)) else {
                return Err(GiveUp);
            };
            if open as usize != self.i {
                return Err(GiveUp);
            }
            self.q += 2;
            self.i = close as usize + 1;
            return Ok((open + 1, close));
        }
        self.eat(b'"')?;
        let start = self.i;
        self.i = find_stop(self.b, self.i);
        if self.peek() != Some(b'"') {
            return Err(GiveUp);
        }
        self.i += 1;
        // The unit's length fits a u32 (checked in `Scan::scan`).
        Ok((start as u32, (self.i - 1) as u32))
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// A number in the subset: `-?(0|[1-9][0-9]*)(\.[0-9]+)?` within the digit limits; its value
    /// when `read` (not `-0`, and at most [`MAX_FLOAT_DIGITS`] with a point), else only checked
    /// ([`Leaf::Missing`]: a key this program does not read).
    fn number(&mut self, read: bool) -> Scanned<Leaf> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let int_start = self.i;
        let int_digits = match self.peek() {
            Some(b'0') => {
                self.i += 1;
                1
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(GiveUp),
        };
        if int_digits > MAX_INT_DIGITS {
            return Err(GiveUp);
        }
        let int_end = self.i;
        let fraction = if self.peek() == Some(b'.') {
            self.i += 1;
            match self.digits() {
                0 => return Err(GiveUp),
                n if n > MAX_FRACTION_DIGITS => return Err(GiveUp),
                n => Some(n),
            }
        } else {
            None
        };
        if let Some(b'e' | b'E') = self.peek() {
            return Err(GiveUp);
        }
        if !read {
            return Ok(Leaf::Missing);
        }
        let int_text = &self.b[int_start..int_end];
        match fraction {
            None => {
                if negative && int_text == b"0" {
                    return Err(GiveUp);
                }
                let v = int_text.iter().fold(0i64, |v, d| v * 10 + i64::from(d - b'0'));
                Ok(Leaf::Int(if negative { -v } else { v }))
            }
            Some(frac) => {
                let significant = if int_text == b"0" { frac } else { int_digits + frac };
                if significant > MAX_FLOAT_DIGITS {
                    return Err(GiveUp);
                }
                let text = std::str::from_utf8(&self.b[start..self.i]).map_err(|_| GiveUp)?;
                text.parse::<f64>().map(Leaf::Float).map_err(|_| GiveUp)
            }
        }
    }

    fn literal(&mut self, word: &[u8], leaf: Leaf) -> Scanned<Leaf> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(leaf)
        } else {
            Err(GiveUp)
        }
    }

    /// A value other than a string, as a leaf when `read` (an object or an array is checked
    /// and skipped).
    #[inline(never)]
    fn other_leaf(&mut self, depth: u32, read: bool) -> Scanned<Leaf> {
        match self.peek() {
            Some(b'"') => self.string().map(|(a, b)| Leaf::Str(a, b)),
            Some(b'-' | b'0'..=b'9') => self.number(read),
            Some(b't') => self.literal(b"true", Leaf::Bool(true)),
            Some(b'f') => self.literal(b"false", Leaf::Bool(false)),
            Some(b'n') => self.literal(b"null", Leaf::Null),
            Some(b'{') => self.object(depth, |c, _, depth| c.skip(depth)).map(|()| Leaf::Container),
            Some(b'[') => self.array(depth, |c, depth| c.skip(depth)).map(|()| Leaf::Container),
            _ => Err(GiveUp),
        }
    }

    /// Any value, checked and passed over. A string, nearly every value, is read inline.
    #[inline(always)]
    fn skip(&mut self, depth: u32) -> Scanned<()> {
        self.field(depth, None)
    }

    /// A value for the field `slot` holds (none: a key this program does not read). A string
    /// is written to the slot where it is read (a `Leaf` passed back through the stack was
    /// measured to stall on reading it back whole).
    #[inline(always)]
    fn field(&mut self, depth: u32, slot: Option<&mut Leaf>) -> Scanned<()> {
        if self.peek() == Some(b'"') {
            let (a, b) = self.string()?;
            if let Some(slot) = slot {
                *slot = Leaf::Str(a, b);
            }
            return Ok(());
        }
        let leaf = self.other_leaf(depth, slot.is_some())?;
        if let Some(slot) = slot {
            *slot = leaf;
        }
        Ok(())
    }

    /// Opens a container at `open` one level deeper than `depth`: the new depth, and whether
    /// it is empty (its `close` already read).
    #[inline(always)]
    fn open(&mut self, depth: u32, open: u8, close: u8) -> Scanned<(u32, bool)> {
        let depth = depth + 1;
        if depth > MAX_DEPTH {
            return Err(GiveUp);
        }
        self.eat(open)?;
        self.ws();
        let empty = self.peek() == Some(close);
        if empty {
            self.i += 1;
        }
        Ok((depth, empty))
    }

    /// After a container's element: true at a `,` (another element follows), false at its
    /// `close` (read).
    #[inline(always)]
    fn more(&mut self, close: u8) -> Scanned<bool> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                self.ws();
                Ok(true)
            }
            Some(c) if c == close => {
                self.i += 1;
                Ok(false)
            }
            _ => Err(GiveUp),
        }
    }

    /// An object (at its `{`), `on_key(cursor, field, depth)` reading each value.
    fn object(&mut self, depth: u32, mut on_key: impl FnMut(&mut Self, Field, u32) -> Scanned<()>) -> Scanned<()> {
        let (depth, empty) = self.open(depth, b'{', b'}')?;
        let mut more = !empty;
        while more {
            let (a, b) = self.string()?;
            let f = field_of(&self.b[a as usize..b as usize]);
            self.ws();
            self.eat(b':')?;
            self.ws();
            on_key(self, f, depth)?;
            more = self.more(b'}')?;
        }
        Ok(())
    }

    /// An array (at its `[`), `on_item(cursor, depth)` reading each element.
    fn array(&mut self, depth: u32, mut on_item: impl FnMut(&mut Self, u32) -> Scanned<()>) -> Scanned<()> {
        let (depth, empty) = self.open(depth, b'[', b']')?;
        let mut more = !empty;
        while more {
            on_item(self, depth)?;
            more = self.more(b']')?;
        }
        Ok(())
    }

    /// An element of `records` that is an object: a record, with its `properties`.
    fn record(&mut self, depth: u32, rec: &mut Obj) -> Scanned<()> {
        let Obj { fields, props } = rec;
        self.object(depth, |c, f, depth| match f {
            Field::Properties => c.properties(depth, props),
            f => c.field(depth, fields.slot(f)),
        })
    }

    /// The value of a `properties` key: read when it is an object (the last one wins; one
    /// that is not an object leaves none).
    fn properties(&mut self, depth: u32, props: &mut Option<Fields>) -> Scanned<()> {
        if self.peek() != Some(b'{') {
            *props = None;
            return self.skip(depth);
        }
        let mut fields = Fields::default();
        self.object(depth, |c, f, depth| c.field(depth, fields.slot(f)))?;
        *props = Some(fields);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The vector masks are the byte-at-a-time ones, and the index lists every quote of a
        /// plain unit, whatever its length (whole blocks and a tail).
        #[test]
        fn the_quote_index_is_every_quote_of_a_plain_unit(
            unit in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), Just(b'\n'), Just(0x1f_u8), Just(0x20_u8), Just(0x7f_u8), Just(0x80_u8), Just(0xff_u8), any::<u8>()], 0..300),
        ) {
            for block in unit.chunks_exact(64) {
                prop_assert_eq!(block_masks(block), tail_masks(block));
            }
            let mut quotes = vec![7];
            let (plain, ascii) = index_quotes(&unit, &mut quotes);
            prop_assert_eq!(plain, !unit.iter().any(|&c| c == b'\\' || c < 0x20));
            prop_assert_eq!(ascii, unit.is_ascii());
            let expected: Vec<u32> =
                if plain { (0..unit.len() as u32).filter(|&i| unit[i as usize] == b'"').collect() } else { Vec::new() };
            prop_assert_eq!(quotes, expected);
        }
    }
}
