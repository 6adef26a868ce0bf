//! What a learning pacer knows: the pace it keeps, the quota the server
//! announced, and the round of answers it is judging.

use std::time::Duration;

use tokio::time::Instant;

/// How long a round of answers lasts: long enough to hold several answers
/// at the paces quotas usually have, short enough to react within a few
/// hundred milliseconds.
pub(super) const ROUND: Duration = Duration::from_millis(200);
/// How much a round without refusals adds to the pace, as a share of the
/// quota (or of the pace, when the server announced none) per second. The
/// same absolute step on every client sharing a quota is what makes their
/// paces converge on equal shares (additive increase, multiplicative
/// decrease); small, so that the sum of the clients' paces crosses the
/// quota slowly and few calls are refused when it does.
const INCREASE: f64 = 0.02;
/// The least one cut leaves of the pace: half. A round refused almost whole
/// (another client's burst, a newcomer taking every token) halves the pace
/// and the next round judges again, rather than taking it to a tenth at
/// once, from where it would take seconds to grow back.
const MIN_KEEP: f64 = 0.5;
/// The most a cut leaves of the pace, however few calls were refused: a
/// cut of at least 15 % is what makes clients that share a quota converge
/// on equal shares within a few cycles (each cycle shrinks their
/// differences by it).
const MAX_KEEP: f64 = 0.85;
/// Each round without a refusal makes the next step larger by this much
/// (doubling about every second), up to [`MAX_STEP`] times the first: a
/// client far below the quota gets back to it in seconds, and the step is
/// small again right after every cut, when the quota is near.
const STEP_GROWTH: f64 = 1.15;
const MAX_STEP: f64 = 32.0;
/// The slowest pace: one call every ten seconds.
const MIN_RATE: f64 = 0.1;

#[derive(Debug)]
pub(super) struct Learner {
    /// Calls a second; `None` until the server announces its quota or
    /// first refuses a call (until then the client is not paced at all).
    pub(super) rate: Option<f64>,
    /// The quota's rate from the server's `RateLimit-Policy`, calls a
    /// second: the pace never goes above it.
    pub(super) ceiling: Option<f64>,
    /// When the last call went: the next may go one interval later, at
    /// the pace as it is then (a changed pace applies to the next call at
    /// once, not after the calls already waiting).
    last: Option<Instant>,
    round: Round,
    /// When the pace was last cut: a refusal of a call sent before it is
    /// the overload that cut was for.
    last_cut: Option<Instant>,
    /// How many times [`INCREASE`] the next round without refusals adds.
    step: f64,
    pub(super) cuts: u64,
    pub(super) refusals: u64,
}

#[derive(Debug)]
struct Round {
    start: Instant,
    answers: u64,
    refused: u64,
    /// Calls sent in the round (slots taken), to tell a client held back by
    /// its pace from one that sends less than its pace allows.
    sent: u64,
}

impl Learner {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            rate: None,
            ceiling: None,
            last: None,
            last_cut: None,
            round: Round {
                start: now,
                answers: 0,
                refused: 0,
                sent: 0,
            },
            step: 1.0,
            cuts: 0,
            refusals: 0,
        }
    }

    /// A call ready at `now` goes (`None`, and it is counted as sent) or
    /// waits until the instant returned and asks again.
    pub(super) fn try_send(&mut self, now: Instant) -> Option<Instant> {
        let mut sent_at = now;
        if let (Some(rate), Some(last)) = (self.rate, self.last) {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let slot = last + interval;
            if slot > now {
                return Some(slot);
            }
            // The next slot counts from this one, not from when the timer
            // woke the caller (a millisecond late, say), or the pace would
            // run slow by the timer's lateness; but from now after an idle
            // spell, so that idle time does not turn into a burst.
            if now - slot < interval {
                sent_at = slot;
            }
        }
        self.last = Some(sent_at);
        self.round.sent += 1;
        None
    }

    /// One answer to a call sent at `sent`: refused for the quota or not,
    /// with the quota's rate if the server announced one.
    pub(super) fn answered(
        &mut self,
        refused: bool,
        quota: Option<f64>,
        sent: Instant,
        now: Instant,
    ) {
        if let Some(q) = quota {
            self.ceiling = Some(q);
            // Once the server has said what the quota is, never faster. An
            // unpaced client retries every refused call the moment the
            // pushback ends, which is the moment a token comes back: it
            // takes nearly every token from clients that are paced, and
            // cuts them to nothing.
            if self.rate.is_none() {
                self.rate = Some(q);
            }
        }
        if refused {
            self.refusals += 1;
        }
        // A call sent before the last cut and refused says the pace was
        // too fast before the cut, which the cut has dealt with: counted,
        // it would cut again for one overload, once per refused call still
        // on its way, and cut a client hardest for having the most calls
        // refused and retried at once. One cut per overload, as a TCP
        // sender halves once per window of losses.
        let stale = refused && self.last_cut.is_some_and(|cut| sent < cut);
        if !stale {
            self.round.answers += 1;
            self.round.refused += u64::from(refused);
        }
        let elapsed = now.saturating_duration_since(self.round.start);
        if elapsed >= ROUND {
            self.end_round(elapsed.as_secs_f64(), now);
        }
    }

    fn end_round(&mut self, secs: f64, now: Instant) {
        let Round {
            answers,
            refused,
            sent,
            ..
        } = self.round;
        self.round = Round {
            start: now,
            answers: 0,
            refused: 0,
            sent: 0,
        };
        let accepted = answers - refused;
        let rate = if refused > 0 {
            self.cuts += 1;
            self.step = 1.0;
            self.last_cut = Some(now);
            match self.rate {
                // Refused a share of its calls: keep about what was
                // accepted, and at most 85 %. Every client sharing the
                // quota sees about the same share refused, so they cut
                // alike.
                Some(rate) => {
                    let kept = (accepted as f64 / answers as f64).clamp(MIN_KEEP, MAX_KEEP);
                    rate * kept
                }
                // Not paced yet (the server announces no quota): start at
                // what it accepted.
                None => accepted as f64 / secs,
            }
        } else {
            match self.rate {
                // Only a client its pace holds back grows it: one that
                // sends less learns nothing about the quota.
                Some(rate) if sent as f64 >= 0.9 * rate * secs => {
                    let grown = rate + INCREASE * self.step * self.ceiling.unwrap_or(rate) * secs;
                    self.step = (self.step * STEP_GROWTH).min(MAX_STEP);
                    grown
                }
                other => return self.rate = other,
            }
        };
        let capped = self.ceiling.map_or(rate, |c| rate.min(c));
        self.rate = Some(capped.max(MIN_RATE));
    }
}

/// The quota's rate, calls a second, from a `RateLimit-Policy` value: its
/// first item's `q` (quota units) over `w` (window, seconds, 1 when absent),
/// as in `"default";q=200;w=1`. `None` for a value that has none, or whose
/// numbers are zero, negative, not numbers or absurd.
pub(super) fn policy_rate(value: &[u8]) -> Option<f64> {
    let value = std::str::from_utf8(value).ok()?;
    let first = value.split(',').next()?;
    let (mut q, mut w) = (None, 1.0_f64);
    for param in first.split(';').skip(1) {
        let (name, number) = param.split_once('=')?;
        let parse = || number.trim().parse::<u64>().ok().filter(|n| *n > 0);
        match name.trim() {
            "q" => q = Some(parse()? as f64),
            "w" => w = parse()? as f64,
            _ => {}
        }
    }
    let rate = q? / w;
    (rate.is_finite() && rate > 0.0 && rate <= 1e9).then_some(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_rate_is_q_over_w() {
        assert_eq!(policy_rate(b"\"default\";q=200;w=1"), Some(200.0));
        assert_eq!(policy_rate(b"\"default\";q=3600;w=3600"), Some(1.0));
        assert_eq!(policy_rate(b"\"p\";w=60;q=120, \"other\";q=1"), Some(2.0));
        assert_eq!(policy_rate(b"\"default\";q=50"), Some(50.0));
    }

    #[test]
    fn hostile_policies_are_ignored() {
        for bad in [
            &b""[..],
            b"\"default\"",
            b"\"default\";q=0;w=1",
            b"\"default\";q=10;w=0",
            b"\"default\";q=-5;w=1",
            b"\"default\";q=abc",
            b"\"default\";q=1e9999",
            b"\"default\";q=99999999999999999999999",
            b"\"default\";q",
            b"\xff\xfe",
        ] {
            assert_eq!(policy_rate(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// A round of `sent` calls, the first `refused` of them refused, each
    /// answer announcing `quota`; its last answer comes a round after its
    /// start and ends it.
    fn round_with(l: &mut Learner, at: &mut Instant, sent: u64, refused: u64, quota: Option<f64>) {
        // Sent without pacing, all as the round starts: the rounds'
        // judgements are what is tested.
        l.round.sent += sent;
        let start = *at;
        for i in 0..sent - 1 {
            l.answered(i < refused, quota, start, *at);
        }
        *at += ROUND;
        l.answered(sent - 1 < refused, quota, start, *at);
    }

    /// A round from a server announcing a quota of 200 a second.
    fn round_of(l: &mut Learner, at: &mut Instant, sent: u64, refused: u64) {
        round_with(l, at, sent, refused, Some(200.0));
    }

    #[test]
    fn an_announced_quota_paces_the_client_at_once() {
        let at = Instant::now();
        let mut l = Learner::new(at);
        assert_eq!(l.try_send(at), None, "not paced before any answer");
        l.answered(false, Some(200.0), at, at);
        assert_eq!(l.rate, Some(200.0));
        // Its retries too: the next call waits for its slot.
        let slot = l.try_send(at).expect("must wait");
        assert!(((slot - at).as_secs_f64() - 1.0 / 200.0).abs() < 1e-6);
    }

    #[test]
    fn without_a_quota_paces_at_what_was_accepted_from_the_first_refusing_round() {
        let mut at = Instant::now();
        let mut l = Learner::new(at);
        assert_eq!(l.try_send(at), None, "not paced before any refusal");
        assert_eq!(l.try_send(at), None);
        // 100 calls in a round, 75 refused: a quarter got through.
        round_with(&mut l, &mut at, 100, 75, None);
        let rate = l.rate.expect("paced");
        assert!((124.0..=126.0).contains(&rate), "{rate}");
        // Paced: the next call goes 1/rate after the last.
        assert_eq!(l.try_send(at), None);
        let slot = l.try_send(at).expect("must wait");
        let gap = (slot - at).as_secs_f64();
        assert!((gap - 1.0 / rate).abs() < 1e-6, "{gap}");
        // A faster pace applies to the caller already waiting.
        l.rate = Some(2.0 * rate);
        assert!(l.try_send(at).expect("must wait") < slot);
    }

    #[test]
    fn a_refused_share_cuts_the_pace_by_that_share_and_the_quota_caps_it() {
        let mut at = Instant::now();
        let mut l = Learner::new(at);
        l.rate = Some(400.0);
        // The answers carry the policy: the pace falls to the quota.
        round_of(&mut l, &mut at, 80, 0);
        assert_eq!(l.rate, Some(200.0));
        round_of(&mut l, &mut at, 40, 10);
        assert_eq!(l.rate, Some(150.0));
        // Everything refused: halved, and the next round judges again.
        round_of(&mut l, &mut at, 30, 30);
        assert_eq!(l.rate, Some(75.0));
        round_of(&mut l, &mut at, 15, 15);
        assert_eq!(l.rate, Some(37.5));
    }

    #[test]
    fn refusals_of_calls_sent_before_a_cut_do_not_cut_again() {
        let mut at = Instant::now();
        let mut l = Learner::new(at);
        l.rate = Some(200.0);
        let before = at;
        // A round half refused: cut to half.
        round_of(&mut l, &mut at, 40, 20);
        assert_eq!(l.rate, Some(100.0));
        // The next round's answers: ten refusals of calls sent before that
        // cut (retries on their way), then ten calls sent since, accepted.
        for _ in 0..10 {
            l.answered(true, Some(200.0), before, at);
        }
        let since = at;
        for _ in 0..9 {
            l.answered(false, Some(200.0), since, at);
        }
        at += ROUND;
        l.round.sent += 20;
        l.answered(false, Some(200.0), since, at);
        // Not cut again: the pace held the client back, so it grew.
        assert!(l.rate.unwrap() > 100.0, "{:?}", l.rate);
        assert_eq!(l.cuts, 1);
        assert_eq!(l.refusals, 30);
    }

    #[test]
    fn grows_by_a_share_of_the_quota_only_while_the_pace_holds_the_client_back() {
        let mut at = Instant::now();
        let mut l = Learner::new(at);
        l.rate = Some(100.0);
        l.ceiling = Some(200.0);
        // Sending at its pace (20 calls in 0.2 s): +2 % of 200 per second.
        round_of(&mut l, &mut at, 20, 0);
        let grown = l.rate.unwrap();
        assert!((100.7..=100.9).contains(&grown), "{grown}");
        // Sending far less than its pace allows: no growth.
        round_of(&mut l, &mut at, 3, 0);
        assert_eq!(l.rate, Some(grown));
    }
}
