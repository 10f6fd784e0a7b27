//! Progress for long work: a spinner line per step on a terminal, plain
//! timestamped lines elsewhere (CI logs).
