//! The tollgate proxy-wasm filter (work in progress).
