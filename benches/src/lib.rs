//! Hosts pimesh's criterion benchmarks (see `benches/` and README.md) and
//! their shared helper.
//!
//! Layout:
//! - `criterion_ratios`: ratio tables for the criterion benches.

pub mod criterion_ratios;
