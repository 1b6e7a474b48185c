//! The mesh lab: pods simulated as network namespaces on a Linux bridge,
//! each running `pimesh-proxy init`, a meshed `pimesh-proxy` (under its own
//! uid) and an app, next to a standalone `pimesh controller` — as a library
//! for tests and as the `pimesh-lab` command. Everything it creates is named
//! `pml-<id>-…` and removed on exit, on Ctrl-C, on a failed test, or (after
//! a SIGKILL) at the next start. Needs root.
//!
//! Layout:
//! - `spec`: what a pod runs (ports, identity, service, app command);
//! - `net`: names, the lab's /24, bridge, namespaces, veths, teardown and
//!   removal of stale labs;
//! - `process`: children inside a pod (namespace, uid, death with the lab,
//!   logs) and connections from inside a pod;
//! - `lab`: bringing a lab up and down (`lab/pods`: init, proxy, app of a
//!   pod; `lab/config`: binaries, options);
//! - `kube`: the test control plane (etcd, kube-apiserver,
//!   kube-controller-manager on loopback) for `pimesh-lab kube up` and tests;
//!   `kube/node`: the node agent, a minimal kubelet running the API
//!   server's pods as lab pods;
//! - `kube_lab`: a meshed cluster on one machine (control plane, pimesh
//!   installed, the controller in the lab, the node agent);
//! - `loopback`: the same pods on 127.0.0.1 without root (explicit proxy mode);
//! - `demo`: the emojivoto-style demo application's pods;
//! - `metrics`: reading the proxies' golden metrics;
//! - `forward`: the controller's operator API on the host's 127.0.0.1;
//! - `report`: `pimesh stat` / `pimesh edges` against the lab's controller;
//! - `interrupt`: SIGINT/SIGTERM/SIGHUP as a flag every wait checks.

pub mod demo;
pub mod forward;
pub mod interrupt;
pub mod kube;
pub mod kube_lab;
pub mod lab;
pub mod loopback;
pub mod metrics;
pub mod net;
pub mod process;
pub mod report;
pub mod spec;

pub use lab::{Bins, Error, KubeMode, Lab, Options};
pub use spec::PodSpec;
