//! `cpm simulate` through the library: 300 virtual users with two devices
//! each over the in-process memory transport for 5 seconds, then the report.
//!
//!     cargo run --example simulate

use cpm::simulate::{run, SimOptions, SimTransport};

fn main() -> anyhow::Result<()> {
    let report = run(&SimOptions {
        users: 300,
        devices: 2,
        rate: 100.0,
        duration: 5.0,
        transport: SimTransport::Memory,
        ..Default::default()
    })?;
    print!("{report}");
    anyhow::ensure!(report.ok(), "{} invariant violation(s)", report.violation_count);
    Ok(())
}
