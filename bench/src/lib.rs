//! The side-by-side benchmark: the demo's programs against the peers a user would pick instead,
//! tuned for the job (nginx, HAProxy, and Envoy, the mesh's own proxy), and against what the
//! older demo ran (nginx with the staticfile buildpack's settings, nginx `proxy_pass`, a `sleep`
//! loop with curl), in one run on one machine, pinned and unpinned, with every contender
//! started, loaded and measured the same way.

pub mod canned;
pub mod config;
pub mod envoy;
pub mod floor;
pub mod haproxy;
pub mod hyper_relay;
pub mod listen;
pub mod nginx;
pub mod probe;
pub mod procs;
pub mod recorder;
pub mod relay;
pub mod report;
pub mod run;
pub mod schedule;
pub mod verdict;
pub mod wrk;
