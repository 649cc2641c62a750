//! Definition numbers handed out of reserved blocks
//! ([`GrpcPersistenceProvider::with_sequence_block`](crate::provider::GrpcPersistenceProvider::with_sequence_block)).
//!
//! A WFE host names each workflow it starts `{definition}-{n}` and asks the store for `n` first
//! (`next_definition_sequence`), one round trip and one durable commit per start before the
//! create itself. With blocks, one `NextDefinitionSequence` call reserves `size` consecutive
//! numbers (its `count`) and the next `size - 1` starts of that definition are answered here.
//! The server never gives those numbers to anyone else, so names stay unique across hosts; what
//! changes is that numbers of different hosts interleave (a name's number no longer tells the
//! order of creation across hosts) and numbers a host reserved but did not use are never used
//! (gaps: after a restart, or when more than [`MAX_BLOCK_DEFINITIONS`] definitions are in use).

use std::collections::HashMap;

use tokio::sync::Mutex;

/// Largest block one call may reserve: the server's limit of `count` (larger sizes are cut to
/// it).
pub const MAX_SEQUENCE_BLOCK: u32 = 10_000;

/// Definitions whose blocks are kept at once; a block of another definition then replaces one
/// of them (the rest of the replaced block is never used).
pub const MAX_BLOCK_DEFINITIONS: usize = 1024;

/// The blocks of one provider and its clones: per definition, the next number to hand out and
/// the end of its block (exclusive).
#[derive(Debug, Default)]
pub(crate) struct SequenceBlocks {
    size: u32,
    blocks: Mutex<HashMap<String, (u64, u64)>>,
}

impl SequenceBlocks {
    /// Blocks of `size` numbers (0 and 1: none, every number is a call); at most
    /// [`MAX_SEQUENCE_BLOCK`].
    pub(crate) fn new(size: u32) -> Self {
        Self {
            size: size.min(MAX_SEQUENCE_BLOCK),
            blocks: Mutex::default(),
        }
    }

    /// The block size in use (0 or 1: no blocks).
    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    /// The next number of `definition_id`: from its block, or the first of a new block that
    /// `reserve(size)` fetches. Callers of one provider wait for each other while a block is
    /// fetched (one call per block, not one per caller); a failed fetch keeps nothing.
    pub(crate) async fn next<F, Fut>(
        &self,
        definition_id: &str,
        reserve: F,
    ) -> wfe_core::Result<u64>
    where
        F: FnOnce(u32) -> Fut,
        Fut: std::future::Future<Output = wfe_core::Result<u64>>,
    {
        if self.size <= 1 {
            return reserve(1).await;
        }
        let mut blocks = self.blocks.lock().await;
        if let Some((next, end)) = blocks.get_mut(definition_id)
            && *next < *end
        {
            let n = *next;
            *next += 1;
            return Ok(n);
        }
        let first = reserve(self.size).await?;
        if blocks.len() >= MAX_BLOCK_DEFINITIONS && !blocks.contains_key(definition_id) {
            let replaced = blocks.keys().next().cloned();
            if let Some(replaced) = replaced {
                blocks.remove(&replaced);
            }
        }
        blocks.insert(
            definition_id.to_string(),
            (first + 1, first + u64::from(self.size)),
        );
        Ok(first)
    }
}
