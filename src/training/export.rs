//! The point-in-time training set as CSV, so a data scientist can check
//! rung's fit with their own tools: one row per example with the visitor,
//! the cut-off, the part it serves, the label, the ladder score and every
//! model feature by name, in the model's order.
//!
//! Numbers are written in their shortest form that reads back to the same
//! `f64` (Rust's `Display`), so the file holds the very values fitted.

use std::io::Write;

use crate::domain::Event;

use super::pipeline::Prepared;

/// The columns before the features.
pub const LEADING_COLUMNS: [&str; 5] = ["visitor_id", "cutoff", "split", "label", "ladder_score"];

/// Writes `prepared` as CSV; `visitors` is the log the examples were built
/// from (examples name their visitor by position in it).
pub fn write_csv(
    prepared: &Prepared,
    visitors: &[(String, Vec<Event>)],
    out: impl Write,
) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(
        LEADING_COLUMNS
            .iter()
            .copied()
            .chain(prepared.names.iter().map(String::as_str)),
    )?;
    let ex = &prepared.examples;
    let mut row: Vec<String> = Vec::with_capacity(LEADING_COLUMNS.len() + prepared.names.len());
    for (i, features) in ex.x.rows().into_iter().enumerate() {
        row.clear();
        row.push(visitors[ex.visitor[i]].0.clone());
        // Features are as of the millisecond before the cut-off.
        row.push(ex.as_of[i].saturating_add_millis(1).to_rfc3339());
        row.push(prepared.parts[i].name().into_owned());
        row.push(u8::from(ex.y[i]).to_string());
        row.push(ex.ladder_score[i].to_string());
        row.extend(features.iter().map(f64::to_string));
        w.write_record(&row)?;
    }
    w.flush()?;
    Ok(())
}
