//! The guard at the model's door: is what we are about to score like what the model learned on?
//!
//! `runner model train` records each numeric feature's training distribution in the model
//! declaration ([`FeatureProfile`]: range, deciles, and the training share of each decile bin).
//! Every scoring run compares the companies it scores with it, per feature:
//!
//! - **out of range**: rows below the training minimum or above the maximum. A linear model
//!   extrapolates there without saying so (the seed's model answers "no churn" with a score of
//!   1e-30 to a tenant with 300 jobs a month); each such row is flagged in `churn_scores`.
//! - **PSI** (population stability index) over the training deciles:
//!   `sum((p - q) * ln(p / q))`, `p` the scored share and `q` the training share of a bin (both
//!   floored at 0.0001). The usual reading, used here: below 0.1 stable, 0.1 to 0.25 moderate
//!   shift, above 0.25 significant shift. With few rows PSI is noisy (a bin of 10% expects 2.5
//!   of 25 companies), so it is computed from [`MIN_ROWS_FOR_PSI`] rows on.
//!
//! Over the configured thresholds (`[scoring.drift]`) the run warns loudly, and with
//! `refuse = true` it publishes no scores (SageMaker Model Monitor sells this check as a service).

use serde::{Deserialize, Serialize};

use super::Company;

/// PSI needs this many scored rows to mean anything (below it, it is not computed).
pub const MIN_ROWS_FOR_PSI: usize = 50;
/// Floor of a bin share in the PSI, so an empty bin counts as very different, not infinite.
const SHARE_FLOOR: f64 = 1e-4;

/// One numeric feature's training distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureProfile {
    pub feature: String,
    pub min: f64,
    pub max: f64,
    /// The 0th, 10th, ..., 100th percentiles.
    pub deciles: Vec<f64>,
    /// Training share of each bin between consecutive distinct inner deciles (the last bin
    /// open above); ties make the shares differ from 10%.
    pub bin_shares: Vec<f64>,
}

impl FeatureProfile {
    /// The profile of `values` (not empty).
    pub fn of(feature: &str, values: &[f64]) -> FeatureProfile {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        let deciles: Vec<f64> = (0..=10).map(|i| at(f64::from(i) / 10.0)).collect();
        let mut p =
            FeatureProfile { feature: feature.to_string(), min: v[0], max: v[v.len() - 1], deciles, bin_shares: Vec::new() };
        p.bin_shares = p.shares(values);
        p
    }

    /// Bin edges: the distinct inner deciles. Bin `i` holds values below edge `i` (and at or
    /// above edge `i - 1`); the last bin holds the rest.
    fn edges(&self) -> Vec<f64> {
        let mut e: Vec<f64> = self.deciles[1..self.deciles.len().saturating_sub(1)].to_vec();
        e.dedup();
        e
    }

    fn shares(&self, values: &[f64]) -> Vec<f64> {
        let edges = self.edges();
        let mut counts = vec![0usize; edges.len() + 1];
        for x in values {
            counts[edges.partition_point(|e| e <= x)] += 1;
        }
        let n = values.len().max(1) as f64;
        counts.into_iter().map(|c| c as f64 / n).collect()
    }

    /// The PSI of `values` against the training shares (`None` below [`MIN_ROWS_FOR_PSI`]).
    pub fn psi(&self, values: &[f64]) -> Option<f64> {
        if values.len() < MIN_ROWS_FOR_PSI || self.bin_shares.is_empty() {
            return None;
        }
        let now = self.shares(values);
        Some(
            now.iter()
                .zip(&self.bin_shares)
                .map(|(p, q)| {
                    let (p, q) = (p.max(SHARE_FLOOR), q.max(SHARE_FLOOR));
                    (p - q) * (p / q).ln()
                })
                .sum(),
        )
    }
}

/// The drift of one feature in one scoring run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureDrift {
    pub feature: String,
    /// Rows with a value for the feature.
    pub rows: u64,
    pub below_min: u64,
    pub above_max: u64,
    pub train_min: f64,
    pub train_max: f64,
    /// `None` below [`MIN_ROWS_FOR_PSI`] rows.
    pub psi: Option<f64>,
    /// `stable`, `moderate`, `significant`, or `too_few_rows`.
    pub level: &'static str,
}

impl FeatureDrift {
    pub fn out_of_range(&self) -> u64 {
        self.below_min + self.above_max
    }
}

/// The reading of a PSI value.
pub fn psi_level(psi: Option<f64>) -> &'static str {
    match psi {
        None => "too_few_rows",
        Some(x) if x < 0.1 => "stable",
        Some(x) if x <= 0.25 => "moderate",
        Some(_) => "significant",
    }
}

/// Compares `companies` with the training profiles: the drift per profiled feature, and per
/// company the features outside the training range (empty when all are inside).
pub fn assess(profiles: &[FeatureProfile], companies: &[Company]) -> (Vec<FeatureDrift>, Vec<Vec<String>>) {
    let mut flagged = vec![Vec::new(); companies.len()];
    let mut report = Vec::new();
    for p in profiles {
        let mut values = Vec::with_capacity(companies.len());
        let (mut below, mut above) = (0, 0);
        for (i, c) in companies.iter().enumerate() {
            let Ok(x) = c.feature(&p.feature) else { continue };
            values.push(x);
            if x < p.min {
                below += 1;
                flagged[i].push(p.feature.clone());
            } else if x > p.max {
                above += 1;
                flagged[i].push(p.feature.clone());
            }
        }
        let psi = p.psi(&values);
        report.push(FeatureDrift {
            feature: p.feature.clone(),
            rows: values.len() as u64,
            below_min: below,
            above_max: above,
            train_min: p.min,
            train_max: p.max,
            psi,
            level: psi_level(psi),
        });
    }
    (report, flagged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn company(job30: f64) -> Company {
        Company {
            company_id: format!("c{job30}"),
            industry: Some("gov".into()),
            revenu: Some(1.0),
            employees: Some(1.0),
            job30: Some(job30),
            job90: Some(1.0),
            monthly_fee: Some(1.0),
            total_fee: Some(1.0),
            risk_of_churn: None,
        }
    }

    #[test]
    fn the_same_distribution_is_stable_and_a_shifted_one_is_significant() {
        let train: Vec<f64> = (0..1000).map(|i| f64::from(i % 100)).collect();
        let p = FeatureProfile::of("job30", &train);
        assert_eq!((p.min, p.max), (0.0, 99.0));
        assert_eq!(p.deciles.len(), 11);
        assert!((p.bin_shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(p.psi(&train).unwrap() < 1e-9, "identical data has no drift");
        let shifted: Vec<f64> = train.iter().map(|x| x + 50.0).collect();
        let psi = p.psi(&shifted).unwrap();
        assert!(psi > 0.25, "{psi}");
        assert_eq!(psi_level(Some(psi)), "significant");
        assert_eq!(psi_level(Some(0.05)), "stable");
        assert_eq!(psi_level(Some(0.2)), "moderate");
        assert_eq!(p.psi(&shifted[..10]), None, "too few rows");
    }

    #[test]
    fn rows_outside_the_training_range_are_counted_and_named() {
        let p = FeatureProfile::of("job30", &[3.0, 5.0, 9.0]);
        let cs = vec![company(2.0), company(4.0), company(300.0)];
        let (report, flagged) = assess(&[p], &cs);
        assert_eq!((report[0].below_min, report[0].above_max, report[0].out_of_range()), (1, 1, 2));
        assert_eq!(report[0].level, "too_few_rows");
        assert_eq!(flagged, vec![vec!["job30".to_string()], vec![], vec!["job30".to_string()]]);
    }
}
