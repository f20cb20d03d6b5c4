//! The admin overview of redemption batches: what each is worth and how many of its
//! codes are used, for the `/admin/codes` page.

use crate::foundation::db::Db;
use crate::foundation::error::Result;

/// One batch with its use counts.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchSummary {
    pub id: i64,
    pub amount: Option<i64>,
    pub package_id: Option<i64>,
    pub package_name: Option<String>,
    pub count: i64,
    pub used: i64,
    pub note: Option<String>,
    pub created_by_email: Option<String>,
    pub created_at: i64,
}

/// Batches, newest first, plus the total number of batches.
pub async fn list(db: &Db, limit: i64, offset: i64) -> Result<(Vec<BatchSummary>, i64)> {
    let rows = sqlx::query_as::<_, BatchSummary>(
        "SELECT b.id, b.amount, b.package_id, p.name AS package_name, b.count, \
           (SELECT COUNT(*) FROM redemption_codes c WHERE c.batch_id = b.id AND c.used_by IS NOT NULL) AS used, \
           b.note, u.email AS created_by_email, b.created_at \
         FROM redemption_batches b LEFT JOIN packages p ON p.id = b.package_id \
           LEFT JOIN users u ON u.id = b.created_by \
         ORDER BY b.id DESC LIMIT $1 OFFSET $2",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(db.pool())
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM redemption_batches").fetch_one(db.pool()).await?;
    Ok((rows, total))
}
