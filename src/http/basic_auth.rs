//! (transport) basic_auth
