//! Modbus TCP and RTU driver (issue #5): register maps as data files, block reads planned from
//! the map. Not implemented yet.

use groundtruth_proto::v1::DeviceReport;

use super::{DriverError, PollCx};
use crate::target::ModbusTarget;

/// Polls a Modbus device once.
///
/// # Errors
/// Always, until issue #5 lands.
#[allow(clippy::unused_async)]
pub async fn poll(_t: &ModbusTarget, _cx: &PollCx) -> Result<DeviceReport, DriverError> {
    Err(DriverError::Unsupported("modbus polling (issue #5)"))
}
