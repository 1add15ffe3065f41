//! The resilience suite, one test binary: faults, load and bad input against the demo's three
//! programs (each file below is a module). `README.md` lists the figures it proves.

mod bad_input;
mod caller_faults;
mod caller_huge_bodies;
mod fuzz;
mod hello_cf_load;
mod proxy_hostile_clients;
mod proxy_hostile_upstream;
mod proxy_sigterm;
mod support;
