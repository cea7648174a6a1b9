//! Reading event logs: CSV or JSON Lines, with a column mapping that says
//! where the visitor, time, event name, item, value and event id are.
//! Ready mappings cover the layouts users bring (GA4's BigQuery export,
//! Segment track calls, Taobao UserBehavior, RetailRocket, REES46); a TOML
//! mapping file or flags cover the rest. Event names go through the
//! taxonomy's aliases; names it does not know are counted and reported.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::event::{sort_by_time, stable_hash};
use crate::domain::{Event, ItemKey, Millis, Taxonomy};

/// Where a field is: a header name (a dotted path into JSON, such as
/// `properties.product_id` or `items.0.item_id`) or, for CSV without a
/// header, a 0-based position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Column {
    Index(usize),
    Name(String),
    /// No column: every row has this value (`event = { value = "view_item" }`
    /// for a log with one file per event kind, or whose rows are all views).
    Value {
        value: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    /// Numbers by magnitude (s, ms, µs or ns since the epoch), text as RFC 3339.
    Auto,
    Seconds,
    Millis,
    Micros,
    /// RFC 3339 / ISO 8601 text; "2019-10-01 00:00:00 UTC" is accepted too.
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    Csv,
    Jsonl,
}

/// How to read one event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub format: FileFormat,
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    #[serde(default = "yes")]
    pub header: bool,
    /// Tried in order; the first non-empty one is the visitor (Segment's
    /// userId then anonymousId, GA4's user_id then user_pseudo_id).
    pub visitor: Vec<Column>,
    pub time: Column,
    pub time_unit: TimeUnit,
    pub event: Column,
    #[serde(default)]
    pub item: Option<Column>,
    #[serde(default)]
    pub value: Option<Column>,
    #[serde(default)]
    pub event_id: Option<Column>,
    /// Keep only rows whose this column equals `only_value` (Segment: type = track).
    #[serde(default)]
    pub only_column: Option<Column>,
    #[serde(default)]
    pub only_value: Option<String>,
}

fn default_delimiter() -> char {
    ','
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// rung's own layout: `visitor_id,time,type[,item_id,value,event_id]` with a header.
    Rung,
    /// Google Analytics 4 BigQuery export, one JSON object per line.
    Ga4,
    /// Segment track calls, one JSON object per line.
    Segment,
    /// Taobao UserBehavior: user_id,item_id,category_id,behavior_type,timestamp; no header.
    Taobao,
    /// RetailRocket events.csv.
    Retailrocket,
    /// REES46 "eCommerce behavior data from multi category store".
    Rees46,
}

fn name(s: &str) -> Column {
    Column::Name(s.to_string())
}

impl Preset {
    pub const ALL: [Preset; 6] = [
        Preset::Rung,
        Preset::Ga4,
        Preset::Segment,
        Preset::Taobao,
        Preset::Retailrocket,
        Preset::Rees46,
    ];

    pub fn mapping(self) -> Mapping {
        let csv = |visitor: Column, time: Column, unit, event: Column| Mapping {
            format: FileFormat::Csv,
            delimiter: ',',
            header: true,
            visitor: vec![visitor],
            time,
            time_unit: unit,
            event,
            item: None,
            value: None,
            event_id: None,
            only_column: None,
            only_value: None,
        };
        match self {
            Preset::Rung => Mapping {
                item: Some(name("item_id")),
                value: Some(name("value")),
                event_id: Some(name("event_id")),
                ..csv(
                    name("visitor_id"),
                    name("time"),
                    TimeUnit::Auto,
                    name("type"),
                )
            },
            Preset::Taobao => Mapping {
                header: false,
                item: Some(Column::Index(1)),
                ..csv(
                    Column::Index(0),
                    Column::Index(4),
                    TimeUnit::Seconds,
                    Column::Index(3),
                )
            },
            Preset::Retailrocket => Mapping {
                item: Some(name("itemid")),
                ..csv(
                    name("visitorid"),
                    name("timestamp"),
                    TimeUnit::Millis,
                    name("event"),
                )
            },
            Preset::Rees46 => Mapping {
                item: Some(name("product_id")),
                value: Some(name("price")),
                ..csv(
                    name("user_id"),
                    name("event_time"),
                    TimeUnit::Text,
                    name("event_type"),
                )
            },
            Preset::Ga4 => Mapping {
                format: FileFormat::Jsonl,
                visitor: vec![name("user_id"), name("user_pseudo_id")],
                item: Some(name("items.0.item_id")),
                ..csv(
                    name("user_pseudo_id"),
                    name("event_timestamp"),
                    TimeUnit::Micros,
                    name("event_name"),
                )
            },
            Preset::Segment => Mapping {
                format: FileFormat::Jsonl,
                visitor: vec![name("userId"), name("anonymousId")],
                item: Some(name("properties.product_id")),
                value: Some(name("properties.price")),
                event_id: Some(name("messageId")),
                only_column: Some(name("type")),
                only_value: Some("track".into()),
                ..csv(
                    name("userId"),
                    name("timestamp"),
                    TimeUnit::Text,
                    name("event"),
                )
            },
        }
    }
}

impl Mapping {
    pub fn from_toml(text: &str) -> Result<Mapping, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// A row that could not be read, by its file and 1-based line number.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    pub file: PathBuf,
    pub line: u64,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("column {column:?} is not in the header of {}", path.display())]
    MissingColumn { path: PathBuf, column: String },
    #[error("{} holds no files to read", path.display())]
    NoFiles { path: PathBuf },
    #[error("{what} has {count} malformed rows (more than --max-bad-rows {max}); the first: {} line {}: {}", first.file.display(), first.line, first.reason)]
    TooManyBadRows {
        what: String,
        count: usize,
        max: usize,
        first: BadRow,
    },
    #[error("{what} holds no events that rung can use: {rows} rows read, {filtered} filtered out, {bad} malformed; {unmapped}")]
    Empty {
        /// The file, or how many files from where.
        what: String,
        rows: u64,
        filtered: u64,
        bad: usize,
        /// [`EventLog::unmapped_report`], or why nothing was unmapped.
        unmapped: String,
    },
}

impl LogError {
    /// Names `path` in an I/O error, for `map_err`.
    fn io(path: &Path) -> impl Fn(std::io::Error) -> LogError + Copy + '_ {
        move |source| LogError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Events grouped by visitor, sorted by time, plus what could not be used.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    /// Visitor id and events, in first-seen order.
    pub visitors: Vec<(String, Vec<Event>)>,
    pub rows: u64,
    pub events: u64,
    pub bad_rows: Vec<BadRow>,
    /// Event names the taxonomy does not know, with how often each came.
    pub unmapped: BTreeMap<String, u64>,
    /// Rows skipped by the mapping's filter (e.g. Segment page/identify calls).
    pub filtered: u64,
}

impl EventLog {
    pub fn unmapped_total(&self) -> u64 {
        self.unmapped.values().sum()
    }

    /// The most frequent event names the taxonomy does not know, with
    /// counts, and what to do about them; `None` when every name mapped.
    pub fn unmapped_report(&self) -> Option<String> {
        if self.unmapped.is_empty() {
            return None;
        }
        let mut top: Vec<(&String, &u64)> = self.unmapped.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let names: Vec<String> = top
            .iter()
            .take(10)
            .map(|(n, c)| format!("{n:?} ×{c}"))
            .collect();
        let more = top.len().saturating_sub(10);
        Some(format!(
            "unmapped event names (add them as aliases in a taxonomy file, --taxonomy): {}{}",
            names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ))
    }

    /// The first and last event times.
    pub fn time_range(&self) -> Option<(Millis, Millis)> {
        let mut times = self
            .visitors
            .iter()
            .flat_map(|(_, e)| e.first().zip(e.last()));
        let (first, last) = times.next()?;
        Some(times.fold((first.at, last.at), |(lo, hi), (f, l)| {
            (lo.min(f.at), hi.max(l.at))
        }))
    }

    /// How many events of each taxonomy type, by type index.
    pub fn events_per_type(&self, types: usize) -> Vec<u64> {
        let mut counts = vec![0; types];
        for e in self.visitors.iter().flat_map(|(_, e)| e) {
            if let Some(c) = counts.get_mut(e.kind.index()) {
                *c += 1;
            }
        }
        counts
    }
}

/// A row's fields as text, whatever the file format.
trait Row {
    fn get(&self, c: &ResolvedColumn) -> Option<String>;
}

/// A column resolved against a CSV header.
#[derive(Debug, Clone)]
enum ResolvedColumn {
    Index(usize),
    Path(Vec<String>),
    Value(String),
}

struct CsvRow<'a>(&'a csv::StringRecord);

impl Row for CsvRow<'_> {
    fn get(&self, c: &ResolvedColumn) -> Option<String> {
        match c {
            ResolvedColumn::Index(i) => self.0.get(*i).map(|s| s.trim().to_string()),
            ResolvedColumn::Value(v) => Some(v.clone()),
            ResolvedColumn::Path(_) => None,
        }
    }
}

struct JsonRow(serde_json::Value);

impl Row for JsonRow {
    fn get(&self, c: &ResolvedColumn) -> Option<String> {
        let path = match c {
            ResolvedColumn::Path(path) => path,
            ResolvedColumn::Value(v) => return Some(v.clone()),
            ResolvedColumn::Index(_) => return None,
        };
        let mut v = &self.0;
        for part in path {
            v = match v {
                serde_json::Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
                serde_json::Value::Object(o) => o.get(part)?,
                _ => return None,
            };
        }
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

struct Columns {
    visitor: Vec<ResolvedColumn>,
    time: ResolvedColumn,
    event: ResolvedColumn,
    item: Option<ResolvedColumn>,
    value: Option<ResolvedColumn>,
    event_id: Option<ResolvedColumn>,
    only: Option<(ResolvedColumn, String)>,
}

/// One file of an event log.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub path: PathBuf,
    /// Every row of the file is this event, whatever the mapping says (a
    /// log with one file per event kind).
    pub event: Option<String>,
}

/// The files `sources` name: a file as it is, a folder as its files (not
/// its sub-folders, nor hidden files) in name order, each with the
/// folder's event.
pub fn files_of(sources: &[Source]) -> Result<Vec<Source>, LogError> {
    let mut files = Vec::new();
    for Source { path, event } in sources {
        if !path.is_dir() {
            files.push(Source {
                path: path.clone(),
                event: event.clone(),
            });
            continue;
        }
        let io = LogError::io(path);
        let mut inside = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io)? {
            let entry = entry.map_err(io)?;
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if !hidden && entry.file_type().map_err(io)?.is_file() {
                inside.push(entry.path());
            }
        }
        if inside.is_empty() {
            return Err(LogError::NoFiles { path: path.clone() });
        }
        inside.sort();
        files.extend(inside.into_iter().map(|path| Source {
            path,
            event: event.clone(),
        }));
    }
    Ok(files)
}

/// Reads an event log. `progress` is told how many bytes have been read.
pub fn read(
    path: &Path,
    mapping: &Mapping,
    taxonomy: &Taxonomy,
    max_bad_rows: usize,
    progress: &dyn Fn(u64),
) -> Result<EventLog, LogError> {
    read_files(
        &[Source {
            path: path.to_path_buf(),
            event: None,
        }],
        mapping,
        taxonomy,
        max_bad_rows,
        progress,
    )
}

/// Reads one event log from several files, each with its own header if the
/// mapping has headers; a name ending `.gz` is decompressed. `progress` is
/// told how many bytes of the files (as stored) have been read in all.
pub fn read_files(
    files: &[Source],
    mapping: &Mapping,
    taxonomy: &Taxonomy,
    max_bad_rows: usize,
    progress: &dyn Fn(u64),
) -> Result<EventLog, LogError> {
    let mut builder = Builder::new(taxonomy);
    let mut before = 0;
    for Source { path, event } in files {
        let file = std::fs::File::open(path).map_err(LogError::io(path))?;
        let constant;
        let mapping = match event {
            None => mapping,
            Some(value) => {
                constant = Mapping {
                    event: Column::Value {
                        value: value.clone(),
                    },
                    ..mapping.clone()
                };
                &constant
            }
        };
        let size = file.metadata().map_or(0, |m| m.len());
        let counted = CountingReader {
            inner: file,
            read: 0,
            progress: &|n| progress(before + n),
        };
        if path.extension().is_some_and(|e| e == "gz") {
            read_into(
                &mut builder,
                flate2::read::MultiGzDecoder::new(counted),
                path,
                mapping,
            )?;
        } else {
            read_into(&mut builder, counted, path, mapping)?;
        }
        before += size;
    }
    let what = match files {
        [one] => one.path.display().to_string(),
        _ => format!(
            "{} files ({} …)",
            files.len(),
            files
                .first()
                .map_or(String::new(), |f| f.path.display().to_string())
        ),
    };
    finish(builder, what, max_bad_rows)
}

/// Reads an event log from any reader; `path` only names it in errors.
pub fn read_from(
    input: impl Read,
    path: &Path,
    mapping: &Mapping,
    taxonomy: &Taxonomy,
    max_bad_rows: usize,
    progress: &dyn Fn(u64),
) -> Result<EventLog, LogError> {
    let mut builder = Builder::new(taxonomy);
    let counted = CountingReader {
        inner: input,
        read: 0,
        progress,
    };
    read_into(&mut builder, counted, path, mapping)?;
    finish(builder, path.display().to_string(), max_bad_rows)
}

/// Adds one file's rows to `builder`.
fn read_into(
    builder: &mut Builder<'_>,
    input: impl Read,
    path: &Path,
    mapping: &Mapping,
) -> Result<(), LogError> {
    let io = LogError::io(path);
    builder.file = path.to_path_buf();
    match mapping.format {
        FileFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(mapping.delimiter as u8)
                .has_headers(mapping.header)
                .flexible(true)
                .from_reader(input);
            let header: Option<Vec<String>> = if mapping.header {
                let h = reader.headers().map_err(|e| io(std::io::Error::other(e)))?;
                Some(
                    h.iter()
                        .map(|s| s.trim().trim_start_matches('\u{feff}').to_string())
                        .collect(),
                )
            } else {
                None
            };
            let cols = resolve(mapping, |c| match c {
                Column::Index(i) => Ok(ResolvedColumn::Index(*i)),
                Column::Value { value } => Ok(ResolvedColumn::Value(value.clone())),
                Column::Name(n) => header
                    .as_ref()
                    .and_then(|h| h.iter().position(|x| x == n))
                    .map(ResolvedColumn::Index)
                    .ok_or_else(|| LogError::MissingColumn {
                        path: path.to_path_buf(),
                        column: n.clone(),
                    }),
            })?;
            let mut record = csv::StringRecord::new();
            loop {
                match reader.read_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {
                        let line = record.position().map_or(0, |p| p.line());
                        builder.row(line, &CsvRow(&record), &cols, mapping.time_unit);
                    }
                    Err(e) => {
                        let line = e.position().map_or(0, |p| p.line());
                        builder.bad(line, format!("unreadable CSV: {e}"));
                    }
                }
            }
        }
        FileFormat::Jsonl => {
            let cols = resolve(mapping, |c| match c {
                Column::Name(n) => Ok(ResolvedColumn::Path(
                    n.split('.').map(str::to_string).collect(),
                )),
                Column::Index(i) => Ok(ResolvedColumn::Path(vec![i.to_string()])),
                Column::Value { value } => Ok(ResolvedColumn::Value(value.clone())),
            })?;
            for (i, line) in BufReader::new(input).lines().enumerate() {
                let n = i as u64 + 1;
                let line = line.map_err(io)?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) => builder.row(n, &JsonRow(v), &cols, mapping.time_unit),
                    Err(e) => builder.bad(n, format!("not a JSON object: {e}")),
                }
            }
        }
    }
    Ok(())
}

/// The log `builder` holds, or why it cannot be used.
fn finish(builder: Builder<'_>, what: String, max_bad_rows: usize) -> Result<EventLog, LogError> {
    let log = builder.finish();
    if log.bad_rows.len() > max_bad_rows {
        return Err(LogError::TooManyBadRows {
            what,
            count: log.bad_rows.len(),
            max: max_bad_rows,
            first: log.bad_rows[0].clone(),
        });
    }
    if log.events == 0 {
        return Err(LogError::Empty {
            what,
            rows: log.rows,
            filtered: log.filtered,
            bad: log.bad_rows.len(),
            unmapped: log.unmapped_report().unwrap_or_else(|| {
                "no event names were left unmapped (check the mapping's columns)".into()
            }),
        });
    }
    Ok(log)
}

/// Resolves the mapping's columns; optional ones (item, value, event id)
/// that the file lacks are simply absent.
fn resolve(
    m: &Mapping,
    f: impl Fn(&Column) -> Result<ResolvedColumn, LogError>,
) -> Result<Columns, LogError> {
    let opt = |c: &Option<Column>| -> Result<Option<ResolvedColumn>, LogError> {
        Ok(c.as_ref().and_then(|c| f(c).ok()))
    };
    Ok(Columns {
        visitor: m.visitor.iter().map(&f).collect::<Result<_, _>>()?,
        time: f(&m.time)?,
        event: f(&m.event)?,
        item: opt(&m.item)?,
        value: opt(&m.value)?,
        event_id: opt(&m.event_id)?,
        only: match (&m.only_column, &m.only_value) {
            (Some(c), Some(v)) => Some((f(c)?, v.clone())),
            _ => None,
        },
    })
}

struct CountingReader<'a, R> {
    inner: R,
    read: u64,
    progress: &'a dyn Fn(u64),
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        (self.progress)(self.read);
        Ok(n)
    }
}

struct Builder<'t> {
    taxonomy: &'t Taxonomy,
    index: HashMap<String, usize>,
    log: EventLog,
    /// The file being read.
    file: PathBuf,
}

impl<'t> Builder<'t> {
    fn new(taxonomy: &'t Taxonomy) -> Self {
        Builder {
            taxonomy,
            index: HashMap::new(),
            log: EventLog::default(),
            file: PathBuf::new(),
        }
    }

    fn bad(&mut self, line: u64, reason: String) {
        self.log.rows += 1;
        self.log.bad_rows.push(BadRow {
            file: self.file.clone(),
            line,
            reason,
        });
    }

    fn row(&mut self, line: u64, row: &dyn Row, cols: &Columns, unit: TimeUnit) {
        if let Some((c, want)) = &cols.only {
            if row.get(c).as_deref() != Some(want.as_str()) {
                self.log.rows += 1;
                self.log.filtered += 1;
                return;
            }
        }
        match self.parse(row, cols, unit) {
            Ok(Some((visitor, event))) => {
                self.log.rows += 1;
                self.log.events += 1;
                let i = *self.index.entry(visitor.clone()).or_insert_with(|| {
                    self.log.visitors.push((visitor, Vec::new()));
                    self.log.visitors.len() - 1
                });
                self.log.visitors[i].1.push(event);
            }
            Ok(None) => self.log.rows += 1,
            Err(reason) => self.bad(line, reason),
        }
    }

    /// `Ok(None)`: a well-formed row whose event name the taxonomy does not know.
    fn parse(
        &mut self,
        row: &dyn Row,
        cols: &Columns,
        unit: TimeUnit,
    ) -> Result<Option<(String, Event)>, String> {
        let visitor = cols
            .visitor
            .iter()
            .filter_map(|c| row.get(c))
            .find(|v| !v.is_empty() && v != "null")
            .ok_or("no visitor id")?;
        let name = row
            .get(&cols.event)
            .filter(|s| !s.is_empty())
            .ok_or("no event name")?;
        let raw_time = row
            .get(&cols.time)
            .filter(|s| !s.is_empty())
            .ok_or("no time")?;
        let at =
            parse_time(&raw_time, unit).ok_or_else(|| format!("unreadable time {raw_time:?}"))?;
        let value = match cols
            .value
            .as_ref()
            .and_then(|c| row.get(c))
            .filter(|s| !s.is_empty())
        {
            None => 0.0,
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("unreadable value {v:?}"))?,
        };
        let Some(kind) = self.taxonomy.resolve(&name) else {
            *self.log.unmapped.entry(name).or_default() += 1;
            return Ok(None);
        };
        let item = cols
            .item
            .as_ref()
            .and_then(|c| row.get(c))
            .unwrap_or_default();
        let id = cols
            .event_id
            .as_ref()
            .and_then(|c| row.get(c))
            .filter(|s| !s.is_empty());
        Ok(Some((
            visitor,
            Event {
                kind,
                at,
                item: ItemKey::of(&item),
                value,
                id: id.map(|s| stable_hash(&s)),
            },
        )))
    }

    fn finish(mut self) -> EventLog {
        for (_, events) in &mut self.log.visitors {
            sort_by_time(events);
            // The same event delivered twice counts once, as in the service.
            let mut seen = std::collections::HashSet::new();
            events.retain(|e| e.id.is_none_or(|h| seen.insert(h)));
        }
        self.log.events = self.log.visitors.iter().map(|(_, e)| e.len() as u64).sum();
        self.log
    }
}

/// Parses a time in the given unit; `None` when it is not one.
pub fn parse_time(raw: &str, unit: TimeUnit) -> Option<Millis> {
    let number = || raw.parse::<f64>().ok().filter(|x| x.is_finite());
    let from_ms = |ms: f64| {
        let ms = ms.round();
        (ms.abs() < 2.5e14).then(|| Millis::from_unix_millis(ms as i64))
    };
    match unit {
        TimeUnit::Seconds => from_ms(number()? * 1e3),
        TimeUnit::Millis => from_ms(number()?),
        TimeUnit::Micros => from_ms(number()? / 1e3),
        TimeUnit::Text => parse_text_time(raw),
        TimeUnit::Auto => match number() {
            Some(x) => {
                let a = x.abs();
                from_ms(if a >= 1e17 {
                    x / 1e6
                } else if a >= 1e14 {
                    x / 1e3
                } else if a >= 1e11 {
                    x
                } else {
                    x * 1e3
                })
            }
            None => parse_text_time(raw),
        },
    }
}

fn parse_text_time(raw: &str) -> Option<Millis> {
    let t = raw.trim();
    Millis::parse_rfc3339_lenient(t.strip_suffix(" UTC").unwrap_or(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    fn read_all(path: &Path, preset: Preset, max_bad: usize) -> Result<EventLog, LogError> {
        read(
            path,
            &preset.mapping(),
            &Taxonomy::builtin(),
            max_bad,
            &|_| {},
        )
    }

    #[test]
    fn a_constant_event_from_the_mapping_file_names_every_row() {
        let (_d, p) = write(
            "views.csv",
            "user,ts\nu1,2019-10-01T00:00:00Z\nu1,2019-10-01T00:05:00Z\nu2,2019-10-01T00:06:00Z\n",
        );
        let mapping = Mapping::from_toml(
            "format = \"csv\"\nvisitor = [\"user\"]\ntime = \"ts\"\ntime_unit = \"text\"\nevent = { value = \"view_item\" }\n",
        )
        .unwrap();
        let log = read(&p, &mapping, &Taxonomy::builtin(), 0, &|_| {}).unwrap();
        let view = Taxonomy::builtin().resolve("view_item").unwrap();
        assert_eq!(log.events, 3);
        assert!(log
            .visitors
            .iter()
            .flat_map(|(_, e)| e)
            .all(|e| e.kind == view));
    }

    #[test]
    fn times_parse_in_every_unit() {
        let want = Some(Millis::from_unix_millis(1_569_888_000_000));
        assert_eq!(parse_time("1569888000", TimeUnit::Seconds), want);
        assert_eq!(parse_time("1569888000000", TimeUnit::Millis), want);
        assert_eq!(parse_time("1569888000000000", TimeUnit::Micros), want);
        assert_eq!(parse_time("2019-10-01 00:00:00 UTC", TimeUnit::Text), want);
        assert_eq!(parse_time("2019-10-01T00:00:00Z", TimeUnit::Text), want);
        assert_eq!(
            parse_time("2019-10-01T08:00:00+08:00", TimeUnit::Text),
            want
        );
        assert_eq!(
            parse_time("2019-09-30 19:00:00-05:00", TimeUnit::Auto),
            want
        );
        for raw in [
            "1569888000",
            "1569888000000",
            "1569888000000000",
            "2019-10-01T00:00:00Z",
        ] {
            assert_eq!(parse_time(raw, TimeUnit::Auto), want, "{raw}");
        }
        assert_eq!(parse_time("yesterday", TimeUnit::Auto), None);
        assert_eq!(parse_time("1e300", TimeUnit::Seconds), None);
    }

    #[test]
    fn retailrocket_rows_map_through_aliases_and_unknown_names_are_counted() {
        let (_d, p) = write(
            "events.csv",
            "timestamp,visitorid,event,itemid,transactionid\n\
             1433221332117,257597,view,355908,\n\
             1433224214164,992329,view,248676,\n\
             1433221999827,257597,addtocart,355908,\n\
             1433222000000,257597,hover,355908,\n\
             1433223000000,257597,transaction,355908,4000\n",
        );
        let log = read_all(&p, Preset::Retailrocket, 0).unwrap();
        let t = Taxonomy::builtin();
        assert_eq!(log.rows, 5);
        assert_eq!(log.events, 4);
        assert_eq!(log.unmapped.get("hover"), Some(&1));
        let (id, events) = &log.visitors[0];
        assert_eq!(id, "257597");
        let names: Vec<&str> = events.iter().map(|e| t.get(e.kind).name.as_str()).collect();
        assert_eq!(names, ["view_item", "add_to_cart", "purchase"]);
    }

    #[test]
    fn taobao_has_no_header_and_unix_seconds() {
        let (_d, p) = write(
            "UserBehavior.csv",
            "1,2268318,2520377,pv,1511544070\n1,2333346,2520771,buy,1511561733\n",
        );
        let log = read_all(&p, Preset::Taobao, 0).unwrap();
        assert_eq!(log.visitors.len(), 1);
        assert_eq!(
            log.visitors[0].1[0].at,
            Millis::from_unix_millis(1_511_544_070_000)
        );
    }

    #[test]
    fn rees46_text_times_and_prices() {
        let (_d, p) = write(
            "2019-Oct.csv",
            "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n\
             2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde\n\
             2019-10-01 00:00:05 UTC,cart,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde\n",
        );
        let log = read_all(&p, Preset::Rees46, 0).unwrap();
        let e = &log.visitors[0].1[1];
        assert_eq!(e.value, 35.79);
        assert_eq!(e.at, Millis::from_unix_millis(1_569_888_005_000));
    }

    #[test]
    fn segment_keeps_track_calls_and_falls_back_to_anonymous_ids() {
        let (_d, p) = write(
            "segment.jsonl",
            "{\"type\":\"track\",\"event\":\"Product Added\",\"userId\":null,\"anonymousId\":\"a1\",\"timestamp\":\"2024-01-01T00:00:00Z\",\"messageId\":\"m1\",\"properties\":{\"product_id\":\"p9\",\"price\":12.5}}\n\
             {\"type\":\"page\",\"name\":\"Home\",\"anonymousId\":\"a1\",\"timestamp\":\"2024-01-01T00:00:01Z\"}\n\
             {\"type\":\"track\",\"event\":\"Order Completed\",\"userId\":\"u1\",\"anonymousId\":\"a1\",\"timestamp\":\"2024-01-01T00:05:00Z\",\"messageId\":\"m2\",\"properties\":{}}\n",
        );
        let log = read_all(&p, Preset::Segment, 0).unwrap();
        assert_eq!(log.filtered, 1);
        let ids: Vec<&str> = log.visitors.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(ids, ["a1", "u1"]);
        assert_eq!(log.visitors[0].1[0].value, 12.5);
        assert_eq!(log.visitors[0].1[0].item, ItemKey::of("p9"));
    }

    #[test]
    fn ga4_micros_and_nested_items() {
        let (_d, p) = write(
            "ga4.jsonl",
            "{\"event_timestamp\":\"1704067200000000\",\"event_name\":\"view_item\",\"user_pseudo_id\":\"x.1\",\"items\":[{\"item_id\":\"SKU1\"}]}\n",
        );
        let log = read_all(&p, Preset::Ga4, 0).unwrap();
        assert_eq!(log.visitors[0].0, "x.1");
        assert_eq!(log.visitors[0].1[0].item, ItemKey::of("SKU1"));
        assert_eq!(
            log.visitors[0].1[0].at,
            Millis::from_unix_millis(1_704_067_200_000)
        );
    }

    #[test]
    fn malformed_rows_are_reported_by_line_and_limited() {
        let (_d, p) = write(
            "events.csv",
            "visitor_id,time,type\nv1,1700000000000,view_item\nv1,not-a-time,view_item\nv2,1700000000000,\n",
        );
        let e = read_all(&p, Preset::Rung, 0).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("2 malformed rows")
                && msg.contains("line 3")
                && msg.contains("not-a-time"),
            "{msg}"
        );
        let log = read_all(&p, Preset::Rung, 2).unwrap();
        assert_eq!(
            log.bad_rows.iter().map(|b| b.line).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(log.events, 1);
    }

    #[test]
    fn a_missing_column_and_an_empty_log_are_clear_errors() {
        let (_d, p) = write("events.csv", "who,when,what\n");
        assert!(read_all(&p, Preset::Rung, 0)
            .unwrap_err()
            .to_string()
            .contains("\"visitor_id\""));
        let (_d2, p2) = write("events.csv", "visitor_id,time,type\n");
        assert!(matches!(
            read_all(&p2, Preset::Rung, 0),
            Err(LogError::Empty { .. })
        ));
    }

    #[test]
    fn redelivered_event_ids_count_once() {
        let (_d, p) = write(
            "events.csv",
            "visitor_id,time,type,item_id,value,event_id\nv,1700000000000,view_item,,,e1\nv,1700000000000,view_item,,,e1\nv,1700000001000,view_item,,,\n",
        );
        assert_eq!(read_all(&p, Preset::Rung, 0).unwrap().events, 2);
    }

    #[test]
    fn mapping_files_are_toml() {
        let m = Mapping::from_toml(
            "format = \"csv\"\ndelimiter = \";\"\nvisitor = [\"session_id\"]\ntime = \"timeframe\"\ntime_unit = \"millis\"\nevent = 2\n",
        )
        .unwrap();
        assert_eq!(m.delimiter, ';');
        assert_eq!(m.event, Column::Index(2));
        assert!(Mapping::from_toml("format = \"xml\"").is_err());
    }
}
