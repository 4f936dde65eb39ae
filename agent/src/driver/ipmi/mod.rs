//! IPMI over LAN (RMCP+) driver (issue #7). Not implemented yet.

use groundtruth_proto::v1::DeviceReport;

use super::{DriverError, PollCx};
use crate::target::IpmiTarget;

/// Polls a BMC over IPMI once.
///
/// # Errors
/// Always, until issue #7 lands.
#[allow(clippy::unused_async)]
pub async fn poll(_t: &IpmiTarget, _cx: &PollCx) -> Result<DeviceReport, DriverError> {
    Err(DriverError::Unsupported("ipmi polling (issue #7)"))
}
