//! Stratified, shuffled folds that a seed reproduces.

/// Fold (0..k) of each row: positives and negatives are shuffled separately
/// and dealt round-robin, so every fold's class counts differ by at most one.
/// The shuffle is SplitMix64 + Fisher–Yates, written out so a seed gives the
/// same folds whatever version of `rand` the crate uses.
pub fn stratified_folds(labels: &[bool], k: usize, seed: u64) -> Vec<usize> {
    let k = k.max(1);
    let mut rng = SplitMix64(seed);
    let mut folds = vec![0; labels.len()];
    let mut dealt = 0;
    for class in [true, false] {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        for i in (1..members.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            members.swap(i, j);
        }
        for &m in &members {
            folds[m] = dealt % k;
            dealt += 1;
        }
    }
    folds
}

pub(super) struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
