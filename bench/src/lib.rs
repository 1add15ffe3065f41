//! The side-by-side benchmark of issue 6: the demo's programs against what the older demo ran
//! (nginx with the staticfile buildpack's settings, nginx `proxy_pass`, a `sleep` loop with
//! curl), in one run on one machine, with every contender started, loaded and measured the
//! same way.

pub mod config;
pub mod nginx;
pub mod probe;
pub mod procs;
pub mod recorder;
pub mod relay;
pub mod report;
pub mod run;
pub mod schedule;
pub mod wrk;
