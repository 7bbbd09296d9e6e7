//! The dispatcher against fake providers on loopback.
