//! Hosts pimesh's criterion benchmarks (see `benches/` and README.md); the library itself is empty.
