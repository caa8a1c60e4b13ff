//! [`MigrationLog`]: the migration dirty-log client on every block of a
//! run, stopped when the guard drops — whatever ended the run.

use std::sync::Arc;

use vmkit_memory::{DirtyClient, DirtyPages, RamBlock};

/// The `Migration` dirty-log client, started on each block; dropping the
/// guard stops it on every block it started it on.
pub(crate) struct MigrationLog {
    started: Vec<Arc<RamBlock>>,
}

impl MigrationLog {
    /// Starts logging on every block; on a failure (a block already
    /// logging for another migration) the blocks started so far are
    /// stopped again.
    pub(crate) fn start(blocks: &[Arc<RamBlock>]) -> vmkit_memory::Result<MigrationLog> {
        let mut log = MigrationLog {
            started: Vec::with_capacity(blocks.len()),
        };
        for b in blocks {
            b.dirty_log().log_start(DirtyClient::Migration)?;
            log.started.push(Arc::clone(b));
        }
        Ok(log)
    }

    /// Takes and clears each block's dirty pages, in block order.
    pub(crate) fn sync(&self) -> vmkit_memory::Result<Vec<DirtyPages>> {
        self.started
            .iter()
            .map(|b| b.dirty_log().sync(DirtyClient::Migration))
            .collect()
    }
}

impl Drop for MigrationLog {
    fn drop(&mut self) {
        for b in &self.started {
            b.dirty_log().log_stop(DirtyClient::Migration);
        }
    }
}
