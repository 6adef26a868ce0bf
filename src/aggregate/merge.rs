use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasher, Hash},
};

/// A commutative, associative update: merging updates in any order and any
/// grouping gives the same result, so an [`Aggregate`](super::Aggregate) may
/// combine them in memory and flush one value per key.
///
/// Integers add with wrapping (exact modulo 2ⁿ, like a sum in a database
/// counter column, and never a panic), floats add, maps merge per key, and
/// [`Max`] / [`Min`] keep the extreme.
///
/// ```
/// use std::collections::HashMap;
/// use tower_spillway::aggregate::Merge;
///
/// let mut views: HashMap<&str, u64> = HashMap::from([("home", 3)]);
/// views.merge(HashMap::from([("home", 2), ("about", 1)]));
/// assert_eq!(views, HashMap::from([("home", 5), ("about", 1)]));
/// ```
pub trait Merge {
    /// Folds `other` into `self`.
    fn merge(&mut self, other: Self);
}

macro_rules! wrapping {
    ($($t:ty)*) => {$(
        impl Merge for $t {
            #[inline]
            fn merge(&mut self, other: Self) {
                *self = self.wrapping_add(other);
            }
        }
    )*};
}
wrapping!(u8 u16 u32 u64 u128 usize i8 i16 i32 i64 i128 isize);

impl Merge for f32 {
    #[inline]
    fn merge(&mut self, other: Self) {
        *self += other;
    }
}

impl Merge for f64 {
    #[inline]
    fn merge(&mut self, other: Self) {
        *self += other;
    }
}

impl<K: Hash + Eq, V: Merge, H: BuildHasher> Merge for HashMap<K, V, H> {
    fn merge(&mut self, other: Self) {
        for (k, v) in other {
            merge_entry(self.entry(k), v);
        }
    }
}

fn merge_entry<K, V: Merge>(entry: std::collections::hash_map::Entry<'_, K, V>, v: V) {
    match entry {
        std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().merge(v),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(v);
        }
    }
}

impl<K: Ord, V: Merge> Merge for BTreeMap<K, V> {
    fn merge(&mut self, other: Self) {
        for (k, v) in other {
            match self.entry(k) {
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().merge(v),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(v);
                }
            }
        }
    }
}

impl<A: Merge, B: Merge> Merge for (A, B) {
    fn merge(&mut self, other: Self) {
        self.0.merge(other.0);
        self.1.merge(other.1);
    }
}

/// Keeps the largest value seen (a high-water mark).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Max<T>(pub T);

impl<T: Ord> Merge for Max<T> {
    fn merge(&mut self, other: Self) {
        if other.0 > self.0 {
            self.0 = other.0;
        }
    }
}

/// Keeps the smallest value seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Min<T>(pub T);

impl<T: Ord> Merge for Min<T> {
    fn merge(&mut self, other: Self) {
        if other.0 < self.0 {
            self.0 = other.0;
        }
    }
}

/// Merges `v` into `map[k]`, inserting it when the key is new; `true` when
/// the key was new.
pub(crate) fn merge_into<K: Hash + Eq, V: Merge>(map: &mut HashMap<K, V>, k: K, v: V) -> bool {
    match map.entry(k) {
        std::collections::hash_map::Entry::Occupied(mut e) => {
            e.get_mut().merge(v);
            false
        }
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(v);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_maps_and_extremes() {
        let mut n = u8::MAX;
        n.merge(2);
        assert_eq!(n, 1, "wrapping, never a panic");

        let mut m: BTreeMap<&str, (u32, Max<u32>)> = BTreeMap::from([("a", (1, Max(5)))]);
        Merge::merge(
            &mut m,
            BTreeMap::from([("a", (2, Max(3))), ("b", (1, Max(9)))]),
        );
        assert_eq!(m, BTreeMap::from([("a", (3, Max(5))), ("b", (1, Max(9)))]));

        let mut lo = Min(4);
        lo.merge(Min(2));
        lo.merge(Min(3));
        assert_eq!(lo, Min(2));

        let mut nested: HashMap<u8, HashMap<u8, i64>> = HashMap::new();
        nested.merge(HashMap::from([(1, HashMap::from([(1, -1)]))]));
        nested.merge(HashMap::from([(1, HashMap::from([(1, 3), (2, 1)]))]));
        assert_eq!(nested[&1], HashMap::from([(1, 2), (2, 1)]));
    }
}
