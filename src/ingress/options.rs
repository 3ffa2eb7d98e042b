//! OPTIONS addressed to the server: capabilities (RFC 3261 §11).

use super::{Reply, ALLOW};

pub fn handle(reply: Reply) {
    reply.spawn_with(200, |b| {
        b.header("Allow", ALLOW)
            .header("Accept", "message/cpim, text/plain, message/imdn+xml")
            .header("Supported", "gruu")
    });
}
