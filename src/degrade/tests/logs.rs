//! Each change of level is logged once, and nothing else is.

use tracing::Level;

use crate::log_recorder::Recorder;

use super::*;

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
