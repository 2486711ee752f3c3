//! (transport) listener
