//! The churn model and the anti-corruption layer between our Company entity and it.
//!
//! The model's input format belongs to the model: its declaration (`data/model/churn.json`,
//! written by `runner model train`) states the numeric features in order, the industry levels of
//! the one-hot that follows them, and the output format. [`ModelDecl::row`] derives the CSV row
//! from that declaration and from nothing else, so the feature order can never drift between a
//! client and the model the way the seed's Lambda did. An industry the model does not know
//! becomes all zeros and is reported, never fatal.
//!
//! - [`train`]: `runner model train`, logistic regression on standardized features.
//! - [`drift`]: the training distribution of each feature, and how far a scoring run is from it.
//! - [`serve`]: `runner model serve`, the SageMaker container and API Gateway contracts.

pub mod drift;
pub mod serve;
pub mod train;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The Company entity of `../shared/spec/scoring.md` as a client sends it. `employee` (the
/// seed's spelling) is accepted for `employees`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Company {
    #[serde(rename = "companyID")]
    pub company_id: String,
    pub industry: Option<String>,
    pub revenu: Option<f64>,
    #[serde(alias = "employee")]
    pub employees: Option<f64>,
    pub job30: Option<f64>,
    pub job90: Option<f64>,
    #[serde(rename = "monthlyFee")]
    pub monthly_fee: Option<f64>,
    #[serde(rename = "totalFee")]
    pub total_fee: Option<f64>,
    #[serde(rename = "riskOfChurn", default, skip_serializing_if = "Option::is_none")]
    pub risk_of_churn: Option<bool>,
}

impl Company {
    /// The value of numeric feature `name`, or why there is none.
    pub fn feature(&self, name: &str) -> std::result::Result<f64, String> {
        let v = match name {
            "revenu" => self.revenu,
            "employees" => self.employees,
            "job30" => self.job30,
            "job90" => self.job90,
            "monthlyFee" => self.monthly_fee,
            "totalFee" => self.total_fee,
            other => return Err(format!("the model declares feature `{other}`, which a Company does not have")),
        };
        match v {
            Some(x) if x.is_finite() => Ok(x),
            Some(_) => Err(format!("`{name}` is not a finite number")),
            None => Err(format!("`{name}` is missing")),
        }
    }
}

/// The model's declaration: its input row, its output, and (for the local model) its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDecl {
    /// Stable name of the model (`churn-linear`).
    pub id: String,
    /// Changes whenever the weights do (a hash of them): scores record it.
    pub version: String,
    /// Numeric features, in row order, by their Company field names.
    pub features: Vec<String>,
    /// The one-hot industry levels that follow the numeric features, in row order.
    pub industries: Vec<String>,
    /// `linear_learner_json`: `{"predictions":[{"score":..,"predicted_label":0|1}]}` in row order.
    pub output: String,
    /// Churn when the score is at least this.
    pub threshold: f64,
    /// Standardization of the numeric features (`normalize_data`): mean and standard deviation.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// One weight per row column (numeric features, then industries), and the bias.
    pub weights: Vec<f64>,
    pub bias: f64,
    /// How the model was trained and how it did on held-out data.
    #[serde(default)]
    pub training: Option<train::TrainingReport>,
    /// Each numeric feature's training distribution (range, deciles), for the drift guard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profile: Vec<drift::FeatureProfile>,
}

/// One model row, and whether the company's industry was unknown to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub values: Vec<f64>,
    pub unknown_industry: bool,
}

/// A prediction as Linear Learner answers it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub score: f64,
    pub predicted_label: u8,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Predictions {
    pub predictions: Vec<Prediction>,
}

impl ModelDecl {
    /// Writes the declaration as pretty JSON, creating its folder.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io { what: format!("creating {}", dir.display()), source: e })?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(path, text + "\n").map_err(|e| Error::Io { what: format!("writing {}", path.display()), source: e })
    }

    pub fn load(path: &Path) -> Result<ModelDecl> {
        let err = |m: String| Error::Config { file: path.display().to_string(), message: m };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read the model declaration ({e}); create it with `runner model train`")))?;
        let m: ModelDecl = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        m.check().map_err(err)?;
        Ok(m)
    }

    fn check(&self) -> std::result::Result<(), String> {
        let width = self.features.len() + self.industries.len();
        if self.output != "linear_learner_json" {
            return Err(format!("output `{}` is not supported (expected linear_learner_json)", self.output));
        }
        if self.weights.len() != width || self.mean.len() != self.features.len() || self.std.len() != self.features.len() {
            return Err(format!(
                "{} features and {} industries need {width} weights and {} means and stds (found {}, {}, {})",
                self.features.len(),
                self.industries.len(),
                self.features.len(),
                self.weights.len(),
                self.mean.len(),
                self.std.len()
            ));
        }
        let probe = Company {
            company_id: String::new(),
            industry: None,
            revenu: Some(0.0),
            employees: Some(0.0),
            job30: Some(0.0),
            job90: Some(0.0),
            monthly_fee: Some(0.0),
            total_fee: Some(0.0),
            risk_of_churn: None,
        };
        for f in &self.features {
            probe.feature(f)?;
        }
        Ok(())
    }

    /// The model row of a company: the declared features in order, then the one-hot of its
    /// industry over the declared levels (all zeros for an industry the model does not know).
    pub fn row(&self, c: &Company) -> std::result::Result<Row, String> {
        let mut values = Vec::with_capacity(self.features.len() + self.industries.len());
        for f in &self.features {
            values.push(c.feature(f)?);
        }
        let industry = c.industry.as_deref().unwrap_or("");
        let mut known = false;
        for level in &self.industries {
            let hit = level == industry;
            known |= hit;
            values.push(if hit { 1.0 } else { 0.0 });
        }
        Ok(Row { values, unknown_industry: !known })
    }

    /// A row as the model's CSV line (no header).
    pub fn csv_line(row: &Row) -> String {
        let mut s = String::with_capacity(row.values.len() * 8);
        for (i, v) in row.values.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            if v.fract() == 0.0 && v.abs() < 1e15 {
                s.push_str(&format!("{}", *v as i64));
            } else {
                s.push_str(&format!("{v}"));
            }
        }
        s
    }

    /// Parses one CSV line into a row of the declared width; the error names the column.
    pub fn parse_csv_line(&self, line: &str) -> std::result::Result<Vec<f64>, String> {
        let width = self.features.len() + self.industries.len();
        let cols: Vec<&str> = line.trim_end_matches('\r').split(',').collect();
        if cols.len() != width {
            return Err(format!("{} columns, the model takes {width} ({})", cols.len(), self.columns().join(",")));
        }
        let names = self.columns();
        cols.iter()
            .zip(&names)
            .map(|(c, name)| {
                c.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| format!("column `{name}`: `{c}` is not a number"))
            })
            .collect()
    }

    /// Column names of the row: the features, then `industry=<level>` per level.
    pub fn columns(&self) -> Vec<String> {
        self.features.iter().cloned().chain(self.industries.iter().map(|l| format!("industry={l}"))).collect()
    }

    /// Scores one row with the local weights.
    pub fn predict(&self, row: &[f64]) -> Prediction {
        let n = self.features.len();
        let mut z = self.bias;
        for (i, (x, w)) in row.iter().zip(&self.weights).enumerate() {
            let x = if i < n { (x - self.mean[i]) / self.std[i] } else { *x };
            z += x * w;
        }
        let score = 1.0 / (1.0 + (-z).exp());
        Prediction { score, predicted_label: u8::from(score >= self.threshold) }
    }
}

/// Parses a Linear Learner answer, checking it holds exactly `expected` predictions.
pub fn parse_predictions(body: &[u8], expected: usize) -> std::result::Result<Vec<Prediction>, String> {
    let p: Predictions = serde_json::from_slice(body).map_err(|e| {
        let head = String::from_utf8_lossy(&body[..body.len().min(80)]).to_string();
        format!("the answer is not Linear Learner JSON ({e}): {head:?}")
    })?;
    if p.predictions.len() != expected {
        return Err(format!("{} predictions for {expected} rows", p.predictions.len()));
    }
    for x in &p.predictions {
        if !x.score.is_finite() || x.predicted_label > 1 {
            return Err(format!("a prediction is out of range: {x:?}"));
        }
    }
    Ok(p.predictions)
}

/// Parses an API Gateway answer `{"churn": true|false}`.
pub fn parse_churn_answer(body: &[u8]) -> std::result::Result<bool, String> {
    #[derive(Deserialize)]
    struct Answer {
        churn: bool,
    }
    serde_json::from_slice::<Answer>(body).map(|a| a.churn).map_err(|e| {
        let head = String::from_utf8_lossy(&body[..body.len().min(80)]).to_string();
        format!("the answer is not {{\"churn\": true|false}} ({e}): {head:?}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn decl() -> ModelDecl {
        ModelDecl {
            id: "t".into(),
            version: "1".into(),
            features: vec![
                "revenu".into(),
                "employees".into(),
                "job30".into(),
                "job90".into(),
                "monthlyFee".into(),
                "totalFee".into(),
            ],
            industries: vec!["consulting".into(), "IT".into()],
            output: "linear_learner_json".into(),
            threshold: 0.5,
            mean: vec![0.0; 6],
            std: vec![1.0; 6],
            weights: vec![0.0; 8],
            bias: 0.0,
            training: None,
            profile: Vec::new(),
        }
    }

    #[test]
    fn employee_and_employees_are_one_field() {
        let a: Company = serde_json::from_str(r#"{"companyID":"c","employee":5}"#).unwrap();
        let b: Company = serde_json::from_str(r#"{"companyID":"c","employees":5}"#).unwrap();
        assert_eq!(a.employees, Some(5.0));
        assert_eq!(a, b);
    }

    #[test]
    fn rows_follow_the_declaration_and_unknown_industries_are_zeros() {
        let d = decl();
        let c: Company = serde_json::from_str(
            r#"{"companyID":"c","industry":"IT","revenu":1,"employees":2,"job30":3,"job90":4,"monthlyFee":5.5,"totalFee":6}"#,
        )
        .unwrap();
        let r = d.row(&c).unwrap();
        assert_eq!(ModelDecl::csv_line(&r), "1,2,3,4,5.5,6,0,1");
        assert!(!r.unknown_industry);
        let unknown = Company { industry: Some("mining".into()), ..c.clone() };
        let r = d.row(&unknown).unwrap();
        assert_eq!(ModelDecl::csv_line(&r), "1,2,3,4,5.5,6,0,0");
        assert!(r.unknown_industry);
        let missing = Company { job30: None, ..c };
        assert_eq!(d.row(&missing).unwrap_err(), "`job30` is missing");
        assert!(d.parse_csv_line("1,2,3").unwrap_err().contains("3 columns"));
        assert!(d.parse_csv_line("1,2,x,4,5,6,0,1").unwrap_err().contains("column `job30`"));
    }

    #[test]
    fn answers_are_checked() {
        assert_eq!(parse_churn_answer(br#"{ "churn":true}"#), Ok(true));
        assert!(parse_churn_answer(b"<html>").is_err());
        let p = parse_predictions(br#"{"predictions":[{"score":0.9,"predicted_label":1}]}"#, 1).unwrap();
        assert_eq!(p[0].predicted_label, 1);
        assert!(parse_predictions(br#"{"predictions":[]}"#, 1).unwrap_err().contains("0 predictions for 1"));
    }
}
