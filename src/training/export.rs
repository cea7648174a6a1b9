//! The point-in-time training set as CSV or Parquet, so a data scientist
//! can check rung's fit with their own tools: one row per example with the
//! visitor, the cut-off, the part it serves, the label, the ladder score and
//! every model feature by name, in the model's order.
//!
//! In CSV, numbers are written in their shortest form that reads back to the
//! same `f64` (Rust's `Display`), so the file holds the very values fitted;
//! Parquet holds the doubles themselves, the cut-off as a UTC timestamp in
//! milliseconds and the label as 0/1.

use std::io::Write;
use std::sync::Arc;

use parquet::basic::{LogicalType, Repetition, TimeUnit, Type as Physical};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

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

/// Writes `prepared` as Parquet (one row group, uncompressed), with the
/// columns [`write_csv`] writes: strings for the visitor and the split, a
/// UTC millisecond timestamp for the cut-off, 0/1 for the label, doubles for
/// the rest.
pub fn write_parquet(
    prepared: &Prepared,
    visitors: &[(String, Vec<Event>)],
    out: impl Write + Send,
) -> parquet::errors::Result<()> {
    let column = |name: &str, physical: Physical, logical: Option<LogicalType>| {
        Type::primitive_type_builder(name, physical)
            .with_repetition(Repetition::REQUIRED)
            .with_logical_type(logical)
            .build()
            .map(Arc::new)
    };
    let mut fields = vec![
        column(
            "visitor_id",
            Physical::BYTE_ARRAY,
            Some(LogicalType::String),
        )?,
        column(
            "cutoff",
            Physical::INT64,
            Some(LogicalType::timestamp(true, TimeUnit::MILLIS)),
        )?,
        column("split", Physical::BYTE_ARRAY, Some(LogicalType::String))?,
        column("label", Physical::INT32, None)?,
        column("ladder_score", Physical::DOUBLE, None)?,
    ];
    for name in &prepared.names {
        fields.push(column(name, Physical::DOUBLE, None)?);
    }
    let schema = Arc::new(
        Type::group_type_builder("examples")
            .with_fields(fields)
            .build()?,
    );
    let mut writer =
        SerializedFileWriter::new(out, schema, Arc::new(WriterProperties::builder().build()))?;
    let ex = &prepared.examples;
    let strings = |f: &dyn Fn(usize) -> String| -> Vec<ByteArray> {
        (0..ex.len())
            .map(|i| ByteArray::from(f(i).into_bytes()))
            .collect()
    };
    let mut group = writer.next_row_group()?;
    let mut index = 0;
    while let Some(mut col) = group.next_column()? {
        match index {
            0 => {
                let v = strings(&|i| visitors[ex.visitor[i]].0.clone());
                col.typed::<ByteArrayType>().write_batch(&v, None, None)?;
            }
            1 => {
                // Features are as of the millisecond before the cut-off.
                let v: Vec<i64> = ex
                    .as_of
                    .iter()
                    .map(|t| t.saturating_add_millis(1).as_unix_millis())
                    .collect();
                col.typed::<Int64Type>().write_batch(&v, None, None)?;
            }
            2 => {
                let v = strings(&|i| prepared.parts[i].name().into_owned());
                col.typed::<ByteArrayType>().write_batch(&v, None, None)?;
            }
            3 => {
                let v: Vec<i32> = ex.y.iter().map(|&y| i32::from(y)).collect();
                col.typed::<Int32Type>().write_batch(&v, None, None)?;
            }
            4 => {
                col.typed::<DoubleType>()
                    .write_batch(&ex.ladder_score, None, None)?;
            }
            k => {
                let v = ex.x.column(k - LEADING_COLUMNS.len()).to_vec();
                col.typed::<DoubleType>().write_batch(&v, None, None)?;
            }
        }
        col.close()?;
        index += 1;
    }
    group.close()?;
    writer.close()?;
    Ok(())
}
