//! Segment definitions: the JSON form (canonical) checked against the
//! taxonomy and the store's limits, into a tree [`super::evaluate`] walks.
//!
//! Every clause is a JSON object with one key (see the README for the
//! table). Errors name the position: the JSONPath-like path of the value at
//! fault (`$.and[1].count.event`), or the line and column of a syntax error,
//! or, for the text form, its column.

use serde_json::{Map, Value};

use crate::domain::{Millis, Stage, Taxonomy, TypeId};
use crate::scoring::Band;

use super::text;

/// Longest definition accepted, in bytes.
pub const MAX_LEN: usize = 16 * 1024;
/// Deepest nesting of clauses accepted.
pub const MAX_DEPTH: usize = 32;

/// Index of a clause in its definition ([`Definition::node`]).
pub type NodeId = u32;

/// What the store can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanguageLimits {
    /// Longest window: events older than the retention period are gone.
    pub max_window_ms: i64,
    /// Highest threshold of a count within a window: the store keeps that
    /// many recent times per type.
    pub max_windowed_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at {position}: {reason}")]
pub struct DefinitionError {
    pub position: String,
    pub reason: String,
}

impl DefinitionError {
    pub(crate) fn new(position: impl Into<String>, reason: impl Into<String>) -> Self {
        DefinitionError {
            position: position.into(),
            reason: reason.into(),
        }
    }
}

/// Bounds on a number; a missing side is open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// (bound, strict)
    pub lower: Option<(f64, bool)>,
    pub upper: Option<(f64, bool)>,
}

impl Range {
    /// The JSON form, numbers as floats whichever way they were written.
    fn canonical(&self) -> Value {
        let mut m = Map::new();
        let num = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
        if let Some((x, strict)) = self.lower {
            m.insert(if strict { "gt" } else { "gte" }.into(), num(x));
        }
        if let Some((x, strict)) = self.upper {
            m.insert(if strict { "lt" } else { "lte" }.into(), num(x));
        }
        Value::Object(m)
    }

    pub fn contains(&self, x: f64) -> bool {
        let above = match self.lower {
            Some((b, true)) => x > b,
            Some((b, false)) => x >= b,
            None => true,
        };
        let below = match self.upper {
            Some((b, true)) => x < b,
            Some((b, false)) => x <= b,
            None => true,
        };
        above && below
    }
}

/// `within`: seen at or after as_of − within; `older_than`: before as_of − older_than.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recency {
    pub within: Option<i64>,
    pub older_than: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Clause {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Probability(Range),
    LadderScore(Range),
    Sessions(Range),
    Band(Vec<Band>),
    Stage(Vec<Stage>),
    /// Milestone rank reached (or not).
    Reached(u8),
    NotReached(u8),
    Count {
        types: Vec<TypeId>,
        within: Option<i64>,
        at_least: Option<u64>,
        at_most: Option<u64>,
    },
    AbsentAfter {
        anchor: Vec<TypeId>,
        anchor_within: Option<i64>,
        absent: Vec<TypeId>,
        within: Option<i64>,
    },
    FirstSeen(Recency),
    LastSeen(Recency),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: NodeId,
    pub clause: Clause,
    /// Whether this clause or one inside it needs the model's score.
    pub needs_score: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct NodeInfo {
    path: String,
    json: String,
}

/// A checked definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    root: Node,
    nodes: Vec<NodeInfo>,
    canonical: String,
}

/// A segment that ships with rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Builtin {
    pub name: &'static str,
    pub description: &'static str,
    pub json: &'static str,
}

const BUILTINS: [Builtin; 6] = [
    Builtin {
        name: "cart_abandoners",
        description: "Added to cart in the last 7 days, no purchase since.",
        json: r#"{"absent_after":{"anchor":"add_to_cart","anchor_within":"7d","absent":"purchase"}}"#,
    },
    Builtin {
        name: "checkout_abandoners",
        description: "Began checkout in the last 7 days, no purchase since.",
        json: r#"{"absent_after":{"anchor":"begin_checkout","anchor_within":"7d","absent":"purchase"}}"#,
    },
    Builtin {
        name: "high_intent_browsers",
        description: "Seen in the last 7 days, never added to cart, and high intent (band high or ladder score at least 50).",
        json: r#"{"and":[{"last_seen":{"within":"7d"}},{"not_reached":"add_to_cart"},{"or":[{"band":"high"},{"ladder_score":{"gte":50}}]}]}"#,
    },
    Builtin {
        name: "leads_without_purchase",
        description: "Left a lead or signed up in the last 30 days, then did not buy within 24 hours.",
        json: r#"{"absent_after":{"anchor":["generate_lead","newsletter_signup"],"anchor_within":"30d","absent":"purchase","within":"24h"}}"#,
    },
    Builtin {
        name: "wishlist_twice_no_purchase",
        description: "Added to the wishlist at least twice in the last 30 days, no purchase since the latest.",
        json: r#"{"and":[{"count":{"event":"add_to_wishlist","within":"30d","at_least":2}},{"absent_after":{"anchor":"add_to_wishlist","anchor_within":"30d","absent":"purchase"}}]}"#,
    },
    Builtin {
        name: "lapsed_buyers",
        description: "Bought before, but not in the last 30 days.",
        json: r#"{"and":[{"count":{"event":"purchase","at_least":1}},{"count":{"event":"purchase","within":"30d","at_most":0}}]}"#,
    },
];

pub fn builtins() -> &'static [Builtin] {
    &BUILTINS
}

impl Definition {
    /// Either form: text starting with `{` (or `[`, to explain that a list is
    /// not a clause) is JSON, anything else the text form.
    pub fn parse(
        text: &str,
        taxonomy: &Taxonomy,
        limits: &LanguageLimits,
    ) -> Result<Definition, DefinitionError> {
        if text.trim_start().starts_with(['{', '[']) {
            Definition::parse_json(text, taxonomy, limits)
        } else {
            check_len(text)?;
            let (value, spans) = text::to_json(text)?;
            Definition::from_value(&value, taxonomy, limits).map_err(|e| spans.locate(e))
        }
    }

    pub fn parse_json(
        text: &str,
        taxonomy: &Taxonomy,
        limits: &LanguageLimits,
    ) -> Result<Definition, DefinitionError> {
        check_len(text)?;
        let value: Value = serde_json::from_str(text).map_err(|e| {
            DefinitionError::new(
                format!("line {}, column {}", e.line(), e.column()),
                json_reason(&e),
            )
        })?;
        Definition::from_value(&value, taxonomy, limits)
    }

    fn from_value(
        value: &Value,
        taxonomy: &Taxonomy,
        limits: &LanguageLimits,
    ) -> Result<Definition, DefinitionError> {
        let mut p = Parser {
            taxonomy,
            limits,
            nodes: Vec::new(),
        };
        let (root, canonical) = p.clause(value, "$", 0)?;
        Ok(Definition {
            root,
            nodes: p.nodes,
            canonical: canonical.to_string(),
        })
    }

    pub fn root(&self) -> &Node {
        &self.root
    }

    /// Canonical compact JSON (text form converted, event names canonical).
    pub fn to_json(&self) -> String {
        self.canonical.clone()
    }

    /// Path and canonical JSON of a clause, for "which clause matched".
    pub fn node(&self, id: NodeId) -> (&str, &str) {
        self.nodes
            .get(id as usize)
            .map_or(("$", ""), |n| (n.path.as_str(), n.json.as_str()))
    }

    pub fn needs_score(&self) -> bool {
        self.root.needs_score
    }

    /// A visitor last seen before this cannot match at `as_of`: scans skip
    /// them without decoding. `None` when the definition implies no bound.
    pub fn active_since(&self, as_of: Millis) -> Option<Millis> {
        bound(&self.root.clause).map(|ms| as_of.saturating_add_millis(-ms))
    }
}

/// How recent (in ms before as_of) a member's last event must be, if the
/// clause implies it. Sound: a visitor older than that cannot match.
fn bound(c: &Clause) -> Option<i64> {
    match c {
        Clause::Count {
            within: Some(w),
            at_least: Some(n),
            ..
        } if *n >= 1 => Some(*w),
        Clause::AbsentAfter {
            anchor_within: Some(w),
            ..
        } => Some(*w),
        Clause::LastSeen(Recency {
            within: Some(w), ..
        }) => Some(*w),
        // All must hold: the tightest (smallest window) bound applies.
        Clause::And(children) => children.iter().filter_map(|n| bound(&n.clause)).min(),
        // Any may hold: only a bound every alternative shares.
        Clause::Or(children) => children
            .iter()
            .map(|n| bound(&n.clause))
            .try_fold(i64::MIN, |acc, b| b.map(|b| acc.max(b))),
        _ => None,
    }
}

fn check_len(text: &str) -> Result<(), DefinitionError> {
    if text.trim().is_empty() {
        return Err(DefinitionError::new("$", "the definition is empty"));
    }
    if text.len() > MAX_LEN {
        return Err(DefinitionError::new(
            "$",
            format!(
                "the definition is {} bytes; the limit is {MAX_LEN}",
                text.len()
            ),
        ));
    }
    Ok(())
}

fn json_reason(e: &serde_json::Error) -> String {
    // serde_json appends " at line L column C"; the position is said already.
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

const CLAUSES: &str = "and, or, not, probability, ladder_score, sessions, band, stage, reached, \
                       not_reached, count, absent_after, first_seen, last_seen";

struct Parser<'a> {
    taxonomy: &'a Taxonomy,
    limits: &'a LanguageLimits,
    nodes: Vec<NodeInfo>,
}

type Parsed = Result<(Node, Value), DefinitionError>;

fn err<T>(path: &str, reason: impl Into<String>) -> Result<T, DefinitionError> {
    Err(DefinitionError::new(path, reason))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl Parser<'_> {
    fn clause(&mut self, v: &Value, path: &str, depth: usize) -> Parsed {
        if depth >= MAX_DEPTH {
            return err(path, format!("clauses nest deeper than {MAX_DEPTH}"));
        }
        let Value::Object(map) = v else {
            return err(
                path,
                format!(
                    "expected a clause (an object with one key), found {}",
                    kind(v)
                ),
            );
        };
        if map.len() != 1 {
            return err(
                path,
                format!(
                    "a clause has exactly one key, found {}: write several clauses inside \"and\"",
                    map.len()
                ),
            );
        }
        let (key, body) = map.iter().next().expect("one entry");
        let id = self.nodes.len() as NodeId;
        self.nodes.push(NodeInfo {
            path: path.to_string(),
            json: String::new(),
        });
        let inner = format!("{path}.{key}");
        let (clause, canonical_body) = match key.as_str() {
            "and" | "or" => {
                let Value::Array(items) = body else {
                    return err(
                        &inner,
                        format!("expected a list of clauses, found {}", kind(body)),
                    );
                };
                if items.is_empty() {
                    return err(&inner, "needs at least one clause");
                }
                let mut children = Vec::with_capacity(items.len());
                let mut canon = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let (n, c) = self.clause(item, &format!("{inner}[{i}]"), depth + 1)?;
                    children.push(n);
                    canon.push(c);
                }
                let clause = if key == "and" {
                    Clause::And(children)
                } else {
                    Clause::Or(children)
                };
                (clause, Value::Array(canon))
            }
            "not" => {
                let (n, c) = self.clause(body, &inner, depth + 1)?;
                (Clause::Not(Box::new(n)), c)
            }
            "probability" => {
                let r = range(body, &inner, 0.0, 1.0)?;
                (Clause::Probability(r), r.canonical())
            }
            "ladder_score" => {
                let r = range(body, &inner, 0.0, 100.0)?;
                (Clause::LadderScore(r), r.canonical())
            }
            "sessions" => {
                let r = range(body, &inner, 0.0, f64::MAX)?;
                (Clause::Sessions(r), r.canonical())
            }
            "band" => {
                let names = names(body, &inner)?;
                let bands = names
                    .iter()
                    .map(|(n, p)| match n.as_str() {
                        "low" => Ok(Band::Low),
                        "medium" => Ok(Band::Medium),
                        "high" => Ok(Band::High),
                        other => err(
                            p,
                            format!("unknown band {other:?}; bands are low, medium, high"),
                        ),
                    })
                    .collect::<Result<_, _>>()?;
                (Clause::Band(bands), body.clone())
            }
            "stage" => {
                let names = names(body, &inner)?;
                let stages = names
                    .iter()
                    .map(|(n, p)| {
                        Stage::ALL.into_iter().find(|s| s.name() == n).ok_or_else(|| {
                            DefinitionError::new(
                                p.clone(),
                                format!(
                                    "unknown stage {n:?}; stages are awareness, consideration, intent, purchase"
                                ),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?;
                (Clause::Stage(stages), body.clone())
            }
            "reached" | "not_reached" => {
                let Value::String(name) = body else {
                    return err(
                        &inner,
                        format!("expected a milestone's name, found {}", kind(body)),
                    );
                };
                let id = self.event_type(name, &inner)?;
                let t = self.taxonomy.get(id);
                if t.milestone_rank == 0 {
                    let milestones: Vec<&str> = self
                        .taxonomy
                        .milestones()
                        .iter()
                        .map(|m| self.taxonomy.get(*m).name.as_str())
                        .collect();
                    return err(
                        &inner,
                        format!(
                            "{:?} is not a milestone; the milestones are {}",
                            t.name,
                            milestones.join(", ")
                        ),
                    );
                }
                let clause = if key == "reached" {
                    Clause::Reached(t.milestone_rank)
                } else {
                    Clause::NotReached(t.milestone_rank)
                };
                (clause, Value::String(t.name.clone()))
            }
            "count" => self.count(body, &inner)?,
            "absent_after" => self.absent_after(body, &inner)?,
            "first_seen" | "last_seen" => {
                let fields = object(body, &inner, &["within", "older_than"])?;
                let within = self.window(fields.get("within"), &format!("{inner}.within"))?;
                let older_than =
                    self.window(fields.get("older_than"), &format!("{inner}.older_than"))?;
                if within.is_none() && older_than.is_none() {
                    return err(&inner, "give within, older_than or both");
                }
                let r = Recency { within, older_than };
                let clause = if key == "first_seen" {
                    Clause::FirstSeen(r)
                } else {
                    Clause::LastSeen(r)
                };
                (clause, body.clone())
            }
            other => {
                return err(
                    path,
                    format!("unknown clause {other:?}; clauses are {CLAUSES}"),
                )
            }
        };
        let mut canon = Map::new();
        canon.insert(key.clone(), canonical_body);
        let canonical = Value::Object(canon);
        self.nodes[id as usize].json = canonical.to_string();
        let needs_score = match &clause {
            Clause::Probability(_) | Clause::LadderScore(_) | Clause::Band(_) => true,
            Clause::And(c) | Clause::Or(c) => c.iter().any(|n| n.needs_score),
            Clause::Not(n) => n.needs_score,
            _ => false,
        };
        Ok((
            Node {
                id,
                clause,
                needs_score,
            },
            canonical,
        ))
    }

    fn count(&mut self, body: &Value, path: &str) -> Result<(Clause, Value), DefinitionError> {
        let fields = object(body, path, &["event", "within", "at_least", "at_most"])?;
        let (types, names) = self.types(fields.get("event"), &format!("{path}.event"))?;
        let within = self.window(fields.get("within"), &format!("{path}.within"))?;
        let at_least = count_bound(fields.get("at_least"), &format!("{path}.at_least"))?;
        let at_most = count_bound(fields.get("at_most"), &format!("{path}.at_most"))?;
        if at_least.is_none() && at_most.is_none() {
            return err(path, "give at_least, at_most or both");
        }
        if let (Some(lo), Some(hi)) = (at_least, at_most) {
            if lo > hi {
                return err(path, format!("at_least ({lo}) is above at_most ({hi})"));
            }
        }
        if within.is_some() {
            let max = u64::from(self.limits.max_windowed_count);
            for (field, v) in [("at_least", at_least), ("at_most", at_most)] {
                if let Some(n) = v.filter(|n| *n > max) {
                    return err(
                        &format!("{path}.{field}"),
                        format!(
                            "{n} is above {max}: rung keeps the latest {max} times per event type, \
                             so counts within a window are exact only up to {max}"
                        ),
                    );
                }
            }
        }
        let mut canon = body.as_object().cloned().unwrap_or_default();
        canon.insert("event".into(), names);
        Ok((
            Clause::Count {
                types,
                within,
                at_least,
                at_most,
            },
            Value::Object(canon),
        ))
    }

    fn absent_after(
        &mut self,
        body: &Value,
        path: &str,
    ) -> Result<(Clause, Value), DefinitionError> {
        let fields = object(body, path, &["anchor", "anchor_within", "absent", "within"])?;
        let (anchor, anchor_names) = self.types(fields.get("anchor"), &format!("{path}.anchor"))?;
        let (absent, absent_names) = self.types(fields.get("absent"), &format!("{path}.absent"))?;
        if let Some(t) = anchor.iter().find(|t| absent.contains(t)) {
            return err(
                &format!("{path}.absent"),
                format!(
                    "{:?} is both an anchor and absent; a type cannot follow itself",
                    self.taxonomy.get(*t).name
                ),
            );
        }
        let anchor_within = self.window(
            fields.get("anchor_within"),
            &format!("{path}.anchor_within"),
        )?;
        let within = self.window(fields.get("within"), &format!("{path}.within"))?;
        let mut canon = body.as_object().cloned().unwrap_or_default();
        canon.insert("anchor".into(), anchor_names);
        canon.insert("absent".into(), absent_names);
        Ok((
            Clause::AbsentAfter {
                anchor,
                anchor_within,
                absent,
                within,
            },
            Value::Object(canon),
        ))
    }

    /// One event type or a non-empty list; the canonical names back.
    fn types(
        &self,
        v: Option<&Value>,
        path: &str,
    ) -> Result<(Vec<TypeId>, Value), DefinitionError> {
        let Some(v) = v else {
            return err(path, "is required");
        };
        let items: Vec<(&Value, String)> = match v {
            Value::Array(a) if a.is_empty() => return err(path, "needs at least one event type"),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, x)| (x, format!("{path}[{i}]")))
                .collect(),
            other => vec![(other, path.to_string())],
        };
        let mut ids = Vec::new();
        let mut names = Vec::new();
        for (item, p) in items {
            let Value::String(name) = item else {
                return err(
                    &p,
                    format!("expected an event type's name, found {}", kind(item)),
                );
            };
            let id = self.event_type(name, &p)?;
            if !ids.contains(&id) {
                ids.push(id);
                names.push(Value::String(self.taxonomy.get(id).name.clone()));
            }
        }
        let canonical = if names.len() == 1 {
            names.pop().expect("one")
        } else {
            Value::Array(names)
        };
        Ok((ids, canonical))
    }

    fn event_type(&self, name: &str, path: &str) -> Result<TypeId, DefinitionError> {
        self.taxonomy.resolve(name).ok_or_else(|| {
            let hint = closest(name, self.taxonomy.types().iter().map(|t| t.name.as_str()))
                .map(|c| format!(" (did you mean {c:?}?)"))
                .unwrap_or_default();
            DefinitionError::new(path, format!("unknown event type {name:?}{hint}"))
        })
    }

    fn window(&self, v: Option<&Value>, path: &str) -> Result<Option<i64>, DefinitionError> {
        let Some(v) = v else {
            return Ok(None);
        };
        let Value::String(text) = v else {
            return err(
                path,
                format!(
                    "expected a duration such as \"7d\" or \"24h\", found {}",
                    kind(v)
                ),
            );
        };
        let d = humantime::parse_duration(text).map_err(|e| {
            DefinitionError::new(
                path,
                format!("{text:?} is not a duration ({e}); write e.g. \"30m\", \"24h\", \"7d\""),
            )
        })?;
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        if ms <= 0 {
            return err(path, "a window must be longer than zero");
        }
        if ms > self.limits.max_window_ms {
            return err(
                path,
                format!(
                    "{text:?} is longer than the retention period ({} days): older events are not kept",
                    self.limits.max_window_ms as f64 / 86_400_000.0
                ),
            );
        }
        Ok(Some(ms))
    }
}

/// An object with only the `allowed` keys.
fn object<'v>(
    v: &'v Value,
    path: &str,
    allowed: &[&str],
) -> Result<&'v Map<String, Value>, DefinitionError> {
    let Value::Object(map) = v else {
        return err(
            path,
            format!(
                "expected an object with {}, found {}",
                allowed.join(", "),
                kind(v)
            ),
        );
    };
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return err(
            &format!("{path}.{k}"),
            format!("unknown field {k:?}; allowed here: {}", allowed.join(", ")),
        );
    }
    Ok(map)
}

fn range(v: &Value, path: &str, min: f64, max: f64) -> Result<Range, DefinitionError> {
    let map = object(v, path, &["gte", "gt", "lte", "lt"])?;
    let num = |k: &str| -> Result<Option<f64>, DefinitionError> {
        let Some(x) = map.get(k) else {
            return Ok(None);
        };
        let p = format!("{path}.{k}");
        let n = x.as_f64().ok_or_else(|| {
            DefinitionError::new(p.clone(), format!("expected a number, found {}", kind(x)))
        })?;
        if !n.is_finite() || n < min || n > max {
            return err(&p, format!("{n} is outside {min} to {max}"));
        }
        Ok(Some(n))
    };
    let pick = |a: &str, b: &str| -> Result<Option<(f64, bool)>, DefinitionError> {
        match (num(a)?, num(b)?) {
            (Some(_), Some(_)) => err(path, format!("give {a} or {b}, not both")),
            (Some(x), None) => Ok(Some((x, false))),
            (None, Some(x)) => Ok(Some((x, true))),
            (None, None) => Ok(None),
        }
    };
    let r = Range {
        lower: pick("gte", "gt")?,
        upper: pick("lte", "lt")?,
    };
    match (r.lower, r.upper) {
        (None, None) => err(path, "give at least one of gte, gt, lte, lt"),
        (Some((lo, _)), Some((hi, _))) if lo > hi => err(
            path,
            format!("the lower bound {lo} is above the upper bound {hi}"),
        ),
        _ => Ok(r),
    }
}

fn count_bound(v: Option<&Value>, path: &str) -> Result<Option<u64>, DefinitionError> {
    match v {
        None => Ok(None),
        Some(x) => x.as_u64().map(Some).ok_or_else(|| {
            DefinitionError::new(
                path,
                format!("expected a whole number of at least 0, found {x}"),
            )
        }),
    }
}

/// A name or a non-empty list of names, each with its path.
fn names(v: &Value, path: &str) -> Result<Vec<(String, String)>, DefinitionError> {
    match v {
        Value::String(s) => Ok(vec![(s.clone(), path.to_string())]),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::String(s) => Ok((s.clone(), format!("{path}[{i}]"))),
                other => err(
                    &format!("{path}[{i}]"),
                    format!("expected a name, found {}", kind(other)),
                ),
            })
            .collect(),
        other => err(
            path,
            format!(
                "expected a name or a non-empty list of names, found {}",
                kind(other)
            ),
        ),
    }
}

/// The known name within edit distance 2 of `name`, if there is one.
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LanguageLimits = LanguageLimits {
        max_window_ms: 90 * 86_400_000,
        max_windowed_count: 64,
    };

    fn parse(text: &str) -> Result<Definition, DefinitionError> {
        Definition::parse(text, &Taxonomy::builtin(), &LIMITS)
    }

    fn refusal(text: &str) -> (String, String) {
        let e = parse(text).expect_err(text);
        (e.position, e.reason)
    }

    #[test]
    fn every_builtin_parses_under_the_default_taxonomy() {
        for b in builtins() {
            let d = parse(b.json).unwrap_or_else(|e| panic!("{}: {e}", b.name));
            // The canonical form of a canonical definition is itself.
            assert_eq!(
                d.to_json(),
                parse(&d.to_json()).unwrap().to_json(),
                "{}",
                b.name
            );
        }
    }

    #[test]
    fn aliases_become_canonical_names() {
        let d =
            parse(r#"{"count":{"event":["Product Added","add_to_cart"],"at_least":1}}"#).unwrap();
        assert_eq!(
            d.to_json(),
            r#"{"count":{"at_least":1,"event":"add_to_cart"}}"#
        );
    }

    #[test]
    fn refusals_name_the_position() {
        let cases = [
            (
                r#"{"and":[{"reached":"purchase"},{"count":{"event":"add_to_kart","at_least":1}}]}"#,
                "$.and[1].count.event",
                "did you mean \"add_to_cart\"",
            ),
            (
                r#"{"and":[{"reached":"purchase"}"#,
                "line 1, column 30",
                "EOF",
            ),
            (
                r#"{"count":{"event":"purchase","within":"7 fortnights","at_least":1}}"#,
                "$.count.within",
                "not a duration",
            ),
            (
                r#"{"count":{"event":"purchase","within":"120d","at_least":1}}"#,
                "$.count.within",
                "retention",
            ),
            (
                r#"{"count":{"event":"purchase","within":"7d","at_least":65}}"#,
                "$.count.at_least",
                "64",
            ),
            (
                r#"{"count":{"event":"purchase","at_least":3,"at_most":2}}"#,
                "$.count",
                "above at_most",
            ),
            (r#"{"count":{"event":"purchase"}}"#, "$.count", "at_least"),
            (
                r#"{"count":{"event":"purchase","at_least":-1}}"#,
                "$.count.at_least",
                "whole number",
            ),
            (
                r#"{"count":{"event":"purchase","at_least":1,"windw":"7d"}}"#,
                "$.count.windw",
                "unknown field",
            ),
            (
                r#"{"probability":{"gte":1.5}}"#,
                "$.probability.gte",
                "outside",
            ),
            (
                r#"{"probability":{"gte":0.6,"lt":0.2}}"#,
                "$.probability",
                "above the upper",
            ),
            (
                r#"{"probability":{"gte":0.1,"gt":0.2}}"#,
                "$.probability",
                "not both",
            ),
            (
                r#"{"sessions":{"gte":2},"band":"high"}"#,
                "$",
                "exactly one key",
            ),
            (r#"{"reached":"page_view"}"#, "$.reached", "not a milestone"),
            (r#"{"band":"hot"}"#, "$.band", "unknown band"),
            (
                r#"{"stage":["intent","buying"]}"#,
                "$.stage[1]",
                "unknown stage",
            ),
            (r#"{"or":[]}"#, "$.or", "at least one"),
            (r#"{"nope":1}"#, "$", "unknown clause"),
            (
                r#"{"absent_after":{"anchor":"purchase","absent":"purchase"}}"#,
                "$.absent_after.absent",
                "both",
            ),
            (r#"{"last_seen":{}}"#, "$.last_seen", "within"),
            (
                r#"{"last_seen":{"within":"0s"}}"#,
                "$.last_seen.within",
                "longer than zero",
            ),
            (r#"[1]"#, "$", "expected a clause"),
        ];
        for (text, position, reason) in cases {
            let (p, r) = refusal(text);
            assert_eq!(p, position, "{text}: {r}");
            assert!(r.contains(reason), "{text}: {r}");
        }
    }

    #[test]
    fn nesting_and_size_are_bounded() {
        let deep = format!(
            "{}{}{}",
            r#"{"not":"#.repeat(40),
            r#"{"reached":"purchase"}"#,
            "}".repeat(40)
        );
        let (p, r) = refusal(&deep);
        assert!(p.starts_with("$.not.not"), "{p}");
        assert!(r.contains("deeper"), "{r}");
        let long = format!(
            r#"{{"or":[{}]}}"#,
            vec![r#"{"reached":"purchase"}"#; 1000].join(",")
        );
        assert!(refusal(&long).1.contains("limit"));
        assert_eq!(refusal("   ").1, "the definition is empty");
    }

    #[test]
    fn the_activity_bound_follows_and_or_not() {
        let day = 86_400_000;
        let as_of = Millis::from_unix_millis(100 * day);
        let since = |t: &str| {
            parse(t)
                .unwrap()
                .active_since(as_of)
                .map(|m| m.as_unix_millis() / day)
        };
        assert_eq!(
            since(r#"{"count":{"event":"purchase","within":"7d","at_least":1}}"#),
            Some(93)
        );
        // at_least 0 within a window holds for anybody.
        assert_eq!(
            since(r#"{"count":{"event":"purchase","within":"7d","at_most":0}}"#),
            None
        );
        assert_eq!(
            since(
                r#"{"and":[{"last_seen":{"within":"30d"}},{"absent_after":{"anchor":"add_to_cart","anchor_within":"7d","absent":"purchase"}}]}"#
            ),
            Some(93)
        );
        assert_eq!(
            since(
                r#"{"or":[{"last_seen":{"within":"30d"}},{"absent_after":{"anchor":"add_to_cart","anchor_within":"7d","absent":"purchase"}}]}"#
            ),
            Some(70)
        );
        assert_eq!(
            since(r#"{"or":[{"last_seen":{"within":"30d"}},{"reached":"purchase"}]}"#),
            None
        );
        assert_eq!(since(r#"{"not":{"last_seen":{"within":"30d"}}}"#), None);
    }

    #[test]
    fn nodes_know_their_path_and_json() {
        let d = parse(r#"{"or":[{"reached":"purchase"},{"band":["high"]}]}"#).unwrap();
        assert_eq!(
            d.node(0),
            ("$", r#"{"or":[{"reached":"purchase"},{"band":["high"]}]}"#)
        );
        assert_eq!(d.node(2), ("$.or[1]", r#"{"band":["high"]}"#));
        assert!(d.needs_score());
        assert!(!parse(r#"{"reached":"purchase"}"#).unwrap().needs_score());
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("add_to_kart", "add_to_cart"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
