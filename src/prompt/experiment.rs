//! A/B assignment of callers to a prompt experiment's control or variant.
//!
//! Consistent hashing of (experiment id, caller number): the same caller always hears the same
//! variant of the same experiment, and different experiments split callers independently. The
//! hash is SHA-256 (stable across builds and platforms, unlike the standard library's hasher);
//! its first 8 bytes taken modulo 100 give a bucket, and buckets below the traffic percent get
//! the variant.

use sha2::{Digest, Sha256};

use crate::domain::Arm;

/// The bucket, 0–99, of `caller` in experiment `experiment_id`.
pub fn bucket(experiment_id: &str, caller: &str) -> u8 {
    let digest = Sha256::new()
        .chain_update(experiment_id.as_bytes())
        .chain_update(b"\x00")
        .chain_update(caller.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 100) as u8
}

/// The arm of `caller` in an experiment sending `traffic_percent` (0–100) of calls to the variant.
pub fn assign(experiment_id: &str, caller: &str, traffic_percent: i64) -> Arm {
    if i64::from(bucket(experiment_id, caller)) < traffic_percent {
        Arm::Variant
    } else {
        Arm::Control
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_always_gets_the_same_arm() {
        for n in 0..200 {
            let caller = format!("+1415555{n:04}");
            assert_eq!(assign("exp_a", &caller, 50), assign("exp_a", &caller, 50));
        }
    }

    #[test]
    fn ten_thousand_callers_split_fifty_fifty_within_three_percent() {
        let variant = (0..10_000)
            .filter(|n| assign("exp_split", &format!("+1212{n:07}"), 50) == Arm::Variant)
            .count();
        assert!(
            (4_700..=5_300).contains(&variant),
            "{variant} of 10000 got the variant"
        );
    }

    #[test]
    fn zero_and_hundred_percent_are_absolute() {
        for n in 0..500 {
            let caller = format!("+44{n:09}");
            assert_eq!(assign("exp_x", &caller, 0), Arm::Control);
            assert_eq!(assign("exp_x", &caller, 100), Arm::Variant);
        }
    }

    #[test]
    fn experiments_split_callers_independently() {
        let differ = (0..1_000)
            .map(|n| format!("+1303{n:07}"))
            .filter(|c| assign("exp_one", c, 50) != assign("exp_two", c, 50))
            .count();
        assert!((400..=600).contains(&differ), "{differ}");
    }
}
