//! An `ObjectStore` wrapper that counts requests by kind and errors, so the cost of archiving
//! (PUTs per GiB) and of reading (GETs, and that the read path makes no LIST calls) can be
//! measured. Counts are taken above `object_store`'s own retries: one count per request the
//! archive asked for. Deletes are counted per object.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};

/// Kinds of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Single PUT.
    Put,
    /// Multipart upload start.
    CreateMultipart,
    /// One uploaded part.
    PutPart,
    /// Multipart upload completion.
    CompleteMultipart,
    /// Multipart upload abort.
    AbortMultipart,
    /// GET (whole or ranged).
    Get,
    /// HEAD.
    Head,
    /// LIST (one count per listing asked for).
    List,
    /// DELETE (one count per object).
    Delete,
    /// Server-side copy.
    Copy,
}

impl Op {
    /// Every kind, in a fixed order.
    pub const ALL: [Op; 10] = [
        Op::Put,
        Op::CreateMultipart,
        Op::PutPart,
        Op::CompleteMultipart,
        Op::AbortMultipart,
        Op::Get,
        Op::Head,
        Op::List,
        Op::Delete,
        Op::Copy,
    ];

    /// Label value.
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::CreateMultipart => "create_multipart",
            Op::PutPart => "put_part",
            Op::CompleteMultipart => "complete_multipart",
            Op::AbortMultipart => "abort_multipart",
            Op::Get => "get",
            Op::Head => "head",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Copy => "copy",
        }
    }

    /// Whether S3 bills it as a PUT-class request (PUT, COPY, POST, LIST).
    pub fn is_put_class(self) -> bool {
        matches!(
            self,
            Op::Put
                | Op::CreateMultipart
                | Op::PutPart
                | Op::CompleteMultipart
                | Op::Copy
                | Op::List
        )
    }
}

/// Request and error counts per [`Op`], and bytes sent.
#[derive(Debug, Default)]
pub struct RequestCounters {
    requests: [AtomicU64; 10],
    errors: [AtomicU64; 10],
    bytes_put: AtomicU64,
}

impl RequestCounters {
    fn index(op: Op) -> usize {
        Op::ALL.iter().position(|o| *o == op).expect("listed")
    }

    fn count<T>(&self, op: Op, result: &Result<T>) {
        self.requests[Self::index(op)].fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            self.errors[Self::index(op)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests of one kind so far.
    pub fn requests(&self, op: Op) -> u64 {
        self.requests[Self::index(op)].load(Ordering::Relaxed)
    }

    /// Failed requests of one kind so far.
    pub fn errors(&self, op: Op) -> u64 {
        self.errors[Self::index(op)].load(Ordering::Relaxed)
    }

    /// Bytes sent in PUTs and parts.
    pub fn bytes_put(&self) -> u64 {
        self.bytes_put.load(Ordering::Relaxed)
    }

    /// Requests of every kind so far.
    pub fn total_requests(&self) -> u64 {
        Op::ALL.iter().map(|o| self.requests(*o)).sum()
    }

    /// PUT-class requests (what S3 bills at the higher rate).
    pub fn put_class_requests(&self) -> u64 {
        Op::ALL
            .iter()
            .filter(|o| o.is_put_class())
            .map(|o| self.requests(*o))
            .sum()
    }
}

/// Counts the requests made through it.
#[derive(Debug)]
pub struct InstrumentedStore {
    inner: Arc<dyn ObjectStore>,
    counters: Arc<RequestCounters>,
}

impl InstrumentedStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>, counters: Arc<RequestCounters>) -> Self {
        Self { inner, counters }
    }
}

impl fmt::Display for InstrumentedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instrumented({})", self.inner)
    }
}

#[derive(Debug)]
struct InstrumentedUpload {
    inner: Box<dyn MultipartUpload>,
    counters: Arc<RequestCounters>,
}

#[async_trait]
impl MultipartUpload for InstrumentedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let counters = Arc::clone(&self.counters);
        let len = data.content_length() as u64;
        let part = self.inner.put_part(data);
        Box::pin(async move {
            let r = part.await;
            counters.count(Op::PutPart, &r);
            if r.is_ok() {
                counters.bytes_put.fetch_add(len, Ordering::Relaxed);
            }
            r
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let r = self.inner.complete().await;
        self.counters.count(Op::CompleteMultipart, &r);
        r
    }

    async fn abort(&mut self) -> Result<()> {
        let r = self.inner.abort().await;
        self.counters.count(Op::AbortMultipart, &r);
        r
    }
}

#[async_trait]
impl ObjectStore for InstrumentedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let len = payload.content_length() as u64;
        let r = self.inner.put_opts(location, payload, opts).await;
        self.counters.count(Op::Put, &r);
        if r.is_ok() {
            self.counters.bytes_put.fetch_add(len, Ordering::Relaxed);
        }
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let r = self.inner.put_multipart_opts(location, opts).await;
        self.counters.count(Op::CreateMultipart, &r);
        Ok(Box::new(InstrumentedUpload {
            inner: r?,
            counters: Arc::clone(&self.counters),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head { Op::Head } else { Op::Get };
        let r = self.inner.get_opts(location, options).await;
        self.counters.count(op, &r);
        r
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        // Each coalesced range is one GET: go through get_opts so each is counted.
        object_store::coalesce_ranges(
            ranges,
            |range| async move {
                let options = GetOptions {
                    range: Some(range.into()),
                    ..GetOptions::default()
                };
                self.get_opts(location, options).await?.bytes().await
            },
            object_store::OBJECT_STORE_COALESCE_DEFAULT,
        )
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let counters = Arc::clone(&self.counters);
        self.inner
            .delete_stream(locations)
            .inspect(move |r| counters.count(Op::Delete, r))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counters.requests[RequestCounters::index(Op::List)].fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let r = self.inner.list_with_delimiter(prefix).await;
        self.counters.count(Op::List, &r);
        r
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let r = self.inner.copy_opts(from, to, options).await;
        self.counters.count(Op::Copy, &r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn requests_are_counted_by_kind() {
        let counters = Arc::new(RequestCounters::default());
        let store = InstrumentedStore::new(Arc::new(InMemory::new()), Arc::clone(&counters));
        let p = Path::from("a/b");
        store
            .put(&p, PutPayload::from_static(b"hello"))
            .await
            .unwrap();
        store.head(&p).await.unwrap();
        store.get_range(&p, 1..3).await.unwrap();
        assert!(store.head(&Path::from("missing")).await.is_err());
        let mut up = store.put_multipart(&Path::from("big")).await.unwrap();
        up.put_part(PutPayload::from_static(b"xx")).await.unwrap();
        up.complete().await.unwrap();
        store.delete(&p).await.unwrap();
        let listed: Vec<_> = store.list(None).collect().await;
        assert_eq!(listed.len(), 1);
        let got: Vec<(&str, u64)> = Op::ALL
            .iter()
            .map(|o| (o.name(), counters.requests(*o)))
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(
            got,
            [
                ("put", 1),
                ("create_multipart", 1),
                ("put_part", 1),
                ("complete_multipart", 1),
                ("get", 1),
                ("head", 2),
                ("list", 1),
                ("delete", 1)
            ]
        );
        assert_eq!(counters.errors(Op::Head), 1);
        assert_eq!(counters.bytes_put(), 7);
        assert_eq!(counters.put_class_requests(), 5);
    }
}
