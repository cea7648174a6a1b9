//! The taxonomy of micro-conversion types: funnel stage, ladder milestones,
//! points, decay and caps, and the aliases other trackers use. Loaded from
//! TOML once at start and checked as a whole, so a running server only ever
//! holds a taxonomy that makes sense.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::time::MILLIS_PER_DAY;

/// The taxonomy that ships with rung (`config/taxonomy.toml`).
pub const DEFAULT_TAXONOMY_TOML: &str = include_str!("../../config/taxonomy.toml");

/// Index of an event type in its taxonomy: the position of its feature too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TypeId(pub u16);

impl TypeId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Funnel stages in ladder order; the derived `Ord` is that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Awareness,
    Consideration,
    Intent,
    Purchase,
}

impl Stage {
    pub const ALL: [Stage; 4] = [
        Stage::Awareness,
        Stage::Consideration,
        Stage::Intent,
        Stage::Purchase,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Awareness => "awareness",
            Stage::Consideration => "consideration",
            Stage::Intent => "intent",
            Stage::Purchase => "purchase",
        }
    }

    fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.name() == s)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One event type, resolved and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct EventType {
    pub name: String,
    pub stage: Stage,
    /// 1-based position among the milestones; 0 for a secondary action.
    pub milestone_rank: u8,
    pub points: f64,
    /// Half-life in milliseconds; infinite means no decay.
    pub half_life_ms: f64,
    /// How many (decayed) occurrences count at most.
    pub cap: f64,
}

impl EventType {
    pub fn is_milestone(&self) -> bool {
        self.milestone_rank > 0
    }

    /// The weight of an occurrence `age_ms` old: 1 when new, 1/2 after one
    /// half-life.
    #[inline]
    pub fn decay(&self, age_ms: f64) -> f64 {
        (-age_ms / self.half_life_ms).exp2()
    }
}

/// Types that certain features rely on by meaning, not by name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roles {
    pub item_view: Option<TypeId>,
    pub cart_add: Option<TypeId>,
    pub cart_remove: Option<TypeId>,
    /// The macro conversion: labels are made of it, and past ones are features.
    pub purchase: TypeId,
}

#[derive(Debug, Clone)]
pub struct Taxonomy {
    types: Vec<EventType>,
    /// Every request resolves each event's name here, so it uses a fast
    /// fixed hash: the keys are the shop's own names, never inserted from
    /// requests, so hash flooding has nothing to grow.
    by_name: HashMap<String, TypeId, FixedState>,
    milestones: Vec<TypeId>,
    /// The milestones' names, shared: every score names the rung reached.
    milestone_names: Vec<Arc<str>>,
    roles: Roles,
    score_scale: f64,
    session_gap_ms: f64,
    signature: Vec<TypeSignature>,
    fingerprint: String,
}

/// What a model artifact records of each type, so a mismatch can be named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypeSignature {
    pub name: String,
    pub stage: Stage,
    pub milestone_rank: u8,
    pub points: f64,
    pub half_life_days: Option<f64>,
    pub cap: f64,
}

/// A taxonomy that does not make sense, with the entry at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("taxonomy {entry}: {reason}")]
pub struct TaxonomyError {
    pub entry: String,
    pub reason: String,
}

fn err(entry: impl Into<String>, reason: impl Into<String>) -> TaxonomyError {
    TaxonomyError {
        entry: entry.into(),
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaxonomy {
    ladder: RawLadder,
    roles: RawRoles,
    types: Vec<RawType>,
    #[serde(default)]
    aliases: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLadder {
    milestones: Vec<String>,
    score_scale: f64,
    session_gap_minutes: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoles {
    item_view: Option<String>,
    cart_add: Option<String>,
    cart_remove: Option<String>,
    purchase: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawType {
    name: String,
    stage: String,
    points: f64,
    half_life_days: Option<f64>,
    cap: u32,
}

/// Longest accepted type or alias name, so names stay usable as labels.
const MAX_NAME_BYTES: usize = 128;

impl Taxonomy {
    /// The taxonomy that ships with rung.
    pub fn builtin() -> Taxonomy {
        Taxonomy::from_toml(DEFAULT_TAXONOMY_TOML)
            .expect("the built-in taxonomy is checked by a unit test")
    }

    /// The taxonomy in the TOML file at `path`, or the built-in one.
    pub fn load(path: Option<&std::path::Path>) -> Result<Taxonomy, TaxonomyError> {
        match path {
            None => Ok(Taxonomy::builtin()),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| err("file", format!("cannot read {}: {e}", p.display())))?;
                Taxonomy::from_toml(&text)
            }
        }
    }

    pub fn from_toml(text: &str) -> Result<Taxonomy, TaxonomyError> {
        let raw: RawTaxonomy =
            toml::from_str(text).map_err(|e| err("file", e.message().to_string()))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawTaxonomy) -> Result<Taxonomy, TaxonomyError> {
        if raw.types.is_empty() {
            return Err(err("types", "at least one type is needed"));
        }
        if raw.types.len() > usize::from(u16::MAX) {
            return Err(err("types", "too many types"));
        }
        let mut by_name: HashMap<String, TypeId, FixedState> = HashMap::default();
        let mut types = Vec::with_capacity(raw.types.len());
        for (i, t) in raw.types.iter().enumerate() {
            let entry = format!("types[{i}] ({:?})", t.name);
            check_name(&entry, &t.name)?;
            let stage = Stage::parse(&t.stage).ok_or_else(|| {
                err(
                    &entry,
                    format!(
                        "unknown stage {:?}; expected awareness, consideration, intent or purchase",
                        t.stage
                    ),
                )
            })?;
            if !t.points.is_finite() {
                return Err(err(
                    &entry,
                    format!("points must be a finite number, got {}", t.points),
                ));
            }
            let half_life_ms = match t.half_life_days {
                None => f64::INFINITY,
                Some(d) if d.is_finite() && d > 0.0 => d * MILLIS_PER_DAY,
                Some(d) => {
                    return Err(err(
                        &entry,
                        format!("half_life_days must be a positive number of days, got {d}"),
                    ))
                }
            };
            if t.cap == 0 {
                return Err(err(&entry, "cap must be at least 1"));
            }
            let id = TypeId(i as u16);
            if by_name.insert(t.name.clone(), id).is_some() {
                return Err(err(&entry, format!("duplicate type name {:?}", t.name)));
            }
            types.push(EventType {
                name: t.name.clone(),
                stage,
                milestone_rank: 0,
                points: t.points,
                half_life_ms,
                cap: f64::from(t.cap),
            });
        }

        let lookup = |entry: &str, name: &str| -> Result<TypeId, TaxonomyError> {
            by_name
                .get(name)
                .copied()
                .ok_or_else(|| err(entry, format!("{name:?} is not a type in [[types]]")))
        };

        if raw.ladder.milestones.is_empty() {
            return Err(err("ladder.milestones", "at least one milestone is needed"));
        }
        if raw.ladder.milestones.len() > usize::from(u8::MAX) {
            return Err(err("ladder.milestones", "too many milestones"));
        }
        let mut milestones = Vec::with_capacity(raw.ladder.milestones.len());
        for (i, name) in raw.ladder.milestones.iter().enumerate() {
            let entry = format!("ladder.milestones[{i}]");
            let id = lookup(&entry, name)?;
            if milestones.contains(&id) {
                return Err(err(&entry, format!("{name:?} is listed twice")));
            }
            milestones.push(id);
            types[id.index()].milestone_rank = (i + 1) as u8;
        }
        if !(raw.ladder.score_scale.is_finite() && raw.ladder.score_scale > 0.0) {
            return Err(err(
                "ladder.score_scale",
                format!("must be a positive number, got {}", raw.ladder.score_scale),
            ));
        }
        let gap = raw.ladder.session_gap_minutes;
        if !(gap.is_finite() && gap > 0.0) {
            return Err(err(
                "ladder.session_gap_minutes",
                format!("must be a positive number, got {gap}"),
            ));
        }

        let optional_role = |entry: &str, name: &Option<String>| {
            name.as_deref().map(|n| lookup(entry, n)).transpose()
        };
        let roles = Roles {
            item_view: optional_role("roles.item_view", &raw.roles.item_view)?,
            cart_add: optional_role("roles.cart_add", &raw.roles.cart_add)?,
            cart_remove: optional_role("roles.cart_remove", &raw.roles.cart_remove)?,
            purchase: lookup("roles.purchase", &raw.roles.purchase)?,
        };

        let mut aliases: Vec<(&String, &toml::Value)> = raw.aliases.iter().collect();
        aliases.sort_by(|a, b| a.0.cmp(b.0));
        for (alias, target) in aliases {
            let entry = format!("aliases.{alias:?}");
            check_name(&entry, alias)?;
            let target = target
                .as_str()
                .ok_or_else(|| err(&entry, "the target must be a type name in quotes"))?;
            if by_name.contains_key(alias.as_str()) {
                let reason = if types.iter().any(|t| &t.name == alias) {
                    "collides with the type of the same name".to_string()
                } else {
                    "collides with another alias".to_string()
                };
                return Err(err(&entry, reason));
            }
            let id = *by_name
                .get(target)
                .filter(|id| types[id.index()].name == target)
                .ok_or_else(|| err(&entry, format!("{target:?} is not a type in [[types]]")))?;
            by_name.insert(alias.clone(), id);
        }

        let signature: Vec<TypeSignature> = types
            .iter()
            .map(|t| TypeSignature {
                name: t.name.clone(),
                stage: t.stage,
                milestone_rank: t.milestone_rank,
                points: t.points,
                half_life_days: t
                    .half_life_ms
                    .is_finite()
                    .then_some(t.half_life_ms / MILLIS_PER_DAY),
                cap: t.cap,
            })
            .collect();
        let fingerprint = fingerprint_of(&signature, &roles, &types, raw.ladder.score_scale, gap);

        let milestone_names = milestones
            .iter()
            .map(|id: &TypeId| Arc::from(types[id.index()].name.as_str()))
            .collect();
        Ok(Taxonomy {
            types,
            by_name,
            milestones,
            milestone_names,
            roles,
            score_scale: raw.ladder.score_scale,
            session_gap_ms: gap * 60_000.0,
            signature,
            fingerprint,
        })
    }

    /// The type a tracker's name (type name or alias) stands for.
    #[inline]
    pub fn resolve(&self, name: &str) -> Option<TypeId> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, id: TypeId) -> &EventType {
        &self.types[id.index()]
    }

    pub fn types(&self) -> &[EventType] {
        &self.types
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// Milestones, lowest first.
    pub fn milestones(&self) -> &[TypeId] {
        &self.milestones
    }

    /// The milestone at a 1-based rank.
    /// The name of the milestone at a rank, shared (no copy per call).
    pub fn milestone_name(&self, rank: u8) -> Option<&Arc<str>> {
        let i = usize::from(rank).checked_sub(1)?;
        self.milestone_names.get(i)
    }

    pub fn milestone_at(&self, rank: u8) -> Option<&EventType> {
        let i = usize::from(rank).checked_sub(1)?;
        self.milestones.get(i).map(|id| self.get(*id))
    }

    pub fn roles(&self) -> &Roles {
        &self.roles
    }

    pub fn score_scale(&self) -> f64 {
        self.score_scale
    }

    pub fn session_gap_ms(&self) -> f64 {
        self.session_gap_ms
    }

    pub fn signature(&self) -> &[TypeSignature] {
        &self.signature
    }

    /// `sha256:<hex>` of everything in the taxonomy that shapes features;
    /// aliases are left out since they only change how names are read.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

fn check_name(entry: &str, name: &str) -> Result<(), TaxonomyError> {
    if name.is_empty() {
        return Err(err(entry, "the name must not be empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(err(
            entry,
            format!("the name is longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(err(entry, "the name contains a control character"));
    }
    Ok(())
}

fn fingerprint_of(
    signature: &[TypeSignature],
    roles: &Roles,
    types: &[EventType],
    score_scale: f64,
    session_gap_minutes: f64,
) -> String {
    let role_name = |r: Option<TypeId>| r.map(|id| types[id.index()].name.clone());
    let canonical = serde_json::json!({
        "types": signature,
        "roles": {
            "item_view": role_name(roles.item_view),
            "cart_add": role_name(roles.cart_add),
            "cart_remove": role_name(roles.cart_remove),
            "purchase": types[roles.purchase.index()].name,
        },
        "score_scale": score_scale,
        "session_gap_minutes": session_gap_minutes,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_taxonomy_is_valid_and_has_every_required_name() {
        let t = Taxonomy::from_toml(DEFAULT_TAXONOMY_TOML).unwrap();
        for name in [
            "page_view",
            "view_item_list",
            "select_item",
            "view_item",
            "search",
            "view_promotion",
            "select_promotion",
            "add_to_wishlist",
            "add_to_cart",
            "remove_from_cart",
            "view_cart",
            "begin_checkout",
            "add_shipping_info",
            "add_payment_info",
            "purchase",
            "refund",
            "sign_up",
            "login",
            "generate_lead",
            "share",
            "file_download",
            "video_progress",
            "video_complete",
            "review_read",
            "faq_view",
            "filter_use",
            "chat_start",
            "newsletter_signup",
            "size_guide_view",
            "coupon_apply",
        ] {
            let id = t.resolve(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(t.get(id).name, name);
        }
        let order: Vec<&str> = t
            .milestones()
            .iter()
            .map(|id| t.get(*id).name.as_str())
            .collect();
        assert_eq!(
            order,
            [
                "view_item_list",
                "view_item",
                "add_to_cart",
                "begin_checkout",
                "add_shipping_info",
                "add_payment_info",
                "purchase"
            ]
        );
    }

    #[test]
    fn builtin_aliases_cover_segment_and_public_datasets() {
        let t = Taxonomy::builtin();
        let expect = [
            ("Products Searched", "search"),
            ("Product List Viewed", "view_item_list"),
            ("Product Viewed", "view_item"),
            ("Product Added", "add_to_cart"),
            ("Product Removed", "remove_from_cart"),
            ("Cart Viewed", "view_cart"),
            ("Checkout Started", "begin_checkout"),
            ("Payment Info Entered", "add_payment_info"),
            ("Order Completed", "purchase"),
            ("Product Added to Wishlist", "add_to_wishlist"),
            ("Product Shared", "share"),
            ("Product Reviewed", "review_write"),
            ("pv", "view_item"),
            ("fav", "add_to_wishlist"),
            ("cart", "add_to_cart"),
            ("buy", "purchase"),
            ("view", "view_item"),
            ("addtocart", "add_to_cart"),
            ("transaction", "purchase"),
        ];
        for (alias, target) in expect {
            let id = t
                .resolve(alias)
                .unwrap_or_else(|| panic!("{alias} missing"));
            assert_eq!(t.get(id).name, target, "{alias}");
        }
    }

    fn minimal(types: &str, extra: &str) -> String {
        format!(
            "[ladder]\nmilestones = [\"a\"]\nscore_scale = 10.0\nsession_gap_minutes = 30.0\n\
             [roles]\npurchase = \"a\"\n{types}\n{extra}"
        )
    }

    const TYPE_A: &str = "[[types]]\nname = \"a\"\nstage = \"intent\"\npoints = 1.0\ncap = 2\n";

    fn refusal(text: &str) -> TaxonomyError {
        Taxonomy::from_toml(text).expect_err("should be refused")
    }

    #[test]
    fn unknown_stage_is_refused_naming_the_entry() {
        let e = refusal(&minimal(&TYPE_A.replace("intent", "intnet"), ""));
        assert_eq!(e.entry, "types[0] (\"a\")");
        assert!(e.reason.contains("\"intnet\""), "{e}");
    }

    #[test]
    fn duplicate_type_names_are_refused() {
        let e = refusal(&minimal(&format!("{TYPE_A}{TYPE_A}"), ""));
        assert_eq!(e.entry, "types[1] (\"a\")");
        assert!(e.reason.contains("duplicate"), "{e}");
    }

    #[test]
    fn alias_colliding_with_a_type_is_refused() {
        let b = TYPE_A.replace("\"a\"", "\"b\"");
        let e = refusal(&minimal(&format!("{TYPE_A}{b}"), "[aliases]\nb = \"a\"\n"));
        assert_eq!(e.entry, "aliases.\"b\"");
        assert!(e.reason.contains("collides"), "{e}");
    }

    #[test]
    fn alias_to_an_unknown_type_is_refused() {
        let e = refusal(&minimal(TYPE_A, "[aliases]\nx = \"nope\"\n"));
        assert_eq!(e.entry, "aliases.\"x\"");
    }

    #[test]
    fn negative_zero_and_nan_numbers_are_refused() {
        let neg = refusal(&minimal(&format!("{TYPE_A}half_life_days = -1.0\n"), ""));
        assert!(neg.reason.contains("half_life_days"), "{neg}");
        let zero = refusal(&minimal(&format!("{TYPE_A}half_life_days = 0.0\n"), ""));
        assert!(zero.reason.contains("half_life_days"), "{zero}");
        let nan = refusal(&minimal(&TYPE_A.replace("1.0", "nan"), ""));
        assert!(nan.reason.contains("points"), "{nan}");
        let scale = refusal(&minimal(TYPE_A, "").replace("10.0", "nan"));
        assert_eq!(scale.entry, "ladder.score_scale");
    }

    #[test]
    fn milestone_that_is_not_a_type_is_refused() {
        let text = minimal(TYPE_A, "").replace("[\"a\"]", "[\"a\", \"zz\"]");
        assert_eq!(refusal(&text).entry, "ladder.milestones[1]");
    }

    #[test]
    fn fingerprint_changes_with_points_but_not_with_aliases() {
        let base = Taxonomy::from_toml(&minimal(TYPE_A, "")).unwrap();
        let aliased = Taxonomy::from_toml(&minimal(TYPE_A, "[aliases]\nq = \"a\"\n")).unwrap();
        let repointed = Taxonomy::from_toml(&minimal(&TYPE_A.replace("1.0", "2.0"), "")).unwrap();
        assert_eq!(base.fingerprint(), aliased.fingerprint());
        assert_ne!(base.fingerprint(), repointed.fingerprint());
    }
}
