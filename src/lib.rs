//! nlpkit: train NLP models from YAML recipes on the Burn deep-learning framework.
//!
//! Data flows one way: a recipe ([`recipe`]) selects a backend ([`backend`]), data
//! ([`data`]), a model ([`models`]) and a task ([`tasks`]); the training loop ([`train`]) runs
//! the task and writes an experiment folder ([`experiment`]) that evaluation and generation
//! ([`eval`]) read back. `docs/architecture.md` describes the layout.

pub mod backend;
pub mod cli;
pub mod commands;
pub mod data;
pub mod distributed;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod hf;
pub mod loss;
pub mod models;
pub mod recipe;
pub mod rng;
pub mod tasks;
pub mod train;
