//! Load-balancing algorithms, pure and per core: round robin and smooth weighted
//! round robin (the nginx algorithm: even spreading, no bursts to heavy endpoints).
//! `pick` takes a predicate so the caller can skip endpoints already tried.

use crate::config::{ClusterConfig, LbPolicy};
use std::cell::{Cell, RefCell};

pub enum Balancer {
    RoundRobin {
        next: Cell<usize>,
        len: usize,
    },
    Weighted {
        weights: Vec<i64>,
        current: RefCell<Vec<i64>>,
    },
}

impl Balancer {
    /// `seed` staggers the starting point per core, so cores do not move in step.
    pub fn new(cluster: &ClusterConfig, seed: usize) -> Balancer {
        let len = cluster.endpoints.len();
        match cluster.lb {
            LbPolicy::RoundRobin => Balancer::RoundRobin {
                next: Cell::new(seed % len.max(1)),
                len,
            },
            LbPolicy::WeightedRoundRobin => Balancer::Weighted {
                weights: cluster
                    .endpoints
                    .iter()
                    .map(|e| i64::from(e.weight))
                    .collect(),
                current: RefCell::new(vec![0; len]),
            },
        }
    }

    /// The next endpoint index among those `eligible` accepts.
    pub fn pick(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        match self {
            Balancer::RoundRobin { next, len } => {
                let start = next.get();
                (0..*len)
                    .map(|k| (start + k) % len)
                    .find(|&i| eligible(i))
                    .inspect(|&i| {
                        next.set((i + 1) % len);
                    })
            }
            Balancer::Weighted { weights, current } => {
                let mut current = current.borrow_mut();
                let mut total = 0;
                let mut best: Option<usize> = None;
                for i in (0..weights.len()).filter(|&i| eligible(i)) {
                    current[i] += weights[i];
                    total += weights[i];
                    if best.is_none_or(|b| current[i] > current[b]) {
                        best = Some(i);
                    }
                }
                if let Some(b) = best {
                    current[b] -= total;
                }
                best
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndpointConfig;

    fn cluster(weights: &[u32], lb: LbPolicy) -> ClusterConfig {
        ClusterConfig {
            name: "c".into(),
            endpoints: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| EndpointConfig {
                    name: format!("e{i}"),
                    addr: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                    weight: w,
                })
                .collect(),
            lb,
            connect_timeout: std::time::Duration::from_secs(1),
            response_timeout: std::time::Duration::from_secs(1),
            pool_idle_timeout: std::time::Duration::from_secs(1),
            pool_max_idle: 1,
            protocol: crate::config::UpstreamProtocol::Http1,
            tls: None,
        }
    }

    #[test]
    fn round_robin_cycles_and_skips() {
        let b = Balancer::new(&cluster(&[1, 1, 1], LbPolicy::RoundRobin), 0);
        let picks: Vec<_> = (0..6).map(|_| b.pick(|_| true).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(b.pick(|i| i != 0), Some(1));
        assert_eq!(b.pick(|_| false), None);
    }

    #[test]
    fn smooth_weighted_spreads_by_weight() {
        let b = Balancer::new(&cluster(&[3, 1], LbPolicy::WeightedRoundRobin), 0);
        let picks: Vec<_> = (0..8).map(|_| b.pick(|_| true).unwrap()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 0, 0, 1, 0]);
        let b = Balancer::new(&cluster(&[5, 1, 1], LbPolicy::WeightedRoundRobin), 0);
        let picks: Vec<_> = (0..7).map(|_| b.pick(|_| true).unwrap()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0], "nginx's documented sequence");
    }

    #[test]
    fn weighted_skips_ineligible() {
        let b = Balancer::new(&cluster(&[3, 1], LbPolicy::WeightedRoundRobin), 0);
        for _ in 0..5 {
            assert_eq!(b.pick(|i| i == 1), Some(1));
        }
        assert_eq!(b.pick(|_| false), None);
    }
}
