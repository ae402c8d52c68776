//! Parsed GraphQL documents, kept by the SHA-256 of their text.
//!
//! Clients send the same few documents over and over, and parsing one costs
//! more CPU than the primary-key read it asks for. Apollo's automatic
//! persisted queries name documents by the same hash, so one cache serves
//! both: a document sent as text can afterwards be named by its hash alone.
//!
//! A kept document is spared only the parsing and what the gateway learns
//! from a document alone ([`Checked`]). async-graphql still validates it
//! against each request's variables, and every check that depends on who
//! asks (introspection for operators, rate limits) still runs.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument};
use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::config::Settings;

/// A document's SHA-256.
pub type Hash = [u8; 32];

pub fn hash(query: &str) -> Hash {
    Sha256::digest(query.as_bytes()).into()
}

/// `hex` (64 hex digits, any case) as a hash.
pub fn from_hex(hex: &str) -> Option<Hash> {
    let mut hash = [0u8; 32];
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    for (byte, pair) in hash.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(hash)
}

/// A parsed document and what the gateway learns from it alone.
pub struct Checked {
    pub document: ExecutableDocument,
    /// Over one of the size limits: the refusal and the limit.
    pub oversized: Option<(String, usize)>,
    pub mutations: usize,
    pub introspects: bool,
    /// The name of its one operation, when it has one and it is named.
    pub operation_name: Option<String>,
}

impl Checked {
    /// Parses `query`; `None` when it does not parse (execution then says
    /// why, as async-graphql words it).
    pub fn parse(query: &str, settings: &Settings) -> Option<Checked> {
        crate::limits::off_the_workers(query.len(), || {
            let document = async_graphql::parser::parse_query(query).ok()?;
            Some(Checked {
                oversized: crate::limits::oversized(&document, settings),
                mutations: crate::limits::mutations(&document),
                introspects: crate::limits::introspects(&document),
                operation_name: only_operation_name(&document),
                document,
            })
        })
    }
}

fn only_operation_name(document: &ExecutableDocument) -> Option<String> {
    match &document.operations {
        DocumentOperations::Multiple(operations) if operations.len() == 1 => {
            operations.keys().next().map(|name| name.to_string())
        }
        _ => None,
    }
}

/// The documents kept, the least recently used going first.
pub struct Documents {
    kept: Mutex<LruCache<Hash, Arc<Checked>>>,
    /// The longest document text kept: with the count, a bound on what any
    /// client can make the cache hold.
    max_bytes: usize,
}

impl Documents {
    pub fn new(entries: NonZeroUsize, max_bytes: usize) -> Self {
        Documents {
            kept: Mutex::new(LruCache::new(entries)),
            max_bytes,
        }
    }

    pub fn get(&self, hash: &Hash) -> Option<Arc<Checked>> {
        self.lock().get(hash).cloned()
    }

    /// Keeps the document of `len` bytes that ran (parsed and validated)
    /// without a request error; a larger one than the bound is not kept.
    pub fn keep(&self, hash: Hash, len: usize, checked: Arc<Checked>) {
        if len <= self.max_bytes {
            self.lock().put(hash, checked);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Hash, Arc<Checked>>> {
        // Nothing is left half-done under this lock: a panic elsewhere
        // cannot have broken the cache.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_reads_back_from_its_hex_in_any_case() {
        let hash = hash("{ hello }");
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(from_hex(&hex), Some(hash));
        assert_eq!(from_hex(&hex.to_uppercase()), Some(hash));
        for bad in ["", "abc", &"z".repeat(64), &"0".repeat(65), &"é".repeat(32)] {
            assert_eq!(from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_least_recently_used_goes_and_large_documents_are_not_kept() {
        let documents = Documents::new(NonZeroUsize::new(2).unwrap(), 20);
        let checked = |q: &str| {
            Arc::new(Checked {
                document: async_graphql::parser::parse_query(q).unwrap(),
                oversized: None,
                mutations: 0,
                introspects: false,
                operation_name: None,
            })
        };
        for q in ["{ a }", "{ b }"] {
            documents.keep(hash(q), q.len(), checked(q));
        }
        assert!(documents.get(&hash("{ a }")).is_some());
        documents.keep(hash("{ c }"), 5, checked("{ c }"));
        assert!(documents.get(&hash("{ b }")).is_none(), "b was used least");
        assert!(documents.get(&hash("{ a }")).is_some());
        let large = "{ a b c d e f g h i j }";
        documents.keep(hash(large), large.len(), checked(large));
        assert!(documents.get(&hash(large)).is_none());
    }
}
