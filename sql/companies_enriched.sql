-- companies_enriched: the customer dataset with its churn risk as of $as_of, in the same run as
-- the scoring: the Company entity of ../shared/spec/scoring.md (churn_features of $as_of) with
-- the profile and activity of tenants, and riskOfChurn and the score from churn_scores of the
-- same date (this run's scoring, not an earlier one).
--
-- No risk is empty without a reason: score_status is `scored`, `error` (score_error says why,
-- riskOfChurn is NULL) or `not_scored` (the scoring job has not run for this date).
-- out_of_range names the model features outside the model's training range: such a score is
-- an extrapolation (see churn_drift). When and by which run a score was made is in churn_scores
-- (scored_at, run_id).
--
-- risk_reasons says why a company is at risk, in words: the parts of the churn rule that hold
-- for it (the seed's ground truth, ../shared/spec/events.md: churn exactly when the industry is
-- retail, consulting or IT, or job30 < 5, or job90 < 20; the model learned that rule, holdout
-- precision in model_precision), and the features outside the model's training range (its
-- score is then an extrapolation); for a company flagged although none holds, that the flag is the
-- model's alone. NULL for a company neither flagged nor matching any part.
SELECT f.as_of,
       f.companyID,
       t.name,
       f.industry,
       f.revenu,
       f.employees,
       t.users,
       f.job30,
       f.job90,
       f.monthlyFee,
       f.totalFee,
       t.last_activity_at,
       t.activity_rank,
       t.minimal_activity,
       s.churn                          AS riskOfChurn,
       s.score                          AS churn_score,
       COALESCE(s.status, 'not_scored') AS score_status,
       s.error                          AS score_error,
       s.out_of_range,
       s.model_version,
       s.model_precision,
       COALESCE(NULLIF(CONCAT_WS('; ',
           CASE WHEN f.industry IN ('retail', 'consulting', 'IT') THEN 'industry ' || f.industry || ' (churns as a rule)' END,
           CASE WHEN f.job30 < 5 THEN 'job30 ' || CAST(f.job30 AS VARCHAR) || ' < 5' END,
           CASE WHEN f.job90 < 20 THEN 'job90 ' || CAST(f.job90 AS VARCHAR) || ' < 20' END,
           CASE WHEN s.out_of_range IS NOT NULL THEN 'outside the training range: ' || s.out_of_range END
       ), ''),
       -- Flagged with no part of the rule holding: the model's own call (of its flags, 1 in 12
       -- is wrong on held-out data).
       CASE WHEN s.churn THEN 'the model alone: no part of the churn rule holds' END
       )                                AS risk_reasons
FROM churn_features f
LEFT JOIN tenants t ON t.companyID = f.companyID AND t.as_of = f.as_of
LEFT JOIN churn_scores s ON s.companyID = f.companyID AND s.dt = f.as_of
WHERE f.as_of = $as_of
