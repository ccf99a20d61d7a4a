//! Realistic JSON events for the archive benchmark: the clickstream and order events that
//! microservices replicate through topics. Deterministic (a fixed-seed xorshift), so every run
//! archives the same bytes.
//!
//! Each event has a UUID, a user id from a population of 200,000 (also the record key), a
//! session id, an ISO timestamp, one of eight event types with type-specific fields (cart items
//! with SKUs and prices, search terms, page URLs and referrers), device and geo details and A/B
//! test assignments. Sizes vary between about 350 and 1,000 bytes. Identifiers are random,
//! as they are in production, so this compresses like real data, not like a repeated template.

/// A pseudo-random generator (xorshift64*), deterministic for a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn hex(&mut self, digits: usize) -> String {
        let mut s = String::with_capacity(digits);
        while s.len() < digits {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(digits);
        s
    }

    fn uuid(&mut self) -> String {
        let h = self.hex(32);
        format!(
            "{}-{}-4{}-a{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..32]
        )
    }
}

const TYPES: &[&str] = &[
    "page_view",
    "page_view",
    "page_view",
    "search",
    "add_to_cart",
    "checkout_started",
    "order_placed",
    "login",
];
const OS: &[&str] = &["ios", "android", "windows", "macos", "linux"];
const LOCALES: &[&str] = &[
    "en-US", "de-DE", "fr-FR", "es-ES", "it-IT", "nl-NL", "pl-PL", "en-GB",
];
const COUNTRIES: &[(&str, &[&str])] = &[
    (
        "DE",
        &["Berlin", "Hamburg", "Munich", "Cologne", "Frankfurt"],
    ),
    ("FR", &["Paris", "Lyon", "Marseille", "Toulouse"]),
    (
        "US",
        &["New York", "Chicago", "Austin", "Seattle", "Boston"],
    ),
    ("GB", &["London", "Manchester", "Leeds"]),
    ("NL", &["Amsterdam", "Rotterdam", "Utrecht"]),
];
const CATEGORIES: &[&str] = &[
    "shoes",
    "jackets",
    "electronics",
    "kitchen",
    "garden",
    "toys",
    "books",
];
const REFERRERS: &[&str] = &[
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://t.co/",
    "https://www.facebook.com/",
    "",
];
const TERMS: &[&str] = &[
    "running shoes",
    "winter jacket",
    "usb-c cable",
    "coffee grinder",
    "garden hose",
    "lego city",
    "noise cancelling headphones",
    "cast iron pan",
];

/// One event: (key = user id, value = JSON document), at `ts_ms`.
pub fn event(rng: &mut Rng, ts_ms: i64) -> (Vec<u8>, Vec<u8>) {
    let user = format!("u-{:06}", rng.below(200_000));
    let kind = rng.pick(TYPES);
    let (country, cities) = COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize];
    let city = rng.pick(cities);
    let secs = ts_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let ts = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ts_ms.rem_euclid(1000)
    );
    let category = rng.pick(CATEGORIES);
    let details = match kind {
        "search" => format!(
            r#""search":{{"query":"{}","results":{},"page":{}}}"#,
            rng.pick(TERMS),
            rng.below(500),
            1 + rng.below(5)
        ),
        "add_to_cart" | "checkout_started" | "order_placed" => {
            let n = 1 + rng.below(4);
            let mut items = Vec::new();
            let mut total = 0u64;
            for _ in 0..n {
                let price = 199 + rng.below(25_000);
                let qty = 1 + rng.below(3);
                total += price * qty;
                items.push(format!(
                    r#"{{"sku":"SKU-{}-{:05}","category":"{category}","qty":{qty},"unit_price":{}.{:02}}}"#,
                    &category[..3].to_uppercase(),
                    rng.below(100_000),
                    price / 100,
                    price % 100
                ));
            }
            format!(
                r#""cart":{{"cart_id":"{}","items":[{}],"total":{}.{:02},"currency":"EUR"{}}}"#,
                rng.uuid(),
                items.join(","),
                total / 100,
                total % 100,
                if kind == "order_placed" {
                    format!(
                        r#","order_id":"ORD-{}","payment":"{}""#,
                        rng.hex(10).to_uppercase(),
                        rng.pick(&["card", "paypal", "klarna", "sepa"])
                    )
                } else {
                    String::new()
                }
            )
        }
        "login" => format!(
            r#""auth":{{"method":"{}","mfa":{}}}"#,
            rng.pick(&["password", "sso", "passkey"]),
            rng.below(2) == 1
        ),
        _ => format!(
            r#""page":{{"url":"/{category}/p/{}","title":"{} {}","referrer":"{}","load_ms":{}}}"#,
            rng.below(1_000_000),
            category,
            rng.below(10_000),
            rng.pick(REFERRERS),
            40 + rng.below(3000)
        ),
    };
    let value = format!(
        r#"{{"event_id":"{}","type":"{kind}","user_id":"{user}","session_id":"{}","ts":"{ts}","device":{{"os":"{}","app_version":"5.{}.{}","locale":"{}"}},"geo":{{"country":"{country}","city":"{city}"}},"experiments":["checkout-v{}:{}","search-rank:{}"],{details}}}"#,
        rng.uuid(),
        rng.hex(16),
        rng.pick(OS),
        rng.below(20),
        rng.below(10),
        rng.pick(LOCALES),
        rng.below(4),
        rng.pick(&["a", "b"]),
        rng.pick(&["control", "treatment"]),
    );
    (user.into_bytes(), value.into_bytes())
}

/// `n` events starting at `t0_ms`, about 2 ms apart.
pub fn events(seed: u64, n: usize, t0_ms: i64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let ts = t0_ms + (i as i64) * 2 + rng.below(3) as i64;
            event(&mut rng, ts)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_valid_json_of_realistic_size() {
        let ev = events(7, 2000, 1_764_000_000_000);
        let total: usize = ev.iter().map(|(_, v)| v.len()).sum();
        let avg = total / ev.len();
        assert!((350..1000).contains(&avg), "average {avg} bytes");
        for (k, v) in &ev {
            let j: serde_json::Value = serde_json::from_slice(v).unwrap();
            assert_eq!(j["user_id"].as_str().unwrap().as_bytes(), &k[..]);
            assert!(
                j["ts"].as_str().unwrap().starts_with("2025-11-24T"),
                "{}",
                j["ts"]
            );
        }
        assert_eq!(events(7, 10, 0), events(7, 10, 0), "deterministic");
    }
}
