//! Bounded concurrency: a fixed number of tasks that take work items from a shared list until
//! it is used up.
//!
//! Separate tasks (rather than one `buffer_unordered` stream) let the load generator use every
//! worker thread of its runtime, and the bound keeps open connections (and file descriptors,
//! which client and server share in-process) at most one per task.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;

/// Runs `work` on every item with at most `workers` running at once; results in no particular
/// order.
pub async fn for_each<T, R, F, Fut>(
    items: Vec<T>,
    workers: usize,
    work: F,
) -> anyhow::Result<Vec<R>>
where
    T: Clone + Send + Sync + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send,
{
    let count = items.len();
    let items = Arc::new(items);
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let mut tasks = Vec::new();
    for _ in 0..workers.clamp(1, count.max(1)) {
        let (items, next, work) = (Arc::clone(&items), Arc::clone(&next), Arc::clone(&work));
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                out.push(work(item.clone()).await);
            }
            out
        }));
    }
    let mut results = Vec::with_capacity(count);
    for task in tasks {
        results.extend(task.await.context("a worker task failed")?);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_item_is_done_once() {
        let mut out = for_each((0..1000).collect(), 7, |i: u32| async move { i * 2 })
            .await
            .unwrap();
        out.sort_unstable();
        assert_eq!(out, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
        let none: Vec<u32> = for_each(Vec::<u32>::new(), 4, |i| async move { i })
            .await
            .unwrap();
        assert!(none.is_empty());
    }
}
