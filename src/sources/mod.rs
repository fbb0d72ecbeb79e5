//! Sources: where records come from. Each yields *units*: the bytes of one JSON value (a
//! record, an envelope, or a whole pre-2018 blob) with the location it came from.

pub mod align;
pub mod file;
pub mod kafka;
pub mod table;

pub use file::{collect_streams, InputFault, InputStream, SourceError, UnitReader};
pub use table::{table_format, TableError, TableFormat, TableReader};
