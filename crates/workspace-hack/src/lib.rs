//! No code: this crate only unifies dependency features (see Cargo.toml).
