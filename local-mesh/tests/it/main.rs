//! local-mesh's integration tests, one test binary (each file below is a module). Tests that
//! run a whole demo take `support::ONE_MESH_AT_A_TIME`, so two demos never share the machine's
//! two cores and their timing checks stay meaningful.

mod apply;
mod cli;
mod end_to_end;
mod envoy_config;
mod patterns;
mod set_env;
mod support;
mod xds;
