//! Builds storage and the HTTP server from the settings and owns shutdown.
