//! GET /metrics: Prometheus text exposition format (version 0.0.4).

use std::fmt::Write as _;

use actix_web::{web, HttpResponse};
use cpm_actors::trace::LATENCY_BUCKETS;

use super::{pf_snapshots, AdminState, Authorized};

/// Users whose stored deferred queue is summed (bounded work per scrape).
const DEFERRED_SCAN: usize = 10_000;

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
}

pub async fn metrics(_: Authorized, state: web::Data<AdminState>) -> HttpResponse {
    let env = &state.core.env;
    let c = env.tracer.counters();
    let mut out = String::new();

    help(
        &mut out,
        "cpm_sip_requests_total",
        "counter",
        "SIP requests answered, by method and final status.",
    );
    for (method, status, n) in &c.responses {
        let _ = writeln!(
            out,
            "cpm_sip_requests_total{{method=\"{}\",status=\"{status}\"}} {n}",
            label(method)
        );
    }

    help(
        &mut out,
        "cpm_sip_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to its final response, by method (MESSAGE: the whole delivery).",
    );
    for (method, buckets, count, sum) in &c.latency {
        let m = label(method);
        for (bound, n) in LATENCY_BUCKETS.iter().zip(buckets) {
            let _ = writeln!(
                out,
                "cpm_sip_request_duration_seconds_bucket{{method=\"{m}\",le=\"{bound}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "cpm_sip_request_duration_seconds_bucket{{method=\"{m}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "cpm_sip_request_duration_seconds_sum{{method=\"{m}\"}} {sum}");
        let _ = writeln!(out, "cpm_sip_request_duration_seconds_count{{method=\"{m}\"}} {count}");
    }

    help(
        &mut out,
        "cpm_events_total",
        "counter",
        "Routing events by kind (the message trace's event names).",
    );
    for (event, n) in &c.events {
        let _ = writeln!(out, "cpm_events_total{{event=\"{}\"}} {n}", label(event));
    }
    let event = |name: &str| c.events.iter().find(|(e, _)| e == name).map_or(0, |(_, n)| *n);
    let store = env.store.health();
    help(
        &mut out,
        "cpm_store_healthy",
        "gauge",
        "1 while store flushes succeed, 0 after one failed (nothing is acknowledged as durable until one succeeds).",
    );
    let _ = writeln!(out, "cpm_store_healthy {}", u8::from(store.failing.is_none()));
    help(
        &mut out,
        "cpm_store_flush_failures_total",
        "counter",
        "Store flushes that failed since the start.",
    );
    let _ = writeln!(out, "cpm_store_flush_failures_total {}", store.failed_flushes);
    help(
        &mut out,
        "cpm_store_flush_duration_seconds",
        "histogram",
        "Store flushes (one per batch of waiting requests); every durable acknowledgement waits for one.",
    );
    for (bound, n) in cpm_store::FLUSH_BUCKETS.iter().zip(store.flush_buckets) {
        let _ = writeln!(out, "cpm_store_flush_duration_seconds_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "cpm_store_flush_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        store.flushes
    );
    let _ = writeln!(out, "cpm_store_flush_duration_seconds_sum {}", store.flush_seconds);
    let _ = writeln!(out, "cpm_store_flush_duration_seconds_count {}", store.flushes);
    help(
        &mut out,
        "cpm_deliveries_total",
        "counter",
        "Messages a device accepted (live forks and deferred pushes).",
    );
    let _ = writeln!(
        out,
        "cpm_deliveries_total {}",
        event("delivered") + event("deferred-delivered")
    );
    help(
        &mut out,
        "cpm_deferrals_total",
        "counter",
        "Messages queued in a deferred queue.",
    );
    let _ = writeln!(out, "cpm_deferrals_total {}", event("deferred"));
    help(
        &mut out,
        "cpm_stored_total",
        "counter",
        "Messages handed to the Message Storage Server.",
    );
    let _ = writeln!(out, "cpm_stored_total {}", event("stored"));

    let snaps = pf_snapshots(&state).await;
    let (mut devices, mut device_actors, mut in_flight, mut pending) = (0usize, 0usize, 0usize, 0usize);
    for s in snaps.iter().filter_map(|(_, s, _)| s.as_ref()) {
        devices += s.registrations.len();
        in_flight += s.in_flight;
        for a in s.registrations.iter().filter_map(|r| r.actor.as_ref()) {
            device_actors += 1;
            pending += a.pending;
        }
    }
    help(
        &mut out,
        "cpm_actors",
        "gauge",
        "Live actors by kind (device: registrations of active users; device_actor: running ClientRegistration actors).",
    );
    let _ = writeln!(out, "cpm_actors{{kind=\"ingress\"}} {}", state.ingress.len());
    let _ = writeln!(out, "cpm_actors{{kind=\"pf\"}} {}", snaps.len());
    let _ = writeln!(out, "cpm_actors{{kind=\"cf\"}} {}", state.core.dir.active_cfs().len());
    let _ = writeln!(out, "cpm_actors{{kind=\"device\"}} {devices}");
    let _ = writeln!(out, "cpm_actors{{kind=\"device_actor\"}} {device_actors}");
    help(
        &mut out,
        "cpm_pf_activations_total",
        "counter",
        "Participating Function activations since start.",
    );
    let _ = writeln!(out, "cpm_pf_activations_total {}", state.core.dir.activations());
    help(
        &mut out,
        "cpm_pf_in_flight",
        "gauge",
        "Requests the active PFs are working on (sum).",
    );
    let _ = writeln!(out, "cpm_pf_in_flight {in_flight}");
    help(
        &mut out,
        "cpm_device_pending_forks",
        "gauge",
        "Forks sent to devices and not answered yet (sum).",
    );
    let _ = writeln!(out, "cpm_device_pending_forks {pending}");

    let (mut queued, mut bytes, mut damaged) = (0usize, 0u64, 0usize);
    for aor in env.store.aors_with_deferred(DEFERRED_SCAN).unwrap_or_default() {
        if let Ok(usage) = env.store.deferred_usage(&aor) {
            queued += usage.count;
            bytes += usage.bytes;
            damaged += usage.damaged;
        }
    }
    help(
        &mut out,
        "cpm_deferred_queue_messages",
        "gauge",
        "Messages waiting in deferred queues (all users).",
    );
    let _ = writeln!(out, "cpm_deferred_queue_messages {queued}");
    help(
        &mut out,
        "cpm_deferred_queue_bytes",
        "gauge",
        "Bytes of messages waiting in deferred queues.",
    );
    let _ = writeln!(out, "cpm_deferred_queue_bytes {bytes}");
    help(
        &mut out,
        "cpm_deferred_queue_damaged",
        "gauge",
        "Deferred records that cannot be read (damaged on disk): skipped, reaped at their expiry.",
    );
    let _ = writeln!(out, "cpm_deferred_queue_damaged {damaged}");

    help(
        &mut out,
        "cpm_trace_events",
        "gauge",
        "Events held in the message trace ring.",
    );
    let _ = writeln!(out, "cpm_trace_events {}", c.trace_len);
    help(
        &mut out,
        "cpm_trace_dropped_total",
        "counter",
        "Trace events pushed out of the ring by newer ones.",
    );
    let _ = writeln!(out, "cpm_trace_dropped_total {}", c.trace_dropped);
    help(
        &mut out,
        "cpm_trace_sampling",
        "gauge",
        "The trace ring records 1 call in this many (1: every call; more under load, [trace] keep_s).",
    );
    let _ = writeln!(out, "cpm_trace_sampling {}", c.trace_sampling);
    help(
        &mut out,
        "cpm_worker_cpu_seconds_total",
        "counter",
        "CPU time (user + system) of each worker thread; a rate near 1 is a saturated worker, where latency grows before throughput stops.",
    );
    for (i, seconds) in state.core.workers.cpu_seconds() {
        let _ = writeln!(out, "cpm_worker_cpu_seconds_total{{worker=\"{i}\"}} {seconds}");
    }
    help(
        &mut out,
        "cpm_uptime_seconds",
        "gauge",
        "Seconds since the admin server started.",
    );
    let _ = writeln!(out, "cpm_uptime_seconds {}", state.started.elapsed().as_secs());

    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(out)
}
