//! (transport) web_config
