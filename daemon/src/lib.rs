//! deepstackd: a face recognition server that speaks DeepStack's face API.
//!
//! A request's way through the crate: `http` (routes, forms, errors) -> `vision` (decode,
//! detect, align, embed, compare) -> `gallery` (SQLite + in-memory index) -> JSON.

pub mod budget;
pub mod config;
pub mod dot;
pub mod gallery;
pub mod http;
pub mod inference;
pub mod memory;
pub mod recent_recorder;
pub mod service;
pub mod stage_times;
pub mod vision;
