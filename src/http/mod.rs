//! HTTP: the only module that imports warp and hyper.
