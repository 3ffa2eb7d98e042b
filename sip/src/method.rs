use std::fmt;

/// SIP request methods; anything else is kept verbatim in `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Register,
    Message,
    Invite,
    Ack,
    Cancel,
    Bye,
    Options,
    Subscribe,
    Notify,
    Publish,
    Info,
    Refer,
    Update,
    Prack,
    Other(String),
}

impl Method {
    pub fn parse(s: &str) -> Method {
        match s {
            "REGISTER" => Method::Register,
            "MESSAGE" => Method::Message,
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "CANCEL" => Method::Cancel,
            "BYE" => Method::Bye,
            "OPTIONS" => Method::Options,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "PUBLISH" => Method::Publish,
            "INFO" => Method::Info,
            "REFER" => Method::Refer,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Register => "REGISTER",
            Method::Message => "MESSAGE",
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Cancel => "CANCEL",
            Method::Bye => "BYE",
            Method::Options => "OPTIONS",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
