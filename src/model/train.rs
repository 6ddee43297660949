//! `runner model train`: a binary linear classifier in the spirit of SageMaker Linear Learner
//! with `normalize_data`: logistic regression on standardized numeric features plus a one-hot of
//! the industry, fitted by full-batch gradient descent. Deterministic: the 80/20 split is drawn
//! from a seeded generator and the fit has no other randomness.

use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::drift::FeatureProfile;
use super::{Company, ModelDecl};
use crate::error::{Error, Result};

/// The numeric features, in the seed's row order.
pub const FEATURES: [&str; 6] = ["revenu", "employees", "job30", "job90", "monthlyFee", "totalFee"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingReport {
    pub data: String,
    pub rows: usize,
    pub train_rows: usize,
    pub holdout_rows: usize,
    pub seed: u64,
    pub epochs: usize,
    pub holdout: Metrics,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    /// Area under the ROC curve of the scores (1 ranks every churner above every other
    /// company, 0.5 is chance).
    pub auc: f64,
    /// Counts at the model's threshold, churn being the positive class.
    pub confusion: Confusion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confusion {
    pub true_positive: u64,
    pub false_positive: u64,
    pub true_negative: u64,
    pub false_negative: u64,
}

/// A labelled company of the seed's `companies.csv`.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub company: Company,
    pub churn: bool,
}

/// Reads `Company,Industry,Revenue,Employees,#job30,#job90,MonthlyCharge,TotalCharge,Churn`
/// (columns found by header name); errors name the file, line and column.
pub fn read_companies_csv(path: &Path) -> Result<Vec<Labelled>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io { what: format!("reading {}", path.display()), source: e })?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').map(str::trim).collect();
    let col = |name: &str| {
        header.iter().position(|h| h.eq_ignore_ascii_case(name)).ok_or_else(|| {
            Error::Usage(format!("{}: no column `{name}` in the header (found: {})", path.display(), header.join(",")))
        })
    };
    let idx = [
        col("Company")?,
        col("Industry")?,
        col("Revenue")?,
        col("Employees")?,
        col("#job30")?,
        col("#job90")?,
        col("MonthlyCharge")?,
        col("TotalCharge")?,
        col("Churn")?,
    ];
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = |i: usize, what: &str| {
            Error::Usage(format!(
                "{}: line {}: column `{}`: {what}",
                path.display(),
                n + 2,
                header.get(i).copied().unwrap_or("?")
            ))
        };
        let cell = |i: usize| cells.get(i).copied().ok_or_else(|| bad(i, "missing"));
        let num = |i: usize| -> Result<f64> { cell(i)?.parse::<f64>().map_err(|_| bad(i, "not a number")) };
        let churn = match cell(idx[8])? {
            "1" | "true" => true,
            "0" | "false" => false,
            _ => return Err(bad(idx[8], "not 0 or 1")),
        };
        out.push(Labelled {
            company: Company {
                company_id: cell(idx[0])?.to_string(),
                industry: Some(cell(idx[1])?.to_string()),
                revenu: Some(num(idx[2])?),
                employees: Some(num(idx[3])?),
                job30: Some(num(idx[4])?),
                job90: Some(num(idx[5])?),
                monthly_fee: Some(num(idx[6])?),
                total_fee: Some(num(idx[7])?),
                risk_of_churn: None,
            },
            churn,
        });
    }
    Ok(out)
}

/// `runner model train`: reads labelled companies from `data`, trains, writes the declaration
/// to `out` and returns it.
pub fn train_file(data: &Path, out: &Path, seed: u64, epochs: usize) -> Result<ModelDecl> {
    let rows = read_companies_csv(data)?;
    let decl = train(&rows, &data.display().to_string(), seed, epochs)?;
    decl.save(out)?;
    Ok(decl)
}

/// Fits the model on 80 percent of `data` and reports on the other 20.
pub fn train(data: &[Labelled], source: &str, seed: u64, epochs: usize) -> Result<ModelDecl> {
    if data.len() < 10 {
        return Err(Error::Usage(format!("{source}: {} labelled rows are too few to train on", data.len())));
    }
    let mut industries: Vec<String> = data.iter().filter_map(|l| l.company.industry.clone()).collect();
    industries.sort();
    industries.dedup();
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let holdout_n = data.len() / 5;
    let (holdout, train_idx) = order.split_at(holdout_n);

    let mut decl = ModelDecl {
        id: "churn-linear".into(),
        version: String::new(),
        features: FEATURES.iter().map(|s| s.to_string()).collect(),
        industries,
        output: "linear_learner_json".into(),
        threshold: 0.5,
        mean: vec![0.0; FEATURES.len()],
        std: vec![1.0; FEATURES.len()],
        weights: Vec::new(),
        bias: 0.0,
        training: None,
        profile: Vec::new(),
    };
    decl.weights = vec![0.0; decl.features.len() + decl.industries.len()];
    let rows = |idx: &[usize]| -> Result<Vec<(Vec<f64>, f64)>> {
        idx.iter()
            .map(|&i| {
                let r = decl
                    .row(&data[i].company)
                    .map_err(|e| Error::Usage(format!("{source}: {}: {e}", data[i].company.company_id)))?;
                Ok((r.values, if data[i].churn { 1.0 } else { 0.0 }))
            })
            .collect()
    };
    let train_rows = rows(train_idx)?;
    let holdout_rows = rows(holdout)?;

    // Standardize the numeric features with the training rows' mean and deviation.
    let n = decl.features.len();
    for j in 0..n {
        let m = train_rows.iter().map(|(x, _)| x[j]).sum::<f64>() / train_rows.len() as f64;
        let v = train_rows.iter().map(|(x, _)| (x[j] - m).powi(2)).sum::<f64>() / train_rows.len() as f64;
        decl.mean[j] = m;
        decl.std[j] = if v > 0.0 { v.sqrt() } else { 1.0 };
    }
    let standardized: Vec<(Vec<f64>, f64)> = train_rows
        .iter()
        .map(|(x, y)| {
            (x.iter().enumerate().map(|(j, v)| if j < n { (v - decl.mean[j]) / decl.std[j] } else { *v }).collect(), *y)
        })
        .collect();

    // Full-batch gradient descent on the log loss, with a small L2 penalty.
    let (lr, l2) = (0.5, 1e-4);
    let width = decl.weights.len();
    let m = standardized.len() as f64;
    for _ in 0..epochs {
        let mut grad = vec![0.0; width];
        let mut grad_b = 0.0;
        for (x, y) in &standardized {
            let z = decl.bias + x.iter().zip(&decl.weights).map(|(a, b)| a * b).sum::<f64>();
            let err = 1.0 / (1.0 + (-z).exp()) - y;
            for (g, xi) in grad.iter_mut().zip(x) {
                *g += err * xi;
            }
            grad_b += err;
        }
        for (w, g) in decl.weights.iter_mut().zip(&grad) {
            *w -= lr * (g / m + l2 * *w);
        }
        decl.bias -= lr * grad_b / m;
    }
    let metrics = evaluate(&decl, &holdout_rows);
    decl.profile = (0..n)
        .map(|j| {
            let values: Vec<f64> = train_rows.iter().map(|(x, _)| x[j]).collect();
            FeatureProfile::of(&decl.features[j], &values)
        })
        .collect();
    decl.version = version_of(&decl);
    decl.training = Some(TrainingReport {
        data: source.to_string(),
        rows: data.len(),
        train_rows: train_rows.len(),
        holdout_rows: holdout_rows.len(),
        seed,
        epochs,
        holdout: metrics,
    });
    Ok(decl)
}

/// Accuracy, precision, recall, AUC and the confusion matrix of `decl` on labelled rows.
pub fn evaluate(decl: &ModelDecl, rows: &[(Vec<f64>, f64)]) -> Metrics {
    let mut c = Confusion { true_positive: 0, false_positive: 0, true_negative: 0, false_negative: 0 };
    let mut scored = Vec::with_capacity(rows.len());
    for (x, y) in rows {
        let p = decl.predict(x);
        scored.push((p.score, *y == 1.0));
        match (p.predicted_label == 1, *y == 1.0) {
            (true, true) => c.true_positive += 1,
            (true, false) => c.false_positive += 1,
            (false, false) => c.true_negative += 1,
            (false, true) => c.false_negative += 1,
        }
    }
    let div = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    Metrics {
        accuracy: div(c.true_positive + c.true_negative, rows.len() as u64),
        precision: div(c.true_positive, c.true_positive + c.false_positive),
        recall: div(c.true_positive, c.true_positive + c.false_negative),
        auc: auc(&mut scored),
        confusion: c,
    }
}

/// The ROC AUC of (score, positive) pairs: the chance that a random positive scores above a
/// random negative, ties counting half (the Mann-Whitney statistic over ranks).
pub fn auc(scored: &mut [(f64, bool)]) -> f64 {
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (positives, negatives) = scored.iter().fold((0u64, 0u64), |(p, n), s| if s.1 { (p + 1, n) } else { (p, n + 1) });
    if positives == 0 || negatives == 0 {
        return 0.5;
    }
    // Average ranks (1-based) over runs of equal scores.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < scored.len() {
        let mut j = i;
        while j + 1 < scored.len() && scored[j + 1].0 == scored[i].0 {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg * scored[i..=j].iter().filter(|s| s.1).count() as f64;
        i = j + 1;
    }
    let (p, n) = (positives as f64, negatives as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

/// A short, stable hash of what the model computes.
fn version_of(decl: &ModelDecl) -> String {
    let text = serde_json::to_string(&(&decl.features, &decl.industries, &decl.mean, &decl.std, &decl.weights, decl.bias))
        .unwrap_or_default();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::auc;

    #[test]
    fn auc_ranks_positives_above_negatives_with_ties_counting_half() {
        assert_eq!(auc(&mut [(0.1, false), (0.2, false), (0.8, true), (0.9, true)]), 1.0);
        assert_eq!(auc(&mut [(0.9, false), (0.1, true)]), 0.0);
        assert_eq!(auc(&mut [(0.5, false), (0.5, true)]), 0.5);
        // One of the four positive/negative pairs is ordered wrongly.
        assert_eq!(auc(&mut [(0.1, false), (0.3, true), (0.4, false), (0.9, true)]), 0.75);
        assert_eq!(auc(&mut [(0.3, true)]), 0.5, "one class only: chance");
    }
}
