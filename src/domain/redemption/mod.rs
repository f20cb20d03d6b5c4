//! Redemption codes (兑换码): admins generate batches of single-use codes worth a balance
//! amount or a package; a user redeems a code once, and exactly once under concurrency.
//!
//! Codes are 16 symbols from an alphabet without look-alikes (no `0/O`, `1/I/L`), shown
//! as `XXXX-XXXX-XXXX-XXXX` (~79 random bits), and stored in plain text so a batch can
//! be exported again as CSV; input is normalised (case, spaces, dashes) before lookup.
//! Redeeming claims the code with a conditional `UPDATE ... WHERE used_by IS NULL` in
//! the same transaction as the credit, so two concurrent redemptions cannot both win.

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Serialize;

use crate::domain::audit::{Actor, AuditedTx, Change};
use crate::domain::ledger::{self, EntryDetails, Overdraft};
use crate::domain::packages::activation::Effect;
use crate::foundation::clock::{from_micros, to_micros, BusinessCalendar};
use crate::foundation::db::Db;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

pub mod batches;
pub mod packages;

/// Symbols a code is drawn from: upper-case letters and digits minus look-alikes.
pub const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
const CODE_SYMBOLS: usize = 16;
/// Largest batch one request may create.
pub const MAX_BATCH: i64 = 1000;

/// A fresh random code, grouped in fours.
pub fn generate_code() -> String {
    let mut rng = rand::thread_rng();
    let symbols: Vec<char> =
        (0..CODE_SYMBOLS).map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())])).collect();
    group(&symbols)
}

fn group(symbols: &[char]) -> String {
    symbols.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

/// The stored form of what a user typed, or `None` if it cannot be a code.
pub fn normalize(input: &str) -> Option<String> {
    let symbols: Vec<char> =
        input.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_uppercase()).collect();
    let valid = symbols.len() == CODE_SYMBOLS && symbols.iter().all(|c| c.is_ascii() && ALPHABET.contains(&(*c as u8)));
    valid.then(|| group(&symbols))
}

/// What one batch is worth: exactly one of `amount` and `package_id`.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    pub count: i64,
    pub amount: Option<Money>,
    pub package_id: Option<i64>,
    pub note: Option<String>,
    pub actor_id: i64,
}

impl BatchRequest {
    /// Checks the request, naming the field that breaks a rule.
    pub fn validate(&mut self) -> Result<()> {
        if !(1..=MAX_BATCH).contains(&self.count) {
            return Err(Error::validation("count", format!("must be between 1 and {MAX_BATCH}")));
        }
        match (self.amount, self.package_id) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(Error::validation("amount", "give exactly one of amount or package_id"));
            }
            (Some(amount), None) if !amount.is_positive() => {
                return Err(Error::validation("amount", "must be greater than 0"));
            }
            _ => {}
        }
        self.note = self.note.as_deref().map(str::trim).filter(|n| !n.is_empty()).map(str::to_string);
        if self.note.as_deref().is_some_and(|n| n.chars().count() > 200) {
            return Err(Error::validation("note", "must be at most 200 characters"));
        }
        Ok(())
    }
}

/// A created batch: its id and the codes, shown to the admin.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    pub batch_id: i64,
    pub codes: Vec<String>,
}

/// Generates a batch for an admin and records it in the audit trail, in one
/// transaction (the JSON API and the admin page both go through here). The codes
/// themselves stay out of the trail: the audit log is not a place to read secrets from.
pub async fn generate_audited(
    db: &Db,
    request: &BatchRequest,
    ip: Option<String>,
    now: DateTime<Utc>,
) -> Result<Batch> {
    let actor = Actor { id: request.actor_id, ip };
    let mut tx = AuditedTx::begin(db, actor, now).await?;
    let batch = create_batch(tx.conn(), request, now).await?;
    let after = serde_json::json!({
        "batch_id": batch.batch_id,
        "count": request.count,
        "amount": request.amount,
        "package_id": request.package_id,
        "note": request.note,
    });
    tx.commit(Change::new("redemption.generate", format!("redemption_batch:{}", batch.batch_id)).after(&after)).await?;
    Ok(batch)
}

/// Creates a batch and its codes on the caller's transaction (the caller audits and commits).
pub async fn create_batch(conn: &mut sqlx::AnyConnection, request: &BatchRequest, now: DateTime<Utc>) -> Result<Batch> {
    if let Some(package_id) = request.package_id {
        packages::check_package(conn, package_id).await?;
    }
    let micros = to_micros(now);
    let batch_id: i64 = sqlx::query_scalar(
        "INSERT INTO redemption_batches (amount, package_id, count, note, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(request.amount.map(Money::micros))
    .bind(request.package_id)
    .bind(request.count)
    .bind(request.note.as_deref())
    .bind(request.actor_id)
    .bind(micros)
    .fetch_one(&mut *conn)
    .await?;
    let mut codes = Vec::with_capacity(usize::try_from(request.count).unwrap_or(0));
    for _ in 0..request.count {
        // ~79 random bits per code: a collision (which would fail the unique index and
        // the whole batch) is not a practical concern.
        let code = generate_code();
        sqlx::query(
            "INSERT INTO redemption_codes (batch_id, code, amount, package_id, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(batch_id)
        .bind(&code)
        .bind(request.amount.map(Money::micros))
        .bind(request.package_id)
        .bind(micros)
        .execute(&mut *conn)
        .await?;
        codes.push(code);
    }
    Ok(Batch { batch_id, codes })
}

/// What a redemption credited.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credited {
    Balance { code: String, amount: Money, balance: Money },
    Package { code: String, package_id: i64, package_name: String, user_package_id: i64, effect: Effect },
}

#[derive(sqlx::FromRow)]
struct Claimable {
    id: i64,
    amount: Option<i64>,
    package_id: Option<i64>,
    used_by: Option<i64>,
}

/// Redeems `input` for `user_id`: claims the code and credits it in one transaction.
/// `404` for an unknown code, `409 code_used` when it is already taken.
pub async fn redeem(db: &Db, user_id: i64, input: &str, now: DateTime<Utc>) -> Result<Credited> {
    let code = normalize(input).ok_or(Error::NotFound("redemption code"))?;
    let mut tx = db.begin().await?;
    let found =
        sqlx::query_as::<_, Claimable>("SELECT id, amount, package_id, used_by FROM redemption_codes WHERE code = $1")
            .bind(&code)
            .fetch_optional(tx.conn())
            .await?
            .ok_or(Error::NotFound("redemption code"))?;
    let used = || Error::conflict("code_used", "this code has already been redeemed");
    if found.used_by.is_some() {
        return Err(used());
    }
    let claimed =
        sqlx::query("UPDATE redemption_codes SET used_by = $1, used_at = $2 WHERE code = $3 AND used_by IS NULL")
            .bind(user_id)
            .bind(to_micros(now))
            .bind(&code)
            .execute(tx.conn())
            .await?;
    if claimed.rows_affected() != 1 {
        return Err(used());
    }
    let reference = format!("redeem:{}", found.id);
    let credited = match (found.amount, found.package_id) {
        (Some(amount), _) => {
            let amount = Money::from_micros(amount);
            let details =
                EntryDetails { reference: Some(&reference), note: Some("redemption code"), ..Default::default() };
            let balance = ledger::change_balance(
                tx.conn(),
                user_id,
                ledger::kind::REDEEM,
                amount,
                Overdraft::Refuse,
                &details,
                now,
            )
            .await?;
            Credited::Balance { code, amount, balance }
        }
        (None, Some(package_id)) => {
            let grant = packages::Grant { user_id, package_id, reference: &reference };
            let done = packages::activate(tx.conn(), &grant, now).await?;
            Credited::Package {
                code,
                package_id,
                package_name: done.package_name,
                user_package_id: done.user_package_id,
                effect: done.effect,
            }
        }
        (None, None) => return Err(Error::internal(format!("redemption code {} has no value", found.id))),
    };
    tx.commit().await?;
    Ok(credited)
}

/// A code as the admin list and the CSV export show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CodeRow {
    pub id: i64,
    pub batch_id: i64,
    pub code: String,
    pub amount: Option<i64>,
    pub package_id: Option<i64>,
    pub note: Option<String>,
    pub used_by: Option<i64>,
    pub used_by_email: Option<String>,
    pub used_at: Option<i64>,
    pub created_at: i64,
}

/// JSON view of a code.
#[derive(Debug, Clone, Serialize)]
pub struct CodeView {
    pub id: i64,
    pub batch_id: i64,
    pub code: String,
    pub amount: Option<Money>,
    pub package_id: Option<i64>,
    pub note: Option<String>,
    pub used_by: Option<i64>,
    pub used_by_email: Option<String>,
    pub used_at: Option<String>,
    pub created_at: String,
}

impl CodeRow {
    pub fn view(&self, calendar: &BusinessCalendar) -> CodeView {
        CodeView {
            id: self.id,
            batch_id: self.batch_id,
            code: self.code.clone(),
            amount: self.amount.map(Money::from_micros),
            package_id: self.package_id,
            note: self.note.clone(),
            used_by: self.used_by,
            used_by_email: self.used_by_email.clone(),
            used_at: self.used_at.map(|m| calendar.format(from_micros(m))),
            created_at: calendar.format(from_micros(self.created_at)),
        }
    }
}

/// Codes of one batch (or all), oldest first within a batch, plus the total.
pub async fn list(db: &Db, batch_id: Option<i64>, limit: i64, offset: i64) -> Result<(Vec<CodeRow>, i64)> {
    let rows = sqlx::query_as::<_, CodeRow>(
        "SELECT c.id, c.batch_id, c.code, c.amount, c.package_id, b.note, c.used_by, u.email AS used_by_email, \
           c.used_at, c.created_at \
         FROM redemption_codes c JOIN redemption_batches b ON b.id = c.batch_id \
           LEFT JOIN users u ON u.id = c.used_by \
         WHERE ($1 IS NULL OR c.batch_id = $1) ORDER BY c.batch_id DESC, c.id LIMIT $2 OFFSET $3",
    )
    .bind(batch_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(db.pool())
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM redemption_codes WHERE ($1 IS NULL OR batch_id = $1)")
        .bind(batch_id)
        .fetch_one(db.pool())
        .await?;
    Ok((rows, total))
}

/// One CSV field: quoted when needed, and spreadsheet formulas defused with a `'`.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) { format!("'{value}") } else { value.to_string() };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// The CSV export of codes, with a header row.
pub fn to_csv(rows: &[CodeRow], calendar: &BusinessCalendar) -> String {
    let mut out = String::from("code,batch_id,amount,package_id,note,used_by,used_by_email,used_at,created_at\n");
    for row in rows {
        let v = row.view(calendar);
        let fields = [
            v.code,
            v.batch_id.to_string(),
            v.amount.map(|a| a.to_string()).unwrap_or_default(),
            v.package_id.map(|p| p.to_string()).unwrap_or_default(),
            v.note.unwrap_or_default(),
            v.used_by.map(|u| u.to_string()).unwrap_or_default(),
            v.used_by_email.unwrap_or_default(),
            v.used_at.unwrap_or_default(),
            v.created_at,
        ];
        out.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_grouped_unambiguous_and_random() {
        let code = generate_code();
        assert_eq!(code.len(), 19);
        assert_eq!(code.matches('-').count(), 3);
        assert!(code.chars().filter(|c| *c != '-').all(|c| ALPHABET.contains(&(c as u8))));
        assert!(!code.contains(['0', 'O', '1', 'I', 'L']));
        assert_ne!(generate_code(), code);
    }

    #[test]
    fn typed_codes_are_normalised() {
        assert_eq!(normalize(" abcd efgh-jkmn PQRS ").as_deref(), Some("ABCD-EFGH-JKMN-PQRS"));
        assert_eq!(normalize("ABCDEFGHJKMNPQR"), None, "too short");
        assert_eq!(normalize("ABCD-EFGH-JKMN-PQR0"), None, "0 is not in the alphabet");
    }

    #[test]
    fn a_batch_needs_one_value_and_a_sane_count() {
        let base = BatchRequest { count: 5, amount: Some(Money::units(10)), package_id: None, note: None, actor_id: 1 };
        assert!(base.clone().validate().is_ok());
        let mut both = BatchRequest { package_id: Some(1), ..base.clone() };
        assert_eq!(both.validate().unwrap_err().field(), Some("amount"));
        let mut zero = BatchRequest { count: 0, ..base.clone() };
        assert_eq!(zero.validate().unwrap_err().field(), Some("count"));
        let mut negative = BatchRequest { amount: Some(Money::from_micros(-1)), ..base };
        assert_eq!(negative.validate().unwrap_err().field(), Some("amount"));
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
    }
}
