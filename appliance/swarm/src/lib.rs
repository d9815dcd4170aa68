//! popseed-swarm (being written).
