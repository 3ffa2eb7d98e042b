//! OPTIONS (RFC 3261 §11). Addressed to the server (no user part): its own
//! capabilities. Addressed to a user: a capability query for that user's
//! devices, which answer it themselves (actors/src/pf/query.rs), after the
//! same checks as a pager-mode message (sender authorization, target known).
//! A group's or a service's URI is answered by the server, which plays
//! those roles.

use std::sync::Arc;

use cpm_actors::{QueryDevices, QueryOutcome};

use super::message::{assert_identity, check, privacy_requested, Route};
use super::{Reply, ALLOW};

pub fn handle(reply: Reply) {
    let for_a_user = reply
        .req
        .request_uri()
        .is_some_and(|u| u.user.as_deref().is_some_and(|user| !user.is_empty()));
    if for_a_user {
        reply.spawn(route)
    } else {
        reply.spawn_with(200, capabilities)
    }
}

fn capabilities(b: cpm_sip::ResponseBuilder) -> cpm_sip::ResponseBuilder {
    b.header("Allow", ALLOW)
        .header("Accept", "message/cpim, text/plain, message/imdn+xml")
        .header("Supported", "gruu")
}

async fn route(mut r: Reply) {
    let authenticated = match crate::auth::authenticate(&r) {
        Ok(a) => a,
        Err(resp) => return r.send(*resp).await,
    };
    let (sender, target, gruu) = match check(&r, authenticated.as_ref()) {
        Ok(Route::User {
            sender, target, gruu, ..
        }) => (sender, target, gruu),
        // A group's Controlling Function and our services are the server.
        Ok(Route::Group { .. } | Route::AdHoc { .. } | Route::DeferredService { .. }) => {
            let resp = capabilities(r.builder(200)).build();
            return r.send(resp).await;
        }
        Err(resp) => return r.send(*resp).await,
    };
    // The devices learn who asks (as with a message: the authenticated
    // identity), unless the asker withholds it (RFC 3323).
    let req = Arc::make_mut(&mut r.req);
    if authenticated.is_some() {
        assert_identity(req, &sender);
    }
    if privacy_requested(req) {
        cpm_actors::originating::anonymize(req);
    }
    let query = QueryDevices {
        request: r.req.clone(),
        gruu,
        sender_source: (sender == target).then_some(r.source.peer),
    };
    let resp = match r.core.dir.send(&target, query).await {
        Ok(QueryOutcome::Answered(response)) => *response,
        Ok(QueryOutcome::Unavailable) => r.builder(480).build(),
        Ok(QueryOutcome::StaleGruu) => r.stale_gruu(),
        Err(e) => {
            tracing::error!(%target, error = %e, "capability query failed");
            r.actor_unavailable()
        }
    };
    tracing::debug!(%target, status = ?resp.status(), "capability query answered");
    r.send(resp).await
}
