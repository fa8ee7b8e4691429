//! The audit trail: one row per request, allowed or refused, appended to
//! `system/query_audit` by a background task (every `audit-flush`, and at shutdown).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deltalake::arrow::array::{
    Array, Date32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use lakehouse_lake::catalog::{self, names};
use lakehouse_lake::{BusinessDate, EventTime, Lake};
use tokio::sync::mpsc;
use tracing::warn;

/// One audited request.
#[derive(Clone, Debug)]
pub struct AuditRow {
    /// When it arrived.
    pub ts: EventTime,
    /// Principal (or "unauthenticated").
    pub principal: String,
    /// gRPC method, e.g. "GetPositions".
    pub method: String,
    /// The request's parameters as JSON.
    pub parameters: String,
    /// Rows returned (streamed rows for streams).
    pub rows: i64,
    /// gRPC status code name ("OK", "PERMISSION_DENIED", ...).
    pub status: String,
    /// Time to answer, µs.
    pub latency_us: i64,
}

/// Sends audit rows to the writer.
#[derive(Clone, Debug)]
pub struct Audit {
    tx: mpsc::UnboundedSender<AuditRow>,
}

impl Audit {
    /// Records one request.
    pub fn record(&self, row: AuditRow) {
        if self.tx.send(row).is_err() {
            warn!("the audit writer stopped: a request was not audited");
        }
    }
}

fn batch(rows: &[AuditRow]) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let s = |f: fn(&AuditRow) -> &str| {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>())) as Arc<dyn Array>
    };
    RecordBatch::try_new(
        lakehouse_lake::schema::query_audit(),
        vec![
            Arc::new(Date32Array::from(
                rows.iter()
                    .map(|r| BusinessDate(r.ts.utc_date()).days_since_epoch())
                    .collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(
                    rows.iter().map(|r| r.ts.micros()).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            s(|r| &r.principal),
            s(|r| &r.method),
            s(|r| &r.parameters),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.rows).collect::<Vec<_>>(),
            )),
            s(|r| &r.status),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.latency_us).collect::<Vec<_>>(),
            )),
        ],
    )
}

/// Starts the writer. The returned task ends, after a last flush, once every [`Audit`] is
/// dropped; await it at shutdown so no row is lost.
pub async fn start(
    lake: &Lake,
    every: Duration,
) -> Result<(Audit, tokio::task::JoinHandle<()>), lakehouse_lake::Error> {
    let def = catalog::table(names::QUERY_AUDIT).expect("the audit table is in the catalog");
    let mut table = lake.create_table(&def).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<AuditRow>();
    let task = tokio::spawn(async move {
        let mut pending: Vec<AuditRow> = Vec::new();
        let mut tick = tokio::time::interval(every);
        loop {
            let (open, ticked) = tokio::select! {
                r = rx.recv() => match r {
                    Some(row) => { pending.push(row); (true, false) }
                    None => (false, true),
                },
                _ = tick.tick() => (true, true),
            };
            while let Ok(row) = rx.try_recv() {
                pending.push(row);
            }
            let due = ticked || pending.len() >= 10_000;
            if due && !pending.is_empty() {
                // a failed append keeps the rows for the next attempt
                match batch(&pending) {
                    Ok(b) => match table.append(vec![b], HashMap::new()).await {
                        Ok(_) => pending.clear(),
                        Err(e) => {
                            warn!(error = %e, rows = pending.len(), "cannot append audit rows; will retry")
                        }
                    },
                    Err(e) => {
                        warn!(error = %e, "audit rows do not fit the schema; dropped");
                        pending.clear();
                    }
                }
            }
            if !open {
                if !pending.is_empty() {
                    warn!(rows = pending.len(), "audit rows lost at shutdown");
                }
                return;
            }
        }
    });
    Ok((Audit { tx }, task))
}
