//! popseed-fetch: fills the piece store from origin seeds.
pub mod scheduler;
