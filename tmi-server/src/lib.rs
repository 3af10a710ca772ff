//! The TMI server library.
