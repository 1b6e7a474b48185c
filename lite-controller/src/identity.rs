//! The identity role (Linkerd's identity controller): the CA that certifies
//! proxies' keys for their `NAMESPACE/SERVICEACCOUNT` identity.
//!
//! - `ca`: CA material, rotation, leaf issuance.
//! - `csr`: parsing and verifying proxies' CSRs.

pub mod ca;
pub mod csr;
