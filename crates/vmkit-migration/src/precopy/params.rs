//! [`PrecopyParams`]: the policy of one precopy run, as plain data.

use std::time::Duration;

use crate::savevm::SaveOptions;

/// QEMU's default `max-bandwidth`: 128 MiB/s.
pub const DEFAULT_MAX_BANDWIDTH: u64 = 128 << 20;
/// QEMU's default `downtime-limit`: 300 ms.
pub const DEFAULT_DOWNTIME_LIMIT: Duration = Duration::from_millis(300);
/// Default bound on iterative passes before switchover is forced.
pub const DEFAULT_MAX_PASSES: u32 = 30;

/// How a precopy run sends and when it switches over. `max_bandwidth` and
/// `downtime_limit` may change while a run goes
/// ([`PrecopyControl::set_params`](super::PrecopyControl::set_params));
/// the run reads them between batches, as QEMU applies
/// `migrate-set-parameters` to a running migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrecopyParams {
    /// Bytes per second the stream may use; 0 = unlimited. Applies to
    /// the passes before switchover; the final pass after the source
    /// stops is not limited (QEMU lifts the limit there too).
    pub max_bandwidth: u64,
    /// The longest pause the source may take: switchover happens once the
    /// remaining dirty bytes are below what the measured bandwidth sends
    /// in this time.
    pub downtime_limit: Duration,
    /// Safety bound: after this many passes (the first, full one
    /// included) switchover happens whatever remains. At least 1.
    pub max_passes: u32,
    /// Footers and trailer, as for [`save`](crate::savevm::save).
    pub stream: SaveOptions,
    /// QEMU's `return-path` capability: the destination is asked to
    /// answer on the connection, and the run completes only once it said
    /// it loaded the stream (the transport must be a socket).
    pub return_path: bool,
}

impl Default for PrecopyParams {
    fn default() -> Self {
        PrecopyParams {
            max_bandwidth: DEFAULT_MAX_BANDWIDTH,
            downtime_limit: DEFAULT_DOWNTIME_LIMIT,
            max_passes: DEFAULT_MAX_PASSES,
            stream: SaveOptions::default(),
            return_path: false,
        }
    }
}
