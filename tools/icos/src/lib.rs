//! Building blocks of icos disk images: every function here is a pure function of its inputs, so
//! that two builds of the same sources give the same bytes.

pub mod output;
pub mod seed;
pub mod sha256sums;
