//! Rate-limited repeated warnings: a warning that may repeat without bound (a peer sending
//! bad frames, a listener out of file descriptors, a connection cap reached) is logged at its
//! 1st, 10th, 100th, … occurrence, with the count, so a flood costs a handful of log lines.

/// How often one warning has happened.
#[derive(Debug, Default)]
pub struct Repeats {
    seen: u64,
}

impl Repeats {
    /// Counts one; the count when this one is to be logged (1, 10, 100, …), else `None`.
    pub fn count(&mut self) -> Option<u64> {
        self.seen += 1;
        let mut n = self.seen;
        while n.is_multiple_of(10) {
            n /= 10;
        }
        (n == 1).then_some(self.seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_warnings_are_logged_at_powers_of_ten() {
        let mut r = Repeats::default();
        let logged: Vec<u64> = (0..2000).filter_map(|_| r.count()).collect();
        assert_eq!(logged, [1, 10, 100, 1000]);
    }
}
