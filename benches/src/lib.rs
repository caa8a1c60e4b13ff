//! Criterion benchmarks of the vmkit core live in `benches/`.
