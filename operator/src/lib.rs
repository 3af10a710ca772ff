//! The TMI operator library.
