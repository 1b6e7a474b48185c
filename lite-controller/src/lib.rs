//! `pimesh-controller`: pimesh's control plane in one process (`pimesh
//! controller`) and the operator CLI. See DESIGN.md "The control plane".
//!
//! Layout:
//! - `store`: the sled database (the only module that knows sled).
//! - `crypto`: SHA-256, random bytes, hex, constant-time comparison (ring).
//! - `identity`: the CA: trust anchors, issuer, rotation, CSRs, leaves,
//!   issued-serial records.
//! - `token`: join tokens (standalone mode) and their operator API types.

pub mod crypto;
pub mod identity;
pub mod store;
pub mod token;
