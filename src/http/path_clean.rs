//! (transport) path_clean
