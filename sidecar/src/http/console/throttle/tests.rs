use std::net::Ipv6Addr;

use super::*;

const RIGHT: fn() -> bool = || true;
const WRONG: fn() -> bool = || false;

fn v4(last: u8) -> Client {
    Client::of(IpAddr::from([10, 0, 0, last]))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Fails `times` wrong logins of `client` at `now`, each of them counted.
fn fail(throttle: &LoginThrottle, client: Client, now: Instant, times: u32) {
    for _ in 0..times {
        assert_eq!(throttle.attempt(client, now, WRONG), Attempt::Failed);
    }
}

#[test]
fn after_five_failures_each_wait_doubles_up_to_fifteen_minutes() {
    let throttle = LoginThrottle::default();
    let a = v4(1);
    let t0 = Instant::now();
    fail(&throttle, a, t0, FREE_FAILURES);
    assert_eq!(
        throttle.attempt(a, t0, WRONG),
        Attempt::Throttled {
            retry_after: secs(1)
        }
    );
    let mut now = t0;
    for wait in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900] {
        now += secs(wait);
        assert_eq!(throttle.attempt(a, now, WRONG), Attempt::Failed, "{wait}");
        let next = match wait {
            512 | 900 => 900,
            w => w * 2,
        };
        assert_eq!(
            throttle.attempt(a, now + secs(next) - Duration::from_millis(1), RIGHT),
            Attempt::Throttled {
                retry_after: Duration::from_millis(1)
            },
            "even the right token waits"
        );
    }
}

#[test]
fn a_right_token_clears_the_failures_and_other_clients_are_apart() {
    let throttle = LoginThrottle::default();
    let (a, b) = (v4(1), v4(2));
    let t0 = Instant::now();
    fail(&throttle, a, t0, FREE_FAILURES - 1);
    assert_eq!(throttle.attempt(a, t0, RIGHT), Attempt::Passed);
    assert_eq!(throttle.tracked(), 0);
    fail(&throttle, a, t0, FREE_FAILURES);
    assert!(matches!(
        throttle.attempt(a, t0, RIGHT),
        Attempt::Throttled { .. }
    ));
    assert_eq!(throttle.attempt(b, t0, RIGHT), Attempt::Passed);
    fail(&throttle, b, t0, FREE_FAILURES - 1);
    assert_eq!(throttle.attempt(a, t0 + secs(1), RIGHT), Attempt::Passed);
    assert_eq!(throttle.tracked(), 1, "b's failures stay");
}

#[test]
fn failures_are_forgotten_a_quarter_hour_after_the_last_wait() {
    let throttle = LoginThrottle::default();
    let (a, b) = (v4(1), v4(2));
    let t0 = Instant::now();
    fail(&throttle, a, t0, FREE_FAILURES);
    fail(&throttle, b, t0, FREE_FAILURES);
    // Their wait of 1 s ends at t0 + 1 s; a quarter of an hour later the
    // count starts again, and not a moment before.
    let forgotten = t0 + secs(1) + FORGET_AFTER;
    fail(&throttle, a, forgotten, FREE_FAILURES);
    fail(&throttle, b, forgotten - Duration::from_millis(1), 1);
    assert_eq!(
        throttle.attempt(b, forgotten, RIGHT),
        Attempt::Throttled {
            retry_after: secs(2) - Duration::from_millis(1)
        }
    );
}

#[test]
fn an_ipv6_client_is_its_64_network_and_a_mapped_ipv4_its_address() {
    let host = |last: u16| {
        Client::of(IpAddr::V6(Ipv6Addr::new(
            0x2001, 0xdb8, 0, 1, 0, 0, 0, last,
        )))
    };
    assert_eq!(host(1), host(2));
    assert_ne!(
        host(1),
        Client::of(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1)))
    );
    assert_eq!(
        Client::of(IpAddr::V6(Ipv6Addr::new(
            0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0001
        ))),
        v4(1)
    );
    assert_eq!(host(7).to_string(), "2001:db8:0:1::/64");
    assert_eq!(v4(1).to_string(), "10.0.0.1");
}

#[test]
fn a_flood_of_addresses_is_bounded_and_shares_one_allowance() {
    let throttle = LoginThrottle::default();
    let t0 = Instant::now();
    let flood = |i: usize| Client::of(IpAddr::from((0x0b00_0000 + i as u32).to_be_bytes()));
    for i in 0..MAX_TRACKED_CLIENTS {
        fail(&throttle, flood(i), t0, 1);
    }
    assert_eq!(throttle.tracked(), MAX_TRACKED_CLIENTS);
    // Every further address counts against one shared entry.
    for i in 0..FREE_FAILURES as usize {
        fail(&throttle, flood(MAX_TRACKED_CLIENTS + i), t0, 1);
    }
    assert_eq!(throttle.tracked(), MAX_TRACKED_CLIENTS);
    for i in [MAX_TRACKED_CLIENTS + 99, MAX_TRACKED_CLIENTS + 100] {
        assert_eq!(
            throttle.attempt(flood(i), t0, RIGHT),
            Attempt::Throttled {
                retry_after: secs(1)
            },
            "a fresh address buys no fresh tries"
        );
    }
    // A tracked client keeps its own count; its room goes to the next.
    assert_eq!(throttle.attempt(flood(0), t0, RIGHT), Attempt::Passed);
    fail(&throttle, flood(MAX_TRACKED_CLIENTS + 300), t0, 1);
    assert_eq!(throttle.tracked(), MAX_TRACKED_CLIENTS);
    // Once the table's entries are forgotten, new addresses have room.
    let later = t0 + secs(1) + FORGET_AFTER;
    fail(&throttle, flood(MAX_TRACKED_CLIENTS + 200), later, 1);
    assert_eq!(throttle.tracked(), 1);
    assert_eq!(
        throttle.attempt(flood(MAX_TRACKED_CLIENTS + 201), later, RIGHT),
        Attempt::Passed
    );
}

#[test]
fn parallel_guesses_get_no_more_tries_than_guesses_in_a_row() {
    let throttle = LoginThrottle::default();
    let a = v4(1);
    let t0 = Instant::now();
    // Each check of the token takes a while: guesses that all arrived
    // before the first was counted must still wait their turn.
    let slow_wrong = || {
        std::thread::sleep(Duration::from_millis(20));
        false
    };
    let attempts: Vec<Attempt> = std::thread::scope(|scope| {
        let guesses: Vec<_> = (0..20)
            .map(|_| scope.spawn(|| throttle.attempt(a, t0, slow_wrong)))
            .collect();
        guesses.into_iter().map(|g| g.join().unwrap()).collect()
    });
    let failed = attempts.iter().filter(|a| **a == Attempt::Failed).count();
    assert_eq!(failed, FREE_FAILURES as usize, "{attempts:?}");
}
