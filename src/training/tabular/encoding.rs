//! How a table's columns become features, and the encoder that turns a
//! file's rows into them, for training and for new rows alike.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::read::{parse_number, signed_log1p};
use super::{RowProblem, TableError};
use crate::scoring::Interactions;

/// How one input column becomes features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnEncoding {
    /// One feature: the value, or ln(1 + x) when `log1p`. A negative value
    /// met later in a log-scaled column becomes −ln(1 + |x|), so transforming
    /// new rows never fails on it.
    Numeric { column: String, log1p: bool },
    /// One feature per level, named `column=level`: 1 where the value equals
    /// the level, else 0. A value not seen in training is all zeros.
    Categorical { column: String, levels: Vec<String> },
}

impl ColumnEncoding {
    pub fn column(&self) -> &str {
        match self {
            ColumnEncoding::Numeric { column, .. } | ColumnEncoding::Categorical { column, .. } => {
                column
            }
        }
    }

    fn width(&self) -> usize {
        match self {
            ColumnEncoding::Numeric { .. } => 1,
            ColumnEncoding::Categorical { levels, .. } => levels.len(),
        }
    }
}

/// The features of a table, in order; reusable on new rows through
/// [`Encoding::bind`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encoding {
    pub columns: Vec<ColumnEncoding>,
    /// Pairwise products of the numeric features, after the columns'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactions: Option<Interactions>,
}

impl Encoding {
    pub fn width(&self) -> usize {
        self.base_width() + self.interactions.as_ref().map_or(0, Interactions::width)
    }

    /// The columns' own features, before any products.
    fn base_width(&self) -> usize {
        self.columns.iter().map(ColumnEncoding::width).sum()
    }

    /// Positions of the numeric features among the columns' features.
    pub(super) fn numeric_offsets(&self) -> Vec<usize> {
        let mut offsets = Vec::new();
        let mut at = 0;
        for c in &self.columns {
            if let ColumnEncoding::Numeric { .. } = c {
                offsets.push(at);
            }
            at += c.width();
        }
        offsets
    }

    pub fn feature_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(self.width());
        let mut numeric = Vec::new();
        for c in &self.columns {
            match c {
                ColumnEncoding::Numeric { column, .. } => {
                    names.push(column.clone());
                    numeric.push(column.as_str());
                }
                ColumnEncoding::Categorical { column, levels } => {
                    names.extend(levels.iter().map(|l| format!("{column}={l}")));
                }
            }
        }
        if self.interactions.is_some() {
            names.extend(Interactions::names(&numeric));
        }
        names
    }

    /// Matches the encoding to a header by column name, so new files may
    /// order their columns differently, add others, or leave out the label.
    pub fn bind(&self, header: &[String]) -> Result<RowEncoder<'_>, TableError> {
        let position: HashMap<&str, usize> = header
            .iter()
            .enumerate()
            .map(|(i, h)| (h.as_str(), i))
            .collect();
        let mut slots = Vec::with_capacity(self.columns.len());
        let mut offset = 0;
        for c in &self.columns {
            let index = *position
                .get(c.column())
                .ok_or_else(|| TableError::MissingColumn {
                    column: c.column().to_string(),
                })?;
            slots.push(match c {
                ColumnEncoding::Numeric { column, log1p } => Slot::Numeric {
                    index,
                    offset,
                    column,
                    log1p: *log1p,
                },
                ColumnEncoding::Categorical { levels, .. } => Slot::Categorical {
                    index,
                    offset,
                    levels: levels
                        .iter()
                        .enumerate()
                        .map(|(i, l)| (l.as_str(), i))
                        .collect(),
                },
            });
            offset += c.width();
        }
        Ok(RowEncoder {
            fields: header.len(),
            width: self.width(),
            slots,
            products: self
                .interactions
                .as_ref()
                .map(|i| (self.numeric_offsets(), i, offset)),
        })
    }
}

/// An [`Encoding`] bound to one header: turns that file's rows into feature
/// vectors. Training and any later transform go through it.
#[derive(Debug)]
pub struct RowEncoder<'a> {
    fields: usize,
    width: usize,
    slots: Vec<Slot<'a>>,
    /// With interactions: where the numeric features are, their
    /// standardization, and where the products start.
    products: Option<(Vec<usize>, &'a Interactions, usize)>,
}

#[derive(Debug)]
pub(super) enum Slot<'a> {
    Numeric {
        index: usize,
        offset: usize,
        column: &'a str,
        log1p: bool,
    },
    Categorical {
        index: usize,
        offset: usize,
        levels: HashMap<&'a str, usize>,
    },
}

impl RowEncoder<'_> {
    pub fn width(&self) -> usize {
        self.width
    }

    /// The features of one row, split into fields as the header was.
    pub fn encode<S: AsRef<str>>(&self, fields: &[S]) -> Result<Vec<f64>, RowProblem> {
        let mut out = vec![0.0; self.width];
        self.encode_into(fields, &mut out)?;
        Ok(out)
    }

    pub(super) fn encode_into<S: AsRef<str>>(
        &self,
        fields: &[S],
        out: &mut [f64],
    ) -> Result<(), RowProblem> {
        if fields.len() != self.fields {
            return Err(RowProblem::FieldCount {
                expected: self.fields,
                found: fields.len(),
            });
        }
        out.fill(0.0);
        for slot in &self.slots {
            match slot {
                Slot::Numeric {
                    index,
                    offset,
                    column,
                    log1p,
                } => {
                    let raw = fields[*index].as_ref();
                    let x = parse_number(raw).ok_or_else(|| RowProblem::Number {
                        column: column.to_string(),
                        value: raw.to_string(),
                    })?;
                    out[*offset] = if *log1p { signed_log1p(x) } else { x };
                }
                Slot::Categorical {
                    index,
                    offset,
                    levels,
                } => {
                    if let Some(&l) = levels.get(fields[*index].as_ref().trim()) {
                        out[offset + l] = 1.0;
                    }
                }
            }
        }
        if let Some((numeric, products, start)) = &self.products {
            let paired: Vec<f64> = numeric.iter().map(|&at| out[at]).collect();
            products.products_into(&paired, &mut out[*start..]);
        }
        Ok(())
    }
}
