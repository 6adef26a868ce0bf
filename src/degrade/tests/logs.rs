//! Each change of level is logged once, and nothing else is.

use std::sync::Mutex;

use tracing::{Event, Level, Metadata, Subscriber, span};

use super::*;

/// Records every event's level and message.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(Level, String)>>>);

struct Message<'a>(&'a mut String);

impl tracing::field::Visit for Message<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), message));
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

#[tokio::test(start_paused = true)]
async fn each_transition_is_logged_once() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let take = || std::mem::take(&mut *recorder.0.lock().unwrap());
    let dial = Dial::default();
    let handle = DegradeHandle::new(dial.source());

    // Flickering between elevated and normal for five seconds: one line.
    for i in 0..100 {
        dial.set(if i % 2 == 0 {
            LoadLevel::Elevated
        } else {
            LoadLevel::Normal
        });
        for _ in 0..10 {
            handle.level();
        }
        advance(50).await;
    }
    assert_eq!(take(), [(Level::INFO, "load level raised".to_owned())]);

    dial.set(LoadLevel::Overloaded);
    handle.level();
    assert_eq!(take(), [(Level::WARN, "load level raised".to_owned())]);

    dial.set(LoadLevel::Normal);
    for _ in 0..60 {
        advance(50).await;
        handle.level();
    }
    assert_eq!(take(), [(Level::INFO, "load level lowered".to_owned())]);
}
