//! Validated domain types: time, visitors, events and the taxonomy that gives
//! event types their meaning. Nothing here knows about gRPC or storage.

pub mod event;
pub mod taxonomy;
pub mod time;
pub mod visitor;

pub use event::{Event, ItemKey, NewEvent, StoredEvent};
pub use taxonomy::{EventType, Stage, Taxonomy, TaxonomyError, TypeId};
pub use time::Millis;
pub use visitor::VisitorId;
