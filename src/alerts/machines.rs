//! The machine kinds: rules on one of the user's own portfolio machines (`machine`: its id in
//! `GET /api/v1/portfolio`), evaluated with the market rules, with the same crossings, cooldowns
//! and delivery.

use super::{Check, Condition, Direction, crosses, direction_word, sentence};
use crate::portfolio::Item;
use crate::portfolio::position::ordinal;

pub(super) fn validate(c: &Condition) -> Result<(), String> {
    if c.machine().is_some_and(|m| m.is_empty() || m.len() > 64) {
        return Err("`machine` is the portfolio machine's id (GET /api/v1/portfolio)".into());
    }
    match c {
        Condition::MachineIdle { hours, .. } if !(hours.is_finite() && *hours > 0.0 && *hours <= 24.0 * 90.0) => {
            Err("hours must be above 0 and at most 2160 (90 days)".into())
        }
        Condition::MachinePricePosition { percentile, .. }
            if !(percentile.is_finite() && (0.0..=100.0).contains(percentile)) =>
        {
            Err("percentile is from 0 to 100".into())
        }
        Condition::MachineEarningsDrop { percent, .. }
            if !(percent.is_finite() && *percent > 0.0 && *percent <= 100.0) =>
        {
            Err("percent must be above 0 and at most 100".into())
        }
        _ => Ok(()),
    }
}

/// The machine's name in messages: "RTX 4090 ×4 (vast 150296)".
fn name(item: &Item) -> String {
    let m = &item.machine;
    match &m.machine_id {
        Some(id) => format!("{} ×{} ({} {id})", m.model_name, m.num_gpus, m.platform),
        None => format!("{} ×{} ({})", m.model_name, m.num_gpus, m.platform),
    }
}

/// Whether a machine condition holds for `item`; `None` when the portfolio cannot say (no
/// position or earnings yet).
pub(super) fn check(c: &Condition, item: &Item, now_ms: i64, describe: bool) -> Option<Check> {
    match c {
        Condition::MachineIdle { hours, .. } => Some(idle(item, *hours, now_ms, describe)),
        Condition::MachinePricePosition {
            direction, percentile, ..
        } => price_position(item, *direction, *percentile, describe),
        Condition::MachineOffline { .. } => Some(offline(item, describe)),
        Condition::MachineEarningsDrop { percent, .. } => earnings_drop(item, *percent, describe),
        _ => None,
    }
}

fn idle(item: &Item, hours: f64, now_ms: i64, describe: bool) -> Check {
    let idle_h = item
        .idle_since_ms
        .map_or(0.0, |since| (now_ms - since) as f64 / 3_600_000.0);
    let holds = item.idle_since_ms.is_some() && idle_h >= hours;
    (
        holds,
        idle_h,
        sentence(describe, || format!("{}: no GPU rented for {idle_h:.0} h", name(item))),
    )
}

fn price_position(item: &Item, direction: Direction, percentile: f64, describe: bool) -> Option<Check> {
    let p = item.position.as_ref()?.percentile;
    let dir = direction_word(direction);
    let side = if direction == Direction::Above {
        "pricier"
    } else {
        "cheaper"
    };
    Some((
        crosses(direction, p, percentile),
        p,
        sentence(describe, || {
            format!(
                "{}: priced at the {} percentile of comparable offers, {dir} the {} ({side} than most)",
                name(item),
                ordinal(p),
                ordinal(percentile)
            )
        }),
    ))
}

fn offline(item: &Item, describe: bool) -> Check {
    let m = &item.machine;
    let holds = !m.online || m.error.is_some();
    let why = match &m.error {
        Some(e) => format!("reports an error: {e}"),
        None => "is offline".to_owned(),
    };
    (
        holds,
        f64::from(u8::from(holds)),
        sentence(describe, || format!("{} {why}", name(item))),
    )
}

fn earnings_drop(item: &Item, percent: f64, describe: bool) -> Option<Check> {
    let day = item.machine.earn_day_usd?;
    let average = item.earn_7d_avg_usd.filter(|a| *a > 0.0)?;
    let drop = (average - day) / average * 100.0;
    Some((
        drop >= percent,
        drop,
        sentence(describe, || {
            format!(
                "{}: earned ${day:.2} in the last day, {drop:.0}% below its ${average:.2} daily average",
                name(item)
            )
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portfolio::machine::ManualMachine;
    use crate::portfolio::position::Position;

    fn item(rented: u32) -> Item {
        let machine = ManualMachine {
            platform: "vast".into(),
            gpu_model: "RTX 4090".into(),
            num_gpus: 2,
            price_per_gpu_hour_usd: 0.4,
            verified: Some(true),
            datacenter: None,
            country: None,
            rented_gpus: Some(rented),
        }
        .into_machine("m1".into(), |_| true)
        .unwrap();
        Item {
            machine,
            idle_since_ms: (rented == 0).then_some(0),
            earn_7d_avg_usd: Some(10.0),
            position: None,
            suggestion: None,
        }
    }

    #[test]
    fn idle_holds_after_the_hours_without_a_rental() {
        let c = Condition::MachineIdle {
            machine: "m1".into(),
            hours: 2.0,
        };
        assert!(!check(&c, &item(0), 3_600_000, false).unwrap().0, "1 h idle");
        let (holds, hours, message) = check(&c, &item(0), 3 * 3_600_000, true).unwrap();
        assert!(holds && hours == 3.0);
        assert_eq!(message, "RTX 4090 ×2 (vast): no GPU rented for 3 h");
        assert!(!check(&c, &item(1), 10 * 3_600_000, false).unwrap().0, "rented");
    }

    #[test]
    fn position_offline_and_earnings() {
        let mut i = item(0);
        let c = Condition::MachinePricePosition {
            machine: "m1".into(),
            direction: Direction::Above,
            percentile: 75.0,
        };
        assert!(check(&c, &i, 0, false).is_none(), "no position yet");
        i.position = Some(Position {
            offers: 10,
            gpus: 10,
            renter_price_usd: 0.5,
            percentile: 80.0,
            available: Default::default(),
            rented: Default::default(),
            utilisation: 0.5,
        });
        assert!(check(&c, &i, 0, false).unwrap().0);
        let offline = Condition::MachineOffline { machine: "m1".into() };
        assert!(!check(&offline, &i, 0, false).unwrap().0);
        i.machine.error = Some("PCIe bus error".into());
        assert_eq!(
            check(&offline, &i, 0, true).unwrap().2,
            "RTX 4090 ×2 (vast) reports an error: PCIe bus error"
        );
        let drop = Condition::MachineEarningsDrop {
            machine: "m1".into(),
            percent: 50.0,
        };
        i.machine.earn_day_usd = Some(6.0);
        assert!(!check(&drop, &i, 0, false).unwrap().0, "40% down");
        i.machine.earn_day_usd = Some(4.0);
        assert!(check(&drop, &i, 0, false).unwrap().0, "60% down");
        assert!(
            validate(&Condition::MachineIdle {
                machine: "m1".into(),
                hours: 0.0
            })
            .is_err()
        );
    }
}
