//! Reading a table: decoding, splitting lines into fields, parsing rows
//! with their line numbers, and planning each column's encoding.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use super::encoding::{ColumnEncoding, Encoding};
use super::{BadRow, RowProblem, TableError, TableOptions};

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
pub(super) fn parse_number(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

pub(super) fn signed_log1p(x: f64) -> f64 {
    if x < 0.0 {
        -(-x).ln_1p()
    } else {
        x.ln_1p()
    }
}

/// Values quoted in messages are cut to 60 characters, so a runaway field
/// cannot flood the log.
pub(super) fn shorten(value: &str) -> Cow<'_, str> {
    const MAX: usize = 60;
    match value.char_indices().nth(MAX) {
        Some((cut, _)) => Cow::Owned(format!("{}…", &value[..cut])),
        None => Cow::Borrowed(value),
    }
}

/// Splits one line on commas, fields trimmed. A field wrapped in double
/// quotes may hold commas and doubled quotes (as R and spreadsheets write
/// them); `None` for a quote that does not close or is followed by text.
pub(super) fn split_fields(line: &str) -> Option<Vec<Cow<'_, str>>> {
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
pub(super) fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty())
}

#[derive(Debug)]
pub(super) struct Row {
    pub(super) line: usize,
    pub(super) fields: Vec<String>,
    pub(super) label: bool,
}

/// The file as read: header, the rows that parsed, the rows that did not.
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) header: Vec<String>,
    pub(super) label: usize,
    pub(super) rows: Vec<Row>,
    pub(super) bad: Vec<BadRow>,
}

pub(super) fn decode(path: &str, bytes: &[u8]) -> Result<String, TableError> {
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

pub(super) fn check_options(opts: &TableOptions) -> Result<(), TableError> {
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

pub(super) fn parse_table(
    path: &str,
    text: &str,
    opts: &TableOptions,
) -> Result<Parsed, TableError> {
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

pub(super) fn parse_row(
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
pub(super) fn plan_encoding(
    path: &str,
    parsed: &Parsed,
    opts: &TableOptions,
) -> Result<Encoding, TableError> {
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
