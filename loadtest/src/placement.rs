//! Where each user's subscribers connect when the tester is given several instances
//! (`--subscribe-urls`): by the user's partition of the server's partitioned bus, so that
//! each instance holds whole partitions and a run with `TIDINGS_BUS_PARTITIONS` off places
//! the same users on the same instances as a run with it on.

/// The partition (of `partitions`) of the user with id `user`: the server's
/// `tidings::events::bus::partition_of`, written again because the tester does not link
/// the server (a unit test holds the two equal). `None` for an id that is not a UUID.
pub fn partition_of(user: &str, partitions: u32) -> Option<u32> {
    let (high, low) = uuid::Uuid::parse_str(user).ok()?.as_u64_pair();
    let mixed = (high ^ low).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Some(((mixed >> 32) % u64::from(partitions.max(1))) as u32)
}

/// The instance (of `instances`) whose URL the subscribers of `user` open: its partition
/// modulo the instances, so that with `partitions` a multiple of every instance count
/// used, each instance holds `partitions / instances` whole partitions.
pub fn instance_of(user: &str, partitions: u32, instances: usize) -> usize {
    partition_of(user, partitions).unwrap_or(0) as usize % instances.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_is_the_servers() {
        for _ in 0..1000 {
            let user = uuid::Uuid::new_v4();
            for partitions in [1, 7, 64] {
                assert_eq!(
                    partition_of(&user.to_string(), partitions),
                    Some(tidings::events::bus::partition_of(user, partitions)),
                );
            }
        }
    }

    #[test]
    fn instances_hold_whole_partitions() {
        let users: Vec<String> = (0..3000)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        let mut partitions_of = vec![std::collections::BTreeSet::new(); 3];
        for user in &users {
            partitions_of[instance_of(user, 64, 3)].insert(partition_of(user, 64).unwrap());
        }
        let held: usize = partitions_of.iter().map(|p| p.len()).sum();
        assert_eq!(held, 64, "each partition on one instance only");
        assert!(partitions_of.iter().all(|p| p.len() >= 21));
    }
}
