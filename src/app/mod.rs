//! The use-cases. For now: getting callbacks into the inbox, and out of it to their handlers.

pub mod dispatch;
pub mod ingest;
