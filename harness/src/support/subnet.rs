//! The IPv4 subnets of the harness's own networks: a /24 each, picked by
//! the harness rather than the engine, so that every container of a fleet
//! gets a fixed address that the others know from /etc/hosts when they
//! start. Names then resolve without the engine's DNS server (which a
//! loaded Docker 20.10 was seen to stop answering, then to hang behind)
//! and without an exec on every host, and a restarted host keeps its
//! address.

use std::net::Ipv4Addr;

/// An IPv4 network: its address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub address: Ipv4Addr,
    pub prefix: u8,
}

impl Net {
    /// Parses `a.b.c.d/n`; None for IPv6 or anything else.
    pub fn parse(cidr: &str) -> Option<Net> {
        let (address, prefix) = cidr.trim().split_once('/')?;
        let prefix: u8 = prefix.parse().ok().filter(|&p| p <= 32)?;
        Some(Net {
            address: address.parse().ok()?,
            prefix,
        })
    }

    fn mask(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
    }

    /// Whether the two share any address.
    pub fn overlaps(&self, other: &Net) -> bool {
        let mask = Net::mask(self.prefix.min(other.prefix));
        u32::from(self.address) & mask == u32::from(other.address) & mask
    }

    /// The `n`th address of the network (1 is the gateway's).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from((u32::from(self.address) & Net::mask(self.prefix)) + n)
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// Where the harness's networks come from: the private range the engine
/// itself hands out by default (172.17.0.0/16 and up), as /24s.
pub const POOL: Net = Net {
    address: Ipv4Addr::new(172, 16, 0, 0),
    prefix: 12,
};

/// Addresses a /24 gives containers: .2 to .254 (.1 is the gateway).
pub const HOSTS_PER_NET: u32 = 253;

/// Every /24 of `POOL` that overlaps none of `taken`, starting at the one
/// `start` picks (runs at once then rarely try the same one first) and
/// going round.
pub fn free_candidates(taken: &[Net], start: u64) -> Vec<Net> {
    let count = 1u32 << (24 - POOL.prefix);
    let first = (start % u64::from(count)) as u32;
    (0..count)
        .map(|i| Net {
            address: Ipv4Addr::from(u32::from(POOL.address) + (((first + i) % count) << 8)),
            prefix: 24,
        })
        .filter(|candidate| !taken.iter().any(|t| t.overlaps(candidate)))
        .collect()
}

/// The networks the local machine routes to (/proc/net/route), but the
/// default route: a subnet there would shadow them. Empty when the engine is
/// not local (its machine's routes are not readable from here) or the file
/// is not there.
pub fn local_routes() -> Vec<Net> {
    let remote = std::env::var("DOCKER_HOST")
        .map(|h| !h.is_empty() && !h.starts_with("unix://"))
        .unwrap_or(false);
    if remote {
        return Vec::new();
    }
    std::fs::read_to_string("/proc/net/route")
        .map(|table| routes_in(&table))
        .unwrap_or_default()
}

/// The destinations of /proc/net/route's table (hex, little-endian).
fn routes_in(table: &str) -> Vec<Net> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let destination = u32::from_str_radix(fields.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(fields.get(7)?, 16).ok()?;
            let prefix = mask.count_ones() as u8;
            (prefix > 0).then(|| Net {
                address: Ipv4Addr::from(destination.swap_bytes()),
                prefix,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Net {
        Net::parse(s).unwrap()
    }

    #[test]
    fn networks_overlap_when_the_shorter_prefix_holds_both() {
        assert!(net("172.17.0.0/16").overlaps(&net("172.17.5.0/24")));
        assert!(net("172.17.5.0/24").overlaps(&net("172.17.0.0/16")));
        assert!(!net("172.17.0.0/16").overlaps(&net("172.18.0.0/24")));
        assert!(net("0.0.0.0/0").overlaps(&net("10.0.0.0/8")));
        assert_eq!(Net::parse("fd00::/64"), None);
        assert_eq!(Net::parse("10.0.0.0/33"), None);
        assert_eq!(net("172.16.3.0/24").host(2), Ipv4Addr::new(172, 16, 3, 2));
        assert_eq!(net("172.16.3.0/24").to_string(), "172.16.3.0/24");
    }

    #[test]
    fn candidates_skip_what_is_taken_and_go_round_from_the_start() {
        let taken = [net("172.16.0.0/13"), net("172.24.1.0/24")];
        let free = free_candidates(&taken, 0x800);
        assert_eq!(free[0], net("172.24.0.0/24"));
        assert_eq!(free[1], net("172.24.2.0/24"));
        assert!(free.iter().all(|c| !taken.iter().any(|t| t.overlaps(c))));
        // Every /24 of the /12 but the 2048 + 1 taken, once each.
        assert_eq!(free.len(), 4096 - 2048 - 1);
        // A start past the end is taken round; after the last /24 comes
        // the first free one.
        let from_the_last = free_candidates(&taken, 4095 + 4096);
        assert_eq!(from_the_last[0], net("172.31.255.0/24"));
        assert_eq!(from_the_last[1], net("172.24.0.0/24"));
        assert!(free_candidates(&[POOL], 7).is_empty());
    }

    #[test]
    fn the_route_table_gives_its_destinations_but_the_default() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                     eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            routes_in(table),
            vec![net("172.17.0.0/16"), net("192.0.2.0/24")]
        );
    }
}
