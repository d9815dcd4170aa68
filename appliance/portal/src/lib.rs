//! popseed-portal (being written).
