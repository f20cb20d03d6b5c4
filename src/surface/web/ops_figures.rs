//! Figures for the admin metrics page (`/admin/metrics`): the same counters `/metrics`
//! exports, read back from this instance's Prometheus text (metrics are per process),
//! plus live database figures that are true for the whole cluster.

use std::collections::BTreeMap;

use crate::foundation::clock::{date_key, to_micros};
use crate::foundation::error::Result;
use crate::runtime::state::AppState;

/// One sample line of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name` ("" when absent).
    pub fn label(&self, name: &str) -> &str {
        self.labels.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }
}

/// Parses Prometheus text exposition (comments skipped, label escapes undone).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find('{') {
        Some(open) => (&line[..open], &line[open + 1..]),
        None => {
            let (name, value) = line.split_once(' ')?;
            return Some(Sample { name: name.into(), labels: Vec::new(), value: parse_value(value)? });
        }
    };
    let mut labels = Vec::new();
    let mut chars = rest.char_indices().peekable();
    let mut key = String::new();
    let mut end = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '}' => {
                end = Some(i + 1);
                break;
            }
            ',' | ' ' => {}
            '=' => {
                chars.next_if(|&(_, c)| c == '"')?;
                let mut value = String::new();
                loop {
                    match chars.next()?.1 {
                        '\\' => match chars.next()?.1 {
                            'n' => value.push('\n'),
                            other => value.push(other),
                        },
                        '"' => break,
                        other => value.push(other),
                    }
                }
                labels.push((std::mem::take(&mut key), value));
            }
            other => key.push(other),
        }
    }
    let value = parse_value(rest.get(end?..)?)?;
    Some(Sample { name: name.into(), labels, value })
}

fn parse_value(text: &str) -> Option<f64> {
    match text.split_whitespace().next()? {
        "+Inf" => Some(f64::INFINITY),
        v => v.parse().ok(),
    }
}

/// Sums the samples named `name` grouped by the values of `by`.
pub fn sum_by(samples: &[Sample], name: &str, by: &[&str]) -> BTreeMap<Vec<String>, f64> {
    let mut sums = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        let key = by.iter().map(|l| s.label(l).to_string()).collect();
        *sums.entry(key).or_insert(0.0) += s.value;
    }
    sums
}

/// p-quantile (0..1) of histogram `name` for samples whose `label` = `value`, from its
/// cumulative buckets with linear interpolation inside the bucket (as Prometheus'
/// `histogram_quantile`); None without observations. Exact to the bucket width.
pub fn quantile(samples: &[Sample], name: &str, label: (&str, &str), q: f64) -> Option<f64> {
    let bucket_name = format!("{name}_bucket");
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.name == bucket_name && s.label(label.0) == label.1)
        .filter_map(|s| Some((parse_value(s.label("le"))?, s.value)))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (upper, count) in buckets {
        if count >= rank {
            if upper.is_infinite() {
                return Some(lower);
            }
            let inside = count - below;
            let fraction = if inside > 0.0 { (rank - below) / inside } else { 1.0 };
            return Some(lower + (upper - lower) * fraction);
        }
        (lower, below) = (upper, count);
    }
    Some(lower)
}

/// Live figures from the database: the same on every instance.
#[derive(Debug, Clone, Default)]
pub struct ClusterFigures {
    pub open_holds: i64,
    pub held_micros: i64,
    pub usage_rows_today: i64,
    pub billed_today_micros: i64,
    pub unhealthy_upstreams: i64,
    pub enabled_upstreams: i64,
}

/// Reads [`ClusterFigures`] for the current business day.
pub async fn cluster_figures(state: &AppState) -> Result<ClusterFigures> {
    let now = state.now();
    let pool = state.db.pool();
    let (open_holds, held_micros): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM holds WHERE expires_at > $1")
            .bind(to_micros(now))
            .fetch_one(pool)
            .await?;
    let today = date_key(state.calendar().business_date(now));
    let (usage_rows_today, billed_today_micros): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(cost), 0) AS BIGINT) FROM usage_logs WHERE business_date = $1",
    )
    .bind(today)
    .fetch_one(pool)
    .await?;
    let (enabled_upstreams, unhealthy_upstreams): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN healthy = 0 THEN 1 ELSE 0 END), 0) AS BIGINT) \
         FROM upstreams WHERE enabled = 1",
    )
    .fetch_one(pool)
    .await?;
    Ok(ClusterFigures {
        open_holds,
        held_micros,
        usage_rows_today,
        billed_today_micros,
        unhealthy_upstreams,
        enabled_upstreams,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE gateway_http_requests_total counter
gateway_http_requests_total{route="/v1/responses",method="POST",status="200"} 3
gateway_http_requests_total{route="/v1/responses",method="GET",status="200"} 2
gateway_http_requests_total{route="/healthz",method="GET",status="200"} 1
gateway_usage_estimated_total 4
gateway_proxy_requests_total{model="we\"ird\\name",status="200"} 1
lat_bucket{model="m",le="0.1"} 0
lat_bucket{model="m",le="0.5"} 50
lat_bucket{model="m",le="1"} 100
lat_bucket{model="m",le="+Inf"} 100
lat_sum{model="m"} 40
"#;

    #[test]
    fn the_text_format_is_parsed_with_labels_and_escapes() {
        let samples = parse(TEXT);
        assert_eq!(samples.len(), 10);
        assert_eq!(samples[3], Sample { name: "gateway_usage_estimated_total".into(), labels: vec![], value: 4.0 });
        assert_eq!(samples[4].label("model"), "we\"ird\\name");
        let by_route = sum_by(&samples, "gateway_http_requests_total", &["route", "status"]);
        assert_eq!(by_route[&vec!["/v1/responses".to_string(), "200".to_string()]], 5.0);
        assert_eq!(by_route.len(), 2);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let samples = parse(TEXT);
        let p50 = quantile(&samples, "lat", ("model", "m"), 0.5).unwrap();
        assert!((p50 - 0.5).abs() < 1e-9, "{p50}");
        let p95 = quantile(&samples, "lat", ("model", "m"), 0.95).unwrap();
        assert!((p95 - 0.95).abs() < 1e-9, "{p95}");
        let p25 = quantile(&samples, "lat", ("model", "m"), 0.25).unwrap();
        assert!((p25 - 0.3).abs() < 1e-9, "{p25}");
        assert_eq!(quantile(&samples, "lat", ("model", "other"), 0.5), None);
    }
}
