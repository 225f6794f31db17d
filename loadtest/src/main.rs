//! `voxrelay-loadtest`: the load generator for voxrelay.
//!
//! For now this crate only proves that the workspace wiring works: it links the `voxrelay` library
//! and prints what it will do. The load generator itself (N concurrent simulated Twilio calls
//! against a proxy, with the simulated upstream in echo mode) is built on `voxrelay::sim`.

fn main() {
    println!(
        "voxrelay-loadtest {}: not implemented yet; see the observability issue",
        voxrelay::VERSION
    );
}
