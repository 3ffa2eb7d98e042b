//! Handler answers that wait outside the actor's context.
//!
//! actix keeps a handler's `ResponseActFuture` in the actor's context and
//! polls every such future each time the actor wakes. A PF or device with
//! k deliveries waiting for their devices' answers so paid k polls per
//! message it handled: nothing at 20,000 msg/s with answers back within a
//! millisecond, but once answers lagged (overload) k grew with the lag and
//! the worker spent a third of its time re-polling waits, which deepened
//! the lag (docs/performance-log.md, eleventh session). A wait that does not
//! need the actor when it ends is [`Answer::Detached`]: a task of its own
//! on the actor's thread, woken only by what it waits for.

use std::cell::Cell;
use std::rc::Rc;

use actix::dev::{MessageResponse, OneshotSender};
use actix::prelude::*;
use futures::future::LocalBoxFuture;

/// What a handler answers with.
pub enum Answer<A: Actor, T> {
    /// Known now: sent at once, no future and no task.
    Ready(T),
    /// Work that needs the actor when it ends (kept in its context).
    Actor(ResponseActFuture<A, T>),
    /// Work that does not: run as a task of its own on this thread.
    Detached(LocalBoxFuture<'static, T>),
}

impl<A: Actor, T> Answer<A, T> {
    /// An answer known now.
    pub fn ready(value: T) -> Answer<A, T> {
        Answer::Ready(value)
    }
}

impl<A, M> MessageResponse<A, M> for Answer<A, M::Result>
where
    A: Actor,
    M: Message,
    A::Context: AsyncContext<A>,
{
    fn handle(self, ctx: &mut A::Context, tx: Option<OneshotSender<M::Result>>) {
        match self {
            Answer::Ready(value) => {
                if let Some(tx) = tx {
                    let _ = tx.send(value); // the asker may have gone (do_send, timeout)
                }
            }
            Answer::Actor(work) => MessageResponse::<A, M>::handle(work, ctx, tx),
            Answer::Detached(work) => MessageResponse::<A, M>::handle(work, ctx, tx),
        }
    }
}

/// Work an actor has in flight, counted where detached tasks can reach it.
#[derive(Clone, Default)]
pub struct Busy(Rc<Cell<usize>>);

impl Busy {
    /// Count one piece of work until the guard is dropped.
    pub fn enter(&self) -> BusyGuard {
        self.0.set(self.0.get() + 1);
        BusyGuard(self.0.clone())
    }

    pub fn get(&self) -> usize {
        self.0.get()
    }
}

/// One piece of work in flight (see [`Busy::enter`]).
pub struct BusyGuard(Rc<Cell<usize>>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl Actor for Echo {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Ask(u32, bool);

    impl Handler<Ask> for Echo {
        type Result = Answer<Self, u32>;

        fn handle(&mut self, Ask(n, detached): Ask, _: &mut Context<Self>) -> Self::Result {
            if n == 0 {
                return Answer::ready(0);
            }
            let wait = tokio::time::sleep(std::time::Duration::from_millis(20));
            let work = async move {
                wait.await;
                n * 2
            };
            if detached {
                return Answer::Detached(Box::pin(work));
            }
            Answer::Actor(Box::pin(work.into_actor(self)))
        }
    }

    #[actix_rt::test]
    async fn every_kind_of_answer_arrives() {
        let addr = Echo.start();
        assert_eq!(addr.send(Ask(0, true)).await.unwrap(), 0);
        assert_eq!(addr.send(Ask(4, true)).await.unwrap(), 8);
        assert_eq!(addr.send(Ask(5, false)).await.unwrap(), 10);
        // Many detached answers waiting at once all arrive.
        let asks: Vec<_> = (1..=50).map(|n| addr.send(Ask(n, true))).collect();
        let got = futures::future::join_all(asks).await;
        assert_eq!(
            got.into_iter().map(Result::unwrap).sum::<u32>(),
            (1..=50).map(|n| n * 2).sum()
        );
    }

    #[test]
    fn busy_counts_until_the_guard_drops() {
        let busy = Busy::default();
        let a = busy.enter();
        let b = busy.clone().enter();
        assert_eq!(busy.get(), 2);
        drop(a);
        assert_eq!(busy.get(), 1);
        drop(b);
        assert_eq!(busy.get(), 0);
    }
}
