//! The scheduler's guarantees, tested on raw jobs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::*;

fn start<C: Any + Send>(component: C) -> (Scheduler, tokio::task::JoinHandle<()>) {
    let mut pending = PendingScheduler::new("test");
    pending.slots.push(Box::new(component));
    let handle = pending.handle.clone();
    (handle, pending.start())
}

/// A sync job on a component of type `C`.
fn sync<C: Any + Send>(f: impl FnOnce(&mut C) + Send + 'static) -> Job {
    Job::Sync(Box::new(move |state| {
        f(state
            .downcast_mut::<C>()
            .expect("the component is in its slot"))
    }))
}

/// Reads the component through a job (so after every job submitted before).
async fn read<C: Any + Send + Clone>(s: &Scheduler) -> C {
    let (tx, rx) = oneshot::channel();
    assert!(s.enqueue(
        Lane::WORK,
        0,
        sync(move |c: &mut C| drop(tx.send(c.clone())))
    ));
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("the read job never ran")
        .expect("the read job failed")
}

/// Waits (bounded) until nobody owns the scheduler: the owner that ran the last job lets go a
/// moment after that job has signalled.
async fn let_go(s: &Scheduler) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.core.queue.peek().0 {
        assert!(Instant::now() < deadline, "the scheduler is still owned");
        tokio::task::yield_now().await;
    }
    assert_eq!(s.core.queue.peek().1, 0, "jobs left on a free scheduler");
}

/// Marks a flag when dropped (a job dropped without running).
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

/// A job that records whether it ran and whether it was dropped.
fn watched() -> (Job, Arc<AtomicBool>, Arc<AtomicBool>) {
    let (ran, dropped) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let flag = DropFlag(dropped.clone());
    let r = ran.clone();
    let job = Job::Sync(Box::new(move |_| {
        let _flag = flag;
        r.store(true, SeqCst);
    }));
    (job, ran, dropped)
}

/// Counts jobs that find another job still running (shared by all jobs of one test).
#[derive(Default)]
struct Exclusion {
    busy: AtomicBool,
    overlaps: AtomicUsize,
}

impl Exclusion {
    fn enter(&self) {
        if self.busy.swap(true, SeqCst) {
            self.overlaps.fetch_add(1, SeqCst);
        }
    }
    fn leave(&self) {
        self.busy.store(false, SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_from_several_threads_run_one_at_a_time_in_submission_order() {
    const SUBMITTERS: usize = 4;
    const JOBS: usize = 3000;
    let (s, _task) = start(Vec::<(usize, usize)>::new());
    let ex = Arc::new(Exclusion::default());
    let mut submitters = Vec::new();
    for t in 0..SUBMITTERS {
        let (s, ex) = (s.clone(), ex.clone());
        submitters.push(tokio::spawn(async move {
            for i in 0..JOBS {
                let ex = ex.clone();
                let job = if i % 100 == 7 {
                    // An async job, awaiting in the middle: nothing else may run meanwhile.
                    Job::Async(Box::new(move |state| {
                        let log = state.downcast_mut::<Vec<(usize, usize)>>().expect("slot");
                        Box::pin(async move {
                            ex.enter();
                            tokio::task::yield_now().await;
                            log.push((t, i));
                            tokio::time::sleep(Duration::from_micros(50)).await;
                            ex.leave();
                        })
                    }))
                } else {
                    sync(move |log: &mut Vec<(usize, usize)>| {
                        ex.enter();
                        log.push((t, i));
                        ex.leave();
                    })
                };
                assert!(s.enqueue(Lane::WORK, 0, job));
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in submitters {
        t.await.unwrap();
    }
    let log: Vec<(usize, usize)> = read(&s).await;
    assert_eq!(ex.overlaps.load(SeqCst), 0, "jobs ran concurrently");
    assert_eq!(log.len(), SUBMITTERS * JOBS, "jobs lost");
    for t in 0..SUBMITTERS {
        let mine: Vec<usize> = log
            .iter()
            .filter(|(u, _)| *u == t)
            .map(|&(_, i)| i)
            .collect();
        assert_eq!(
            mine,
            (0..JOBS).collect::<Vec<_>>(),
            "submitter {t}'s jobs out of order"
        );
    }
}

/// A job queued just as its owner lets go must not be left behind: it would sit in the queue
/// until the next submission, which would then run first (out of order), or forever if none
/// came. Checked three ways: every job runs without further submissions, each thread's jobs run
/// in order, and a watcher never sees a free scheduler with jobs queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_job_is_left_in_the_queue_when_its_owner_lets_go() {
    const THREADS: usize = 3;
    const ROUNDS: usize = 3000;
    const BURST: usize = 16;
    let (s, _task) = start(vec![0usize; THREADS]);
    let done = Arc::new(AtomicUsize::new(0));
    let out_of_order = Arc::new(AtomicUsize::new(0));
    let submitting = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (s, submitting) = (s.clone(), submitting.clone());
        std::thread::spawn(move || {
            let mut stranded = 0;
            while submitting.load(SeqCst) {
                let (owned, queued) = s.core.queue.peek();
                if !owned && queued != 0 {
                    stranded += 1;
                }
                std::hint::spin_loop();
            }
            stranded
        })
    };
    // The threads set off together again and again, so that submissions keep meeting an owner
    // that is letting go of the scheduler.
    let together = Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (s, done, out_of_order) = (s.clone(), done.clone(), out_of_order.clone());
            let together = together.clone();
            std::thread::spawn(move || {
                for i in 0..ROUNDS * BURST {
                    if i % BURST == 0 {
                        together.wait();
                    }
                    let (done, out_of_order) = (done.clone(), out_of_order.clone());
                    assert!(s.enqueue(
                        Lane::WORK,
                        0,
                        sync(move |next: &mut Vec<usize>| {
                            if next[t] != i {
                                out_of_order.fetch_add(1, SeqCst);
                            }
                            next[t] = i + 1;
                            done.fetch_add(1, SeqCst);
                        })
                    ));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let total = THREADS * ROUNDS * BURST;
    submitting.store(false, SeqCst);
    assert_eq!(
        watcher.join().unwrap(),
        0,
        "jobs queued on a free scheduler"
    );
    // Nothing is submitted from here on, so a job stranded in the queue would stay there.
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.load(SeqCst) < total {
        assert!(
            Instant::now() < deadline,
            "{} of {total} jobs stranded",
            total - done.load(SeqCst),
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(out_of_order.load(SeqCst), 0, "jobs ran out of order");
    let_go(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_job_keeps_its_component_across_awaits_on_the_scheduler_task() {
    let (s, _task) = start(Vec::<&'static str>::new());
    let (open, gate) = oneshot::channel::<()>();
    let (started_tx, started) = oneshot::channel::<()>();
    assert!(s.enqueue(
        Lane::WORK,
        0,
        Job::Async(Box::new(move |state| {
            let log = state.downcast_mut::<Vec<&'static str>>().expect("slot");
            Box::pin(async move {
                log.push("async: before the await");
                let _ = started_tx.send(());
                gate.await.expect("gate");
                log.push("async: after the await");
            })
        }))
    ));
    // `enqueue` returned; the job runs on the scheduler task, now parked on the gate.
    started.await.expect("the async job was dropped");
    let (job, ran, _) = watched();
    assert!(s.enqueue(Lane::WORK, 0, job));
    assert!(
        !ran.load(SeqCst),
        "a job ran inline while an async job held the scheduler"
    );
    let (sync_tx, sync_rx) = oneshot::channel();
    assert!(s.enqueue(
        Lane::WORK,
        0,
        sync(move |log: &mut Vec<&'static str>| {
            log.push("sync");
            let _ = sync_tx.send(());
        })
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !ran.load(SeqCst),
        "a job ran while an async job held the scheduler"
    );
    open.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), sync_rx)
        .await
        .expect("the jobs behind the async job never ran")
        .unwrap();
    assert!(ran.load(SeqCst));
    let log: Vec<&'static str> = read(&s).await;
    assert_eq!(
        log,
        ["async: before the await", "async: after the await", "sync"]
    );
    let_go(&s).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_submitter_runs_the_inline_budget_then_the_task_runs_the_rest_in_order() {
    const FOLLOW_UPS: usize = 200;
    let (s, _task) = start(Vec::<usize>::new());
    let ran = Arc::new(AtomicUsize::new(0));
    let (s2, ran2) = (s.clone(), ran.clone());
    // The first job queues more behind itself, while its submitter owns the scheduler.
    assert!(s.enqueue(
        Lane::WORK,
        0,
        sync(move |log: &mut Vec<usize>| {
            log.push(0);
            ran2.fetch_add(1, SeqCst);
            for i in 1..=FOLLOW_UPS {
                let ran = ran2.clone();
                s2.enqueue(
                    Lane::WORK,
                    0,
                    sync(move |log: &mut Vec<usize>| {
                        log.push(i);
                        ran.fetch_add(1, SeqCst);
                    }),
                );
            }
        })
    ));
    // Single-threaded runtime, no await yet: only this thread can have run jobs so far.
    assert_eq!(
        ran.load(SeqCst),
        BUDGET,
        "the submitter ran more or less than its budget"
    );
    let log: Vec<usize> = read(&s).await;
    assert_eq!(log, (0..=FOLLOW_UPS).collect::<Vec<_>>());
}

#[tokio::test(flavor = "current_thread")]
async fn a_panicking_job_is_caught_and_the_component_stays_in_its_slot() {
    let (s, _task) = start(Vec::<&'static str>::new());
    assert!(s.enqueue(
        Lane::WORK,
        0,
        sync(|_: &mut Vec<&'static str>| panic!("sync job panics"))
    ));
    assert!(s.enqueue(
        Lane::WORK,
        0,
        Job::Async(Box::new(move |state| {
            let log = state.downcast_mut::<Vec<&'static str>>().expect("slot");
            Box::pin(async move {
                log.push("async");
                tokio::task::yield_now().await;
                panic!("async job panics");
            })
        }))
    ));
    assert!(s.enqueue(
        Lane::WORK,
        0,
        sync(|log: &mut Vec<&'static str>| log.push("after"))
    ));
    let log: Vec<&'static str> = read(&s).await;
    assert_eq!(log, ["async", "after"]);
}

#[tokio::test(flavor = "current_thread")]
async fn ownership_handed_to_a_stopped_task_drops_the_queue_and_frees_the_scheduler() {
    // The task stops first; a submitter that got past the `stopped` check then hands off.
    let (s, task) = start(());
    s.stop();
    task.await.unwrap();
    let (job, _, _) = watched();
    assert!(
        !s.enqueue(Lane::WORK, 0, job),
        "a stopped scheduler accepted a job"
    );
    let core = &s.core;
    let (first, _, _) = watched();
    let first = core
        .queue
        .submit(
            Lane::WORK,
            Queued {
                slot: 0,
                job: first,
            },
        )
        .expect("the scheduler is free");
    let (queued, ran, dropped) = watched();
    assert!(core
        .queue
        .submit(
            Lane::WORK,
            Queued {
                slot: 0,
                job: queued
            }
        )
        .is_none());
    drop(first);
    core.hand_off(Command::Continue);
    assert!(dropped.load(SeqCst) && !ran.load(SeqCst));
    assert!(!core.queue.peek().0, "ownership lost with the command");
    assert_eq!(core.queue.peek().1, 0);

    // Ownership sent after `Stop` is still in the channel when the task ends.
    let (s, task) = start(());
    let core = &s.core;
    let (first, _, _) = watched();
    let first = core
        .queue
        .submit(
            Lane::WORK,
            Queued {
                slot: 0,
                job: first,
            },
        )
        .expect("the scheduler is free");
    drop(first);
    let (queued, ran, dropped) = watched();
    assert!(core
        .queue
        .submit(
            Lane::WORK,
            Queued {
                slot: 0,
                job: queued
            }
        )
        .is_none());
    s.stop();
    core.hand_off(Command::Continue);
    task.await.unwrap();
    assert!(dropped.load(SeqCst) && !ran.load(SeqCst));
    assert!(!core.queue.peek().0, "ownership lost with the command");
}

#[test]
fn a_runtime_dropped_mid_async_job_puts_the_component_back_and_frees_the_scheduler() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (s, ran, dropped) = rt.block_on(async {
        let (s, _task) = start(Vec::<&'static str>::new());
        let (started_tx, started) = oneshot::channel::<()>();
        assert!(s.enqueue(
            Lane::WORK,
            0,
            Job::Async(Box::new(move |state| {
                let log = state.downcast_mut::<Vec<&'static str>>().expect("slot");
                Box::pin(async move {
                    log.push("started");
                    let _ = started_tx.send(());
                    std::future::pending::<()>().await;
                })
            }))
        ));
        started.await.unwrap();
        let (job, ran, dropped) = watched();
        assert!(s.enqueue(Lane::WORK, 0, job));
        (s, ran, dropped)
    });
    drop(rt); // drops the scheduler task in the middle of the async job
    assert!(dropped.load(SeqCst) && !ran.load(SeqCst));
    assert!(
        !s.core.queue.peek().0,
        "nobody will ever run this scheduler again"
    );
    let slots = lock(&s.core.slots);
    assert_eq!(
        slots[0].downcast_ref::<Vec<&'static str>>(),
        Some(&vec!["started"]),
        "the component was not put back"
    );
}

/// A timer whose callback is already queued (it expired while another job held the scheduler)
/// and is then cancelled by that job never fires: neither a one-shot nor a periodic timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_cancelled_while_its_callback_waits_in_the_queue_never_fires() {
    for period in [None, Some(Duration::from_millis(1))] {
        let (s, _task) = start(());
        let fired = Arc::new(AtomicUsize::new(0));
        let queued_seen = Arc::new(AtomicBool::new(false));
        let (owning_tx, owning) = oneshot::channel::<()>();
        let (id_tx, id_rx) = std::sync::mpsc::channel::<TimerId>();
        let (s2, seen) = (s.clone(), queued_seen.clone());
        // On a thread of its own: the job runs inline there, owning the scheduler, until the
        // scheduler task has queued the timer's callback behind it; then it cancels the timer.
        let holder = tokio::task::spawn_blocking(move || {
            let s3 = s2.clone();
            assert!(s2.enqueue(
                Lane::WORK,
                0,
                Job::Sync(Box::new(move |_| {
                    let _ = owning_tx.send(());
                    let Ok(id) = id_rx.recv_timeout(Duration::from_secs(5)) else {
                        return;
                    };
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < deadline {
                        if s3.core.queue.peek().1 > 0 {
                            seen.store(true, SeqCst);
                            break;
                        }
                        std::thread::yield_now();
                    }
                    s3.cancel_timer(id);
                }))
            ));
        });
        // The timer is added once the job owns the scheduler, so it cannot fire before.
        tokio::time::timeout(Duration::from_secs(5), owning)
            .await
            .expect("the holding job never ran")
            .unwrap();
        let f = fired.clone();
        let id = s.add_timer(
            0,
            Duration::from_millis(1),
            period,
            Box::new(move |_| {
                f.fetch_add(1, SeqCst);
            }),
        );
        id_tx.send(id).unwrap();
        holder.await.unwrap();
        assert!(
            queued_seen.load(SeqCst),
            "the timer's callback was never queued"
        );
        let () = read(&s).await;
        assert_eq!(
            fired.load(SeqCst),
            0,
            "a cancelled timer fired ({period:?})"
        );
        assert!(
            lock(&s.core.timers).is_empty(),
            "the cancelled timer is still registered"
        );
    }
}

/// An async job that takes 1 ms of the paused clock and queues the next one, `left` times.
fn tick(s: Scheduler, lane: Lane, ran: Arc<AtomicUsize>, left: usize) -> Job {
    Job::Async(Box::new(move |_| {
        Box::pin(async move {
            tokio::time::advance(Duration::from_millis(1)).await;
            ran.fetch_add(1, SeqCst);
            if left > 1 {
                let next = tick(s.clone(), lane, ran, left - 1);
                s.enqueue(lane, 0, next);
            }
        })
    }))
}

/// The scheduler task never finds its queue empty (each job queues the next), yet it comes back
/// to its timers every turn: a periodic timer fires on its grid, at most a turn late.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_scheduler_task_keeps_firing_timers_while_its_queue_never_empties() {
    const JOBS: usize = 2000;
    const PERIOD: u64 = 200;
    let (s, _task) = start(Vec::<usize>::new());
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    s.add_timer(
        0,
        Duration::from_millis(PERIOD),
        Some(Duration::from_millis(PERIOD)),
        Box::new(move |state| {
            if let Some(fires) = state.downcast_mut::<Vec<usize>>() {
                fires.push(r.load(SeqCst));
            }
        }),
    );
    assert!(s.enqueue(
        Lane::WORK,
        0,
        tick(s.clone(), Lane::WORK, ran.clone(), JOBS)
    ));
    while ran.load(SeqCst) < JOBS {
        tokio::task::yield_now().await; // the flood keeps the paused clock from auto-advancing
    }
    let fires: Vec<usize> = read(&s).await;
    assert!(
        fires.len() >= JOBS / PERIOD as usize - 1,
        "fires: {fires:?}"
    );
    for (k, &at) in fires.iter().enumerate() {
        let due = (k + 1) * PERIOD as usize;
        assert!(
            (due..=due + BUDGET + 2).contains(&at),
            "fire {k} due after job {due} ran after job {at}"
        );
    }
}

#[test]
fn lanes_take_turns_one_job_each_and_keep_their_own_order() {
    let q = queue::Queue::new();
    assert!(q.submit(Lane::WORK, (0, 0)).is_some(), "a free scheduler");
    for i in 0..3 {
        assert!(q.submit(Lane::session(7), (7, i)).is_none());
    }
    assert!(q.submit(Lane::session(8), (8, 0)).is_none());
    assert!(q.submit(Lane::TIMERS, (99, 0)).is_none());
    assert!(q.submit(Lane::session(7), (7, 3)).is_none());
    assert!(q.submit(Lane::session(8), (8, 1)).is_none());
    let mut order = Vec::new();
    loop {
        match q.next(false, || {}) {
            queue::Next::Job(j) => {
                order.push(j);
                if j == (8, 0) {
                    // A lane that empties and fills again goes to the back of the ring.
                    assert!(q.submit(Lane::TIMERS, (99, 1)).is_none());
                }
            }
            queue::Next::Released => break,
            queue::Next::Yield => unreachable!("no budget given"),
        }
    }
    assert_eq!(
        order,
        [
            (7, 0),
            (8, 0),
            (99, 0),
            (7, 1),
            (8, 1),
            (99, 1),
            (7, 2),
            (7, 3)
        ]
    );
    assert_eq!(q.peek(), (false, 0));
    // Over budget with jobs waiting: the owner keeps ownership and yields.
    assert!(q.submit(Lane::WORK, (0, 0)).is_some());
    assert!(q.submit(Lane::WORK, (0, 1)).is_none());
    assert!(matches!(q.next(true, || {}), queue::Next::Yield));
    assert_eq!(q.peek(), (true, 1));
}

/// Stop under a never-ending flood of queued jobs from many sessions: the task still ends, after
/// the jobs already queued, and drops its component.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stop_ends_the_task_under_a_flood_and_drops_the_components() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (s, task) = start(DropFlag(dropped.clone()));
    let ran = Arc::new(AtomicUsize::new(0));
    for lane in 1..=5 {
        let job = tick(s.clone(), Lane::session(lane), ran.clone(), usize::MAX);
        assert!(s.enqueue(Lane::session(lane), 0, job));
    }
    while ran.load(SeqCst) < 500 {
        tokio::task::yield_now().await;
    }
    s.stop();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the scheduler task never saw Stop")
        .unwrap();
    assert!(dropped.load(SeqCst), "the component outlived its scheduler");
    assert_eq!(s.core.queue.peek(), (false, 0));
}

#[test]
fn a_periodic_timer_is_re_armed_on_its_grid_skipping_missed_ticks() {
    let t0 = tokio::time::Instant::now();
    let ms = Duration::from_millis;
    assert_eq!(next_tick(t0, ms(10), t0 + ms(3)), t0 + ms(10), "on time");
    assert_eq!(next_tick(t0, ms(10), t0 + ms(10)), t0 + ms(20), "due now");
    assert_eq!(
        next_tick(t0, ms(10), t0 + ms(35)),
        t0 + ms(40),
        "3 ticks missed"
    );
    assert_eq!(next_tick(t0, Duration::ZERO, t0), t0 + ms(1), "zero period");
}
