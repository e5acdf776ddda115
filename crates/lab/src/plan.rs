//! Answer plans for the embedded HTTP server: which paths it answers differently from its plain
//! `200 ok\n`, and how. The comparison tests give the online, target and baseline servers
//! different plans and then know exactly which paths the report must name.
//!
//! A plan is plain data: paths chosen from a seeded [`Rng`], so a test can rebuild it and ask it
//! which paths got which [`Twist`]. Nothing here does I/O; [`crate::httpd`] serves a plan.

use std::collections::BTreeMap;
use std::time::Duration;

use session::testing::Rng;

/// How one path's answer departs from the plain answer (`200 OK`, `text/plain`, body `ok\n`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Twist {
    /// Another status line, same body.
    Status(u16),
    /// Another body (its length is declared as usual).
    Body(String),
    /// A random value in every answer's body: `ok <16 hex digits>\n`, so the length is the same
    /// from answer to answer and only the bytes differ.
    Noise,
    /// The plain answer, sent this much later.
    Delay(Duration),
}

/// One answer, as the server writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

/// Per path, its twist; every other path gets the plain answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnswerPlan {
    twists: BTreeMap<String, Twist>,
}

/// The plain answer's body.
pub const PLAIN_BODY: &str = "ok\n";

/// `n` distinct paths under `prefix`: `/{prefix}/p0000`, `/{prefix}/p0001`, ... (same width, so
/// no path is a prefix of another).
pub fn paths(prefix: &str, n: usize) -> Vec<String> {
    let p = prefix.trim_matches('/');
    (0..n).map(|i| format!("/{p}/p{i:04}")).collect()
}

/// `count` distinct items of `candidates` drawn at random from `rng`, sorted (all of them when
/// there are fewer).
pub fn pick(candidates: &[String], count: usize, rng: &mut Rng) -> Vec<String> {
    let mut free: Vec<&String> = candidates.iter().collect();
    let mut chosen = Vec::new();
    while chosen.len() < count && !free.is_empty() {
        chosen.push(free.swap_remove(rng.below(free.len())).clone());
    }
    chosen.sort();
    chosen
}

/// The reason phrase of the statuses a plan uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Other",
    }
}

impl AnswerPlan {
    /// The plan that answers every path plainly.
    pub fn plain() -> AnswerPlan {
        AnswerPlan::default()
    }

    /// Gives `path` its twist (replacing an earlier one).
    pub fn set(&mut self, path: &str, twist: Twist) -> &mut AnswerPlan {
        self.twists.insert(path.to_string(), twist);
        self
    }

    /// Picks `count` of `candidates` that have no twist yet ([`pick`]), gives each `twist`, and
    /// returns them sorted.
    pub fn choose(
        &mut self,
        candidates: &[String],
        count: usize,
        rng: &mut Rng,
        twist: Twist,
    ) -> Vec<String> {
        let free: Vec<String> = candidates
            .iter()
            .filter(|p| !self.twists.contains_key(p.as_str()))
            .cloned()
            .collect();
        let chosen = pick(&free, count, rng);
        self.set_all(&chosen, twist);
        chosen
    }

    /// Gives every one of `paths` `twist`.
    pub fn set_all(&mut self, paths: &[String], twist: Twist) -> &mut AnswerPlan {
        for p in paths {
            self.set(p, twist.clone());
        }
        self
    }

    /// The twist of `path`, if any.
    pub fn twist(&self, path: &str) -> Option<&Twist> {
        self.twists.get(path)
    }

    /// Every twisted path with its twist, in path order.
    pub fn twists(&self) -> impl Iterator<Item = (&str, &Twist)> {
        self.twists.iter().map(|(p, t)| (p.as_str(), t))
    }

    /// The answer to `path`; `noise` is the random value a [`Twist::Noise`] path shows (the
    /// server draws one per answer).
    pub fn answer(&self, path: &str, noise: u64) -> Answer {
        let mut answer = Answer {
            status: 200,
            body: PLAIN_BODY.to_string(),
            delay: Duration::ZERO,
        };
        match self.twists.get(path) {
            None => {}
            Some(Twist::Status(s)) => answer.status = *s,
            Some(Twist::Body(b)) => answer.body = b.clone(),
            Some(Twist::Noise) => answer.body = format!("ok {noise:016x}\n"),
            Some(Twist::Delay(d)) => answer.delay = *d,
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_is_seeded_disjoint_and_sorted() {
        let all = paths("/t/", 100);
        assert_eq!(all[7], "/t/p0007");
        let build = || {
            let mut plan = AnswerPlan::plain();
            let mut rng = Rng::new(17);
            let a = plan.choose(&all, 5, &mut rng, Twist::Status(503));
            let b = plan.choose(&all, 5, &mut rng, Twist::Body("KO\n".into()));
            (plan, a, b)
        };
        let (plan, a, b) = build();
        assert_eq!((a.len(), b.len()), (5, 5));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(a.iter().all(|p| !b.contains(p)), "{a:?} {b:?}");
        assert_eq!(plan, build().0, "same seed, same plan");
        assert_eq!(plan.twists().count(), 10);
        assert_eq!(plan.twist(&a[0]), Some(&Twist::Status(503)));
    }

    #[test]
    fn answers_follow_the_twists() {
        let mut plan = AnswerPlan::plain();
        plan.set("/s", Twist::Status(404))
            .set("/b", Twist::Body("KO\n".into()))
            .set("/n", Twist::Noise)
            .set("/d", Twist::Delay(Duration::from_millis(5)));
        let plain = plan.answer("/x", 1);
        assert_eq!((plain.status, plain.body.as_str()), (200, "ok\n"));
        assert_eq!(plan.answer("/s", 1).status, 404);
        assert_eq!(plan.answer("/s", 1).body, "ok\n");
        assert_eq!(plan.answer("/b", 1).body, "KO\n");
        let (n1, n2) = (plan.answer("/n", 1).body, plan.answer("/n", 2).body);
        assert_ne!(n1, n2);
        assert_eq!(n1.len(), n2.len());
        assert_eq!(plan.answer("/d", 1).delay, Duration::from_millis(5));
        assert_eq!(plan.answer("/d", 1).body, "ok\n");
    }
}
