//! [`RecordTable`]: small durable records another component keeps beside the store's own
//! (the box's prewarm jobs), one named table each. The store owns the database; a component
//! sees only its table, with string keys and opaque values, and every write is durable when it
//! returns. The store's own tables cannot be opened this way.

use crate::error::{Result, StoreError};

/// One named table of records.
#[derive(Clone)]
pub struct RecordTable {
    tree: sled::Tree,
}

impl RecordTable {
    pub(crate) fn new(tree: sled::Tree) -> Self {
        RecordTable { tree }
    }

    /// Every record, in key order. Keys that are not UTF-8 are shown lossily.
    pub fn entries(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.tree
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Writes one record; durable when this returns.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.put_many([(key, value)])
    }

    /// Writes several records with one flush; durable when this returns.
    pub fn put_many<'a>(&self, records: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<()> {
        let mut n = 0;
        for (k, v) in records {
            self.tree.insert(k.as_bytes(), v)?;
            n += 1;
        }
        if n > 0 {
            self.tree.flush().map_err(StoreError::Index)?;
        }
        Ok(())
    }

    /// Removes a record (absent is fine); durable when this returns.
    pub fn remove(&self, key: &str) -> Result<()> {
        self.tree.remove(key.as_bytes())?;
        self.tree.flush()?;
        Ok(())
    }
}
