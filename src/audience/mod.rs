//! Audiences for marketing tools: the segment language (JSON and a small
//! text form), its evaluation against one visitor, and funnel tallies. All
//! pure; [`crate::engine`] runs them over the stored visitors.

pub mod definition;
pub mod evaluate;
pub mod funnel;
pub mod text;
