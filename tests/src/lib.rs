//! Support kit for herd integration tests.
