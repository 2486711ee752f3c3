//! The update loop: per cluster, fetch the units of a window from its resource manager,
//! let the updaters add metrics, and write everything in one transaction.

pub mod backup;
pub mod window;

pub use window::Window;
