//! Tabular training mode: a CSV feature table a data scientist already has,
//! in; a cross-validated logistic model for evaluation and export, out. It
//! does not feed the event-scoring service, whose features come from
//! `scoring::features`.
//!
//! The steps: read the file keeping 1-based line numbers, so every complaint
//! can name its line; decide each column's encoding (numbers, possibly
//! log-scaled, or one-hot levels); encode rows with the same [`RowEncoder`]
//! that later transforms new rows; stratified, shuffled k-fold
//! cross-validation over a small grid of L2 strengths; one final fit on every
//! row with the strength that had the lowest out-of-fold log loss.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use ndarray::{Array2, Axis, ShapeBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::Millis;
use crate::scoring::model::sigmoid;
pub use crate::scoring::Interactions;

use super::fit::{interactions_of, FitOptions, Fitted};
use super::metrics::{brier, log_loss, pr_auc, roc_auc};
use super::TrainError;

/// The artifact format this module writes and reads.
pub const FORMAT: &str = "rung.table-model.v1";

/// How far the alpha search may widen past the grid's edges.
const WIDEST_ALPHA: (f64, f64) = (1e-4, 1e6);

#[derive(Debug, Clone, PartialEq)]
pub struct TableOptions {
    pub path: PathBuf,
    /// The label column: true/false, 1/0 or yes/no, any case.
    pub label: String,
    /// Columns one-hot encoded even though their values are numbers: codes
    /// such as a browser or region id, whose order means nothing.
    pub categorical: Vec<String>,
    /// Columns that must hold numbers: a value that is not one makes its row
    /// malformed, where otherwise it would turn the column categorical.
    pub numeric: Vec<String>,
    /// Columns left out of the model: ids, or anything known only afterwards.
    pub exclude: Vec<String>,
    /// ln(1 + x) for numeric columns with no negative value: counts and
    /// durations are skewed, and the log makes them closer to linear in the
    /// log-odds.
    pub log_scale: bool,
    pub folds: usize,
    /// Shuffles rows into folds.
    pub seed: u64,
    /// Up to this many malformed rows are skipped and counted; one more stops
    /// training with an error naming the first.
    pub max_bad_rows: usize,
    /// A categorical column with more distinct values than this is refused:
    /// usually a numeric column with a stray non-number, or an id.
    pub max_levels: usize,
    /// L2 strengths tried (linfa's alpha, scikit-learn's 1/C, on standardized
    /// features); the lowest cross-validated log loss wins, the first on a tie.
    pub alphas: Vec<f64>,
    pub max_iterations: u64,
    /// See [`FitOptions::tolerance_per_row`].
    pub tolerance_per_row: f64,
    /// Add every pairwise product of the standardized numeric features
    /// ([`Interactions`]).
    pub interactions: bool,
}

impl TableOptions {
    /// The defaults: every column as its values suggest, non-negative
    /// numbers log-scaled, at most 100 levels per categorical column, 5
    /// folds, seed 0, no malformed row tolerated, L2 strengths 1, 10, 100
    /// and 1000, 500 iterations.
    pub fn new(path: impl Into<PathBuf>, label: impl Into<String>) -> Self {
        TableOptions {
            path: path.into(),
            label: label.into(),
            categorical: Vec::new(),
            numeric: Vec::new(),
            exclude: Vec::new(),
            log_scale: true,
            folds: 5,
            seed: 0,
            max_bad_rows: 0,
            max_levels: 100,
            alphas: vec![1.0, 10.0, 100.0, 1000.0],
            max_iterations: 500,
            tolerance_per_row: 1e-5,
            interactions: false,
        }
    }
}

/// Why a data row cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RowProblem {
    FieldCount {
        expected: usize,
        found: usize,
    },
    /// A quoted field that does not close, or text after its closing quote.
    Quote,
    Label {
        value: String,
    },
    Number {
        column: String,
        value: String,
    },
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowProblem::FieldCount { expected, found } => {
                write!(f, "expected {expected} fields, found {found}")
            }
            RowProblem::Quote => write!(f, "a quoted field is not closed properly"),
            RowProblem::Label { value } => write!(
                f,
                "label {:?} is not one of true/false, 1/0, yes/no",
                shorten(value)
            ),
            RowProblem::Number { column, value } => {
                write!(f, "column {column:?}: {:?} is not a number", shorten(value))
            }
        }
    }
}

/// A malformed row: its 1-based line in the file and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRow {
    pub line: usize,
    pub problem: RowProblem,
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line} is not UTF-8 text")]
    NotUtf8 { path: String, line: usize },
    #[error("{path}: the file is empty")]
    Empty { path: String },
    #[error("{path}: line {line} looks like data, not a header (every field is a number); the first line must name the columns")]
    NoHeader { path: String, line: usize },
    #[error("{path}: header (line {line}): {problem}")]
    BadHeader {
        path: String,
        line: usize,
        problem: String,
    },
    #[error("{path}: no label column {label:?}; the header has {columns}")]
    MissingLabel {
        path: String,
        label: String,
        columns: String,
    },
    #[error("{path}: `{option}` names column {column:?}, which the header does not have")]
    UnknownColumn {
        path: String,
        option: &'static str,
        column: String,
    },
    #[error("invalid options: {0}")]
    Options(String),
    #[error(
        "{path}: {count} malformed row(s), more than max_bad_rows ({max}); the first is {first}"
    )]
    TooManyBadRows {
        path: String,
        count: usize,
        max: usize,
        first: BadRow,
    },
    #[error("{path}: no data rows after the header")]
    NoRows { path: String },
    #[error("{path}: no feature columns besides the label")]
    NoFeatures { path: String },
    #[error("{path}: column {column:?} has {levels} distinct values, more than max_levels ({max}); it is categorical because {reason}. List it in `numeric` or `exclude`, or raise max_levels")]
    TooManyLevels {
        path: String,
        column: String,
        levels: usize,
        max: usize,
        reason: String,
    },
    #[error("{path}: {positives} positive and {negatives} negative rows; {folds}-fold cross-validation needs at least {folds} of each")]
    TooFewRows {
        path: String,
        positives: usize,
        negatives: usize,
        folds: usize,
    },
    #[error(
        "{path}: feature {feature:?} has values too large to standardize; log-scale or rescale it"
    )]
    TooLarge { path: String, feature: String },
    #[error("fitting with alpha {alpha} on {part}: {source}")]
    Fit {
        alpha: f64,
        part: String,
        #[source]
        source: TrainError,
    },
    #[error("the header has no column {column:?}, which the encoding needs")]
    MissingColumn { column: String },
    #[error("{0}")]
    Row(BadRow),
    #[error("{path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a {FORMAT} artifact: {0}")]
    Artifact(String),
}

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
    fn numeric_offsets(&self) -> Vec<usize> {
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
enum Slot<'a> {
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

    fn encode_into<S: AsRef<str>>(&self, fields: &[S], out: &mut [f64]) -> Result<(), RowProblem> {
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

/// true, 1, yes → true; false, 0, no → false; any case, surrounding spaces
/// ignored.
pub fn parse_label(value: &str) -> Option<bool> {
    let v = value.trim();
    if ["true", "1", "yes"]
        .iter()
        .any(|t| v.eq_ignore_ascii_case(t))
    {
        Some(true)
    } else if ["false", "0", "no"]
        .iter()
        .any(|t| v.eq_ignore_ascii_case(t))
    {
        Some(false)
    } else {
        None
    }
}

/// A finite number; "NaN", "inf" and the empty string are not numbers here.
fn parse_number(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

fn signed_log1p(x: f64) -> f64 {
    if x < 0.0 {
        -(-x).ln_1p()
    } else {
        x.ln_1p()
    }
}

/// Values quoted in messages are cut to 60 characters, so a runaway field
/// cannot flood the log.
fn shorten(value: &str) -> Cow<'_, str> {
    const MAX: usize = 60;
    match value.char_indices().nth(MAX) {
        Some((cut, _)) => Cow::Owned(format!("{}…", &value[..cut])),
        None => Cow::Borrowed(value),
    }
}

/// Splits one line on commas, fields trimmed. A field wrapped in double
/// quotes may hold commas and doubled quotes (as R and spreadsheets write
/// them); `None` for a quote that does not close or is followed by text.
fn split_fields(line: &str) -> Option<Vec<Cow<'_, str>>> {
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        let start = rest.trim_start();
        if let Some(quoted) = start.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices().peekable();
            let end = loop {
                match chars.next() {
                    None => return None,
                    Some((i, '"')) => {
                        if chars.peek().map(|&(_, c)| c) == Some('"') {
                            value.push('"');
                            chars.next();
                        } else {
                            break i + 1;
                        }
                    }
                    Some((_, c)) => value.push(c),
                }
            };
            fields.push(Cow::Owned(value));
            let after = quoted[end..].trim_start();
            if after.is_empty() {
                return Some(fields);
            }
            rest = after.strip_prefix(',')?;
        } else {
            match rest.split_once(',') {
                Some((field, tail)) => {
                    fields.push(Cow::Borrowed(field.trim()));
                    rest = tail;
                }
                None => {
                    fields.push(Cow::Borrowed(rest.trim()));
                    return Some(fields);
                }
            }
        }
    }
}

/// The file's lines with their 1-based numbers, CR of CRLF removed, blank
/// lines left out.
fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty())
}

#[derive(Debug)]
struct Row {
    line: usize,
    fields: Vec<String>,
    label: bool,
}

/// The file as read: header, the rows that parsed, the rows that did not.
#[derive(Debug)]
struct Parsed {
    header: Vec<String>,
    label: usize,
    rows: Vec<Row>,
    bad: Vec<BadRow>,
}

fn decode(path: &str, bytes: &[u8]) -> Result<String, TableError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.strip_prefix('\u{feff}').unwrap_or(text).to_string()),
        Err(e) => {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            Err(TableError::NotUtf8 {
                path: path.to_string(),
                line,
            })
        }
    }
}

fn check_options(opts: &TableOptions) -> Result<(), TableError> {
    let bad = |m: String| Err(TableError::Options(m));
    if opts.label.trim().is_empty() {
        return bad("the label column name is empty".into());
    }
    if opts.folds < 2 {
        return bad(format!("folds is {}; it must be at least 2", opts.folds));
    }
    if opts.alphas.is_empty() {
        return bad("alphas is empty; give at least one L2 strength".into());
    }
    if let Some(a) = opts.alphas.iter().find(|a| !a.is_finite() || **a < 0.0) {
        return bad(format!("alpha {a} is not a finite number ≥ 0"));
    }
    if opts.max_iterations == 0 {
        return bad("max_iterations is 0".into());
    }
    if !(opts.tolerance_per_row.is_finite() && opts.tolerance_per_row > 0.0) {
        return bad(format!(
            "tolerance_per_row {} is not a positive number",
            opts.tolerance_per_row
        ));
    }
    for (option, list) in [
        ("categorical", &opts.categorical),
        ("numeric", &opts.numeric),
        ("exclude", &opts.exclude),
    ] {
        if list.contains(&opts.label) {
            return bad(format!(
                "the label column {:?} is listed in `{option}`",
                opts.label
            ));
        }
    }
    if let Some(c) = opts.categorical.iter().find(|c| opts.numeric.contains(c)) {
        return bad(format!(
            "column {c:?} is listed both in `categorical` and in `numeric`"
        ));
    }
    Ok(())
}

fn parse_table(path: &str, text: &str, opts: &TableOptions) -> Result<Parsed, TableError> {
    let mut lines = numbered_lines(text);
    let Some((header_line, header_text)) = lines.next() else {
        return Err(TableError::Empty {
            path: path.to_string(),
        });
    };
    let bad_header = |problem: String| TableError::BadHeader {
        path: path.to_string(),
        line: header_line,
        problem,
    };
    let header: Vec<String> = split_fields(header_text)
        .ok_or_else(|| bad_header("a quoted column name is not closed properly".into()))?
        .into_iter()
        .map(Cow::into_owned)
        .collect();
    if header.iter().all(|h| parse_number(h).is_some()) {
        return Err(TableError::NoHeader {
            path: path.to_string(),
            line: header_line,
        });
    }
    let mut seen = HashMap::new();
    for (i, h) in header.iter().enumerate() {
        if h.is_empty() {
            return Err(bad_header(format!("column {} has no name", i + 1)));
        }
        if let Some(first) = seen.insert(h.as_str(), i) {
            return Err(bad_header(format!(
                "column {:?} appears twice (columns {} and {})",
                shorten(h),
                first + 1,
                i + 1
            )));
        }
    }
    let Some(&label) = seen.get(opts.label.as_str()) else {
        return Err(TableError::MissingLabel {
            path: path.to_string(),
            label: opts.label.clone(),
            columns: header
                .iter()
                .map(|h| format!("{:?}", shorten(h)))
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    for (option, list) in [
        ("categorical", &opts.categorical),
        ("numeric", &opts.numeric),
        ("exclude", &opts.exclude),
    ] {
        if let Some(c) = list.iter().find(|c| !seen.contains_key(c.as_str())) {
            return Err(TableError::UnknownColumn {
                path: path.to_string(),
                option,
                column: c.clone(),
            });
        }
    }
    let numeric: Vec<(usize, &str)> = opts
        .numeric
        .iter()
        .filter_map(|c| seen.get(c.as_str()).map(|&i| (i, c.as_str())))
        .collect();

    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for (line, text) in lines {
        match parse_row(text, header.len(), label, &numeric) {
            Ok((fields, y)) => rows.push(Row {
                line,
                fields,
                label: y,
            }),
            Err(problem) => bad.push(BadRow { line, problem }),
        }
    }
    Ok(Parsed {
        header,
        label,
        rows,
        bad,
    })
}

fn parse_row(
    text: &str,
    expected: usize,
    label: usize,
    numeric: &[(usize, &str)],
) -> Result<(Vec<String>, bool), RowProblem> {
    let fields = split_fields(text).ok_or(RowProblem::Quote)?;
    if fields.len() != expected {
        return Err(RowProblem::FieldCount {
            expected,
            found: fields.len(),
        });
    }
    let y = parse_label(&fields[label]).ok_or_else(|| RowProblem::Label {
        value: fields[label].to_string(),
    })?;
    for &(i, column) in numeric {
        if parse_number(&fields[i]).is_none() {
            return Err(RowProblem::Number {
                column: column.to_string(),
                value: fields[i].to_string(),
            });
        }
    }
    Ok((fields.into_iter().map(Cow::into_owned).collect(), y))
}

/// Decides each column's encoding from the rows that parsed: forced
/// categorical, forced numeric, else numeric exactly when every value is a
/// number. Levels are sorted by value when all are numbers ("2" before
/// "10"), else as text.
fn plan_encoding(path: &str, parsed: &Parsed, opts: &TableOptions) -> Result<Encoding, TableError> {
    let mut columns = Vec::new();
    for (j, name) in parsed.header.iter().enumerate() {
        if j == parsed.label || opts.exclude.contains(name) {
            continue;
        }
        let values = || {
            parsed
                .rows
                .iter()
                .map(move |r| (r.line, r.fields[j].as_str()))
        };
        let forced_categorical = opts.categorical.contains(name);
        let non_number = if forced_categorical {
            None
        } else {
            values().find(|(_, v)| parse_number(v).is_none())
        };
        if !forced_categorical && (non_number.is_none() || opts.numeric.contains(name)) {
            let log1p =
                opts.log_scale && values().all(|(_, v)| parse_number(v).is_some_and(|x| x >= 0.0));
            columns.push(ColumnEncoding::Numeric {
                column: name.clone(),
                log1p,
            });
            continue;
        }
        let distinct: BTreeSet<&str> = values().map(|(_, v)| v).collect();
        if distinct.len() > opts.max_levels {
            let reason = match non_number {
                Some((line, value)) => format!(
                    "line {line} has {:?}, which is not a number",
                    shorten(value)
                ),
                None => "it is listed in `categorical`".to_string(),
            };
            return Err(TableError::TooManyLevels {
                path: path.to_string(),
                column: name.clone(),
                levels: distinct.len(),
                max: opts.max_levels,
                reason,
            });
        }
        let mut levels: Vec<&str> = distinct.into_iter().collect();
        let as_numbers: Option<Vec<f64>> = levels.iter().map(|l| parse_number(l)).collect();
        if let Some(numbers) = as_numbers {
            let mut paired: Vec<(f64, &str)> = numbers.into_iter().zip(levels).collect();
            paired.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
            levels = paired.into_iter().map(|(_, l)| l).collect();
        }
        columns.push(ColumnEncoding::Categorical {
            column: name.clone(),
            levels: levels.into_iter().map(str::to_string).collect(),
        });
    }
    Ok(Encoding {
        columns,
        interactions: None,
    })
}

/// Fold (0..k) of each row: positives and negatives are shuffled separately
/// and dealt round-robin, so every fold's class counts differ by at most one.
/// The shuffle is SplitMix64 + Fisher–Yates, written out so a seed gives the
/// same folds whatever version of `rand` the crate uses.
pub fn stratified_folds(labels: &[bool], k: usize, seed: u64) -> Vec<usize> {
    let k = k.max(1);
    let mut rng = SplitMix64(seed);
    let mut folds = vec![0; labels.len()];
    let mut dealt = 0;
    for class in [true, false] {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        for i in (1..members.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            members.swap(i, j);
        }
        for &m in &members {
            folds[m] = dealt % k;
            dealt += 1;
        }
    }
    folds
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Cross-validated figures for one L2 strength.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlphaScore {
    pub alpha: f64,
    /// Pooled out-of-fold log loss: what the choice is made on.
    pub log_loss: f64,
    pub roc_auc: Option<f64>,
    pub mean_fold_roc_auc: Option<f64>,
}

/// Cross-validated figures of the chosen L2 strength. They come from the
/// same folds that chose it, so they lean optimistic by the (small) benefit
/// of picking the best of the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableMetrics {
    pub rows: usize,
    pub positives: usize,
    pub base_rate: f64,
    pub bad_rows_skipped: usize,
    pub folds: usize,
    pub seed: u64,
    /// The chosen L2 strength, and every one tried.
    pub alpha: f64,
    pub alpha_search: Vec<AlphaScore>,
    pub fold_roc_auc: Vec<Option<f64>>,
    pub mean_fold_roc_auc: Option<f64>,
    /// Over every row's out-of-fold probability.
    pub pooled_roc_auc: Option<f64>,
    /// Average precision; compare it with `base_rate`, not with 0.5.
    pub pooled_pr_auc: Option<f64>,
    pub pooled_log_loss: f64,
    pub pooled_brier: f64,
}

/// A model fitted on a whole table, for evaluation and export. The event-
/// scoring service does not load it: its features are the table's columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableModelArtifact {
    pub format: String,
    /// `<UTC time>-<12 hex of the content hash>`.
    pub version: String,
    /// RFC 3339.
    pub created_at: String,
    /// The table's file name, and its SHA-256 so the exact data is known.
    pub source: String,
    pub source_sha256: String,
    pub label: String,
    pub encoding: Encoding,
    pub feature_names: Vec<String>,
    pub means: Vec<f64>,
    pub scales: Vec<f64>,
    /// On standardized features, toward the label being true.
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    pub metrics: TableMetrics,
}

impl TableModelArtifact {
    /// Reads an artifact and checks that its parts agree with each other.
    pub fn from_json(text: &str) -> Result<Self, TableError> {
        let a: TableModelArtifact =
            serde_json::from_str(text).map_err(|e| TableError::Artifact(e.to_string()))?;
        let bad = |m: String| Err(TableError::Artifact(m));
        if a.format != FORMAT {
            return bad(format!("format is {:?}", shorten(&a.format)));
        }
        if a.feature_names != a.encoding.feature_names() {
            return bad("feature_names do not match the encoding".into());
        }
        let n = a.feature_names.len();
        if a.means.len() != n || a.scales.len() != n || a.coefficients.len() != n {
            return bad(format!(
                "{n} features but {} means, {} scales, {} coefficients",
                a.means.len(),
                a.scales.len(),
                a.coefficients.len()
            ));
        }
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        if !(finite(&a.means) && finite(&a.coefficients) && a.intercept.is_finite()) {
            return bad("a mean, coefficient or the intercept is not finite".into());
        }
        if a.scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return bad("a scale is not a positive number".into());
        }
        Ok(a)
    }

    /// P(label) for an encoded row (see [`Encoding::bind`]); `None` when the
    /// row's width is not the model's.
    pub fn probability(&self, features: &[f64]) -> Option<f64> {
        if features.len() != self.coefficients.len() {
            return None;
        }
        Some(sigmoid(super::fit::log_odds(
            self.intercept,
            &self.means,
            &self.scales,
            &self.coefficients,
            features,
        )))
    }
}

#[derive(Debug, Clone)]
pub struct TableReport {
    pub artifact: TableModelArtifact,
    /// Rows skipped as malformed (never more than `max_bad_rows`).
    pub bad_rows: Vec<BadRow>,
    /// Each used row's line and its out-of-fold probability under the
    /// chosen alpha: for calibration plots and error analysis.
    pub out_of_fold: Vec<(usize, f64)>,
}

/// Fits with the fused solver, whose evaluation budget ends a fit that
/// linfa-logistic's line search would loop on forever (degenerate or
/// separable parts, which random folds of small tables can produce).
fn fit_guarded(
    x: &Array2<f64>,
    y: &[bool],
    _names: &[String],
    opts: &FitOptions,
) -> Result<Fitted, TrainError> {
    super::solver::fit_fused(x, y, opts)
}

/// Reads `opts.path`, cross-validates, fits on every row.
pub fn train_table(opts: &TableOptions) -> Result<TableReport, TableError> {
    train_table_at(opts, Millis::now())
}

/// [`train_table`] with the creation time given.
pub fn train_table_at(opts: &TableOptions, now: Millis) -> Result<TableReport, TableError> {
    let path = opts.path.display().to_string();
    let bytes = std::fs::read(&opts.path).map_err(|source| TableError::Read {
        path: path.clone(),
        source,
    })?;
    let source = opts
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.clone());
    train_bytes(&path, &source, &bytes, opts, now)
}

fn train_bytes(
    path: &str,
    source: &str,
    bytes: &[u8],
    opts: &TableOptions,
    now: Millis,
) -> Result<TableReport, TableError> {
    check_options(opts)?;
    let text = decode(path, bytes)?;
    let parsed = parse_table(path, &text, opts)?;
    if parsed.bad.len() > opts.max_bad_rows {
        return Err(TableError::TooManyBadRows {
            path: path.to_string(),
            count: parsed.bad.len(),
            max: opts.max_bad_rows,
            first: parsed.bad[0].clone(),
        });
    }
    if parsed.rows.is_empty() {
        return Err(TableError::NoRows {
            path: path.to_string(),
        });
    }
    let mut encoding = plan_encoding(path, &parsed, opts)?;
    if encoding.width() == 0 {
        return Err(TableError::NoFeatures {
            path: path.to_string(),
        });
    }
    let mut x = encode_rows(&encoding, &parsed)?;
    if opts.interactions {
        encoding.interactions = Some(interactions_of(&x, &encoding.numeric_offsets()));
        x = encode_rows(&encoding, &parsed)?;
    }
    let names = encoding.feature_names();
    let y: Vec<bool> = parsed.rows.iter().map(|r| r.label).collect();
    let positives = y.iter().filter(|&&b| b).count();
    let negatives = y.len() - positives;
    if positives.min(negatives) < opts.folds {
        return Err(TableError::TooFewRows {
            path: path.to_string(),
            positives,
            negatives,
            folds: opts.folds,
        });
    }
    check_scalable(path, &x, &names)?;

    let folds = stratified_folds(&y, opts.folds, opts.seed);
    let mut alpha_search: Vec<AlphaScore> = Vec::with_capacity(opts.alphas.len());
    let mut best: Option<(f64, CrossValidation)> = None;
    let mut queue: std::collections::VecDeque<f64> = opts.alphas.iter().copied().collect();
    while let Some(alpha) = queue.pop_front() {
        let cv = cross_validate(&x, &y, &names, &folds, opts, alpha)?;
        let score = AlphaScore {
            alpha,
            log_loss: log_loss(&cv.out_of_fold, &y),
            roc_auc: roc_auc(&cv.out_of_fold, &y),
            mean_fold_roc_auc: mean(&cv.fold_roc_auc),
        };
        if best.as_ref().is_none_or(|(loss, _)| score.log_loss < *loss) {
            best = Some((score.log_loss, cv));
        }
        alpha_search.push(score);
        // The best at an edge of the grid: try tenfold past it.
        if queue.is_empty() {
            let tried: Vec<f64> = alpha_search.iter().map(|a| a.alpha).collect();
            if let Some(next) = best
                .as_ref()
                .and_then(|(_, cv)| super::pipeline::widen(&tried, cv.alpha, WIDEST_ALPHA))
            {
                queue.push_back(next);
            }
        }
    }
    alpha_search.sort_by(|a, b| a.alpha.total_cmp(&b.alpha));
    let all: Vec<usize> = (0..y.len()).collect();
    let Some((_, cv)) = best else {
        return Err(TableError::Options("alphas is empty".into()));
    };
    let fitted = fit_guarded(
        &column_major(&x, &all),
        &y,
        &names,
        &fit_options(opts, cv.alpha),
    )
    .map_err(|source| TableError::Fit {
        alpha: cv.alpha,
        part: "all rows".into(),
        source,
    })?;

    let metrics = TableMetrics {
        rows: y.len(),
        positives,
        base_rate: positives as f64 / y.len() as f64,
        bad_rows_skipped: parsed.bad.len(),
        folds: opts.folds,
        seed: opts.seed,
        alpha: cv.alpha,
        alpha_search,
        mean_fold_roc_auc: mean(&cv.fold_roc_auc),
        fold_roc_auc: cv.fold_roc_auc,
        pooled_roc_auc: roc_auc(&cv.out_of_fold, &y),
        pooled_pr_auc: pr_auc(&cv.out_of_fold, &y),
        pooled_log_loss: log_loss(&cv.out_of_fold, &y),
        pooled_brier: brier(&cv.out_of_fold, &y),
    };
    let mut artifact = TableModelArtifact {
        format: FORMAT.to_string(),
        version: String::new(),
        created_at: now.to_rfc3339(),
        source: source.to_string(),
        source_sha256: format!("{:x}", Sha256::digest(bytes)),
        label: parsed.header[parsed.label].clone(),
        encoding,
        feature_names: names,
        means: fitted.means,
        scales: fitted.scales,
        coefficients: fitted.coefficients,
        intercept: fitted.intercept,
        metrics,
    };
    artifact.version = version_id(&artifact);
    Ok(TableReport {
        artifact,
        out_of_fold: parsed
            .rows
            .iter()
            .map(|r| r.line)
            .zip(cv.out_of_fold)
            .collect(),
        bad_rows: parsed.bad,
    })
}

fn encode_rows(encoding: &Encoding, parsed: &Parsed) -> Result<Array2<f64>, TableError> {
    let encoder = encoding.bind(&parsed.header)?;
    let width = encoder.width();
    let mut data = vec![0.0; parsed.rows.len() * width];
    for (row, out) in parsed.rows.iter().zip(data.chunks_mut(width.max(1))) {
        encoder.encode_into(&row.fields, out).map_err(|problem| {
            TableError::Row(BadRow {
                line: row.line,
                problem,
            })
        })?;
    }
    Array2::from_shape_vec((parsed.rows.len(), width), data)
        .map_err(|e| TableError::Options(format!("internal: {e}")))
}

/// Values so large that their mean or spread overflows would reach the
/// solver as infinities (and `fit`'s standardization would quietly give such
/// a column scale 1); refuse them here with the feature's name.
fn check_scalable(path: &str, x: &Array2<f64>, names: &[String]) -> Result<(), TableError> {
    let n = x.nrows().max(1) as f64;
    for (j, column) in x.axis_iter(Axis(1)).enumerate() {
        let mean = column.sum() / n;
        let variance = column.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        if !(mean.is_finite() && variance.is_finite()) {
            return Err(TableError::TooLarge {
                path: path.to_string(),
                feature: names.get(j).cloned().unwrap_or_default(),
            });
        }
    }
    Ok(())
}

fn fit_options(opts: &TableOptions, alpha: f64) -> FitOptions {
    FitOptions {
        alpha,
        max_iterations: opts.max_iterations,
        tolerance_per_row: opts.tolerance_per_row,
        // Both classes were checked to have at least one row per fold, so
        // every training part holds both; fit's own floor is for the
        // event-history trainer.
        min_positives: 1,
    }
}

struct CrossValidation {
    alpha: f64,
    /// Indexed like the rows.
    out_of_fold: Vec<f64>,
    fold_roc_auc: Vec<Option<f64>>,
}

fn cross_validate(
    x: &Array2<f64>,
    y: &[bool],
    names: &[String],
    folds: &[usize],
    opts: &TableOptions,
    alpha: f64,
) -> Result<CrossValidation, TableError> {
    // Folds are independent fits: run as many at once as there are cores.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, opts.folds.max(1));
    let all: Vec<usize> = (0..opts.folds).collect();
    let mut results = Vec::with_capacity(opts.folds);
    for batch in all.chunks(threads) {
        std::thread::scope(|scope| {
            let running: Vec<_> = batch
                .iter()
                .map(|&f| scope.spawn(move || one_fold(x, y, names, folds, opts, alpha, f)))
                .collect();
            for handle in running {
                match handle.join() {
                    Ok(result) => results.push(result),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
    }
    let mut out_of_fold = vec![0.0; y.len()];
    let mut fold_roc_auc = Vec::with_capacity(opts.folds);
    for result in results {
        let (held, p) = result?;
        let y_held: Vec<bool> = held.iter().map(|&i| y[i]).collect();
        fold_roc_auc.push(roc_auc(&p, &y_held));
        for (&i, p) in held.iter().zip(p) {
            out_of_fold[i] = p;
        }
    }
    Ok(CrossValidation {
        alpha,
        out_of_fold,
        fold_roc_auc,
    })
}

/// Fits on every row outside fold `f`; returns the rows of fold `f` and
/// their probabilities.
fn one_fold(
    x: &Array2<f64>,
    y: &[bool],
    names: &[String],
    folds: &[usize],
    opts: &TableOptions,
    alpha: f64,
    f: usize,
) -> Result<(Vec<usize>, Vec<f64>), TableError> {
    let (held, train): (Vec<usize>, Vec<usize>) = (0..y.len()).partition(|&i| folds[i] == f);
    let y_train: Vec<bool> = train.iter().map(|&i| y[i]).collect();
    let fitted = fit_guarded(
        &column_major(x, &train),
        &y_train,
        names,
        &fit_options(opts, alpha),
    )
    .map_err(|source| TableError::Fit {
        alpha,
        part: format!("fold {} of {}", f + 1, opts.folds),
        source,
    })?;
    let p = held
        .iter()
        .map(|&i| row_probability(&fitted, x, i))
        .collect();
    Ok((held, p))
}

/// The given rows of `x`, stored column by column. linfa's gradient is
/// `xᵀ · r`; with `x` column-major each row of `xᵀ` is contiguous and
/// ndarray takes its fast slice dot product instead of an indexed loop,
/// several times quicker when this crate is built without optimization.
fn column_major(x: &Array2<f64>, rows: &[usize]) -> Array2<f64> {
    let mut out = Array2::zeros((rows.len(), x.ncols()).f());
    for (mut to, from) in out.columns_mut().into_iter().zip(x.columns()) {
        for (t, &i) in to.iter_mut().zip(rows) {
            *t = from[i];
        }
    }
    out
}

fn row_probability(fitted: &Fitted, x: &Array2<f64>, i: usize) -> f64 {
    let row = x.row(i);
    match row.as_slice() {
        Some(r) => fitted.probability(r),
        None => fitted.probability(&row.to_vec()),
    }
}

fn mean(values: &[Option<f64>]) -> Option<f64> {
    let all: Option<Vec<f64>> = values.iter().copied().collect();
    all.filter(|v| !v.is_empty())
        .map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

/// The artifact's version ([`super::files::version_id`]).
fn version_id(a: &TableModelArtifact) -> String {
    let content = serde_json::json!({
        "encoding": a.encoding,
        "means": a.means,
        "scales": a.scales,
        "coefficients": a.coefficients,
        "intercept": a.intercept,
        "label": a.label,
        "source_sha256": a.source_sha256,
    });
    super::files::version_id(&a.created_at, &content)
}

/// Writes the artifact as JSON, atomically ([`super::files`]).
pub fn write_artifact(path: &Path, artifact: &TableModelArtifact) -> Result<(), TableError> {
    let io_error = |source| TableError::Write {
        path: path.display().to_string(),
        source,
    };
    let text =
        serde_json::to_string_pretty(artifact).map_err(|e| io_error(std::io::Error::other(e)))?;
    super::files::write_atomically(path, &text).map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(label: &str) -> TableOptions {
        TableOptions {
            folds: 2,
            alphas: vec![1.0],
            max_iterations: 1000,
            tolerance_per_row: 1e-10,
            ..TableOptions::new("table.csv", label)
        }
    }

    fn train(text: &str, o: &TableOptions) -> Result<TableReport, TableError> {
        train_bytes(
            "table.csv",
            "table.csv",
            text.as_bytes(),
            o,
            Millis::from_unix_millis(1_700_000_000_000),
        )
    }

    /// `n` rows of `row(i)` under `header`, CRLF line ends.
    fn table(header: &str, n: usize, row: impl Fn(usize) -> String) -> String {
        let mut t = format!("{header}\r\n");
        for i in 0..n {
            t.push_str(&row(i));
            t.push_str("\r\n");
        }
        t
    }

    /// A learnable table: x is high for positives, with overlap.
    fn learnable(n: usize) -> String {
        table("x,colour,y", n, |i| {
            let pos = i % 3 == 0;
            let x = if pos { 5 + i % 4 } else { i % 6 };
            let colour = ["red", "blue"][i % 2];
            format!("{x},{colour},{}", if pos { "yes" } else { "no" })
        })
    }

    #[test]
    fn labels_are_read_in_any_case_and_anything_else_is_refused() {
        for t in ["TRUE", "true", "True", "1", "yes", "YES", " yes "] {
            assert_eq!(parse_label(t), Some(true), "{t}");
        }
        for f in ["FALSE", "false", "0", "no", "No"] {
            assert_eq!(parse_label(f), Some(false), "{f}");
        }
        for other in ["", "maybe", "1.0", "y", "2", "-1", "t"] {
            assert_eq!(parse_label(other), None, "{other}");
        }
    }

    #[test]
    fn a_bad_label_is_reported_with_its_line_and_value() {
        let mut text = learnable(20);
        text.push_str("3,red,maybe\r\n");

        let e = train(&text, &opts("y")).unwrap_err();

        // Header is line 1, rows 2..=21, the bad row line 22.
        let message = e.to_string();
        assert!(
            message.contains("line 22") && message.contains("\"maybe\""),
            "{message}"
        );
    }

    #[test]
    fn fields_split_on_commas_and_quoted_fields_may_hold_commas() {
        let f = split_fields(r#" a ,"b, c","say ""hi""",,d"#).unwrap();
        assert_eq!(f, vec!["a", "b, c", r#"say "hi""#, "", "d"]);
        assert_eq!(split_fields(r#"a,"open"#), None);
        assert_eq!(split_fields(r#""a"b,c"#), None);
    }

    #[test]
    fn categorical_columns_are_one_hot_encoded_with_sorted_level_names() {
        // Arrange: colour is text, so categorical; size holds numbers but is
        // forced categorical, and its levels sort by value (2 before 10).
        let text = "colour,size,visits,delta,y\n\
                    red,10,0,-1.5,1\n\
                    blue,2,3,2,0\n\
                    green,10,1,0.5,0\n";
        let o = TableOptions {
            categorical: vec!["size".into()],
            ..opts("y")
        };
        let parsed = parse_table("t.csv", text, &o).unwrap();

        // Act
        let encoding = plan_encoding("t.csv", &parsed, &o).unwrap();
        let x = encode_rows(&encoding, &parsed).unwrap();

        // Assert
        assert_eq!(
            encoding.feature_names(),
            [
                "colour=blue",
                "colour=green",
                "colour=red",
                "size=2",
                "size=10",
                "visits",
                "delta"
            ]
        );
        // visits has no negative value: ln(1 + 0), ln(1 + 3) = ln 4, ln 2;
        // delta has one, so it stays as it is.
        let (ln4, ln2) = (1.386_294_361_119_890_6, std::f64::consts::LN_2);
        let want = [
            [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, -1.5],
            [1.0, 0.0, 0.0, 1.0, 0.0, ln4, 2.0],
            [0.0, 1.0, 0.0, 0.0, 1.0, ln2, 0.5],
        ];
        for (r, row) in want.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                assert!((x[[r, c]] - v).abs() < 1e-15, "[{r}, {c}] {}", x[[r, c]]);
            }
        }
    }

    #[test]
    fn log_scaling_can_be_turned_off() {
        let text = "visits,y\n3,1\n0,0\n";
        let o = TableOptions {
            log_scale: false,
            ..opts("y")
        };
        let parsed = parse_table("t.csv", text, &o).unwrap();
        let encoding = plan_encoding("t.csv", &parsed, &o).unwrap();
        assert_eq!(
            encoding.columns,
            [ColumnEncoding::Numeric {
                column: "visits".into(),
                log1p: false
            }]
        );
    }

    #[test]
    fn the_encoding_transforms_new_rows_by_column_name() {
        let encoding = Encoding {
            columns: vec![
                ColumnEncoding::Categorical {
                    column: "colour".into(),
                    levels: vec!["blue".into(), "red".into()],
                },
                ColumnEncoding::Numeric {
                    column: "visits".into(),
                    log1p: true,
                },
            ],
            interactions: None,
        };
        // Columns in another order, an extra one, no label.
        let header: Vec<String> = ["visits", "other", "colour"].map(String::from).into();
        let encoder = encoding.bind(&header).unwrap();

        assert_eq!(
            encoder.encode(&["1", "x", "red"]).unwrap(),
            [0.0, 1.0, LN_2]
        );
        // An unseen level is all zeros; a negative count keeps its sign.
        assert_eq!(
            encoder.encode(&["-1", "x", "green"]).unwrap(),
            [0.0, 0.0, -LN_2]
        );
        assert_eq!(
            encoder.encode(&["many", "x", "red"]),
            Err(RowProblem::Number {
                column: "visits".into(),
                value: "many".into()
            })
        );
        assert!(matches!(
            encoding.bind(&["visits".to_string()]),
            Err(TableError::MissingColumn { column }) if column == "colour"
        ));
    }

    use std::f64::consts::LN_2;

    #[test]
    fn a_row_with_the_wrong_number_of_fields_is_reported_with_its_line() {
        // Arrange: CRLF, and a blank line 2 that still counts: rows are
        // lines 3 to 22, the short row line 23.
        let mut text = learnable(20).replacen("\r\n", "\r\n\r\n", 1);
        text.push_str("4,red\r\n");

        let e = train(&text, &opts("y")).unwrap_err();

        match &e {
            TableError::TooManyBadRows {
                count: 1,
                max: 0,
                first,
                ..
            } => assert_eq!(
                *first,
                BadRow {
                    line: 23,
                    problem: RowProblem::FieldCount {
                        expected: 3,
                        found: 2
                    }
                }
            ),
            other => panic!("{other}"),
        }
        assert!(
            e.to_string()
                .contains("line 23: expected 3 fields, found 2"),
            "{e}"
        );
    }

    #[test]
    fn a_non_number_in_a_numeric_column_is_a_malformed_row() {
        let mut text = learnable(20);
        text.push_str("lots,red,no\r\n");
        let o = TableOptions {
            numeric: vec!["x".into()],
            ..opts("y")
        };

        let e = train(&text, &o).unwrap_err();

        let message = e.to_string();
        assert!(
            message.contains("line 22")
                && message.contains("column \"x\": \"lots\" is not a number"),
            "{message}"
        );
    }

    #[test]
    fn max_bad_rows_skips_and_counts_up_to_the_limit_and_stops_beyond_it() {
        // Arrange: two bad rows, at lines 5 and 12.
        let mut lines: Vec<String> = learnable(30).lines().map(String::from).collect();
        lines[4] = "1,red".into();
        lines[11] = "1,red,perhaps".into();
        let text = lines.join("\n");

        // Act
        let within = train(
            &text,
            &TableOptions {
                max_bad_rows: 2,
                ..opts("y")
            },
        )
        .unwrap();
        let beyond = train(
            &text,
            &TableOptions {
                max_bad_rows: 1,
                ..opts("y")
            },
        )
        .unwrap_err();

        // Assert
        assert_eq!(within.artifact.metrics.rows, 28);
        assert_eq!(within.artifact.metrics.bad_rows_skipped, 2);
        let lines_skipped: Vec<usize> = within.bad_rows.iter().map(|b| b.line).collect();
        assert_eq!(lines_skipped, [5, 12]);
        assert!(within.out_of_fold.iter().all(|(l, _)| *l != 5 && *l != 12));
        match beyond {
            TableError::TooManyBadRows {
                count: 2,
                max: 1,
                first,
                ..
            } => assert_eq!(first.line, 5),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn empty_headerless_and_label_less_files_are_clear_errors() {
        let o = opts("y");
        assert!(matches!(train("", &o), Err(TableError::Empty { .. })));
        assert!(matches!(
            train("\r\n  \n", &o),
            Err(TableError::Empty { .. })
        ));
        assert!(matches!(
            train("1,2,0\n3,4,1\n", &o),
            Err(TableError::NoHeader { line: 1, .. })
        ));
        let e = train("a,b,label\n1,2,0\n", &o).unwrap_err();
        assert!(matches!(e, TableError::MissingLabel { .. }));
        assert!(
            e.to_string()
                .contains(r#"the header has "a", "b", "label""#),
            "{e}"
        );
        assert!(matches!(train("a,y\n", &o), Err(TableError::NoRows { .. })));
        assert!(matches!(
            train("y\n1\n0\n", &o),
            Err(TableError::NoFeatures { .. })
        ));
        let e = train("a,a,y\n1,2,0\n", &o).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"a\" appears twice (columns 1 and 2)"),
            "{e}"
        );
        let e = train("a,,y\n1,2,0\n", &o).unwrap_err();
        assert!(e.to_string().contains("column 2 has no name"), "{e}");
    }

    #[test]
    fn options_that_name_missing_columns_or_make_no_sense_are_refused() {
        let text = learnable(20);
        let e = train(
            &text,
            &TableOptions {
                categorical: vec!["colur".into()],
                ..opts("y")
            },
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("`categorical` names column \"colur\""),
            "{e}"
        );
        for bad in [
            TableOptions {
                folds: 1,
                ..opts("y")
            },
            TableOptions {
                alphas: vec![],
                ..opts("y")
            },
            TableOptions {
                alphas: vec![f64::NAN],
                ..opts("y")
            },
            TableOptions {
                exclude: vec!["y".into()],
                ..opts("y")
            },
        ] {
            assert!(matches!(train(&text, &bad), Err(TableError::Options(_))));
        }
    }

    #[test]
    fn too_few_rows_of_a_class_for_the_folds_is_refused() {
        let text = "x,y\n1,1\n2,0\n3,0\n4,0\n";
        let e = train(text, &opts("y")).unwrap_err();
        assert!(matches!(
            e,
            TableError::TooFewRows {
                positives: 1,
                negatives: 3,
                folds: 2,
                ..
            }
        ));
    }

    #[test]
    fn a_numeric_column_with_a_stray_word_and_many_values_is_refused_naming_the_line() {
        let text = table("amount,y", 200, |i| {
            let amount = if i == 150 {
                "n/a".to_string()
            } else {
                format!("{}.5", i)
            };
            format!("{amount},{}", i % 2)
        });
        let e = train(&text, &opts("y")).unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("column \"amount\" has 200 distinct values")
                && message.contains("line 152 has \"n/a\""),
            "{message}"
        );
    }

    #[test]
    fn values_too_large_to_standardize_are_refused_not_passed_to_the_solver() {
        let text = table("big,y", 8, |i| {
            format!("{},{}", if i % 2 == 0 { "-1e308" } else { "1e308" }, i % 2)
        });
        // With log1p the column would be tame; it has negatives, so it is not.
        let e = train(&text, &opts("y")).unwrap_err();
        assert!(
            matches!(e, TableError::TooLarge { ref feature, .. } if feature == "big"),
            "{e}"
        );
    }

    #[test]
    fn non_utf8_text_is_reported_with_its_line() {
        let mut bytes = b"a,y\r\n1,0\r\n".to_vec();
        bytes.extend_from_slice(b"\xff,1\r\n");
        let e = train_bytes(
            "t.csv",
            "t.csv",
            &bytes,
            &opts("y"),
            Millis::from_unix_millis(0),
        )
        .unwrap_err();
        assert!(matches!(e, TableError::NotUtf8 { line: 3, .. }), "{e}");
    }

    #[test]
    fn folds_are_stratified_deterministic_and_shuffled_by_the_seed() {
        let labels: Vec<bool> = (0..103).map(|i| i % 5 == 0).collect();

        let folds = stratified_folds(&labels, 4, 7);

        // 21 positives and 82 negatives over 4 folds.
        for f in 0..4 {
            let pos = (0..103).filter(|&i| folds[i] == f && labels[i]).count();
            let neg = (0..103).filter(|&i| folds[i] == f && !labels[i]).count();
            assert!((5..=6).contains(&pos), "fold {f}: {pos} positives");
            assert!((20..=21).contains(&neg), "fold {f}: {neg} negatives");
        }
        assert_eq!(folds, stratified_folds(&labels, 4, 7));
        assert_ne!(folds, stratified_folds(&labels, 4, 8));
    }

    #[test]
    fn a_table_whose_only_feature_is_constant_predicts_the_base_rate() {
        // Arrange: 4 positives, 12 negatives, 4 folds: every training part
        // holds 3 positives of 12 rows, so every out-of-fold probability is
        // 1/4, the fitted coefficient 0 and the intercept ln(1/3).
        let text = table("shop,bought", 16, |i| {
            format!("main,{}", if i % 4 == 0 { "TRUE" } else { "FALSE" })
        });
        let o = TableOptions {
            folds: 4,
            alphas: vec![1.0, 10.0],
            ..opts("bought")
        };

        // Act
        let report = train(&text, &o).unwrap();

        // Assert
        let a = &report.artifact;
        let m = &a.metrics;
        assert_eq!(a.feature_names, ["shop=main"]);
        for (_, p) in &report.out_of_fold {
            assert!((p - 0.25).abs() < 1e-6, "{p}");
        }
        // −(¼ ln ¼ + ¾ ln ¾); ¼ (¾)² + ¾ (¼)² = 3/16.
        assert!((m.pooled_log_loss - 0.562_335_144_618_808_3).abs() < 1e-6);
        assert!((m.pooled_brier - 0.1875).abs() < 1e-9);
        assert_eq!(m.pooled_roc_auc, Some(0.5));
        assert_eq!(m.mean_fold_roc_auc, Some(0.5));
        assert!((m.pooled_pr_auc.unwrap() - 0.25).abs() < 1e-12);
        assert!((m.base_rate - 0.25).abs() < 1e-15);
        assert_eq!(a.coefficients, [0.0]);
        assert!(
            (a.intercept - (1.0f64 / 3.0).ln()).abs() < 1e-6,
            "{}",
            a.intercept
        );
        // Equal losses: the first alpha of the grid is kept; at the grid's
        // lower edge, so 0.1 is tried too (and ties).
        assert_eq!(m.alpha, 1.0);
        let tried: Vec<f64> = m.alpha_search.iter().map(|a| a.alpha).collect();
        assert_eq!(tried, [0.1, 1.0, 10.0]);
    }

    #[test]
    fn the_alpha_search_widens_past_the_grid_until_the_best_is_inside() {
        // Arrange: a feature of pure noise, so the strongest L2 wins at
        // first; a grid of two weak strengths puts the best at its top edge.
        let text = table("noise,bought", 200, |i| {
            let h = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
            format!("{},{}", h % 1000, if i % 3 == 0 { "TRUE" } else { "FALSE" })
        });
        let o = TableOptions {
            folds: 4,
            alphas: vec![0.001, 0.01],
            ..opts("bought")
        };

        // Act
        let m = train(&text, &o).unwrap().artifact.metrics;

        // Assert: tenfold steps up from 0.01, in order, the chosen alpha
        // inside what was tried or at the widest the search goes.
        let tried: Vec<f64> = m.alpha_search.iter().map(|a| a.alpha).collect();
        assert!(tried.len() > 2, "{tried:?}");
        for w in tried.windows(2) {
            assert!((w[1] / w[0] - 10.0).abs() < 1e-9, "{tried:?}");
        }
        let last = *tried.last().unwrap();
        assert!(
            m.alpha < last || last >= WIDEST_ALPHA.1,
            "{tried:?}, chose {}",
            m.alpha
        );
        assert!(m.alpha > 0.01, "chose {}", m.alpha);
    }

    #[test]
    fn a_separable_table_ranks_every_held_out_row_correctly() {
        let text = table("score,y", 40, |i| {
            let pos = i % 4 == 0;
            format!("{},{}", if pos { 10 + i % 3 } else { i % 3 }, u8::from(pos))
        });
        let report = train(
            &text,
            &TableOptions {
                folds: 5,
                ..opts("y")
            },
        )
        .unwrap();
        let m = &report.artifact.metrics;
        // Every positive outranks every negative; Mann–Whitney's arithmetic
        // may land a rounding step below 1.
        let perfect = |v: Option<f64>| (v.unwrap() - 1.0).abs() < 1e-12;
        assert!(
            m.fold_roc_auc.iter().all(|&a| perfect(a)),
            "{:?}",
            m.fold_roc_auc
        );
        assert!(perfect(m.pooled_roc_auc), "{:?}", m.pooled_roc_auc);
        assert!(perfect(m.pooled_pr_auc), "{:?}", m.pooled_pr_auc);
        assert!(report.artifact.coefficients[0] > 0.0);
    }

    /// Equal as JSON, numbers within a relative 1e-15: serde_json, built
    /// without its `float_roundtrip` feature, may read a float back one unit in
    /// the last place away from the one it wrote.
    fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-15 * x.abs().max(y.abs()),
                _ => x == y,
            },
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
            }
            _ => a == b,
        }
    }

    #[test]
    fn the_artifact_round_trips_through_an_atomic_write_and_predicts_as_fitted() {
        // Arrange
        let report = train(&learnable(60), &opts("y")).unwrap();
        let a = &report.artifact;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.json");

        // Act
        write_artifact(&path, a).unwrap();
        let back = TableModelArtifact::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();

        // Assert
        let json = |a: &TableModelArtifact| serde_json::to_value(a).unwrap();
        assert!(same_json(&json(&back), &json(a)));
        assert_eq!(back.encoding, a.encoding);
        assert_eq!(back.format, "rung.table-model.v1");
        assert_eq!(back.source, "table.csv");
        assert_eq!(back.created_at, "2023-11-14T22:13:20.000Z");
        assert!(
            back.version.starts_with("20231114221320-"),
            "{}",
            back.version
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
        // A new row through the stored encoding: x = 7, blue.
        let header: Vec<String> = ["x", "colour"].map(String::from).into();
        let features = back
            .encoding
            .bind(&header)
            .unwrap()
            .encode(&["7", "blue"])
            .unwrap();
        // Features in header order: x (ln 8), colour=blue (1), colour=red (0).
        let z = back.intercept
            + back.coefficients[0] * (8f64.ln() - back.means[0]) / back.scales[0]
            + back.coefficients[1] * (1.0 - back.means[1]) / back.scales[1]
            + back.coefficients[2] * (0.0 - back.means[2]) / back.scales[2];
        let p = back.probability(&features).unwrap();
        assert!((p - 1.0 / (1.0 + (-z).exp())).abs() < 1e-12);
        assert_eq!(back.probability(&[1.0]), None);
    }

    #[test]
    fn an_artifact_of_another_format_or_with_mismatched_parts_is_refused() {
        let a = train(&learnable(60), &opts("y")).unwrap().artifact;
        let mut other = a.clone();
        other.format = "rung.model.v1".into();
        let e = TableModelArtifact::from_json(&serde_json::to_string(&other).unwrap()).unwrap_err();
        assert!(e.to_string().contains("\"rung.model.v1\""), "{e}");
        let mut short = a;
        short.scales.pop();
        assert!(TableModelArtifact::from_json(&serde_json::to_string(&short).unwrap()).is_err());
        assert!(TableModelArtifact::from_json("{").is_err());
    }

    mod no_panic {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]
            #[test]
            fn no_input_makes_training_panic(
                text in "[a-c01,\"\r\n .e-]{0,120}",
                max_bad_rows in 0usize..3,
            ) {
                let text = format!("a,y\n{text}");
                let o = TableOptions { max_bad_rows, ..opts("y") };
                let _ = train(&text, &o);
            }

            #[test]
            fn no_near_miss_table_makes_training_panic(
                rows in proptest::collection::vec(("[0-9a.e-]{0,4}", "(0|1|yes|no|TRUE|false|x)"), 0..30),
                folds in 0usize..5,
                log_scale in any::<bool>(),
            ) {
                let mut text = String::from("a,y\r\n");
                for (a, y) in &rows {
                    text.push_str(&format!("{a},{y}\r\n"));
                }
                let o = TableOptions { folds, log_scale, max_bad_rows: 5, max_iterations: 40, ..opts("y") };
                let _ = train(&text, &o);
            }

            #[test]
            fn no_bytes_make_training_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
                let _ = train_bytes("t.csv", "t.csv", &bytes, &opts("y"), Millis::from_unix_millis(0));
            }
        }
    }
}
