//! A `tracing` subscriber for code that only wants events: the worker's
//! forwarder (`child.rs`), parpool-mpi's rank forwarder, and tests. Spans
//! are not kept (every span gets the same id and entering it does
//! nothing), so each user writes what it does with an event and nothing
//! else.

use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Metadata, Subscriber};

/// What an [`EventsOnly`] subscriber does with events.
#[doc(hidden)]
pub trait EventSink: Send + Sync + 'static {
    /// Whether events like this one are wanted (default: all).
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let _ = metadata;
        true
    }

    /// Takes one event.
    fn event(&self, event: &Event<'_>);
}

/// The subscriber around an [`EventSink`].
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct EventsOnly<S>(pub S);

impl<S: EventSink> Subscriber for EventsOnly<S> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        self.0.event(event);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}
