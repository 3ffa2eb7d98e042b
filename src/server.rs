//! Wiring: bind the transports, start the worker arbiters with one
//! SipIngress each, the Directory of user actors, and the sweepers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use cpm_actors::gruu::TempGruus;
use cpm_actors::{
    unix_now, Aor, Directory, Env, ExpireDeferred, LocalDomains, Outbound, OutboundError, PurgeExpired,
    SpoolInterworking, Target,
};
use cpm_sip::Message;
use cpm_store::Store;
use futures::future::BoxFuture;

use crate::config::Config;
use crate::ingress::{Core, Received, SipIngress};
use crate::limits::{Admit, Gate, Limits, ShedCounters};
use crate::transaction::{ClientTransactions, ServerTransactions, Timers};
use crate::transport::{tls_acceptor, Inbound, MemoryTransport, Sink, TcpHub, Transports, UdpTransport, WorkerSink};
use crate::workers::WorkerThreads;

/// `--sip udp:HOST:PORT` / `--sip tcp:HOST:PORT` / `--sip tls:HOST:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Udp(SocketAddr),
    Tcp(SocketAddr),
    /// Needs `[tls]` cert and key in the configuration.
    Tls(SocketAddr),
    /// In-process transport for `cpm simulate` (no socket; the address is
    /// only what the server calls itself). Built in code, not parsed.
    Memory(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Listen, String> {
        let (proto, addr) = s
            .split_once(':')
            .ok_or("expected udp:HOST:PORT, tcp:HOST:PORT or tls:HOST:PORT")?;
        let addr: SocketAddr = addr.parse().map_err(|e| format!("bad address {addr:?}: {e}"))?;
        match proto.to_ascii_lowercase().as_str() {
            "udp" => Ok(Listen::Udp(addr)),
            "tcp" => Ok(Listen::Tcp(addr)),
            "tls" => Ok(Listen::Tls(addr)),
            other => Err(format!("unknown transport {other:?} (udp, tcp or tls)")),
        }
    }
}

pub struct ServeOptions {
    pub listen: Vec<Listen>,
    pub data: PathBuf,
    pub config: Config,
    pub open: bool,
    /// Flood and overload limits (docs/overload.md).
    pub limits: Limits,
}

/// A started server (handles for tests and the admin side).
pub struct Server {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub core: Arc<Core>,
    /// One SipIngress per worker (admin inspector).
    pub ingress: Vec<Addr<SipIngress>>,
    /// The in-process transport, when `Listen::Memory` was asked for.
    pub memory: Option<Arc<MemoryTransport>>,
    /// The config file's provider policy (the admin API may have replaced it).
    pub file_policy: cpm_actors::Policy,
    _arbiters: Vec<Arbiter>,
}

impl Server {
    /// Stop the worker arbiters and the actors on them (in-process runs
    /// such as `cpm simulate`, which start more than one engine per process).
    pub fn stop(self) {
        for a in &self._arbiters {
            a.stop();
        }
    }
}

struct TxOutbound(Arc<ClientTransactions>);

impl Outbound for TxOutbound {
    fn send_request(&self, request: Message, target: Target) -> BoxFuture<'static, Result<Message, OutboundError>> {
        let tx = self.0.clone();
        Box::pin(async move { tx.request(request, target).await })
    }
}

/// How long a starting server waits for the store's file lock.
const STORE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Start everything; must run inside an actix System.
pub async fn start(opts: ServeOptions) -> anyhow::Result<Server> {
    anyhow::ensure!(!opts.listen.is_empty(), "no --sip listener");
    // A server restarted right after the last one stopped may find the
    // store's lock still held for a moment: wait a little for it.
    let store = match cpm_store::retry_while_locked(STORE_LOCK_WAIT, || {
        Store::open_with_cache(&opts.data, opts.config.store.cache_bytes())
    }) {
        Ok(store) => store,
        Err(e) if e.is_locked() => anyhow::bail!(
            "the store {} is locked: another cpm server (or `cpm user`) is using it",
            opts.data.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("opening store {}", opts.data.display())),
    };

    // Default: one worker per core but one, which is left to the kernel's
    // network stack, the store's flusher and the System arbiter. A message whose sender, recipient and devices share
    // a worker never changes thread (docs/performance.md).
    let workers = match opts.config.actors.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get().saturating_sub(1))
            .unwrap_or(1)
            .max(1),
        n => n,
    };
    let to_tag = format!("cpm{:x}", unix_now());
    let shed = Arc::new(ShedCounters::default());
    // Rate limit and queue bounds, applied on the receive path (limits.rs).
    let gate = Arc::new(Gate::new(opts.limits.clone(), workers, shed.clone(), to_tag.clone()));

    // Inbound messages reach the ingress actors through a sink that is
    // bound once they exist (transports must exist before the actors do).
    // UDP datagrams stay on the worker whose socket received them; stream
    // and in-process messages go to a worker by peer hash. Either way one
    // peer's messages stay on one worker, in order.
    let ingress: Arc<OnceLock<Vec<Addr<SipIngress>>>> = Arc::new(OnceLock::new());
    let to_worker: WorkerSink = {
        let ingress = ingress.clone();
        Arc::new(move |i: usize, inbound: Inbound| {
            let Some(addr) = ingress.get().and_then(|a| a.get(i)) else {
                return Admit::Drop;
            };
            match gate.admit(i, &inbound.data, inbound.source.peer.ip()) {
                (Admit::Accept, guard) => {
                    addr.do_send(Received(inbound, guard));
                    Admit::Accept
                }
                (refused, _) => refused,
            }
        })
    };
    let sink: Sink = {
        let to_worker = to_worker.clone();
        Arc::new(move |inbound: Inbound| to_worker(peer_hash(&inbound.source.peer) % workers, inbound))
    };

    let (mut udp, mut tcp_hub, mut tls_hub, mut addrs) = (Vec::new(), None, None, Vec::new());
    let mut memory: Option<Arc<MemoryTransport>> = None;
    for l in &opts.listen {
        match *l {
            Listen::Udp(a) => {
                let t = UdpTransport::bind(a, workers, opts.limits.queue_delay().is_some())
                    .with_context(|| format!("binding udp:{a}"))?;
                addrs.push(t.local().to_string());
                udp.push(t);
            }
            Listen::Tcp(a) | Listen::Tls(a) => {
                let tls = matches!(*l, Listen::Tls(_));
                let (name, slot) = match tls {
                    true => ("tls", &mut tls_hub),
                    false => ("tcp", &mut tcp_hub),
                };
                anyhow::ensure!(slot.is_none(), "only one {name} listener is supported");
                let acceptor = match tls {
                    false => None,
                    true => {
                        let tls = opts.config.tls.as_ref().with_context(|| {
                            format!("--sip tls:{a} needs a [tls] section with `cert` and `key` (PEM files) in --config")
                        })?;
                        Some(tls_acceptor(&tls.cert, &tls.key).with_context(|| format!("TLS listener tls:{a}"))?)
                    }
                };
                let listener = tokio::net::TcpListener::bind(a)
                    .await
                    .with_context(|| format!("binding {name}:{a}"))?;
                let hub = TcpHub::with_tls(
                    listener.local_addr()?,
                    acceptor,
                    sink.clone(),
                    &opts.limits,
                    shed.clone(),
                    to_tag.clone(),
                );
                addrs.push(hub.local().to_string());
                actix_rt::spawn(hub.clone().accept(listener));
                *slot = Some(hub);
            }
            Listen::Memory(a) => {
                anyhow::ensure!(memory.is_none(), "only one memory transport is supported");
                let m = MemoryTransport::new(a);
                m.bind_sink(sink.clone());
                addrs.push(a.to_string());
                memory = Some(m);
            }
        }
    }
    let mut transports = Transports::new(udp.clone(), tcp_hub.clone(), tls_hub.clone());
    if let Some(m) = &memory {
        transports = transports.with_memory(m.clone());
    }
    let transports = Arc::new(transports);
    let timers = Timers::default();
    let client_tx = Arc::new(ClientTransactions::with_cap(
        transports.clone(),
        timers,
        opts.limits.client_tx,
    ));

    let domains = LocalDomains::new(&opts.config.domains, &addrs);
    let groups = opts.config.groups(&domains)?;
    let mut users = opts.config.users(&domains, opts.open)?;
    // Changes made through the admin API, over the config file.
    let loaded = crate::admin::provisioning::load(&store, &mut users, &groups)
        .context("reading run-time provisioning from the store")?;
    let file_policy = opts.config.policy();
    let policy = match crate::admin::provisioning::stored_policy(&store)
        .context("reading the stored provider policy")?
    {
        Some(p) => {
            tracing::info!("the provider policy set through the admin API replaces the config file's (DELETE /api/policy to go back)");
            p
        }
        None => file_policy.clone(),
    };
    if loaded != Default::default() {
        tracing::info!(
            users = loaded.users,
            groups = loaded.groups,
            unreadable = loaded.unreadable,
            "applied run-time provisioning (admin API) over the config file"
        );
    }
    // Digest authentication (docs/auth.md); unused with --open.
    let spool = (opts.config.interworking.spool_dir.clone()).unwrap_or_else(|| opts.data.join("interworking-spool"));
    let interworking = SpoolInterworking::new(spool.clone()).with_context(|| format!("spool {}", spool.display()))?;
    // Temporary GRUUs outlive restarts: their key is kept in the store.
    let gruu_secret = store
        .secret(
            cpm_actors::gruu::SECRET_NAME,
            TempGruus::fresh_secret().context("the system's random source failed")?,
        )
        .context("reading the temporary-GRUU secret from the store")?;
    let env = Env {
        store: store.clone(),
        outbound: Arc::new(TxOutbound(client_tx.clone())),
        policy: Arc::new(cpm_actors::SharedPolicy::new(policy)),
        users: Arc::new(users.into()),
        domains: Arc::new(domains),
        interworking: Arc::new(interworking),
        groups: Arc::new(groups),
        tracer: Arc::new(opts.config.trace.tracer()),
        temp_gruus: Arc::new(TempGruus::new(&gruu_secret)),
    };

    let arbiters: Vec<Arbiter> = (0..workers).map(|_| Arbiter::new()).collect();
    let handles: Vec<ArbiterHandle> = arbiters.iter().map(|a| a.handle()).collect();
    let threads = Arc::new(WorkerThreads::new(workers));
    for (i, h) in handles.iter().enumerate() {
        h.spawn(keep_timer_wheel_armed());
        let threads = threads.clone();
        h.spawn(async move { threads.record_current(i) });
    }
    let dir = Directory::new(env.clone(), handles.clone());
    let core = Arc::new(Core {
        env,
        dir,
        transports,
        server_tx: ServerTransactions::with_cap(opts.limits.server_tx),
        client_tx,
        to_tag,
        shed,
        retry_after_s: opts.limits.retry_after_s,
        max_queue_delay: opts.limits.queue_delay(),
        auth: Arc::new(crate::auth::Authenticator::new(opts.config.auth.clone())),
        workers: threads,
    });
    let actors: Vec<Addr<SipIngress>> = handles
        .iter()
        .map(|h| {
            let core = core.clone();
            SipIngress::start_in_arbiter(h, move |_| SipIngress::new(core))
        })
        .collect();
    let _ = ingress.set(actors.clone());
    for u in &udp {
        u.run(&handles, to_worker.clone())?;
    }
    spawn_sweepers(core.clone(), timers);
    resume_fanouts(&core);
    // Timers E and F of the forks to devices (transaction/client.rs).
    actix_rt::spawn(core.client_tx.clone().run_timers());

    let udp_addrs = udp.iter().map(|u| u.local()).collect();
    let tcp_addrs = tcp_hub.iter().map(|t| t.local()).collect();
    let tls_addrs = tls_hub.iter().map(|t| t.local()).collect();
    tracing::info!(
        ?udp_addrs,
        ?tcp_addrs,
        ?tls_addrs,
        workers,
        open = opts.open,
        "cpm serving"
    );
    Ok(Server {
        udp: udp_addrs,
        tcp: tcp_addrs,
        tls: tls_addrs,
        core,
        ingress: actors,
        memory,
        file_policy,
        _arbiters: arbiters,
    })
}

/// Deferred messages whose time has come, found through the store's ordered
/// expiry index; each user's PF decides (discard or store, per preference).
async fn expire_deferred(core: &Arc<Core>) {
    let now = unix_now();
    match core.env.store.next_deferred_expiry() {
        Ok(Some(t)) if t <= now => {}
        Ok(_) => return,
        Err(e) => return tracing::error!(error = %e, "deferred expiry index unreadable"),
    }
    let expired = match core.env.store.deferred_expired(now, 10_000) {
        Ok(x) => x,
        Err(e) => return tracing::error!(error = %e, "deferred expiry sweep failed"),
    };
    let mut by_user: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for (aor, seq) in expired {
        by_user.entry(aor).or_default().push(seq);
    }
    for (aor, seqs) in by_user {
        let aor = Aor::from_canonical(aor);
        if let Err(e) = core.dir.send(&aor, ExpireDeferred(seqs)).await {
            tracing::error!(%aor, error = %e, "cannot expire deferred messages");
        }
    }
}

fn peer_hash(peer: &SocketAddr) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    peer.hash(&mut h);
    h.finish() as usize
}

/// Keeps one timer due within a second on a worker's timer wheel, for as
/// long as the worker runs. Without it the wheel is often empty when the
/// worker parks (a fork's deadline is dropped as soon as its device
/// answers), so each new fork deadline is the earliest timer and tokio
/// re-arms the driver by writing its eventfd: a syscall and a spurious
/// epoll return per relayed message (perf: 0.9 `write`s per message at
/// 2,000/s). Costs one wake-up per second.
async fn keep_timer_wheel_armed() {
    let mut tick = ticker(Duration::from_secs(1));
    loop {
        tick.tick().await;
    }
}

/// An interval whose ticks missed during a stall are not made up in a burst.
fn ticker(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// How often the server transaction table is swept. Under load the sweep
/// holds the table at half its cap and it refills between two sweeps: with
/// a 1 s period, 16,000 requests/s took it past the room then reserved for
/// it (114,688 entries) and its shards grew, a rehash into fresh memory on
/// the worker in the middle of traffic (docs/performance-log.md, seventh session).
/// The work per sweep follows what expires, so more often costs no more.
pub(crate) const SERVER_TX_SWEEP: Duration = Duration::from_millis(200);

/// Group copies a stop interrupted (the CFs' fan-out journal), sent again.
fn resume_fanouts(core: &Core) {
    let pending = match core.env.store.pending_fanouts() {
        Ok(p) => p,
        Err(e) => return tracing::error!(error = %e, "cannot read the group fan-out journal"),
    };
    if !pending.is_empty() {
        tracing::info!(
            count = pending.len(),
            "resuming group fan-outs interrupted by the last stop"
        );
    }
    for (group, id) in pending {
        to_cf(
            core,
            group,
            cpm_actors::ResumeFanOut { id },
            "group fan-out not resumed",
        );
    }
}

/// Hand `msg` to `group`'s CF, activating it (or re-activating one that was
/// just passivating); a failure is logged with `failed`.
fn to_cf<M>(core: &Core, group: String, msg: M, failed: &'static str)
where
    M: actix::Message<Result = ()> + Send + Clone + 'static,
    cpm_actors::ControllingFunction: actix::Handler<M>,
{
    let dir = core.dir.clone();
    actix_rt::spawn(async move {
        let group = Aor::from_canonical(group);
        if let Err(e) = dir.send_cf(&group, msg).await {
            tracing::error!(%group, error = %e, "{failed}");
        }
    });
}

/// Group report records whose deadline or retention ended, handed to
/// their CF (activated if need be): after a restart or the CF's
/// passivation nothing else would look at them again. Each is leased: a
/// CF that does not get it sees it again after the lease.
fn group_reports_due(core: &Core) {
    match core.env.store.due_group_reports(unix_now(), 10_000) {
        Ok(due) => {
            for d in due {
                to_cf(
                    core,
                    d.group,
                    cpm_actors::ReportsDue {
                        id: d.id,
                        lease: d.lease,
                    },
                    "group report deadline not handled now; it comes up again when its lease ends",
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "group report sweep failed"),
    }
}

/// Timer J for server transactions (every [`SERVER_TX_SWEEP`]); once a
/// second, expiry of bindings of passive users (active PFs run their own
/// timers) through the store's ordered index, and the group report sweep.
fn spawn_sweepers(core: Arc<Core>, timers: Timers) {
    let sweep_core = core.clone();
    actix_rt::spawn(async move {
        let mut tick = ticker(SERVER_TX_SWEEP);
        loop {
            tick.tick().await;
            sweep_core.server_tx.sweep(&timers);
        }
    });
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n: u64 = 0;
        let mut shed_seen = core.shed.snapshot();
        let mut live_pfs = 0;
        loop {
            tick.tick().await;
            let shed = core.shed.snapshot();
            if shed != shed_seen {
                shed_seen = shed;
                tracing::warn!(?shed, server_tx = core.server_tx.len(), "overload protection shed load");
            }
            expire_deferred(&core).await;
            group_reports_due(&core);
            n += 1;
            if n.is_multiple_of(10) {
                // After a wave of passivations, hand the freed heap back (docs/performance.md, Scale).
                let live = core.dir.active_count();
                if live + 1000 < live_pfs {
                    crate::memory::trim_heap();
                }
                live_pfs = live;
            }
            if n.is_multiple_of(60) {
                if let Err(e) = core.env.store.sweep_imdn(unix_now(), 100_000) {
                    tracing::error!(error = %e, "report memory sweep failed");
                }
            }
            if !n.is_multiple_of(5) {
                continue;
            }
            let now = unix_now();
            match core.env.store.expired(now, 10_000) {
                Ok(expired) => {
                    for (aor, key) in expired {
                        let aor = Aor::from_canonical(aor);
                        if core.dir.is_active(&aor) {
                            core.dir.pf(&aor).do_send(PurgeExpired);
                        } else if let Err(e) = core.env.store.remove_expired(aor.as_str(), &key, now) {
                            tracing::error!(%aor, %key, error = %e, "cannot remove expired binding");
                        } else {
                            tracing::info!(%aor, %key, "registration expired");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
            }
        }
    });
}
