//! The call record writer: every write a call makes to the database after its webhook (the
//! webhook's row, the prompt version, the end and summary, guard events) goes through one
//! queue, written in order by one task. A call never waits for the disk, and a database that
//! goes away mid-call loses nothing: a write that fails because the database cannot be reached
//! is tried again (backoff 50 ms doubling to 2 s) until it goes in, and the writes behind it
//! wait their turn, so a call's end never lands before its start. A write the database refuses
//! for what it holds (a constraint, a missing row) is logged and dropped; trying it again
//! would not help.
//!
//! At exit, [`Records::flush`] waits for the queue to empty, up to a limit, and logs what is
//! left (counts by kind, never a number or a transcript).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::domain::Arm;
use crate::store::{
    CallEnd, CallStatusReport, NewCall, NewCallEvent, NewToolCall, Store, StoreError,
    TransferReport,
};

/// First wait before a failed write is tried again.
const FIRST_RETRY: Duration = Duration::from_millis(50);
/// Longest wait between two tries.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// One write.
#[derive(Debug, Clone)]
pub enum Record {
    /// The webhook answered the call ([`Store::open_call`]); an existing row is kept.
    Opened(NewCall),
    /// A stream's claim that could not be written when it was made ([`Store::claim_stream`]).
    Claimed(NewCall),
    /// The prompt version (and experiment arm) the call runs.
    Prompt {
        /// The call.
        call_sid: String,
        /// The prompt version, `None` for the business's own text.
        version_id: Option<String>,
        /// The experiment and arm, when the call is in one.
        experiment: Option<(String, Arm)>,
    },
    /// How the call ended ([`Store::finish_call`]).
    Finished {
        /// The call.
        call_sid: String,
        /// Its end and summary.
        end: CallEnd,
    },
    /// A guard decision ([`Store::insert_event`]).
    Event(NewCallEvent),
    /// A tool call ([`Store::insert_tool_call`]).
    ToolCall(NewToolCall),
    /// A status callback's report ([`Store::insert_call_status`]).
    Status(CallStatusReport),
    /// A transfer's outcome ([`Store::insert_transfer`]).
    Transfer(TransferReport),
}

/// What the writer's queue carries: a record, or a barrier that answers once everything
/// before it is written.
#[derive(Debug)]
enum Item {
    Record(Record),
    Barrier(oneshot::Sender<()>),
}

impl Record {
    /// The kind, for logs.
    fn kind(&self) -> &'static str {
        match self {
            Record::Opened(_) => "opened",
            Record::Claimed(_) => "claimed",
            Record::Prompt { .. } => "prompt",
            Record::Finished { .. } => "finished",
            Record::Event(_) => "event",
            Record::ToolCall(_) => "tool_call",
            Record::Status(_) => "status",
            Record::Transfer(_) => "transfer",
        }
    }

    /// The CallSid it belongs to, for logs.
    fn call_sid(&self) -> &str {
        match self {
            Record::Opened(c) | Record::Claimed(c) => &c.call_sid,
            Record::Prompt { call_sid, .. } | Record::Finished { call_sid, .. } => call_sid,
            Record::Event(e) => &e.call_sid,
            Record::ToolCall(t) => &t.call_sid,
            Record::Status(s) => &s.call_sid,
            Record::Transfer(t) => &t.call_sid,
        }
    }
}

/// The queue and its writer task.
#[derive(Debug, Clone)]
pub struct Records {
    tx: mpsc::UnboundedSender<Item>,
    /// Records queued and not yet written or dropped.
    waiting: Arc<AtomicU64>,
    /// Records written since start.
    written: Arc<AtomicU64>,
    writer: Arc<JoinHandle<()>>,
}

impl Records {
    /// Starts the writer on `store`.
    pub fn start(store: Store) -> Records {
        let (tx, rx) = mpsc::unbounded_channel();
        let waiting = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let writer = tokio::spawn(write_all(store, rx, waiting.clone(), written.clone()));
        Records {
            tx,
            waiting,
            written,
            writer: Arc::new(writer),
        }
    }

    /// Queues `record`; it is written in order after everything queued before it.
    pub fn write(&self, record: Record) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        if let Err(mpsc::error::SendError(Item::Record(record))) =
            self.tx.send(Item::Record(record))
        {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            tracing::error!(call_sid = %record.call_sid(), kind = record.kind(),
                "call record writer has stopped; record not written");
        }
    }

    /// Resolves once every record queued before this call is written (or dropped as
    /// refused), or after `limit`. Returns whether they were.
    pub async fn settled(&self, limit: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Item::Barrier(tx)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(limit, rx).await, Ok(Ok(())))
    }

    /// Records queued and not yet written (or dropped as refused).
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Records written since start.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Waits until every queued record is written, at most `limit`. Returns how many are
    /// still waiting (0 when all went in); those are logged.
    pub async fn flush(&self, limit: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + limit;
        while self.waiting() > 0 && !self.writer.is_finished() {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = self.waiting();
        if left > 0 {
            tracing::error!(
                left,
                limit_ms = limit.as_millis() as u64,
                "call records still waiting at exit (the database is unreachable); not written"
            );
        }
        left
    }
}

/// The writer task: each record in order, tried until it goes in or is refused.
async fn write_all(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Item>,
    waiting: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
) {
    while let Some(item) = rx.recv().await {
        let record = match item {
            Item::Record(record) => record,
            Item::Barrier(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let mut wait = FIRST_RETRY;
        let mut tries = 0u32;
        loop {
            match apply(&store, &record).await {
                Ok(()) => {
                    written.fetch_add(1, Ordering::SeqCst);
                    if tries > 0 {
                        tracing::info!(call_sid = %record.call_sid(), kind = record.kind(), tries,
                            "call record written after the database came back");
                    }
                    break;
                }
                Err(e) if e.is_unavailable() => {
                    if tries == 0 {
                        tracing::warn!(call_sid = %record.call_sid(), kind = record.kind(), error = %e,
                            "database unavailable; the call record waits and is tried again");
                    }
                    tries += 1;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_RETRY);
                }
                Err(e) => {
                    tracing::error!(call_sid = %record.call_sid(), kind = record.kind(), error = %e,
                        "call record refused by the database; dropped");
                    break;
                }
            }
        }
        waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Writes one record.
async fn apply(store: &Store, record: &Record) -> Result<(), StoreError> {
    match record {
        Record::Opened(call) => store.open_call(call).await.map(|_| ()),
        Record::Claimed(call) => store.claim_stream(call).await.map(|_| ()),
        Record::Prompt {
            call_sid,
            version_id,
            experiment,
        } => {
            let experiment = experiment.as_ref().map(|(id, arm)| (id.as_str(), *arm));
            store
                .set_call_prompt(call_sid, version_id.as_deref(), experiment)
                .await
        }
        Record::Finished { call_sid, end } => store.finish_call(call_sid, end).await,
        Record::Event(event) => store.insert_event(event).await.map(|_| ()),
        Record::ToolCall(call) => store.insert_tool_call(call).await.map(|_| ()),
        Record::Status(status) => store.insert_call_status(status).await,
        Record::Transfer(transfer) => store.insert_transfer(transfer).await,
    }
}
