-- title: Model drift: features outside the training range (latest scoring)
-- sheet: Churn
-- chart: table
-- Each feature of the latest scoring run on or before the date: companies below and above the
-- range the model was trained on, and the population stability index (level `significant`
-- or an out-of-range share above 20% raises a warning in the run).
SELECT feature,
       rows AS companies,
       below_min,
       above_max,
       ROUND(100.0 * (below_min + above_max) / rows, 1) AS out_of_range_pct,
       train_min,
       train_max,
       ROUND(psi, 3) AS psi,
       level
FROM churn_drift
WHERE dt = (SELECT MAX(dt) FROM churn_drift WHERE dt <= $as_of)
ORDER BY out_of_range_pct DESC, feature
