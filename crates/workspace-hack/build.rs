// Empty: a build script gives [build-dependencies] a place, so the features
// of crates that proc-macros use are unified too (see Cargo.toml).
fn main() {}
