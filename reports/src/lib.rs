//! Renders a results document. Knows the results schema and nothing of how runs were made.
#![deny(missing_docs)]

pub mod terminal;

/// Formats nanoseconds with a unit that keeps 3-4 significant digits.
pub fn fmt_ns(ns: f64) -> String {
    let a = ns.abs();
    if a < 1e3 {
        format!("{ns:.2} ns")
    } else if a < 1e6 {
        format!("{:.2} us", ns / 1e3)
    } else if a < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn units() {
        assert_eq!(super::fmt_ns(12.345), "12.35 ns");
        assert_eq!(super::fmt_ns(1500.0), "1.50 us");
        assert_eq!(super::fmt_ns(2.5e6), "2.50 ms");
        assert_eq!(super::fmt_ns(3e9), "3.00 s");
    }
}
