//! IPv4 subnets, as the engine reports them for its networks: a fleet's
//! network has one set explicitly, so that every container of the fleet
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

    /// The `n`th address of the network (1 is the gateway's).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from((u32::from(self.address) & Net::mask(self.prefix)) + n)
    }

    /// How many addresses the network gives containers: all but its own,
    /// the gateway's (the first) and the broadcast address.
    pub fn hosts(&self) -> u32 {
        let size = 1u64 << (32 - u32::from(self.prefix.min(30)));
        u32::try_from(size - 3).unwrap_or(u32::MAX)
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Net {
        Net::parse(s).unwrap()
    }

    #[test]
    fn subnets_read_and_give_their_addresses() {
        assert_eq!(Net::parse("fd00::/64"), None);
        assert_eq!(Net::parse("10.0.0.0/33"), None);
        assert_eq!(net("172.16.3.0/24").host(2), Ipv4Addr::new(172, 16, 3, 2));
        assert_eq!(net("172.16.3.9/24").host(1), Ipv4Addr::new(172, 16, 3, 1));
        assert_eq!(net("172.16.3.0/24").to_string(), "172.16.3.0/24");
        assert_eq!(net("172.16.3.0/24").hosts(), 253);
        assert_eq!(net("192.168.16.0/20").hosts(), 4093);
        assert_eq!(net("0.0.0.0/0").hosts(), u32::MAX - 2);
    }
}
